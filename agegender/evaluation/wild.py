"""Clean against degraded validation, side by side: ``python -m agegender.evaluation.wild reports/wild``.

Reads report folders named ``MODEL-DATASET-clean`` / ``MODEL-DATASET-degraded`` (``agegender evaluate ... --out``)
and prints, per model, the MAE of each set and of both together (faces pooled), the mean bias (predicted − true)
per age decade and for teenagers 13–17 on the pooled faces, and how many 13–17-year-olds P(age ≥ 18) ≥ 0.5 calls
adult. Why pooled: issue 27 chooses models on the combined clean + degraded validation MAE, and the per-decade
bias needs both sets' faces to reach 50 per decade.
"""

from __future__ import annotations

import argparse
import csv
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

DECADES = [(lo, lo + 9) for lo in range(0, 80, 10)] + [(80, 200)]
TEENS = (13, 17)


def read_predictions(folder: Path) -> list[dict[str, float]]:
    with open(folder / "predictions.csv", newline="") as fh:
        return [{"age": float(r["age"]), "pred": float(r["pred_age"]), "p_adult": float(r["p_adult"])}
                for r in csv.DictReader(fh) if r["detected"] == "True"]


def summarise(rows: list[dict[str, float]]) -> dict[str, Any]:
    age = np.array([r["age"] for r in rows])
    err = np.array([r["pred"] for r in rows]) - age
    out: dict[str, Any] = {"n": len(rows), "mae": float(np.abs(err).mean()), "bias": float(err.mean())}
    for lo, hi in DECADES:
        sel = (age >= lo) & (age <= hi)
        label = f"{lo}+" if hi >= 200 else f"{lo}-{hi}"
        out[label] = (int(sel.sum()), float(err[sel].mean()) if sel.any() else float("nan"))
    teens = (age >= TEENS[0]) & (age <= TEENS[1])
    adult = np.array([r["p_adult"] for r in rows]) >= 0.5
    out["13-17"] = (int(teens.sum()), float(err[teens].mean()) if teens.any() else float("nan"))
    out["teens_called_adult"] = (int((adult & teens).sum()), int(teens.sum()))
    return out


def table(root: Path) -> str:
    runs: dict[tuple[str, str], dict[str, list]] = defaultdict(dict)
    for folder in sorted(p for p in root.iterdir() if (p / "predictions.csv").is_file()):
        model, dataset, condition = folder.name.rsplit("-", 2)
        runs[(model, condition)][dataset] = read_predictions(folder)
    bands = [f"{lo}+" if hi >= 200 else f"{lo}-{hi}" for lo, hi in DECADES] + ["13-17"]
    head = ["model", "images", *(f"MAE {d}" for d in sorted({d for v in runs.values() for d in v})),
            "MAE pooled", *(f"bias {b}" for b in bands), "13–17 called adult"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (model, condition), sets in sorted(runs.items()):
        pooled = summarise([r for rows in sets.values() for r in rows])
        cells = [model, condition, *(f"{summarise(sets[d])['mae']:.2f}" for d in sorted(sets)), f"{pooled['mae']:.2f}",
                 *(f"{pooled[b][1]:+.1f} ({pooled[b][0]})" if pooled[b][0] else "–" for b in bands),
                 "{} of {}".format(*pooled["teens_called_adult"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", type=Path, help="folder of MODEL-DATASET-clean|degraded report folders")
    print(table(parser.parse_args(argv).root))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
