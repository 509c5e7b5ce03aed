"""The age-check policy: the decision rule, its measurement on hand-made predictions with known answers, the
buffer choice, and that the app's age-check page decides exactly as the library does for the same face."""

from __future__ import annotations

import io
import re
import sys
from collections import OrderedDict
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from agegender import Estimator
from agegender.assurance.age_check import DEFAULT_BUFFERS, check, default_buffer, passes, summary
from agegender.evaluation.policy import choose_buffer, display_rows, policy_row, policy_table, wilson_upper
from agegender.face import Face

from conftest import set_age_check

REPO = Path(__file__).resolve().parents[1]


def face(age: float, low: float, high: float | None = None, calibrated: bool = True) -> Face:
    probs = np.zeros(101)
    probs[int(round(age))] = 1.0
    return Face(box=(0, 0, 10, 10), score=1.0, keypoints=np.zeros((6, 2)), age=age, age_low=low,
                age_high=age + 5 if high is None else high, age_probs=probs, groups=OrderedDict(x=1.0),
                gender="male", p_female=0.1, calibrated=calibrated)


def test_rule_needs_both_the_buffer_and_the_interval():
    assert passes(30.0, 20.0, 18, 7)
    assert not passes(24.9, 20.0, 18, 7)  # under t + buffer
    assert not passes(30.0, 17.9, 18, 7)  # interval reaches under t
    assert list(passes(np.array([30.0, 24.0, 30.0]), np.array([20.0, 20.0, 10.0]), 18, 7)) == [True, False, False]


def test_face_age_check_is_the_library_decision():
    f = face(30.0, 18.5)
    d = f.age_check(18, 7)
    assert d == check(f, 18, 7) and d.passed and d.decision == "pass"
    assert d.p_at_least == pytest.approx(1.0) and d.calibrated
    assert not f.age_check(25, 7).passed and "under 25 + 7 = 32" in f.age_check(25, 7).reason
    uncertain = face(30.0, 17.0).age_check(18, 7)
    assert not uncertain.passed and "too uncertain" in uncertain.reason
    assert f.age_check(18).buffer == DEFAULT_BUFFERS[18]  # default: the validated buffer
    with pytest.raises(ValueError):
        f.age_check(18, -1)
    assert d.to_dict()["decision"] == "pass" and d.to_dict()["age_low"] == 18.5


def test_the_text_and_the_record_say_the_same_whole_years():
    # 48.52 was "49" in the reason but "48" in agegender check's text (its record held 48.5, printed half-even)
    import io

    from agegender.assurance.age_check import whole_years
    from agegender.cli.check import _print_text

    # half up from the record's 2 decimals (48.495 is 48.4949... in binary, so 48.49 in the record: 48)
    assert [whole_years(x) for x in (48.52, 48.5, 48.495, 47.5, 18.449)] == [49, 49, 48, 48, 18]
    for age, low in ((48.52, 39.5), (48.504, 40.5), (33.5, 18.5), (32.496, 18.51)):
        d = face(age, low).age_check(18, 15)
        record = {"file": "x.jpg", "error": None, "summary": "", "faces": [{"index": 1, "age_check": d.to_dict()}]}
        out = io.StringIO()
        _print_text([record], 18, out)
        assert f"age {whole_years(age)} (80 % interval {whole_years(low)}-" in out.getvalue()
        assert f"estimated {whole_years(age)} " in d.reason, d.reason


def test_a_face_uses_the_buffers_validated_for_its_model():
    own = replace(face(30.0, 20.0), validated_buffers={18: 5, 21: 9})
    assert own.age_check(18).buffer == 5 and own.age_check(18).passed  # 30 >= 23, interval from 20
    assert own.age_check(25).buffer == 9  # unmeasured threshold: the largest of its model's own
    assert face(30.0, 20.0).age_check(18).buffer == DEFAULT_BUFFERS[18]
    assert not face(30.0, 20.0).age_check(18).passed  # 30 < 18 + 16


def test_bundled_default_model_carries_its_validated_buffers(astronaut):
    est = Estimator(scale_tta=False)
    try:
        (f,) = est.predict(astronaut)
    finally:
        est.close()
    assert est.validated_buffers == DEFAULT_BUFFERS and f.validated_buffers == DEFAULT_BUFFERS
    raw = Estimator(scale_tta=False, calibrate=False)
    raw.close()
    assert raw.validated_buffers is None  # buffers chosen on calibrated outputs vouch for nothing else


def test_default_buffer_for_unmeasured_thresholds_is_the_largest_validated():
    assert default_buffer(21) == DEFAULT_BUFFERS[21]
    assert default_buffer(16) == max(DEFAULT_BUFFERS.values())


def test_group_summary():
    yes, no = face(40.0, 30.0).age_check(18, 0), face(15.0, 10.0).age_check(18, 0)
    assert summary([yes, no, no, yes, yes, yes]) == "2 of 6 need ID"
    assert summary([yes, no]) == "1 of 2 needs ID"
    assert summary([yes, yes]) == "all 2 pass"
    assert summary([]) == "no face"


