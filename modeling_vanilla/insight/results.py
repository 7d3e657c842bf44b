"""Results as data: the results tables and charts of the docs, generated from the measured runs in one YAML file.

docs/results/runs.yaml holds every measured run of a recipe (command, commit, machine, scores) and the peer each run
is set against; its header names the fields. From it:
- `summary_table`: per direction, the seeds' test BLEU (mean, sample standard deviation, range) against the goal
  and the peer: the block `results:NAME` of README.md and docs/results.md;
- `runs_table`: every run beside its peer, the block `results:NAME-runs` of docs/results.md, whose anchor
  `recipe-NAME` the model card of a recipe run points to (`publish.model_card.recipe_results_link`);
- `plot_test_bleu_by_seed`: test BLEU per seed against the peer, a panel per direction (`vanilla-figures --results`).

A block lies between the lines `<!-- results:NAME -->` and `<!-- /results:NAME -->`; nothing else of the Markdown
files is touched. From the repository root:

    python -m modeling_vanilla.insight.results          # list the blocks that differ from the data, change nothing
    python -m modeling_vanilla.insight.results --fix    # rewrite them
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

from ..utils.arguments import replacing

DATA = Path("docs/results/runs.yaml")  # relative to the repository root
DOCUMENTS = (Path("README.md"), Path("docs/results.md"))  # the files whose blocks are generated
RUN_FIELDS = ("id", "kind", "recipe", "direction", "machine", "command", "minutes", "updates", "test")
OURS_FIELDS = ("seed", "hour", "commit", "val", "peer")
DATA_LINK = ("Generated from [docs/results/runs.yaml]({data}) (each run's command, commit, machine and scores) by "
             "`python -m modeling_vanilla.insight.results --fix`.")
BLOCK = re.compile(r"<!-- (/?)results:([\w-]+) -->")


class ResultsDataError(ValueError):
    """The results data file is malformed: the message names the file, the run and the field."""


def recipe_anchor(recipe: str) -> str:
    """The HTML anchor of a recipe's runs table in docs/results.md (`docs/results.md#recipe-multi30k`)."""
    return f"recipe-{recipe}"


def load_results(path: str | Path) -> dict:
    """The results data file, checked: every problem is named at once (`ResultsDataError`)."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ResultsDataError(f"cannot read the results data {path}: {error.strerror or error}") from None
    except yaml.YAMLError as error:
        raise ResultsDataError(f"the results data {path} is not valid YAML: {error}") from None
    problems = data_problems(data)
    if problems:
        raise ResultsDataError(f"the results data {path} is malformed:\n- " + "\n- ".join(problems))
    return data


def data_problems(data) -> list[str]:
    """What is missing or inconsistent in the results data: [] when the tables can be made from it."""
    if not isinstance(data, dict) or not all(isinstance(data.get(key), kind) for key, kind in
                                             (("runs", list), ("recipes", dict), ("machines", dict))):
        return ["it must be a mapping with `runs` (a list), `recipes` and `machines` (mappings)"]
    problems, runs = [], {}
    for i, run in enumerate(data["runs"]):
        name = f"runs[{i}]" + (f" ({run['id']})" if isinstance(run, dict) and run.get("id") else "")
        if not isinstance(run, dict):
            problems.append(f"{name} is not a mapping of fields")
            continue
        required = RUN_FIELDS + (OURS_FIELDS if run.get("kind") == "ours" else ())
        problems += [f"{name} has no `{field}`" for field in required if run.get(field) in (None, "")]
        if run.get("kind") not in ("ours", "peer"):
            problems.append(f"{name}: `kind` must be ours or peer, got {run.get('kind')!r}")
        for field, known in (("recipe", data["recipes"]), ("machine", data["machines"])):
            if run.get(field) not in (None, "") and run[field] not in known:
                problems.append(f"{name}: {field} {run[field]!r} is not under `{field}s` (known: {sorted(known)})")
        for split in ("test", "val"):
            scores = run[split] if isinstance(run.get(split), dict) else {}
            if split in run and not all(isinstance(scores.get(key), (int, float)) for key in ("bleu", "chrf")):
                problems.append(f"{name}: `{split}` needs numbers `bleu` and `chrf`, got {scores!r}")
        if run.get("id") in runs:
            problems.append(f"{name}: the id is used twice")
        runs[run.get("id")] = run
    for run in data["runs"]:
        peer = runs.get(run.get("peer")) if isinstance(run, dict) and run.get("peer") else None
        if isinstance(run, dict) and run.get("peer") and (peer is None or peer.get("kind") != "peer"):
            problems.append(f"{run.get('id')}: its peer {run['peer']!r} is not a run of kind peer in this file")
        elif peer is not None and peer.get("direction") != run.get("direction"):
            problems.append(f"{run.get('id')}: its peer {run['peer']!r} translates {peer.get('direction')}")
    return problems


def recipe_runs(data: dict, recipe: str, kind: str = "ours") -> list[dict]:
    """The runs of a recipe, of one kind, by direction (in the order of first appearance) and seed."""
    runs = [run for run in data["runs"] if run["recipe"] == recipe and run["kind"] == kind]
    if not runs:
        raise ResultsDataError(f"the results data has no run of kind {kind!r} of the recipe {recipe!r}")
    order = {direction: i for i, direction in enumerate(dict.fromkeys(run["direction"] for run in runs))}
    return sorted(runs, key=lambda run: (order[run["direction"]], run.get("seed") or 0))


def direction_label(direction: str) -> str:
    """en-de -> EN->DE."""
    return "->".join(part.upper() for part in direction.split("-"))


def peer_of(data: dict, run: dict) -> dict:
    return next(other for other in data["runs"] if other["id"] == run["peer"])


def _scores(scores: dict) -> str:
    return f"{scores['bleu']:.2f} / {scores['chrf']:.2f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[bool]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---:" if r else "---" for r in right) + " |"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def spread(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (n - 1; None for one value) of the seeds' scores."""
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else None


