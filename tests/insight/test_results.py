"""Results as data (`modeling_vanilla.insight.results`): the results tables of README.md and docs/results.md are the
ones docs/results/runs.yaml makes, the data file is consistent, and a malformed one is refused with its problem named.

When the data changes, regenerate the tables:

    python -m modeling_vanilla.insight.results --fix
"""

import copy
import shutil
import subprocess

import pytest
import yaml

from modeling_vanilla.insight import results
from modeling_vanilla.publish.model_card import recipe_results_link
from tests.helpers import REPO_ROOT

FIX = "python -m modeling_vanilla.insight.results --fix"


@pytest.fixture(scope="module")
def data():
    return results.load_results(REPO_ROOT / results.DATA)


def test_the_results_blocks_of_readme_and_results_md_are_generated_from_the_data(data):
    names = {document: results.block_names((REPO_ROOT / document).read_text(encoding="utf-8"))
             for document in results.DOCUMENTS}
    assert "multi30k" in names[results.DOCUMENTS[0]], "README.md has no <!-- results:multi30k --> block"
    assert {"multi30k", "multi30k-runs"} <= set(names[results.DOCUMENTS[1]]), "docs/results.md lacks a block"
    stale = results.stale_documents(REPO_ROOT, data)
    assert not stale, f"{sorted(str(path) for path in stale)} differ from {results.DATA}: run `{FIX}`"


def test_the_summary_matches_the_means_spreads_and_margins_the_closing_note_computed_by_hand(data):
    """Stop 38 of issue 16: EN->DE mean 40.32, sd 0.56, +1.60 to +3.20 over the peer; DE->EN 42.60, 0.34, +0.91 to
    +1.57; three of five EN->DE seeds and all three DE->EN seeds at their goals."""
    rows = {line.split(" | ")[0].lstrip("| "): line for line in results.summary_table(data, "multi30k").splitlines()}
    assert "| 5 | 40.32 (0.56) | 39.81-41.00 |" in rows["EN->DE"]
    assert "3 of 5 at 40.0 or above" in rows["EN->DE"] and rows["EN->DE"].endswith("| +1.60 to +3.20 |")
    assert "| 3 | 42.60 (0.34) | 42.31-42.97 |" in rows["DE->EN"]
    assert "3 of 3 at 42.0 or above" in rows["DE->EN"] and rows["DE->EN"].endswith("| +0.91 to +1.57 |")
    assert "38.47 / 63.11 (faster hour), 37.63 / 62.44 (slow hour)" in rows["EN->DE"]  # both EN->DE peers


def test_the_spread_is_the_sample_standard_deviation():
    mean, sd = results.spread([1.0, 2.0, 3.0, 4.0])
    assert mean == 2.5 and sd == pytest.approx((5 / 3) ** 0.5)  # n - 1; the population's would be 1.118
    assert results.spread([40.0]) == (40.0, None)


def test_the_runs_table_sets_each_run_beside_its_own_peer(data):
    rows = [line for line in results.runs_table(data, "multi30k").splitlines() if line.startswith("| EN->DE | 3 |")]
    assert rows == ["| EN->DE | 3 | slow, 4200 | 42.01 / 63.80 (last 7) | 39.87 / 63.84 (bf16) | "
                    "37.63 / 62.44 (slow hour, 3473 steps) | +2.24, p = 0.001 | `0842056` |"]
    ours = results.recipe_runs(data, "multi30k")
    assert [(run["direction"], run["seed"]) for run in ours] == [("en-de", s) for s in range(1, 6)] + [
        ("de-en", s) for s in range(1, 4)]


def test_every_command_of_the_data_trains_the_run_it_is_filed_under(data):
    for run in data["runs"]:
        source, target = run["direction"].split("-")
        command = " ".join(run["command"].split())
        assert f"runs/{run['id']}" in command, run["id"]
        if run["kind"] == "ours":
            assert f"--recipe {run['recipe']} --source-lang {source} --target-lang {target}" in command, run["id"]
            assert f"--seed {run['seed']} " in command, run["id"]
            assert ("--test-files" in command) == ("evaluate" not in run), f"{run['id']}: who scored test2016?"
        else:
            assert f"marian_multi30k.py {source} {target} " in command, run["id"]


