"""The documentation holds together: README.md is a front door, docs/README.md indexes every page, every relative link
of README.md and docs/**/*.md points at a file that exists (and a `#anchor` at a heading of it), and every chart in
docs/figures is shown or linked somewhere."""

import re
from pathlib import Path

import pytest

from tests.helpers import REPO_ROOT

DOCS = REPO_ROOT / "docs"
PAGES = [REPO_ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]
FENCE = re.compile(r"^```.*?^```", flags=re.S | re.M)
CODE_SPAN = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(([^)\s]+)\)")
HTML_ANCHOR = re.compile(r"<a (?:id|name)=\"([^\"]+)\"")


def prose(text: str) -> str:
    """The text outside fenced code blocks and code spans, where links are links."""
    return CODE_SPAN.sub("", FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped (hyphens and underscores kept), spaces to -."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip())  # a link's text
    return re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every anchor of a Markdown page: its headings' (with GitHub's -1, -2 for repeats) and explicit <a id>s."""
    found, seen = set(), {}
    for line in FENCE.sub("", page.read_text()).splitlines():
        heading = re.match(r"#{1,6} (.+)", line)
        if heading:
            base = slug(heading.group(1))
            found.add(base if base not in seen else f"{base}-{seen[base]}")
            seen[base] = seen.get(base, 0) + 1
    return found | set(HTML_ANCHOR.findall(page.read_text()))


def link_problems(page: Path, root: Path = REPO_ROOT) -> list[str]:
    """Each relative link of `page` whose file, or whose heading in a Markdown file, does not exist."""
    problems = []
    for target in LINK.findall(prose(page.read_text())):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ...
            continue
        path, _, anchor = target.partition("#")
        where = (page.parent / path).resolve() if path else page
        if not where.exists():
            problems.append(f"{page.relative_to(root)}: {target} (no such file)")
        elif anchor and where.suffix == ".md" and anchor not in anchors(where):
            problems.append(f"{page.relative_to(root)}: {target} (no heading #{anchor} in {path or page.name})")
    return problems


def test_the_slug_is_githubs():
    assert slug("An hour: `--recipe multi30k`") == "an-hour---recipe-multi30k"
    assert slug("DE->EN, seed 1 (2026-11-29)") == "de-en-seed-1-2026-11-29"
    assert slug("Dropout's mask, [speed](x.md)") == "dropouts-mask-speed"


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(REPO_ROOT)))
def test_every_relative_link_points_at_a_file_and_heading_that_exist(page):
    assert link_problems(page) == []


def test_a_broken_link_and_a_missing_heading_are_found(tmp_path):
    (tmp_path / "other.md").write_text("# Other\n\n## A heading, here\n")
    page = tmp_path / "page.md"
    page.write_text("[ok](other.md#a-heading-here) [gone](missing.md) [no](other.md#nowhere) `[code](missing.md)`\n"
                    "```bash\n[in a block](missing.md)\n```\n[web](https://example.com)\n")
    assert link_problems(page, root=tmp_path) == [
        "page.md: missing.md (no such file)", "page.md: other.md#nowhere (no heading #nowhere in other.md)"]


def test_every_figure_is_shown_or_linked_somewhere():
    text = "\n".join(page.read_text() for page in PAGES)
    unused = [figure.name for figure in sorted((DOCS / "figures").iterdir()) if figure.name not in text]
    assert unused == [], f"docs/figures holds charts no page shows: {unused}"


def test_the_docs_index_links_every_page():
    index = DOCS / "README.md"
    linked = {(index.parent / target.partition("#")[0]).resolve() for target in LINK.findall(prose(index.read_text()))}
    pages = {page.resolve() for page in DOCS.rglob("*.md")} - {index.resolve()}
    assert sorted(str(page.relative_to(REPO_ROOT)) for page in pages - linked) == []


def test_readme_is_a_front_door():
    readme = (REPO_ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 250, "README.md is the front door (<= 250 lines): move the detail to docs/"
    for section in ("## Set up", "## Translate with a trained model", "## Train", "## Publish to the Hub",
                    "## Fine-tune", "## Serve", "## Results"):
        assert section in readme, section
    assert readme.index("## Translate with a trained model") < readme.index("## Develop")  # use before tests


def test_readme_ci_block_holds_the_test_command():
    """.ci/run runs the command between README's ci:test markers, without the fence lines."""
    block = re.search(r"<!-- ci:test -->\n(.*?)<!-- /ci:test -->", (REPO_ROOT / "README.md").read_text(), flags=re.S)
    assert block, "README.md lost its <!-- ci:test --> block, which CI reads the test command from"
    command = [line for line in block.group(1).splitlines() if not line.startswith(("<!--", "```"))]
    assert command == ["python -m pytest -q", "python -m pytest -q -m slow"]  # the default suite, then the long checks
