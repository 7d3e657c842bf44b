"""docs/paper_map.md: every code link carries a line anchor, and every anchor points at the definition it names.

A code link is written [`NAME`](../path/to/file.py#L123), where NAME is
- a module-level class, function or constant (`class NAME`, `def NAME`, `NAME = ...`, `NAME: T = ...`);
- `Class.member`, a method or a class attribute (config fields: `VanillaTransformerConfig.dropout`);
- `--flag`, a command-line option, anchored at the line that declares it (`add_argument("--flag", ...)`, or the
  options dataclass field `flag: T = option(...)`).

When code moves, recompute the anchors from the names (and, for a name that left its file, the file: it is looked
for in modeling_vanilla/ and scripts/, and must be found in exactly one place):

    python -m tests.test_paper_map --fix      # rewrite docs/paper_map.md
    python -m tests.test_paper_map            # list the stale or broken links, change nothing
"""

import ast
import re
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
PAPER_MAP = REPO_ROOT / "docs" / "paper_map.md"
SEARCHED = ("modeling_vanilla", "scripts")  # where a name that left its file is looked for
LINK = re.compile(r"\[([^\]]*)\]\(([^)\s]+)\)")
# A link whose text is a file's name ([batching.py](../modeling_vanilla/data/batching.py)) opens the whole file: no anchor.
CODE_LINK = re.compile(r"\[`?(--[\w-]+|[A-Za-z_][\w.]*(?<!\.py))`?\]\((\.\./[^)#\s]+\.py)(?:#L(\d+))?\)")
FIX = "python -m tests.test_paper_map --fix"


def definition_line(path: Path, name: str) -> int | None:
    """The line that defines `name` in the Python file `path`, or None (see the module docstring for the forms)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    if name.startswith("--"):
        lines = [node.args[0].lineno for node in ast.walk(tree)
                 if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "add_argument"
                 and node.args and isinstance(node.args[0], ast.Constant) and node.args[0].value == name]
        field = name[2:].replace("-", "_")  # or a field of an options dataclass: `max_tokens: int = option(...)`
        lines += [node.lineno for node in ast.walk(tree) if isinstance(node, ast.AnnAssign)
                  and isinstance(node.target, ast.Name) and node.target.id == field
                  and isinstance(node.value, ast.Call) and getattr(node.value.func, "id", None) == "option"]
        return min(lines) if lines else None
    *owners, last = name.split(".")
    body = tree.body
    for owner in owners:
        classes = [node for node in body if isinstance(node, ast.ClassDef) and node.name == owner]
        if not classes:
            return None
        body = classes[0].body
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name == last:
            return node.lineno
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        if any(isinstance(target, ast.Name) and target.id == last for target in targets):
            return node.lineno
    return None


def line_defines(line: str, name: str) -> bool:
    """The text check, independent of the AST: the anchored line reads like the definition of `name`."""
    if name.startswith("--"):
        return f'"{name}"' in line or re.match(rf"\s*{name[2:].replace('-', '_')}\s*:.*\boption\(", line) is not None
    last = name.rpartition(".")[2]
    return re.match(rf"\s*((async\s+)?def|class)\s+{re.escape(last)}\b|\s*{re.escape(last)}\s*[:=]", line) is not None


def code_links(text: str) -> list[re.Match]:
    return list(CODE_LINK.finditer(text))


def locate(name: str, linked: Path) -> tuple[Path | None, int | None]:
    """Where `name` is defined: in the linked file if it is there, else in the one other file that defines it."""
    if linked.is_file() and (line := definition_line(linked, name)) is not None:
        return linked, line
    found = [(path, line) for folder in SEARCHED for path in sorted((REPO_ROOT / folder).rglob("*.py"))
             if (line := definition_line(path, name)) is not None]
    return found[0] if len(found) == 1 else (None, None)


def fix_anchors(text: str) -> tuple[str, list[str]]:
    """The map with every code link's file and line recomputed from its name, and the links that could not be."""
    problems = []

    def replace(match: re.Match) -> str:
        name, target, _ = match.groups()
        path, line = locate(name, (PAPER_MAP.parent / target).resolve())
        if path is None:
            problems.append(f"{name}: not defined in {target}, nor in exactly one file of {', '.join(SEARCHED)}")
            return match.group(0)
        relative = (Path("..") / path.relative_to(REPO_ROOT)).as_posix()
        return f"[`{name}`]({relative}#L{line})"  # code links are written with the name in backticks

    return CODE_LINK.sub(replace, text), problems


def table_rows(text: str) -> list[list[str]]:
    """The body rows of the map's tables, as cells (the header and separator rows left out)."""
    rows = []
    for line in text.splitlines():
        if line.startswith("|") and not line.startswith("| Paper") and not line.startswith("| ---"):
            rows.append([cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]])
    return rows