def _margin(low: float, high: float) -> str:
    return f"{low:+.2f}" if round(low, 2) == round(high, 2) else f"{low:+.2f} to {high:+.2f}"


def summary_table(data: dict, recipe: str) -> str:
    """Per direction: seeds, test BLEU mean (sd) and range, chrF mean, seeds at the goal, the peers, the margins."""
    goals, rows = data["recipes"][recipe].get("goal_test_bleu") or {}, []
    runs = recipe_runs(data, recipe)
    for direction in dict.fromkeys(run["direction"] for run in runs):
        mine = [run for run in runs if run["direction"] == direction]
        bleu = [run["test"]["bleu"] for run in mine]
        mean, sd = spread(bleu)
        goal = goals.get(direction)
        peers = list({run["peer"]: peer_of(data, run) for run in mine}.values())
        margins = [run["test"]["bleu"] - peer_of(data, run)["test"]["bleu"] for run in mine]
        rows.append([
            direction_label(direction), str(len(mine)), f"{mean:.2f}" + (f" ({sd:.2f})" if sd is not None else ""),
            f"{min(bleu):.2f}-{max(bleu):.2f}", f"{statistics.mean(run['test']['chrf'] for run in mine):.2f}",
            "-" if goal is None else f"{sum(b >= goal for b in bleu)} of {len(bleu)} at {goal:.1f} or above",
            ", ".join(f"{_scores(peer['test'])} ({peer['hour']} hour)" for peer in peers),
            _margin(min(margins), max(margins)),
        ])
    header = ("direction", "seeds", "test BLEU, mean (sd)", "range", "test chrF, mean", "goal",
              "peer's test BLEU / chrF", "ours - peer, BLEU")
    return _table(header, rows, (False, True, True, True, True, False, False, True))


def runs_table(data: dict, recipe: str) -> str:
    """Every run of the recipe: its hour and updates, val and test scores, the peer it is set against, its commit."""
    rows = []
    for run in recipe_runs(data, recipe):
        peer = peer_of(data, run)
        val = run["val"]
        decode = run["test"].get("decode")
        p = f", p = {run['peer_bootstrap_p']:g}" if run.get("peer_bootstrap_p") is not None else ""
        rows.append([
            direction_label(run["direction"]), str(run["seed"]), f"{run['hour']}, {run['updates']}",
            _scores(val) + (f" (last {val['average_last']})" if val.get("average_last") else ""),
            _scores(run["test"]) + (f" ({decode})" if decode else ""),
            f"{_scores(peer['test'])} ({peer['hour']} hour, {peer['updates']} steps)",
            f"{run['test']['bleu'] - peer['test']['bleu']:+.2f}{p}", f"`{run['commit']}`",
        ])
    header = ("direction", "seed", "hour, updates", "val BLEU / chrF", "test BLEU / chrF", "peer's test BLEU / chrF",
              "ours - peer, BLEU", "commit")
    return _table(header, rows, (False, True, False, True, True, True, True, False))


