"""The README is a user's guide and its links hold: README.md stays short (the long technical material lives in
docs/), it keeps the two set-up commands that CI runs, and every relative link of README.md, MODEL_CARD.md and
docs/*.md points at a file that exists and, with a #anchor, at a heading of that file (GitHub's slugs).
External links are not fetched."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path
from urllib.parse import unquote

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
MAX_README_LINES = 400
SETUP_COMMANDS = ('pip install -e ".[app]" && streamlit run streamlit_app.py',
                  'pip install torch==2.13.0 -e ".[dev]" && pytest')

FENCE = re.compile(r"^ {0,3}(```|~~~).*?^ {0,3}\1[^\n]*$", re.M | re.S)
CODE_SPAN = re.compile(r"(`+)(?!`).+?(?<!`)\1(?!`)", re.S)
# [text](target) and ![alt](target), with an optional "title"; text may hold one level of brackets (an image).
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
HTML_LINK = re.compile(r"<(?:a|img)\b[^>]*?\b(?:href|src)=\"([^\"]*)\"", re.I)
HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.+?)[ \t#]*$", re.M)
EXPLICIT_ANCHOR = re.compile(r"<a\s+(?:name|id)=\"([^\"]+)\"", re.I)


def documents() -> list[Path]:
    return [README, REPO / "MODEL_CARD.md", *sorted((REPO / "docs").rglob("*.md"))]


def strip_code(text: str) -> str:
    """The text without fenced code blocks and inline code spans (their brackets are code, not links)."""
    return CODE_SPAN.sub("", FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its rendered text lower-cased, every character that is not a letter, a
    mark, a digit, a connector (``_``), a space or ``-`` dropped, and each space turned into ``-``."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)   # a link in a heading counts by its text
    text = re.sub(r"<[^>]+>", "", text).replace("`", "").lower()
    kept = "".join(c for c in text if c in " -" or unicodedata.category(c)[0] in "LMN" or unicodedata.category(c) == "Pc")
    return kept.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every anchor a #fragment may name in ``path``: its headings' slugs (repeats get -1, -2 …) and explicit
    ``<a name=…>`` / ``<a id=…>`` anchors."""
    text = path.read_text(encoding="utf-8")
    body = FENCE.sub("", text)
    seen: dict[str, int] = {}
    found = set(EXPLICIT_ANCHOR.findall(body))
    for _, title in HEADING.findall(body):
        base = slug(title)
        n = seen.get(base, 0)
        found.add(base if n == 0 else f"{base}-{n}")
        seen[base] = n + 1
    return found


def links(path: Path) -> list[str]:
    text = strip_code(path.read_text(encoding="utf-8"))
    return LINK.findall(text) + HTML_LINK.findall(text)


def broken_links(path: Path) -> list[str]:
    """The relative links of ``path`` whose file is missing or whose #anchor names no heading of the target."""
    problems = []
    for target in links(path):
        if not target or re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http(s):, mailto: … are not fetched
            continue
        file_part, _, fragment = target.partition("#")
        resolved = (path.parent / unquote(file_part)).resolve() if file_part else path
        if not resolved.exists():
            problems.append(f"{target}: no file {resolved}")
            continue
        if fragment and (resolved.is_dir() or resolved.suffix.lower() != ".md"):
            problems.append(f"{target}: an anchor into a file that is not Markdown")
            continue
        if fragment and unquote(fragment).lower() not in {a.lower() for a in anchors(resolved)}:
            problems.append(f"{target}: no heading #{fragment} in {resolved.name}")
    return problems


def test_the_readme_is_a_short_guide():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines; move technical detail to docs/"


def test_the_readme_keeps_the_two_setup_commands():
    text = README.read_text(encoding="utf-8")
    assert "## Set-up: two commands" in text
    code = "\n".join(block.group(0) for block in FENCE.finditer(text))
    for command in SETUP_COMMANDS:
        assert re.search(rf"^{re.escape(command)}$", code, re.M), f"README.md lost the set-up command: {command}"


def test_the_docs_folder_is_linked_from_the_readme():
    linked = {(README.parent / t.partition("#")[0]).resolve() for t in links(README) if t.partition("#")[0]}
    missing = [p.relative_to(REPO) for p in documents()[2:] if p.resolve() not in linked]
    assert not missing, f"docs not linked from README.md: {missing}"


@pytest.mark.parametrize("path", documents(), ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves(path):
    assert links(path) or path != README, "no links found: the link pattern is broken"
    assert not broken_links(path), "\n".join(broken_links(path))


@pytest.mark.parametrize("heading,expected", [
    ("Set-up: two commands", "set-up-two-commands"),
    ("Engines: ONNX Runtime by default, PyTorch where needed", "engines-onnx-runtime-by-default-pytorch-where-needed"),
    ("ResNet-50 from ImageNet (MSRA initialisation)", "resnet-50-from-imagenet-msra-initialisation"),
    ("WebRTC behind firewalls (TURN)", "webrtc-behind-firewalls-turn"),
    ("`bench_app.py`: what a user waits for", "bench_apppy-what-a-user-waits-for"),
    ("Stage 5 → rejected, 160 px – 192 px", "stage-5--rejected-160-px--192-px"),
])
def test_slugs_follow_githubs_rules(heading, expected):
    assert slug(heading) == expected


def test_a_broken_link_or_anchor_is_reported(tmp_path):
    (tmp_path / "other.md").write_text("# Other\n\n## A section: with punctuation\n\n## Twice\n\n## Twice\n")
    doc = tmp_path / "doc.md"
    doc.write_text("# Doc\n\n[ok](other.md#a-section-with-punctuation) [ok2](other.md#twice-1) [self](#doc)\n"
                   "[web](https://example.com/nowhere) `[code](missing.md)`\n\n```\n[fenced](missing.md)\n```\n"
                   "[gone](missing.md) [bad anchor](other.md#no-such) ![img](images/none.png) [bad self](#nope)\n")
    assert sorted(p.split(":")[0] for p in broken_links(doc)) == ["#nope", "images/none.png", "missing.md",
                                                                  "other.md#no-such"]