# The tests


def test_every_link_target_exists():
    text = PAPER_MAP.read_text(encoding="utf-8")
    missing = [target for _, target in LINK.findall(text)
               if not re.match(r"[a-z]+://", target)
               and not (PAPER_MAP.parent / target.split("#")[0]).resolve().exists()]
    assert missing == [], f"links to files that do not exist: {missing}"


def test_every_code_anchor_points_at_the_named_definition():
    text = PAPER_MAP.read_text(encoding="utf-8")
    links = code_links(text)
    assert len(links) >= 60
    wrong = []
    for match in links:
        name, target, anchor = match.groups()
        path = (PAPER_MAP.parent / target).resolve()
        if anchor is None:
            wrong.append(f"{name}: {target} has no #L anchor")
            continue
        lines = path.read_text(encoding="utf-8").splitlines()
        line = lines[int(anchor) - 1] if 0 < int(anchor) <= len(lines) else ""
        if not line_defines(line, name) or definition_line(path, name) != int(anchor):
            wrong.append(f"{name}: {target}#L{anchor} reads {line.strip()!r}; defined at "
                         f"{definition_line(path, name)}")
    assert wrong == [], f"stale anchors, run `{FIX}`:\n" + "\n".join(wrong)


def test_every_code_entry_links_with_an_anchor():
    """Each row that names code has at least one anchored link, and no link to a Python file lacks an anchor."""
    text = PAPER_MAP.read_text(encoding="utf-8")
    rows = table_rows(text)
    assert len(rows) >= 40
    unlinked = [row[0] for row in rows if row[1] and not code_links(row[1])]
    assert unlinked == [], f"rows whose Code column links nothing: {unlinked}"
    bare = [target for name, target in LINK.findall(text) if target.endswith(".py") and name != Path(target).name]
    assert bare == [], f"links to Python files without a line anchor: {bare}"
    # A line anchor the checks above cannot read (its text is not one name, e.g. "`--flag a|b`") goes stale unseen.
    unread = [m.group(0) for m in LINK.finditer(text) if "#L" in m.group(2) and not CODE_LINK.fullmatch(m.group(0))]
    assert unread == [], f"line anchors whose link text is not one name the checks can follow: {unread}"


def test_sections_5_4_and_6_1_have_one_hop_homes():
    """Label smoothing links the loss that defines it, dropout the places that apply it; beam search its settings,
    checkpoint averaging the function that averages."""
    rows = {row[0]: row[1] for row in table_rows(PAPER_MAP.read_text(encoding="utf-8"))}

    def linked_names(prefix: str, words: str) -> set[str]:
        cells = [code for paper, code in rows.items() if paper.startswith(prefix) and words in paper]
        assert len(cells) == 1, f"no single row for {prefix} {words}"
        return {match.group(1) for match in code_links(cells[0])}

    assert {"VanillaTransformerForConditionalGeneration.forward", "--label-smoothing"} <= linked_names(
        "5.4", "label smoothing")
    assert {"VanillaSublayers.add_and_norm", "VanillaStack.embed", "VanillaTransformerConfig.dropout"} <= (
        linked_names("5.4", "dropout"))
    assert {"VanillaTransformerForConditionalGeneration.__init__", "--num-beams"} <= linked_names("6.1", "beam")
    assert {"average_checkpoints", "--average-last"} <= linked_names("6.1", "averaging")


def test_the_tests_the_map_names_exist():
    defined = {node.name for path in (REPO_ROOT / "tests").rglob("test_*.py")
               for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
               if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")}
    named = set(re.findall(r"\btest_\w+", PAPER_MAP.read_text(encoding="utf-8"))) - {"test_paper_map"}
    assert sorted(named - defined) == []


def test_the_generator_restores_every_anchor():
    text = PAPER_MAP.read_text(encoding="utf-8")
    stale = CODE_LINK.sub(lambda match: f"[`{match.group(1)}`]({match.group(2)}#L1)", text)
    assert stale != text
    fixed, problems = fix_anchors(stale)
    assert problems == [] and fixed == text


def main(argv: list[str]) -> int:
    text = PAPER_MAP.read_text(encoding="utf-8")
    fixed, problems = fix_anchors(text)
    for problem in problems:
        print(f"paper_map.md: {problem}", file=sys.stderr)
    changed = sum(old.group(0) != new.group(0) for old, new in zip(code_links(text), code_links(fixed)))
    if "--fix" in argv:
        PAPER_MAP.write_text(fixed, encoding="utf-8")
        print(f"{PAPER_MAP}: {changed} of {len(code_links(text))} links rewritten, {len(problems)} left to fix by hand")
    else:
        print(f"{changed} of {len(code_links(text))} links are stale; run `{FIX}`")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
