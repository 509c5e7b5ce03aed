"""Hostile and unusual inputs through the API, the CLI and the upload page (issue 14).

The corpus (``tests/hostile_corpus.py``) is generated at test time from the astronaut: accepted formats and modes,
EXIF orientations, refused formats under any name, corrupt and truncated files, bombs, sides that once aborted
MediaPipe, odd arrays and PIL images. Every case must decode, or be refused with an ``InvalidImageError`` (its
subclass ``ImageTooLargeError`` for size), and nothing may take the process down: the cases that once did run in a
subprocess, so a regression fails a test instead of killing pytest.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hostile_corpus import Case, _enc, cases, mutate, outcome

REPO = Path(__file__).resolve().parents[1]
CORPUS = cases()
IN_PROCESS = [c for c in CORPUS if not c.native]
NATIVE = [c for c in CORPUS if c.native]
BAD_FILES = [c for c in CORPUS if c.is_file and c.expect != "ok" and not c.native]


def test_corpus_covers_every_category():
    counts: dict[str, int] = {}
    for c in CORPUS:
        counts[c.category] = counts.get(c.category, 0) + 1
    assert set(counts) == {"accepted", "exif", "refused-format", "corrupt", "truncated", "size", "array", "pil",
                           "native-array"}, counts
    assert len(CORPUS) >= 100 and len({c.name for c in CORPUS}) == len(CORPUS), "names must be unique"


@pytest.mark.parametrize("case", IN_PROCESS, ids=[f"{c.category}:{c.name}" for c in IN_PROCESS])
def test_api_outcome(case: Case):
    assert outcome(case.make()) == case.expect


@pytest.mark.parametrize("case", [c for c in BAD_FILES if c.category != "size"][:12], ids=lambda c: c.name)
def test_file_errors_name_the_file_in_one_line(case: Case, tmp_path):
    from agegender.errors import InvalidImageError
    from agegender.io.images import load_image

    path = tmp_path / case.name
    path.write_bytes(case.make())
    with pytest.raises(InvalidImageError) as info:
        load_image(path)
    message = str(info.value)
    assert case.name in message and "\n" not in message and len(message) < 300, message
    assert str(tmp_path) not in message, "the message must not show a server path"


def test_refused_formats_are_named():
    from agegender.io.images import load_image

    for fmt, word in (("AVIF", "AVIF"), ("QOI", "QOI"), ("JPEG2000", "JPEG 2000"), ("PDF", "PDF")):
        data = _enc(np.zeros((16, 16, 3), np.uint8), fmt)
        with pytest.raises(Exception, match=word):
            load_image(data)


def test_accepted_suffixes_match_the_formats():
    from agegender.io.images import ACCEPTED_FORMATS, ACCEPTED_SUFFIXES

    Image.init()
    for suffix in ACCEPTED_SUFFIXES:
        assert Image.EXTENSION[suffix] in ACCEPTED_FORMATS, suffix
    assert {Image.EXTENSION[s] for s in ACCEPTED_SUFFIXES} == set(ACCEPTED_FORMATS)


def test_native_crash_cases_in_a_subprocess():
    """Sides >= 32,767 px once raised SIGABRT inside MediaPipe's OpenCV. Run each through load_image and (for
    arrays, as a direct caller would; for files, after a successful decode) FaceDetector.detect in one child."""
    script = (
        "import sys, json\n"
        "sys.path.insert(0, sys.argv[1])\n"
        "import numpy as np\n"
        "from hostile_corpus import cases, outcome\n"
        "from agegender.detection.detector import FaceDetector\n"
        "det = FaceDetector('auto')\n"
        "for c in cases():\n"
        "    if not c.native: continue\n"
        "    src = c.make()\n"
        "    rec = {'name': c.name, 'load': outcome(src)}\n"
        "    print(json.dumps(rec), flush=True)\n"
        "    if isinstance(src, np.ndarray):\n"
        "        rec['detect'] = len(det.detect(src))\n"
        "        print(json.dumps(rec), flush=True)\n"
        "    del src\n"
    )
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", script, str(Path(__file__).parent)], capture_output=True, text=True,
                          timeout=600, env=env)
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert proc.returncode == 0, f"child died with {proc.returncode} after {lines[-1:]}: {proc.stderr[-2000:]}"
    got = {rec["name"]: rec for rec in lines}
    for case in NATIVE:
        assert got[case.name]["load"] == case.expect, got[case.name]
        if case.category == "native-array":
            assert got[case.name]["detect"] == 0, got[case.name]  # a black frame: a result, no face, no abort


def test_exif_orientations_keep_boxes_within_3px(detectors, astronaut):
    inverse = {1: None, 2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
               4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_90,
               7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_270}
    from agegender.io.images import load_image

    upright = load_image(_enc(astronaut, "JPEG", quality=95))
    (ref,) = detectors("auto").detect(upright)
    for orientation, op in inverse.items():
        stored = Image.fromarray(astronaut)
        if op is not None:
            stored = stored.transpose(op)  # what the camera wrote; the tag says how to turn it upright
        exif = Image.Exif()
        exif[0x0112] = orientation
        rgb = load_image(_enc(stored, "JPEG", quality=95, exif=exif.tobytes()))
        assert rgb.shape == astronaut.shape, orientation
        (got,) = detectors("auto").detect(rgb)
        assert np.abs(np.array(got.box) - np.array(ref.box)).max() <= 3, (orientation, got.box, ref.box)


def test_mutation_fuzz_only_agegender_errors_escape():
    """A few hundred seeded mutations (overwritten bytes, truncations, a duplicated slice) of small files in every
    accepted format and a few refused ones: load_image returns RGB uint8 or raises InvalidImageError."""
    rng = np.random.default_rng(14)
    img = np.ascontiguousarray(rng.integers(0, 255, (48, 40, 3), dtype=np.uint8))
    seeds = {fmt: _enc(img, fmt) for fmt in ("PNG", "JPEG", "GIF", "WEBP", "BMP", "TIFF", "AVIF", "QOI")}
    seeds["TIFF-LZW"] = _enc(img, "TIFF", compression="tiff_lzw")
    escaped = []
    n = 0
    for fmt, data in seeds.items():
        for i in range(40):
            kind = i % 4
            if kind == 0:
                mutated = mutate(data, seed=i, n=int(rng.integers(1, 16)))
            elif kind == 1:
                mutated = data[: int(rng.integers(1, len(data)))]
            elif kind == 2:
                at, size = int(rng.integers(0, len(data))), int(rng.integers(1, 64))
                mutated = data[:at] + data[at:at + size] + data[at:]
            else:
                mutated = bytearray(data)
                for j in rng.integers(0, len(data), 4):
                    mutated[j] ^= 1 << int(rng.integers(0, 8))
                mutated = bytes(mutated)
            got = outcome(mutated, max_pixels=2_000_000)  # a mutated header may claim a big image: keep it fast
            n += 1
            if got not in ("ok", "error", "too_large"):
                escaped.append((fmt, i, got))
    assert n >= 300
    assert not escaped, escaped


def test_streamlit_never_shows_tracebacks_to_visitors():
    config = tomllib.loads((REPO / ".streamlit" / "config.toml").read_text())
    assert config["client"]["showErrorDetails"] == "none"


# ----------------------------------------------------------------------------------------------------- the CLI
def _write(folder: Path, selection: list[Case]) -> list[Path]:
    paths = []
    for case in selection:
        path = folder / case.name
        path.write_bytes(case.make())
        paths.append(path)
    return paths


def test_cli_batch_reports_every_bad_file_and_processes_the_rest(tmp_path, astronaut):
    good = tmp_path / "astronaut.png"
    Image.fromarray(astronaut).save(good)
    pano = next(c for c in NATIVE if c.name.startswith("pano"))  # once: exit 134, empty stdout
    bad = _write(tmp_path, BAD_FILES + [pano])
    files = [bad[0], good, *bad[1:]]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "agegender", "predict", *map(str, files), "--json", "--untrained",
                           "--model", "efficientnet_lite0"], capture_output=True, text=True, timeout=600, env=env,
                          cwd=tmp_path)
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.returncode == 1, (proc.returncode, proc.stderr[-2000:])
    records = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]  # JSON Lines
    assert [Path(r["file"]).name for r in records] == [p.name for p in files]
    for rec in records:
        if Path(rec["file"]).name == "astronaut.png":
            assert rec["error"] is None and len(rec["faces"]) == 1, rec
        else:
            assert rec["error"] and Path(rec["file"]).name in rec["error"], rec


# ----------------------------------------------------------------------------------------------- the upload page
def test_upload_page_shows_an_error_per_bad_file_and_cards_for_the_good(astronaut):
    sys.path.insert(0, str(REPO))
    from streamlit.testing.v1 import AppTest

    picks = ["corrupt-avif-named.png", "truncated-qoi-named.png", "avif-named.png", "eps-named.jpg",
             "bomb-20000x20000.png", "strip-2000x40.png"]
    bad = [next(c for c in BAD_FILES if c.name == name) for name in picks]
    at = AppTest.from_file(str(REPO / "streamlit_app.py"), default_timeout=180)
    at.run()
    at.switch_page("pages/1_Upload_photos.py").run()
    assert not at.exception, at.exception
    uploads = [(c.name, c.make(), "image/png") for c in bad[:3]]
    uploads.append(("astronaut.png", _enc(astronaut, "PNG"), "image/png"))
    uploads += [(c.name, c.make(), "image/png") for c in bad[3:]]
    at.file_uploader[0].set_value(uploads)
    at.run()
    assert not at.exception, at.exception
    errors = [e.value.replace("\\", "") for e in at.error]  # names are markdown-escaped on the page
    summary, errors = errors[0], errors[1:]  # a summary of the failed files at the top, then one at each file
    assert summary.startswith(f"{len(bad)} of {len(bad) + 1} files could not be analysed"), summary
    assert len(errors) == len(bad), errors
    for case, message in zip(bad, errors):
        assert case.name in message and case.name in summary, (case.name, message)
        assert "Traceback" not in message and str(REPO) not in message and "/tmp" not in message, message
    cards = [m.value for m in at.markdown if m.value.startswith("**Face ")]
    assert len(cards) == 1, cards