# Eight people, t = 18, buffer 7: (true age, estimated age, interval low end)
TRUE = np.array([13, 15, 17, 17, 20, 25, 30, 40])
EST = np.array([14.0, 26.0, 30.0, 24.0, 27.0, 24.0, 33.0, 45.0])
LOW = np.array([9.0, 19.0, 17.0, 19.0, 21.0, 18.0, 25.0, 36.0])
# passes: 15 (26 ≥ 25, 19 ≥ 18), 20, 30, 40; not: 13, 17 (low 17), 17 (24 < 25), 25 (24 < 25)


def test_policy_row_on_known_answers():
    r = policy_row(TRUE, EST, LOW, 18, 7)
    assert r["false_pass_under_t"] == {"n": 4, "count": 1, "rate": 0.25}
    assert r["false_pass_near"]["n"] == 4 and r["false_pass_near"]["count"] == 1  # ages 13-17
    assert r["asked_at_t_plus_buffer"] == {"n": 3, "count": 1, "rate": pytest.approx(1 / 3, abs=1e-6)}  # 25, 30, 40
    assert r["asked_reference"]["n"] == 3  # >= 25
    assert r["asked_adults_over_t"] == {"n": 4, "count": 1, "rate": 0.25}  # 20, 25, 30, 40: only 25 asked


def test_larger_buffers_never_pass_more_minors_and_choice_takes_the_smallest():
    table = policy_table(TRUE, EST, LOW, thresholds=(18,), buffers=range(0, 15))
    fp = [r["false_pass_near"]["rate"] for r in table]
    assert fp == sorted(fp, reverse=True)
    row, meets = choose_buffer(table, 18, max_false_pass=0.0)
    assert meets and row["buffer"] == 9  # the 15-year-old estimated 26 passes up to buffer 8
    table_unreachable = policy_table(TRUE, EST, LOW, thresholds=(18,), buffers=range(0, 5))
    row, meets = choose_buffer(table_unreachable, 18, max_false_pass=0.0)
    assert not meets and row["buffer"] == 0  # no buffer meets it: the smallest with the lowest rate
    shown = display_rows(table, 18, buffers=[7])
    assert len(shown) == 1 and shown[0]["false passes / faces"] == "1 / 4"


def test_wilson_upper_bound():
    assert wilson_upper(0, 100) == pytest.approx(0.0370, abs=1e-4)
    assert wilson_upper(5, 10) == pytest.approx(0.7634, abs=1e-3)
    assert wilson_upper(0, 0) is None


# ------------------------------------------------------------------------------------------------ the app page
def test_page_decision_equals_the_library_decision(astronaut):
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from streamlit.testing.v1 import AppTest

    buf = io.BytesIO()
    Image.fromarray(np.asarray(astronaut)).save(buf, format="PNG")
    data = buf.getvalue()
    estimator = Estimator()  # the app's settings: bundled default model, detector auto, default TTA
    try:
        lib = estimator.predict(data)
    finally:
        estimator.close()
    assert len(lib) == 1 and lib[0].calibrated

    at = AppTest.from_file(str(REPO / "streamlit_app.py"), default_timeout=180)
    at.run()
    at.switch_page("pages/3_Age_check.py").run()
    at.toggle(key="agecheck_consensus").set_value(False)  # one model: the second opinion is tests/test_consensus.py's
    at.file_uploader(key="agecheck_file").set_value(("astronaut.png", data, "image/png"))
    at.run()
    assert not at.exception, at.exception
    assert at.slider(key="agecheck_buffer").value == default_buffer(18)

    def page_verdict() -> tuple[bool, str]:
        passed = [s.value for s in at.success]
        asked = [w.value for w in at.warning if "Ask for ID" in w.value]
        assert len(passed) + len(asked) == 1, (passed, asked)
        text = next(m.value for m in at.markdown if m.value.startswith("**Face 1**"))
        return bool(passed), text

    for threshold, buffer in ((18, default_buffer(18)), (18, 0), (int(lib[0].age) + 1, 0), (10, 3)):
        set_age_check(at, threshold, buffer)
        expected = lib[0].age_check(threshold, buffer)
        passed, text = page_verdict()
        assert passed == expected.passed, (threshold, buffer, text)
        p = int(re.search(r"P\(age ≥ \d+\) = \*\*(\d+)%\*\*", text).group(1))
        assert p == round(100 * expected.p_at_least)
        summary_line = next(h.value for h in at.subheader if "t = " in h.value)
        assert summary_line.startswith(summary([expected]))
    assert any("What this policy does" in h.value for h in at.subheader)
    assert not at.dataframe and any("not been measured" in i.value for i in at.info)  # t = 10: no table
    at.selectbox(key="agecheck_threshold").set_value(18)
    at.slider(key="agecheck_buffer").set_value(default_buffer(18))
    at.run()
    assert not at.exception, at.exception
    table = at.dataframe[0].value  # the measured policy table for t = 18, the current buffer marked
    assert "◀ current" in table.loc[default_buffer(18)].tolist()
    assert list(table.index) == list(range(0, 21))
