"""The documentation stays short, connected and complete: the README fits a newcomer's first
read, every relative link and anchor in README.md and docs/*.md resolves, and docs/cli.md names
every command and option that the command line's parser knows, so it cannot silently go stale."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from xbarode.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
PAGES = [README, *sorted(DOCS.glob("*.md"))]
# Reports that `xbarode study` writes; they record which code they measured, by design.
GENERATED = {DOCS / "precision.md", DOCS / "fourier.md", DOCS / "analog.md"}

README_MAX_LINES = 300

# [text](target) and ![alt](target); the target ends at whitespace or the closing parenthesis.
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    return {slug(h) for h in HEADING.findall(FENCE.sub("", page.read_text(encoding="utf-8")))}


def relative_links(page: Path) -> list[str]:
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    return [t for t in LINK.findall(text) if not re.match(r"^[a-z][a-z0-9+.-]*:", t)]


def broken_links(page: Path) -> list[str]:
    """The relative links of ``page`` whose file, or anchor in a Markdown file, is missing."""
    broken = []
    for target in relative_links(page):
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.is_file():
            broken.append(f"{target} (no file {file})")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target} (no heading #{anchor} in {file.name})")
    return broken


def commands(parser: argparse.ArgumentParser, prefix: str = "xbarode"):
    """``(command path, parser)`` for every leaf command, e.g. ``("xbarode cosim tile", p)``."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield prefix, parser
        return
    for action in subs:
        for name, child in action.choices.items():
            yield from commands(child, f"{prefix} {name}")


def long_options(parser: argparse.ArgumentParser) -> set[str]:
    return {option for action in parser._actions for option in action.option_strings
            if option.startswith("--") and option != "--help"}


def test_readme_is_short():
    lines = README.read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, (
        f"README.md has {lines} lines (at most {README_MAX_LINES}): move reference material "
        f"to docs/")


def test_the_docs_pages_exist():
    for name in ("architecture", "cli", "api", "timing", "precision", "fourier"):
        assert (DOCS / f"{name}.md").is_file(), name


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_resolve(page):
    assert relative_links(page) or page in GENERATED, f"{page.name} links nowhere"
    assert broken_links(page) == []


def test_readme_points_into_every_docs_page():
    targets = {(README.parent / t.partition("#")[0]).resolve() for t in relative_links(README)}
    for name in ("architecture", "cli", "api", "timing", "precision", "fourier"):
        assert (DOCS / f"{name}.md").resolve() in targets, f"README.md does not link {name}.md"


@pytest.mark.parametrize("page", [p for p in PAGES if p not in GENERATED],
                         ids=lambda p: p.relative_to(ROOT).as_posix())
def test_no_lab_notebook_in_the_docs(page):
    """No pointer to a design file outside the repository, no narrative of work sessions, no
    commit hashes (they go stale; the docs describe the code as it is)."""
    text = page.read_text(encoding="utf-8")
    assert not re.search(r"DESIGN(\.md| §)|shared/|\bseed/", text)
    assert not re.search(r"\bsessions?\b", text, re.IGNORECASE)
    hashes = [h for h in re.findall(r"\b[0-9a-f]{7,40}\b", text)
              if re.search(r"[a-f]", h) and re.search(r"[0-9]", h)]
    assert hashes == []


def test_cli_reference_names_every_command_and_option():
    reference = (DOCS / "cli.md").read_text(encoding="utf-8")
    parser = build_parser()
    leaves = list(commands(parser))
    assert len(leaves) > 10      # the walk reached the unit commands (generate tile, …)
    missing = [path for path, _ in leaves if f"`{path}" not in reference]
    assert missing == [], f"docs/cli.md does not document {missing}"
    undocumented = sorted(
        f"{path} {option}"
        for path, sub in [("xbarode", parser), *leaves]
        for option in long_options(sub)
        if not re.search(re.escape(option) + r"(?![\w-])", reference))
    assert undocumented == [], f"docs/cli.md does not mention {undocumented}"
