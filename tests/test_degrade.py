"""The degraded validation set (issue 27): every image degraded the same way for a seed, whatever the order or
subset; real degradations (not a copy); and ``agegender evaluate --degrade`` through the real runner."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from agegender.evaluation.degrade import FAMILIES, MIN_FAMILIES, apply_profile, degrade, degrade_profile

REPO = Path(__file__).resolve().parents[1]


def test_the_same_seed_and_name_give_the_same_picture(astronaut):
    a = degrade(astronaut, 0, "x_1.jpg")
    assert np.array_equal(a, degrade(astronaut.copy(), 0, "x_1.jpg")) and a.shape == astronaut.shape
    assert a.dtype == np.uint8 and not np.array_equal(a, astronaut)
    others = [degrade(astronaut, 1, "x_1.jpg"), degrade(astronaut, 0, "x_2.jpg")]
    assert all(not np.array_equal(a, o) for o in others)


def test_profiles_draw_at_least_two_families_and_cover_them_all():
    profiles = [degrade_profile(0, f"{i}_0_0_face.jpg") for i in range(400)]
    assert min(len(p) for p in profiles) >= MIN_FAMILIES
    assert {family for p in profiles for family in p} == set(FAMILIES)
    assert not any("gray" in p and "print" in p for p in profiles)
    seen = {p["print"]["kind"] for p in profiles if "print" in p}
    assert seen == {"sepia", "yellowed", "faded"}
    assert all(10 <= p["jpeg"]["quality"] <= 40 for p in profiles if "jpeg" in p)
    assert all(24 <= p["resolution"]["face_px"] <= 64 for p in profiles if "resolution" in p)
    json.dumps(profiles)  # written beside the predictions


def test_each_family_changes_the_picture_the_way_it_says(astronaut):
    img = np.ascontiguousarray(astronaut[:200, 150:350])
    gray = apply_profile(img, {"gray": {}})
    assert np.array_equal(gray[..., 0], gray[..., 1]) and np.array_equal(gray[..., 1], gray[..., 2])
    sepia = apply_profile(img, {"print": {"kind": "sepia", "strength": 1.0, "contrast": 0.6, "lift": 30.0}})
    r, g, b = sepia.reshape(-1, 3).mean(0)
    assert r > g > b and sepia.std() < img.std()  # warm tint, washed out
    dark = apply_profile(img, {"exposure": {"gamma": 2.0, "gain": 0.6}})
    assert dark.mean() < 0.6 * img.mean()
    small = apply_profile(img, {"resolution": {"face_px": 24}})
    high = lambda x: np.abs(np.diff(x.astype(float), axis=1)).mean()  # noqa: E731
    assert high(small) < 0.6 * high(img)
    grain = apply_profile(img, {"grain": {"sigma": 15.0, "seed": 1}})
    assert 10 < (grain.astype(float) - img).std() < 20
    jpeg = apply_profile(img, {"jpeg": {"quality": 10}})
    assert 0 < np.abs(jpeg.astype(float) - img).mean() < 15


@pytest.mark.data
def test_evaluate_degrade_runs_the_real_pipeline(tmp_path):
    from conftest import data_path

    if not data_path("utkface", "images").is_dir():
        pytest.skip("needs UTKFace under AGEGENDER_DATA")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    runs = {}
    for name, extra in (("clean", []), ("degraded", ["--degrade"])):
        out = tmp_path / name
        proc = subprocess.run([sys.executable, "-m", "agegender", "evaluate", "--split", "utkface:val", "--crops",
                               "--limit", "40", "--no-scale-tta", "--out", str(out), "--json", *extra],
                              capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
        assert proc.returncode == 0, proc.stderr
        runs[name] = json.loads((out / "report.json").read_text())
    assert runs["degraded"]["metrics"]["run"]["degrade_seed"] == 0 and runs["clean"]["metrics"]["run"]["degrade_seed"] is None
    assert runs["degraded"]["metrics"]["mae"] != runs["clean"]["metrics"]["mae"]
    pasted = subprocess.run([sys.executable, "-m", "agegender", "evaluate", "--split", "utkface:val", "--pasted",
                             "--limit", "2", "--degrade", "--out", str(tmp_path / "p")],
                            capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    assert pasted.returncode == 1 and "crops and photos" in pasted.stderr


def test_wild_table_pools_the_sets_and_counts_teenagers_called_adult(tmp_path):
    from agegender.evaluation.wild import summarise, table

    def write(name: str, rows: list[tuple[int, float, float]]) -> None:
        folder = tmp_path / name
        folder.mkdir()
        lines = ["file,age,detected,pred_age,p_adult"] + [f"f{i}.jpg,{a},True,{p},{q}" for i, (a, p, q) in enumerate(rows)]
        lines.append("missed.jpg,15,False,,")
        (folder / "predictions.csv").write_text("\n".join(lines) + "\n")

    write("m-utk-clean", [(15, 16.0, 0.2), (45, 40.0, 1.0)])
    write("m-aaf-clean", [(16, 21.0, 0.7), (85, 70.0, 1.0)])
    pooled = summarise([{"age": 15, "pred": 16.0, "p_adult": 0.2}, {"age": 16, "pred": 21.0, "p_adult": 0.7}])
    assert pooled["13-17"] == (2, 3.0) and pooled["teens_called_adult"] == (1, 2) and pooled["mae"] == 3.0
    text = table(tmp_path)
    row = next(line for line in text.splitlines() if line.startswith("| m | clean"))
    assert "| 10.00 | 3.00 | 6.50 |" in row  # MAE aaf, MAE utk, pooled over the 4 found faces
    assert "| – |" in row  # an empty decade
    assert "+3.0 (2)" in row and "1 of 2" in row and "-15.0 (1)" in row
