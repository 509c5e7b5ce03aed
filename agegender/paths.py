"""Where the package finds its bundled weights and the (never bundled) datasets.

Datasets are found through one setting, the ``AGEGENDER_DATA`` environment variable, so tests, training and
evaluation scripts agree on it; it defaults to ``../shared/data`` beside the repository checkout.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_DIR = PACKAGE_DIR.parent
WEIGHTS_DIR = Path(os.environ.get("AGEGENDER_WEIGHTS", REPO_DIR / "weights"))


def data_root() -> Path:
    """Root of the research datasets (UTKFace, All-Age-Faces, group photos); may not exist."""
    return Path(os.environ.get("AGEGENDER_DATA", REPO_DIR.parent / "shared" / "data")).resolve()
