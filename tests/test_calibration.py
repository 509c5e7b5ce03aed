"""Calibration: the pure functions of agegender.assurance.calibration and the fitting/measuring of
agegender.evaluation.calibration, on hand-made and synthetic distributions with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from agegender.assurance.calibration import Calibration, apply_calibration, pit, quantile, temper
from agegender.evaluation.calibration import (
    choose_regions, conformal_levels, coverage, fit_calibration, fit_label_conditional, fit_temperature,
    reliability, sampling_noise,
)

AGES = np.arange(101)


def gaussian(mu: float, sd: float) -> np.ndarray:
    p = np.exp(-0.5 * ((AGES - mu) / sd) ** 2)
    return p / p.sum()


def one_hot(age: int) -> np.ndarray:
    p = np.zeros(101)
    p[age] = 1.0
    return p


def test_temperature_one_is_identity_and_above_one_widens():
    p = gaussian(30, 4)
    assert np.allclose(temper(p, 1.0), p)
    wide = temper(p, 4.0)  # p ** (1/4) of a Gaussian is a Gaussian with twice the sd
    assert np.allclose(wide, gaussian(30, 8), atol=1e-9)
    assert np.allclose(temper(one_hot(40), 3.0), one_hot(40), atol=1e-9)


def test_pit_and_quantile_on_the_continuous_axis():
    p = one_hot(30)  # all mass spread uniformly over [29.5, 30.5]
    assert pit(p[None], [30])[0] == pytest.approx(0.5)
    assert pit(p[None], [29])[0] == pytest.approx(0.0)
    assert pit(p[None], [31])[0] == pytest.approx(1.0)
    assert quantile(p[None], 0.5)[0] == pytest.approx(30.0)
    assert quantile(p[None], 0.25)[0] == pytest.approx(29.75)
    two = np.zeros(101)
    two[[20, 40]] = 0.5
    assert quantile(two[None], 0.25)[0] == pytest.approx(20.0)
    assert quantile(two[None], 0.75)[0] == pytest.approx(40.0)


def test_identity_calibration_is_the_central_80_percent():
    probs, low, high = apply_calibration(gaussian(50, 10)[None], None)
    # 10th / 90th percentile of N(50, 10): 50 -/+ 12.8
    assert low[0] == pytest.approx(37.2, abs=0.2)
    assert high[0] == pytest.approx(62.8, abs=0.2)
    assert np.allclose(probs[0], gaussian(50, 10))


def test_interval_contains_the_expected_age_of_a_two_peaked_distribution():
    p = np.zeros(101)
    p[28], p[100] = 0.95, 0.05  # mean 31.6, central 80 % inside the 28 bin
    _, low, high = apply_calibration(p[None], None)
    assert low[0] <= 31.6 <= high[0]


def test_calibration_round_trips_and_rejects_nonsense():
    cal = Calibration(1.3, (0.0, 20.0), (0.05, 0.12), (0.9, 0.93), fitted_on="x")
    assert Calibration.from_dict(cal.to_dict()) == cal
    assert list(cal.region_of(np.array([5.0, 19.9, 20.0, 80.0]))) == [0, 0, 1, 1]
    with pytest.raises(ValueError):
        Calibration(temperature=0.0)
    with pytest.raises(ValueError):
        Calibration(edges=(0.0,), low_levels=(0.9,), high_levels=(0.1,))


def test_conformal_levels_are_the_order_statistics():
    u = np.arange(1, 100) / 100  # 0.01 … 0.99, n = 99
    a, b = conformal_levels(u, 0.8)
    assert a == pytest.approx(0.10)  # rank floor(100 * 0.1) = 10
    assert b == pytest.approx(0.90)  # rank ceil(100 * 0.9) = 90
    assert conformal_levels(np.array([]), 0.8) == (pytest.approx(0.1), pytest.approx(0.9))


def test_reliability_of_hand_made_probabilities():
    r = reliability(np.array([0.05, 0.05, 0.95, 0.95]), np.array([0, 1, 1, 1]))
    assert r["ece"] == pytest.approx(0.5 * 0.45 + 0.5 * 0.05)
    assert r["bins"][0]["count"] == 2 and r["bins"][0]["observed"] == pytest.approx(0.5)


def test_coverage_counts_and_decades():
    c = coverage(np.array([5, 15, 15, 30]), np.array([4.0, 10.0, 16.0, 20.0]), np.array([6.0, 20.0, 20.0, 29.5]))
    assert c["coverage"] == pytest.approx(0.5) and c["below"] == pytest.approx(0.25)
    assert c["decade"]["10-19"] == {"n": 2, "coverage": 0.5, "width": 7.0}


def test_region_merging_keeps_enough_faces_per_region():
    pred = np.concatenate([np.full(300, 25.0), np.full(300, 45.0), np.full(20, 75.0)])
    assert choose_regions(pred, (0, 10, 20, 30, 40, 50, 60, 70), 100) == [0.0, 40.0]


def _synthetic(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """An over-confident model whose over-confidence depends on age: it says N(mu, 3) while the truth is
    N(mu, 5) under 40 and N(mu, 9) from 40 on (like real faces: older ages are harder)."""
    mu = rng.uniform(12, 75, n)
    sd = np.where(mu < 40, 5.0, 9.0)
    ages = np.clip(np.rint(rng.normal(mu, sd)), 0, 100).astype(int)
    return np.stack([gaussian(m, 3.0) for m in mu]), ages


def test_conformal_interval_covers_80_percent_per_region_on_fresh_data():
    rng = np.random.default_rng(0)
    cal_probs, cal_ages = _synthetic(rng, 6000)
    params = fit_calibration(cal_probs, cal_ages, edges=(0, 40), min_count=100)
    probs, ages = _synthetic(rng, 8000)
    _, raw_low, raw_high = apply_calibration(probs, None)
    raw_cover = ((raw_low <= ages) & (ages <= raw_high)).mean()
    assert raw_cover < 0.7  # the raw interval is far too narrow
    _, low, high = apply_calibration(probs, params)
    inside = (low <= ages) & (ages <= high)
    pred = probs @ AGES
    for region in (pred < 40, pred >= 40):
        assert inside[region].mean() == pytest.approx(0.8, abs=0.025)


def _regressing_to_the_mean(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Like the real model: true ages uniform 5-75, estimates pulled towards 35 (teenagers look older, the old
    younger), and a confident N(estimate, 4) distribution."""
    ages = rng.integers(5, 76, n)
    mu = 35 + 0.75 * (ages - 35) + rng.normal(0, 4, n)
    return np.stack([gaussian(m, 4.0) for m in mu]), ages


