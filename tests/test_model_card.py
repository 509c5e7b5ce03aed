"""MODEL_CARD.md against the committed reports: every generated table in the card equals what the reports say
now, the defaults in the code are the ones chosen on validation, and the manifest carries the fitted calibration."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from agegender.assurance.age_check import DEFAULT_BUFFERS
from agegender.evaluation.model_card import BLOCKS, README_BLOCKS, blocks
from agegender.weights import read_manifest

REPO = Path(__file__).resolve().parents[1]
CARD = (REPO / "MODEL_CARD.md").read_text()
ASSURANCE = REPO / "reports" / "age-assurance-efficientnet_lite0"


@pytest.mark.parametrize("text,which", [(CARD, BLOCKS), ((REPO / "README.md").read_text(), README_BLOCKS)],
                         ids=["model_card", "readme"])
def test_every_generated_block_matches_the_reports(text, which):
    for name, body in blocks(which=which).items():
        found = re.search(rf"<!-- BEGIN {name} -->\n(.*?)\n<!-- END {name} -->", text, re.S)
        assert found, f"the {name} block is missing"
        assert found.group(1) == body, f"the {name} block is stale: run python -m agegender.evaluation.model_card"
    assert set(BLOCKS) >= {"accuracy", "decade", "gender", "race", "coverage", "ece", "policy", "choice"}


def test_card_quotes_the_test_numbers_it_claims():
    test = json.loads((ASSURANCE / "test.json").read_text())
    after = test["after"]["coverage"]["decade"]["20-29"]
    assert f"| 20-29 | {after['n']} |" in CARD and f"{100 * after['coverage']:.1f} %" in CARD
    utk = json.loads((REPO / "reports" / "eval-efficientnet_lite0-utkface-test-crops" / "report.json").read_text())
    assert f"| UTKFace test (crops) | {utk['metrics']['n']} | {utk['metrics']['mae']:.2f} |" in CARD


def test_narrative_numbers_are_the_validation_numbers():
    val = json.loads((ASSURANCE / "validation.json").read_text())
    old = next(r for r in val["policy"]["table"] if r["threshold"] == 18 and r["buffer"] == 7)["false_pass_near"]
    assert f"passed {old['count']} of those {old['n']} minors ({100 * old['rate']:.1f} %)" in CARD
    default = next(r for r in val["policy"]["table"] if r["threshold"] == 18 and r["buffer"] == DEFAULT_BUFFERS[18])
    assert f"two of {default['false_pass_near']['n']} thirteen-to-seventeen-year-olds" in " ".join(CARD.split())
    assert default["false_pass_near"]["count"] == 2


def test_narrative_test_numbers_are_the_test_numbers():
    test = json.loads((ASSURANCE / "test.json").read_text())
    row = next(r for r in test["policy"]["table"] if r["threshold"] == 18 and r["buffer"] == DEFAULT_BUFFERS[18])
    near = row["false_pass_near"]
    assert (f"default let {near['count']} of {near['n']} thirteen-to-seventeen-year-olds pass at t = 18 "
            f"({100 * near['rate']:.1f} %, 95 % upper bound {100 * near['upper95']:.1f} %)") in " ".join(CARD.split())


def test_code_defaults_and_manifest_are_the_fitted_ones():
    choice = json.loads((ASSURANCE / "choice.json").read_text())
    assert {int(t): b for t, b in choice["buffers"].items()} == DEFAULT_BUFFERS
    fitted = json.loads((ASSURANCE / "calibration.json").read_text())
    entry = read_manifest()["files"]["agegender_efficientnet_lite0.safetensors"]
    assert entry["calibration"] == fitted


@pytest.mark.parametrize("needle", ["Intended use", "Out of scope", "licence", "Photos of photos", "make-up",
                                    "Low light", "Profile views", "Children's gender", "do not promise"])
def test_card_has_the_required_sections(needle):
    assert needle.lower() in CARD.lower()


def test_consensus_narrative_numbers_are_the_reports():
    panel = REPO / "reports" / "age-assurance-consensus"
    choice = json.loads((panel / "choice.json").read_text())
    text = " ".join(CARD.split())
    for split, phrase in (("validation", "the bar is met on validation ({c} of {n} minors passed)"),
                          ("test", "and no minor of {n} passed on test")):
        report = json.loads((panel / f"{split}.json").read_text())
        row = next(r for r in report["table"]["18"] if r["buffers"] == choice["buffers"]["18"])["false_pass_near"]
        assert row["count"] == 0 and phrase.format(c=row["count"], n=row["n"]) in text
    test = json.loads((panel / "test.json").read_text())
    for t in ("21", "25"):
        near = test["chosen"][t]["false_pass_near"]
        assert f"{near['count']} of {near['n']} (t = {t})" in text