def _machine(machine: dict) -> str:
    """2-core AMD EPYC (AVX512-BF16, no AMX)."""
    features = [machine.get("bf16") or "no bf16", "AMX" if machine.get("amx") else "no AMX"]
    return f"{machine['cores']}-core {machine['cpu']} ({', '.join(features)})"


def _updates_by_hour(runs: Sequence[dict]) -> str:
    """"7257-7364 updates in a faster hour, 4134-4211 in a slow hour" (of the runs given)."""
    hours = {}
    for run in runs:
        hours.setdefault(run["hour"], []).append(run["updates"])
    spans = [f"{min(n)}-{max(n)}" if min(n) != max(n) else str(n[0]) for n in hours.values()]
    return ", ".join(f"{span}{' updates' if i == 0 else ''} in a {hour} hour"
                     for i, (span, hour) in enumerate(zip(spans, hours)))


def _setting(data: dict, recipe: str) -> str:
    """What every run of the recipe shares: the test set, the machine, what "hour" means, the peer."""
    about = data["recipes"][recipe]
    machines = sorted({run["machine"] for run in data["runs"] if run["recipe"] == recipe})
    where = "; ".join(_machine(data["machines"][name]) for name in machines)
    return (f"Test set: {about.get('test_set', '-')}, each run scored once; machine: {where}; hour: the machine's "
            f"speed in the hour of the run (ours made {_updates_by_hour(recipe_runs(data, recipe))}); the peer: "
            f"{about.get('peer', '-')}.")


def _paragraph(text: str) -> str:
    """`text` wrapped at 120 columns, never inside a `code span` or a link."""
    glued = re.sub(r"`[^`]*`|\[[^\]]*\]\([^)]*\)", lambda span: span.group(0).replace(" ", "\0"), text)
    return textwrap.fill(glued, width=120, break_long_words=False, break_on_hyphens=False).replace("\0", " ")


def generated_blocks(data: dict, document: str | Path = "README.md") -> dict[str, str]:
    """The text of every block, by name: `NAME` (the summary) and `NAME-runs` (every run, the chart) per recipe, its
    links relative to `document` (a path from the repository root)."""

    def link(path: str) -> str:
        return os.path.relpath(path, Path(document).parent).replace(os.sep, "/")

    data_link = DATA_LINK.format(data=link(str(DATA)))
    blocks = {}
    for recipe in data["recipes"]:
        goal = data["recipes"][recipe].get("goal_note")
        blocks[recipe] = summary_table(data, recipe) + "\n\n" + _paragraph(
            f"sd: the seeds' sample standard deviation{f'; goal: {goal}' if goal else ''}. {_setting(data, recipe)} "
            f"{data_link}")
        anchor = f'<a id="{recipe_anchor(recipe)}"></a>'  # in the header cell: a link lands on the table
        runs = runs_table(data, recipe).replace("| direction |", f"| {anchor}direction |", 1)
        blocks[f"{recipe}-runs"] = runs + "\n\n" + _paragraph(
            "val: BLEU / chrF of the final model (the mean of the last k checkpoints, k chosen on val); test: with the "
            "precision of the decode; p: sacreBLEU's paired bootstrap of the gap to the peer (1000 resamples), where "
            f"it was run; commit: the tree the run ran at. {data_link}"
        ) + f"\n\n![Test BLEU per seed against the peer, recipe {recipe}]({link(f'docs/figures/{chart_name(recipe)}')})"
    return blocks


def fill_blocks(text: str, blocks: dict[str, str], source: str | Path) -> str:
    """`text` (of the file `source`) with each block between `<!-- results:NAME -->` and `<!-- /results:NAME -->`
    set to `blocks[NAME]`; a block opened and not closed, or of an unknown name, is an error naming it."""
    out, position, opened = [], 0, None
    for match in BLOCK.finditer(text):
        closing, name = match.group(1) == "/", match.group(2)
        if not closing:
            if opened is not None:
                raise ResultsDataError(f"{source}: results:{opened} is not closed before results:{name} opens")
            if name not in blocks:
                raise ResultsDataError(f"{source}: no generated block is named {name!r} (known: {sorted(blocks)})")
            out.append(text[position : match.end()] + "\n\n" + blocks[name] + "\n\n")
            opened = name
        elif name != opened:
            raise ResultsDataError(f"{source}: <!-- /results:{name} --> closes no open block")
        else:
            opened = None
        position = match.start() if closing else match.end()
    if opened is not None:
        raise ResultsDataError(f"{source}: results:{opened} opens and is never closed (<!-- /results:{opened} -->)")
    return "".join(out) + text[position:]


