"""Smoke set of the torch-free runtime (README command 1's install: `pip install -e ".[app]"`), run by .ci/run in
a second virtual environment that has no PyTorch: the CLI's predict and info, and the upload page in AppTest.

    python .ci/smoke_torch_free.py     # exits non-zero with the reason on the first failure
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("AGEGENDER_DATA", REPO.parent / "shared" / "data"))
PHOTO = DATA / "group_photos" / "dlib_examples_faces" / "bald_guys.jpg"
CARD = re.compile(r"\*\*Face (\d+)\*\*")


def cli(*args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "agegender", *args], capture_output=True, text=True, timeout=300,
                          cwd=REPO)
    assert proc.returncode == 0, f"agegender {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-2000:]}"
    return proc


def main() -> int:
    assert importlib.util.find_spec("torch") is None, "this environment must not have torch installed"
    info = json.loads(cli("info", "--json").stdout)
    assert info["engines"] == ["onnx"], info["engines"]
    assert info["default_model"] in info["models"], info
    print(f"info: engines {info['engines']}, models {info['models']}")

    from agegender import Estimator

    est = Estimator()
    assert est.engine_name == "onnx"
    expected = len(est.predict(PHOTO))
    est.close()
    assert expected >= 20, f"{PHOTO.name}: only {expected} faces"
    out = cli("predict", str(PHOTO), "--json").stdout
    records = [json.loads(line) for line in out.splitlines() if line.strip().startswith("{")] if not \
        out.lstrip().startswith("[") else json.loads(out)
    faces = records[0]["faces"]
    assert len(faces) == expected and all(0 <= f["age"] <= 100 for f in faces), faces
    print(f"cli predict: {len(faces)} faces on {PHOTO.name}")

    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(REPO / "streamlit_app.py"), default_timeout=300)
    at.run()
    at.switch_page("pages/1_Upload_photos.py").run()
    assert not at.exception, at.exception
    at.file_uploader[0].set_value((PHOTO.name, PHOTO.read_bytes(), "image/jpeg"))
    at.run()
    assert not at.exception, at.exception
    cards = [m.value for m in at.markdown if CARD.match(m.value)]
    assert len(cards) == expected, f"{len(cards)} cards for {expected} faces"
    assert "torch" not in sys.modules
    print(f"upload page: {len(cards)} cards, no torch imported")
    return 0


if __name__ == "__main__":
    sys.exit(main())
