"""Putting what ``python -m agegender.evaluation.assurance fit`` chose into the model's manifest entry: its
``calibration.json`` under ``"calibration"`` and the buffers of ``choice.json`` under ``"age_check"``. Why the
manifest: the Face API, the app and the CLI read a model's calibration and validated buffers from the entry of the
weights they belong to, so a retrained model never inherits another model's numbers."""

from __future__ import annotations

import json
from pathlib import Path

from agegender.assurance.calibration import Calibration

REPORT_DIR = "age-assurance-{model}"  # under reports/


def install(out: Path, model: str, weights_dir: Path | None = None) -> str:
    """Put ``out/calibration.json`` and, when ``out/choice.json`` exists, its buffers into ``model``'s manifest
    entry; returns the weights file they went to."""
    from agegender.weights import model_entry, read_manifest, write_manifest

    found = model_entry(model, weights_dir)
    if found is None:
        raise SystemExit(f"no bundled weights for {model!r} in the manifest")
    params = Calibration.from_dict(json.loads((out / "calibration.json").read_text()))  # validates it
    manifest = read_manifest(weights_dir)
    entry = manifest["files"][found[0]]
    entry["calibration"] = params.to_dict()
    if (out / "choice.json").is_file():
        choice = json.loads((out / "choice.json").read_text())
        entry["age_check"] = {"buffers": {str(t): int(b) for t, b in choice["buffers"].items() if b is not None},
                              "meets_bar": choice.get("meets_bar", {}), "rule": choice.get("rule", ""),
                              "report": f"reports/{REPORT_DIR.format(model=model)}"}
    write_manifest(manifest, weights_dir)
    return found[0]