def test_label_conditional_interval_covers_80_percent_per_true_decade():
    rng = np.random.default_rng(3)
    cal_probs, cal_ages = _regressing_to_the_mean(rng, 8000)
    by_truth = fit_label_conditional(cal_probs, cal_ages, edges=(0, 10, 20, 30, 40, 50, 60, 70))
    by_prediction = fit_calibration(cal_probs, cal_ages, edges=(0, 10, 20, 30, 40, 50, 60, 70))
    assert by_truth.regions_by == "candidate"
    assert Calibration.from_dict(by_truth.to_dict()).to_dict() == by_truth.to_dict()
    probs, ages = _regressing_to_the_mean(rng, 8000)
    decades = np.minimum(ages // 10, 9)
    per_truth = []
    for params in (by_truth, by_prediction):
        _, low, high = apply_calibration(probs, params)
        inside = (low <= ages) & (ages <= high)
        per_truth.append([inside[decades == d].mean() for d in range(8)])
    # by prediction, the youngest decade falls short of 80 % and the oldest over-covers; by candidate age (hull
    # masses tuned on the fitting faces) every decade of fresh faces stays near 80 %
    assert min(per_truth[1]) < 0.75 and max(per_truth[1]) > 0.86, per_truth[1]
    assert all(0.76 <= c <= 0.85 for c in per_truth[0]), per_truth[0]


def test_candidate_regions_keep_a_teenager_inside_an_interval_centred_in_the_20s():
    # levels as a regression-to-the-mean model would get them: teenagers' true age sits low in their distribution
    cal = Calibration(1.0, (0.0, 10.0, 20.0), (0.1, 0.01, 0.1), (0.9, 0.5, 0.9), regions_by="candidate")
    p = gaussian(24, 3)
    _, low, high = apply_calibration(p[None], cal)
    _, plain_low, _ = apply_calibration(p[None], Calibration(1.0, (0.0,), (0.1,), (0.9,)))
    assert low[0] < 18 < plain_low[0]  # Q(0.01) of N(24, 3) is 17.0: a 17-year-old is inside
    assert high[0] == pytest.approx(24 + 1.2816 * 3, abs=0.15)
    with pytest.raises(ValueError):
        Calibration(regions_by="nonsense")


def test_fit_temperature_recovers_a_known_temperature():
    rng = np.random.default_rng(1)
    probs = np.stack([gaussian(m, 3.0) for m in rng.uniform(15, 70, 3000)])
    truth = temper(probs, 2.0)  # the true distribution is the model's at T = 2
    ages = np.array([rng.choice(101, p=p) for p in truth])
    assert fit_temperature(probs, ages) == pytest.approx(2.0, rel=0.08)


def test_bundled_estimator_applies_the_manifest_calibration(astronaut):
    from agegender import Estimator
    from agegender.weights import model_entry

    entry = model_entry("efficientnet_lite0")[1]
    assert "calibration" in entry, "the bundled default model ships its validated calibration"
    calibrated, raw = Estimator("efficientnet_lite0", scale_tta=False), Estimator("efficientnet_lite0",
                                                                                   scale_tta=False, calibrate=False)
    try:
        (c,), (r,) = calibrated.predict(astronaut), raw.predict(astronaut)
    finally:
        calibrated.close()
        raw.close()
    assert c.calibrated and not r.calibrated
    probs, low, high = apply_calibration(r.age_probs[None], entry["calibration"])
    assert np.allclose(c.age_probs, probs[0], atol=1e-9)
    assert c.age == pytest.approx(float(probs[0] @ AGES))
    assert (c.age_low, c.age_high) == (pytest.approx(low[0]), pytest.approx(high[0]))
    assert c.age_low <= c.age <= c.age_high
    untrained = Estimator("efficientnet_lite0", weights=None)
    try:
        assert untrained.calibration is None  # calibration belongs to the weights it was fitted for
    finally:
        untrained.close()


def test_install_puts_the_fitted_calibration_into_the_model_entry(tmp_path):
    import json

    from agegender.evaluation.assurance import install
    from agegender.weights import model_entry

    (tmp_path / "MANIFEST.json").write_text(json.dumps({"default_model": "efficientnet_lite0", "files": {
        "a.safetensors": {"kind": "agegender", "backbone": "efficientnet_lite0", "sha256": "x"},
        "b.safetensors": {"kind": "agegender", "backbone": "resnet50", "sha256": "y"}}}))
    cal = Calibration(1.2, (0.0, 10.0), (0.05, 0.1), (0.6, 0.9), fitted_on="v", regions_by="candidate")
    out = tmp_path / "report"
    out.mkdir()
    (out / "calibration.json").write_text(json.dumps(cal.to_dict()))
    (out / "choice.json").write_text(json.dumps({"buffers": {"18": 9, "21": 11, "25": None},
                                                 "meets_bar": {"18": True}}))
    assert install(out, "resnet50", tmp_path) == "b.safetensors"
    name, entry = model_entry("resnet50", tmp_path)
    assert Calibration.from_dict(entry["calibration"]) == cal and entry["sha256"] == "y"
    from agegender.assurance.age_check import buffers_of, default_buffer

    assert buffers_of(entry) == {18: 9, 21: 11}  # an unchosen threshold is left out
    assert default_buffer(18, buffers_of(entry)) == 9 and default_buffer(30, buffers_of(entry)) == 11
    assert "calibration" not in model_entry("efficientnet_lite0", tmp_path)[1]
    (out / "calibration.json").write_text(json.dumps({**cal.to_dict(), "regions_by": "nonsense"}))
    with pytest.raises(ValueError):
        install(out, "resnet50", tmp_path)


def test_level_choice_cross_validates_the_regions_the_full_fit_builds():
    # 150 teenagers: half of them (2-fold CV) would be fewer than a region needs, and the folds would measure a
    # calibration without a teens' region; with 5 folds each fold's fit keeps it, as the full fit does.
    from agegender.evaluation.assurance import Split, choose_levels

    rng = np.random.default_rng(5)
    ages = np.concatenate([rng.integers(10, 20, 150), rng.integers(20, 50, 900)])
    mu = 35 + 0.75 * (ages - 35) + rng.normal(0, 4, len(ages))
    n = len(ages)
    val = Split(ages, np.zeros(n, int), np.zeros(n, int), np.array(["d"] * n),
                np.stack([gaussian(m, 4.0) for m in mu]))
    params, report = choose_levels(val, "synthetic")
    assert report["method"].startswith("5-fold")
    assert report["chosen"] == "label_conditional" and params.regions_by == "candidate"
    assert params.edges == (0.0, 20.0, 30.0, 40.0)  # the first region holds just the 150 teenagers
    held = report["heldout_coverage_by_decade"]
    assert set(held["label_conditional"]) == {"10-19", "20-29", "30-39", "40-49"}
    # out of fold, the teenagers (who look ~4 years older) are covered by their own region's levels ...
    assert 0.72 <= held["label_conditional"]["10-19"] <= 0.88, held
    # ... and not by levels per predicted-age region, which the 20-somethings set
    assert held["conformal"]["10-19"] < held["label_conditional"]["10-19"] - 0.05, held


def test_label_conditional_fit_covers_at_least_the_mass_of_every_region_it_was_fitted_on():
    # Faces in look-alike groups of five (one level moves five faces at once), ~130 per decade as in validation:
    # coverage moves in 4-point steps, the damped search oscillates around 80 % and could stop below it.
    rng = np.random.default_rng(11)
    probs, ages = _regressing_to_the_mean(rng, 200)
    probs, ages = np.repeat(probs, 5, axis=0), np.repeat(ages, 5)
    cal = fit_label_conditional(probs, ages, edges=(0, 10, 20, 30, 40, 50, 60, 70))
    _, low, high = apply_calibration(probs, cal)
    inside = (low <= ages) & (ages <= high)
    region = cal.region_of(ages)
    shares = [inside[region == r].mean() for r in range(len(cal.edges))]
    assert len(cal.edges) >= 5
    assert min(shares) >= 0.8, shares
    assert max(shares) <= 0.92, shares  # at least 80 %, not everything


def test_sampling_noise_is_the_binomial_chance_of_measuring_inside_the_band():
    """Exact sums of binomial terms written out here, against the scipy-based function."""
    from math import comb

    def within(n: int, lo: int, hi: int, p: float = 0.8) -> float:
        return sum(comb(n, k) * p ** k * (1 - p) ** (n - k) for k in range(lo, hi + 1))

    report = {"decade": {"10-19": {"n": 100, "coverage": 0.80}, "20-29": {"n": 250, "coverage": 0.70},
                         "70-79": {"n": 40, "coverage": 0.50}}}
    noise = sampling_noise(report, mass=0.8, band=0.02)
    assert set(noise["decades"]) == {"10-19", "20-29"}  # the 40-face decade is under the bar's 100
    teens, twenties = noise["decades"]["10-19"], noise["decades"]["20-29"]
    assert teens["chance_within_band_if_calibrated"] == pytest.approx(within(100, 78, 82), abs=1e-4)
    assert twenties["chance_within_band_if_calibrated"] == pytest.approx(within(250, 195, 205), abs=1e-4)
    assert noise["all_within_band_if_calibrated"] == pytest.approx(
        within(100, 78, 82) * within(250, 195, 205), abs=2e-4)
    assert teens["covered"] == 80 and teens["p_value"] == pytest.approx(1.0)
    assert twenties["covered"] == 175 and twenties["p_value"] < 1e-3  # 70 % of 250 is no accident
    assert 0.3 < teens["chance_within_band_if_calibrated"] < 0.5  # +-2 points is under one sd (4) at n = 100
