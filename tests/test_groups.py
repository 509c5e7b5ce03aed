"""Age groups and the statistics read off the 101-bin age distribution."""

from __future__ import annotations

import numpy as np
import pytest

from agegender.groups import (
    NUM_AGE_BINS, PRESETS, GroupPreset, age_interval, age_quantile, expected_age, get_preset, group_probs,
    p_at_least, preset_from_edges,
)


def one_hot(age: int) -> np.ndarray:
    p = np.zeros(NUM_AGE_BINS)
    p[age] = 1.0
    return p


def two_point(a: int, b: int, pa: float = 0.5) -> np.ndarray:
    p = np.zeros(NUM_AGE_BINS)
    p[a] += pa
    p[b] += 1.0 - pa
    return p


def test_known_presets():
    assert {"fairface9", "life4", "bins10", "adience8"} <= set(PRESETS)
    assert PRESETS["fairface9"].labels == ("0-2", "3-9", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69", "70+")
    assert len(PRESETS["life4"].labels) == 4 and len(PRESETS["bins10"].labels) == 10
    assert len(PRESETS["adience8"].labels) == 8


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_partitions_the_bins(name):
    preset = PRESETS[name]
    assert isinstance(preset, GroupPreset) and preset.name == name
    bins = np.array(preset.bins)
    assert bins.shape == (NUM_AGE_BINS,)
    # Each age in exactly one group (the 0/1 matrix has one 1 per row) ...
    m = preset.matrix
    assert m.shape == (NUM_AGE_BINS, len(preset.labels))
    np.testing.assert_array_equal(m.sum(axis=1), np.ones(NUM_AGE_BINS))
    # ... groups contiguous and in order: group indices never decrease and step by at most one ...
    steps = np.diff(bins)
    assert np.all((steps == 0) | (steps == 1)), bins
    # ... starting at the first group and ending at the last, none empty.
    assert bins[0] == 0 and bins[-1] == len(preset.labels) - 1
    assert set(bins.tolist()) == set(range(len(preset.labels)))
    assert len(set(preset.labels)) == len(preset.labels)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_group_probabilities_sum_to_one(name):
    rng = np.random.default_rng(1)
    probs = rng.dirichlet(np.ones(NUM_AGE_BINS) * 0.3, size=20)
    batched = probs @ PRESETS[name].matrix
    np.testing.assert_allclose(batched.sum(axis=1), 1.0, atol=1e-12)
    single = group_probs(probs[0], name)
    assert list(single) == list(PRESETS[name].labels)
    assert abs(sum(single.values()) - 1.0) < 1e-12
    np.testing.assert_allclose(list(single.values()), batched[0])


def test_fairface9_group_of_ages():
    ff = PRESETS["fairface9"]
    assert [ff.group_of(a) for a in (0, 2, 3, 9, 10, 29, 30, 69, 70, 100)] == [
        "0-2", "0-2", "3-9", "3-9", "10-19", "20-29", "30-39", "60-69", "70+", "70+"]
    assert ff.group_of(2.4) == "0-2" and ff.group_of(2.6) == "3-9"  # rounds to the nearest whole year
    assert ff.group_of(-5) == "0-2" and ff.group_of(140) == "70+"  # clamped


def test_life4_and_bins10_boundaries():
    life = PRESETS["life4"]
    assert [life.group_of(a) for a in (9, 10, 19, 20, 59, 60)] == [
        "child (0-9)", "adolescent (10-19)", "adolescent (10-19)", "adult (20-59)", "adult (20-59)", "senior (60+)"]
    b10 = PRESETS["bins10"]
    assert [b10.group_of(a) for a in (17, 18, 22, 23, 33, 34, 59, 60)] == [
        "13-17", "18-22", "18-22", "23-26", "27-33", "34-44", "45-59", "60+"]


@pytest.mark.parametrize("age, group", [
    (0, "0-2"), (2, "0-2"),
    (3, "0-2"),  # gap 3: 1 year from both 0-2 and 4-6 → tie goes to the younger group
    (7, "4-6"),  # gap 7: tie between 4-6 and 8-13 → younger
    (14, "8-13"),  # tie → younger
    (21, "15-20"), (22, "15-20"),  # nearer to 15-20
    (23, "25-32"), (24, "25-32"), (25, "25-32"),  # nearer to 25-32
    (35, "25-32"), (36, "38-43"),  # 33-37: 35 is 3 from 32 and 3 from 38 → younger; 36 nearer 38
    (45, "38-43"), (46, "48-53"),
    (56, "48-53"), (57, "60+"), (100, "60+"),
])
def test_adience8_gap_rule(age, group):
    assert PRESETS["adience8"].group_of(age) == group


def test_adience8_labels():
    assert PRESETS["adience8"].labels == ("0-2", "4-6", "8-13", "15-20", "25-32", "38-43", "48-53", "60+")


@pytest.mark.parametrize("edges", ["0,13,18,65", "0, 13, 18, 65", [0, 13, 18, 65], (13, 65, 18), "13,18,65"])
def test_custom_edges(edges):
    preset = get_preset(edges)
    assert preset.labels == ("0-12", "13-17", "18-64", "65+")
    assert [preset.group_of(a) for a in (0, 12, 13, 17, 18, 64, 65, 100)] == [
        "0-12", "0-12", "13-17", "13-17", "18-64", "18-64", "65+", "65+"]
    np.testing.assert_array_equal(preset.matrix.sum(axis=1), 1.0)


def test_single_year_groups_and_labels():
    preset = preset_from_edges([0, 1, 2, 100])
    assert preset.labels == ("0", "1", "2-99", "100+")
    custom = preset_from_edges([0, 18], labels=["minor", "adult"])
    assert custom.labels == ("minor", "adult") and custom.group_of(17) == "minor" and custom.group_of(18) == "adult"
    with pytest.raises(ValueError):
        preset_from_edges([0, 18], labels=["only one"])
    with pytest.raises(ValueError):
        preset_from_edges([0, 50, 120])


def test_get_preset_passthrough_and_names():
    assert get_preset("life4") is PRESETS["life4"]
    assert get_preset(PRESETS["bins10"]) is PRESETS["bins10"]


@pytest.mark.parametrize("bad", ["fairface", "Life4", "kids,adults", "teen"])
def test_bad_preset_name_lists_the_presets(bad):
    with pytest.raises(ValueError) as info:
        get_preset(bad)
    message = str(info.value)
    assert repr(bad) in message
    for name in PRESETS:
        assert name in message


# ------------------------------------------------------------------------------------------------- statistics
@pytest.mark.parametrize("age", [0, 1, 17, 30, 99, 100])
def test_one_hot_statistics(age):
    p = one_hot(age)
    assert expected_age(p) == age
    assert age_interval(p) == (age, age)
    assert age_interval(p, 0.95) == (age, age)
    assert p_at_least(p, age) == 1.0
    assert p_at_least(p, age + 0.5) == 0.0
    assert p_at_least(p, age + 1) == 0.0
    assert p_at_least(p, age - 0.5) == 1.0


def test_two_point_statistics():
    p = two_point(20, 40)
    assert expected_age(p) == 30.0
    assert age_interval(p, 0.8) == (20.0, 40.0)
    assert age_quantile(p, 0.5) == 20.0  # smallest age whose CDF reaches 0.5
    assert age_quantile(p, 0.51) == 40.0
    assert p_at_least(p, 18) == 1.0
    assert p_at_least(p, 21) == 0.5
    assert p_at_least(p, 40) == 0.5
    assert p_at_least(p, 41) == 0.0
    assert p_at_least(p, 17.5) == 1.0  # 17.5 counts the 18-year bin onwards
    q = two_point(10, 70, pa=0.25)
    assert expected_age(q) == pytest.approx(0.25 * 10 + 0.75 * 70)
    assert p_at_least(q, 18) == pytest.approx(0.75)
    assert age_interval(q, 0.8) == (10.0, 70.0)
    assert age_quantile(q, 0.2) == 10.0 and age_quantile(q, 0.3) == 70.0


def test_uniform_distribution_statistics():
    p = np.full(NUM_AGE_BINS, 1.0 / NUM_AGE_BINS)
    assert expected_age(p) == pytest.approx(50.0)
    low, high = age_interval(p, 0.8)
    assert low == pytest.approx(10, abs=1) and high == pytest.approx(90, abs=1)
    assert p_at_least(p, 50) == pytest.approx(51 / 101)


def test_batched_statistics():
    probs = np.stack([one_hot(5), two_point(20, 40), one_hot(90)])
    np.testing.assert_allclose(expected_age(probs), [5, 30, 90])
    np.testing.assert_allclose(p_at_least(probs, 18), [0, 1, 1])


def test_p_at_least_monotone_and_bounds():
    rng = np.random.default_rng(7)
    for p in rng.dirichlet(np.ones(NUM_AGE_BINS), size=10):
        thresholds = np.linspace(-10, 110, 241)
        values = np.array([p_at_least(p, t) for t in thresholds])
        assert np.all(np.diff(values) <= 1e-12), "P(age >= t) must not increase with t"
        assert np.all(values[thresholds <= 0] == pytest.approx(1.0))
        assert np.all(values[thresholds > 100] == 0.0)
        assert np.all((values >= 0) & (values <= 1 + 1e-12))