def block_names(text: str) -> list[str]:
    """The names of the blocks a Markdown text holds, in order."""
    return [match.group(2) for match in BLOCK.finditer(text) if not match.group(1)]


def stale_documents(root: str | Path, data: dict) -> dict[Path, str]:
    """The documents whose blocks differ from what the data makes, with their regenerated text."""
    root, stale = Path(root), {}
    for document in DOCUMENTS:
        path = root / document
        text = path.read_text(encoding="utf-8")
        fixed = fill_blocks(text, generated_blocks(data, document), document)
        if fixed != text:
            stale[path] = fixed
    return stale


def chart_name(recipe: str) -> str:
    return f"{recipe}_test_bleu_by_seed_vs_peer.png"


def plot_test_bleu_by_seed(data: dict, recipe: str):
    """Test BLEU of every seed (the line "ours") and of the peer each is set against ("peer"), a panel per direction,
    with the goal and the seeds' mean; the tick labels name each run's hour (the machine's speed)."""
    from .figures import new_figure

    runs = recipe_runs(data, recipe)
    directions = list(dict.fromkeys(run["direction"] for run in runs))
    figure = new_figure(figsize=(4.2 * len(directions), 4.0))
    goals = data["recipes"][recipe].get("goal_test_bleu") or {}
    for ax, direction in zip(figure.subplots(1, len(directions), squeeze=False)[0], directions):
        mine = [run for run in runs if run["direction"] == direction]
        x = list(range(len(mine)))
        bleu = [run["test"]["bleu"] for run in mine]
        ax.plot(x, bleu, "o", color="C0", label="ours")
        ax.plot(x, [peer_of(data, run)["test"]["bleu"] for run in mine], "x", color="C3", markersize=8, label="peer")
        ax.axhline(statistics.mean(bleu), color="C0", linestyle=":", linewidth=1, label="ours, mean of the seeds")
        if direction in goals:
            ax.axhline(goals[direction], color="gray", linestyle="--", linewidth=1, label="goal")
        ax.set_xticks(x, [f"seed {run['seed']}\n{run['hour']} hour" for run in mine], fontsize=8)
        ax.set_xlim(-0.6, len(mine) - 0.4)
        ax.set_title(direction_label(direction), fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    figure.legend(*figure.axes[0].get_legend_handles_labels(), loc="outside lower center", ncol=4, fontsize=8)
    test_set = data["recipes"][recipe].get("test_set", "test set").split(" (")[0]
    figure.axes[0].set_ylabel(f"test BLEU ({test_set})")
    figure.suptitle(f"Recipe {recipe}: test BLEU per seed and of the peer it is set against", fontsize=10)
    return figure


def make_result_charts(data: dict, out_dir: str | Path, dpi: int = 90) -> list[Path]:
    """Write the chart of every recipe into out_dir (docs/figures/ in the repository)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for recipe in data["recipes"]:
        plot_test_bleu_by_seed(data, recipe).savefig(out_dir / chart_name(recipe), dpi=dpi)
        written.append(out_dir / chart_name(recipe))
    return written


def main(argv=None) -> int:
    """0 when every block matches the data (or --fix rewrote them), 1 when some are stale, 2 on bad data."""
    parser = argparse.ArgumentParser(prog="python -m modeling_vanilla.insight.results",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--fix", action="store_true", help="rewrite the stale blocks (default: list them)")
    parser.add_argument("--root", type=Path, default=Path("."), help="the repository root (default: .)")
    args = parser.parse_args(argv)
    try:
        stale = stale_documents(args.root, load_results(args.root / DATA))
    except (ResultsDataError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for path, text in stale.items():
        if args.fix:
            with replacing(path) as out:
                out.write(text)
        print(f"{'rewrote' if args.fix else 'stale'}: {path}")
    if stale and not args.fix:
        print("run: python -m modeling_vanilla.insight.results --fix", file=sys.stderr)
    return 1 if stale and not args.fix else 0


if __name__ == "__main__":
    sys.exit(main())
