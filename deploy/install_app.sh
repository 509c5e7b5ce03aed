#!/bin/sh
# The app's install, one script for the container (the Dockerfile runs it) and for CI (.ci/run runs it in a fresh
# virtual environment): README command 1's torch-free install, then a check that the bundled weights verify
# (sha256 against weights/MANIFEST.json) and that the default model finds and reads the astronaut's face.
set -eu
cd "$(dirname "$0")/.."
python -m pip install --no-cache-dir -q -e ".[app]"
python - <<'PY'
import sys

from skimage import data

from agegender import Estimator
from agegender.weights import bundled_backbones

faces = Estimator().predict(data.astronaut())
assert len(faces) == 1 and 10 < faces[0].age < 70, faces
if "torch" in sys.modules:
    sys.exit("the app install imported torch; it must run on onnxruntime alone")
print(f"install ok: models {', '.join(bundled_backbones())}; astronaut: age {faces[0].age:.0f}, {faces[0].gender}")
PY