def test_every_commit_the_data_names_is_in_this_repository(data):
    git = shutil.which("git")
    if git is None or not (REPO_ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    shallow = subprocess.run([git, "rev-parse", "--is-shallow-repository"], cwd=REPO_ROOT, capture_output=True,
                             text=True).stdout.strip()
    if shallow == "true":
        pytest.skip("a shallow clone does not hold the runs' commits")
    commits = {run[key] for run in data["runs"] for key in ("commit", "recorded_in") if run.get(key)}
    assert len(commits) >= 8
    missing = [commit for commit in sorted(commits) if subprocess.run(
        [git, "cat-file", "-e", f"{commit}^{{commit}}"], cwd=REPO_ROOT, capture_output=True).returncode != 0]
    assert missing == []


def test_the_card_of_a_recipe_run_links_to_the_anchor_of_the_recipes_table():
    page, _, anchor = recipe_results_link("multi30k").partition("#")
    assert anchor == results.recipe_anchor("multi30k")
    runs_block = results.generated_blocks(results.load_results(REPO_ROOT / results.DATA), page)["multi30k-runs"]
    assert f'<a id="{anchor}"></a>' in runs_block.splitlines()[0]  # on the table's header row
    assert f'<a id="{anchor}"></a>' in (REPO_ROOT / page).read_text(encoding="utf-8")


def test_links_of_a_block_are_relative_to_the_file_that_holds_it(data):
    readme = results.generated_blocks(data, "README.md")["multi30k-runs"]
    docs = results.generated_blocks(data, "docs/results.md")["multi30k-runs"]
    assert "[docs/results/runs.yaml](docs/results/runs.yaml)" in readme
    assert "(docs/figures/multi30k_test_bleu_by_seed_vs_peer.png)" in readme
    assert "[docs/results/runs.yaml](results/runs.yaml)" in docs
    assert "(figures/multi30k_test_bleu_by_seed_vs_peer.png)" in docs
    assert all(len(line) <= 120 for line in docs.splitlines() if not line.startswith(("|", "![")))


def _without(data, run_id, field):
    broken = copy.deepcopy(data)
    del next(run for run in broken["runs"] if run["id"] == run_id)[field]
    return broken


@pytest.mark.parametrize("change, message", [
    (lambda d: _without(d, "q19-ende-s3", "peer"), "runs[2] (q19-ende-s3) has no `peer`"),
    (lambda d: _without(d, "q19-ende-s3", "commit"), "runs[2] (q19-ende-s3) has no `commit`"),
    (lambda d: {**d, "runs": [r for r in d["runs"] if r["id"] != "q19-peer-ende-60"]},
     "q19-ende-s3: its peer 'q19-peer-ende-60' is not a run of kind peer in this file"),
    (lambda d: {**d, "runs": d["runs"] + [d["runs"][0]]}, "(q18-ende-wd01-s1): the id is used twice"),
    (lambda d: {**d, "runs": [{**r, "test": {"bleu": "40.0"}} if r["id"] == "q21-ende-s5" else r
                              for r in d["runs"]]}, "(q21-ende-s5): `test` needs numbers `bleu` and `chrf`"),
    (lambda d: {**d, "runs": [{**r, "machine": "laptop"} if r["id"] == "q21-deen-s3" else r for r in d["runs"]]},
     "(q21-deen-s3): machine 'laptop' is not under `machines`"),
    (lambda d: {**d, "runs": [{**r, "peer": "q16-nonamx-peer-deen-60"} if r["id"] == "q21-ende-s5" else r
                              for r in d["runs"]]}, "q21-ende-s5: its peer 'q16-nonamx-peer-deen-60' translates de-en"),
    (lambda d: [d], "it must be a mapping with `runs`"),
])
def test_malformed_data_is_refused_naming_the_run_and_the_field(data, tmp_path, change, message):
    path = tmp_path / "runs.yaml"
    path.write_text(yaml.safe_dump(change(data), sort_keys=False), encoding="utf-8")
    with pytest.raises(results.ResultsDataError, match="the results data .*runs.yaml is malformed") as error:
        results.load_results(path)
    assert message in str(error.value)


def test_blocks_are_filled_between_their_markers_and_nothing_else_changes():
    text = ("# Title\n\nbefore\n<!-- results:a -->\nold\n<!-- /results:a -->\n"
            "after, <!-- results:b --><!-- /results:b -->\n")
    filled = results.fill_blocks(text, {"a": "A table", "b": "B"}, "x.md")
    assert filled == ("# Title\n\nbefore\n<!-- results:a -->\n\nA table\n\n<!-- /results:a -->\n"
                      "after, <!-- results:b -->\n\nB\n\n<!-- /results:b -->\n")
    assert results.fill_blocks(filled, {"a": "A table", "b": "B"}, "x.md") == filled  # a second pass is a no-op


@pytest.mark.parametrize("text, message", [
    ("<!-- results:a -->\nno end\n", "x.md: results:a opens and is never closed (<!-- /results:a -->)"),
    ("<!-- results:zzz -->\n<!-- /results:zzz -->", "x.md: no generated block is named 'zzz' (known: ['a'])"),
    ("<!-- /results:a -->", "x.md: <!-- /results:a --> closes no open block"),
    ("<!-- results:a -->\n<!-- results:a -->", "x.md: results:a is not closed before results:a opens"),
])
def test_broken_markers_are_named(text, message):
    with pytest.raises(results.ResultsDataError) as error:
        results.fill_blocks(text, {"a": "A"}, "x.md")
    assert str(error.value) == message


def test_the_command_lists_stale_blocks_and_fix_rewrites_them(tmp_path, capsys):
    (tmp_path / "docs" / "results").mkdir(parents=True)
    shutil.copy(REPO_ROOT / results.DATA, tmp_path / results.DATA)
    (tmp_path / "README.md").write_text("Intro.\n\n<!-- results:multi30k -->\nold\n<!-- /results:multi30k -->\nEnd.\n")
    (tmp_path / "docs" / "results.md").write_text("No blocks here.\n")
    assert results.main(["--root", str(tmp_path)]) == 1
    assert f"stale: {tmp_path / 'README.md'}" in capsys.readouterr().out
    assert "old" in (tmp_path / "README.md").read_text()  # checking changes nothing
    assert results.main(["--root", str(tmp_path), "--fix"]) == 0
    readme = (tmp_path / "README.md").read_text()
    assert readme.startswith("Intro.\n\n<!-- results:multi30k -->\n\n| direction | seeds |") and readme.endswith(
        "<!-- /results:multi30k -->\nEnd.\n")
    assert (tmp_path / "docs" / "results.md").read_text() == "No blocks here.\n"
    assert results.main(["--root", str(tmp_path)]) == 0
    (tmp_path / results.DATA).write_text("runs: [\n")
    assert results.main(["--root", str(tmp_path)]) == 2
    assert "is not valid YAML" in capsys.readouterr().err
