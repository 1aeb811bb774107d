"""The README and docs/: the README stays short and shows the two commands, every relative
link (and its #anchor) resolves, and every `make <target>` they name is a Makefile target."""

from __future__ import annotations

import re

import pytest

from tests.support.core import ROOT

README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
# `make [VAR=value ...] target` inside code (spans and blocks), not prose such as "make redoes".
MAKE = re.compile(r"(?:^|[\s;&|(])make\s+(?:[A-Z_]+=\S*\s+)*([a-z][a-z0-9_-]*)")


def code(text: str) -> list[str]:
    """The code in a markdown page: fenced and indented blocks, and inline spans."""
    out, prose, fenced = [], [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif fenced or line.startswith("    "):
            out.append(line)
        else:
            prose.append(line)
    out += re.findall(r"`([^`]+)`", "\n".join(prose))
    return out


def anchors(text: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces as hyphens, -N for repeats."""
    seen: dict[str, int] = {}
    out = set()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.sub(r"^```.*?^```", "", text, flags=re.M | re.S), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def makefile_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([A-Za-z0-9_.-]+)\s*:(?!=)", text, re.M))
    for phony in re.findall(r"^\.PHONY\s*:(.*)$", text, re.M):
        targets |= set(phony.split())
    return targets


def test_readme_is_short_and_shows_the_two_commands():
    size = len(README.read_bytes())
    assert size <= 12 * 1024, f"README.md is {size} bytes; keep it under 12 KB and move reference material to docs/"
    text = README.read_text()
    assert "make all" in text and "make test" in text


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    bad = []
    for target in LINK.findall(page.read_text()):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            bad.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest.read_text()):
            bad.append(f"{target}: no heading #{anchor} in {dest.relative_to(ROOT)}")
    assert not bad, f"{page.relative_to(ROOT)}: " + "; ".join(bad)


def test_every_make_target_named_exists():
    targets = makefile_targets()
    assert {"all", "test", "bundle"} <= targets  # the parse itself
    named = {}
    for page in PAGES:
        for snippet in code(page.read_text()):
            for target in MAKE.findall(snippet):
                named.setdefault(target, str(page.relative_to(ROOT)))
    assert {"all", "test"} <= set(named)
    missing = {t: where for t, where in named.items() if t not in targets}
    assert not missing, f"make targets named in the docs but not in the Makefile: {missing}"
