"""Privacy stays proven: analysing a photo (upload page, CLI ``predict`` without ``--annotate``) writes no file.

The flows run in a child process whose HOME and TMPDIR are fresh, empty folders, so *any* file it creates there
(or in the repository) shows up, with no noise from other programs. Other places a library might write to without
asking (a hard-coded ``/tmp`` path) are shared with other processes on a busy machine, so there the test looks for
the photo itself: every new file under /tmp is checked for the upload's bytes, a token hidden in its PNG text
chunk, and a row of its pixels. Byte-code and package caches (``__pycache__``, ``.cache``) are not user data and
are ignored.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image, PngImagePlugin

REPO = Path(__file__).resolve().parents[1]
IGNORED_PARTS = {"__pycache__", ".cache", ".pytest_cache", ".venv", ".git"}

CHILD = r"""
import subprocess, sys
from pathlib import Path
repo, photo = Path(sys.argv[1]), Path(sys.argv[2])
sys.path.insert(0, str(repo))
from streamlit.testing.v1 import AppTest
at = AppTest.from_file(str(repo / "streamlit_app.py"), default_timeout=180)
at.run()
at.switch_page("pages/1_Upload_photos.py").run()
at.file_uploader[0].set_value(("private.png", photo.read_bytes(), "image/png"))
at.run()
assert not at.exception, at.exception
assert any(m.value.startswith("**Face ") for m in at.markdown), "the upload flow did not analyse the photo"
cli = subprocess.run([sys.executable, "-m", "agegender", "predict", str(photo), "--json", "--untrained",
                      "--model", "efficientnet_lite0"], capture_output=True, text=True, timeout=300)
assert cli.returncode == 0 and '"faces"' in cli.stdout, cli.stderr[-2000:]
print("FLOWS OK")
"""


def _files(root: Path) -> dict[Path, float]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in IGNORED_PARTS and not d.startswith("pytest-of-")]
        for name in filenames:
            path = Path(dirpath, name)
            try:
                out[path] = path.stat().st_mtime
            except OSError:  # vanished meanwhile (another process's temporary file)
                pass
    return out


def _contains_photo(path: Path, needles: list[bytes]) -> bool:
    try:
        if path.stat().st_size > 50_000_000:
            return False
        data = path.read_bytes()
    except OSError:
        return False
    return any(n in data for n in needles)


def test_upload_and_cli_write_no_file(tmp_path, astronaut):
    token = secrets.token_hex(16)
    rgb = np.ascontiguousarray(astronaut)
    info = PngImagePlugin.PngInfo()
    info.add_text("privacy-token", token)
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    photo = inputs / "private.png"
    Image.fromarray(rgb).save(photo, pnginfo=info)
    home, tmp = tmp_path / "home", tmp_path / "tmp"
    home.mkdir()
    tmp.mkdir()
    needles = [token.encode(), photo.read_bytes()[-4096:], rgb[300].tobytes(), rgb[300, :, ::-1].tobytes()]

    before_repo, before_tmp = _files(REPO), _files(Path("/tmp"))
    env = dict(os.environ, HOME=str(home), TMPDIR=str(tmp), OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", CHILD, str(REPO), str(photo)], capture_output=True, text=True,
                          timeout=900, env=env, cwd=tmp_path)
    assert proc.returncode == 0 and "FLOWS OK" in proc.stdout, proc.stderr[-3000:]

    assert list(_files(home)) == [] and list(_files(tmp)) == [], "files written under HOME/TMPDIR"
    assert sorted(p.name for p in inputs.iterdir()) == ["private.png"]
    new_in_repo = [p for p, m in _files(REPO).items() if p not in before_repo or m > before_repo[p]]
    assert new_in_repo == [], new_in_repo
    new_in_tmp = [p for p, m in _files(Path("/tmp")).items()
                  if (p not in before_tmp or m > before_tmp[p]) and not str(p).startswith(str(tmp_path))]
    leaked = [p for p in new_in_tmp if _contains_photo(p, needles)]
    assert leaked == [], f"the photo was written to {leaked}"
