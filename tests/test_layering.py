"""The package's layers: commands import package modules, which import the model and config, never the other way.

The package is laid out by subsystem, and each subsystem may import only those below it:

    model (configuration, modeling, pipeline: the files that travel beside the weights)
    utils                       argument types, file safety, the machine
    data        -> utils        corpora, tokenization, preprocessing, batching
    inference   -> model, utils                                   loading a model folder, translating, scoring
    publish     -> model, utils, inference                        model card, exports, serving
    training    -> model, utils, data, inference, publish         options, the loop, checkpoints, evaluation
    insight     -> model, utils, inference, training              attention maps, explanations, figures
    cli         -> any of them                                    one thin command per file

Read from the source (every import, including those inside functions), so that a violation fails here before it
becomes an import cycle or a Hub folder that needs more than its three code files.
"""

import ast
from pathlib import Path

from tests.helpers import REPO_ROOT

PACKAGE = REPO_ROOT / "modeling_vanilla"


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_imports(path: Path) -> set[str]:
    """Modules of this package that `path` imports, as dotted names ("modeling_vanilla" for the package itself)."""
    here = module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] == "modeling_vanilla"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "modeling_vanilla":
                continue
            for alias in node.names:  # `from . import x` / `from .cli import train` may name submodules
                candidate = f"{target}.{alias.name}"
                found.add(candidate if (REPO_ROOT / Path(*candidate.split("."))).with_suffix(".py").is_file()
                          or (REPO_ROOT / Path(*candidate.split(".")) / "__init__.py").is_file() else target)
    return found


def graph() -> dict[str, set[str]]:
    return {module_name(path): package_imports(path) for path in sorted(PACKAGE.rglob("*.py"))}


def test_the_configuration_imports_nothing_from_the_package():
    assert package_imports(PACKAGE / "configuration_vanilla.py") == set()


def test_the_modeling_file_imports_only_the_configuration():
    assert package_imports(PACKAGE / "modeling_vanilla.py") == {"modeling_vanilla.configuration_vanilla"}


def test_the_pipeline_file_imports_nothing_from_the_package():
    # It is copied next to the model code for Hub users, who have only transformers.
    assert package_imports(PACKAGE / "pipeline_translation.py") == set()


MODEL_FILES = ("configuration_vanilla", "modeling_vanilla", "pipeline_translation")
MAY_IMPORT = {
    "model": {"model"},
    "utils": {"utils"},
    "data": {"data", "utils"},
    "inference": {"inference", "model", "utils"},
    "publish": {"publish", "model", "utils", "inference"},
    "training": {"training", "model", "utils", "data", "inference", "publish"},
    "insight": {"insight", "model", "utils", "inference", "training"},
    "cli": {"cli", "model", "utils", "data", "inference", "publish", "training", "insight"},
}


def subsystem(module: str) -> str:
    """`modeling_vanilla.training.checkpoints` -> "training"; the package itself and the three model files -> "model"."""
    parts = module.split(".")
    return "model" if len(parts) == 1 or parts[1] in MODEL_FILES else parts[1]


def layering_violations(edges: dict[str, set[str]]) -> list[str]:
    return sorted(f"{name} -> {target}" for name, targets in edges.items() for target in targets
                  if subsystem(target) not in MAY_IMPORT[subsystem(name)])


def test_every_module_belongs_to_a_known_subsystem():
    assert sorted({subsystem(name) for name in graph()} - set(MAY_IMPORT)) == []


def test_each_subsystem_imports_only_the_layers_below_it():
    assert layering_violations(graph()) == []


def test_a_layering_violation_would_be_found():
    """Data reaching up into training, and publishing into training, are both reported."""
    made_up = {"modeling_vanilla.data.corpus": {"modeling_vanilla.training.options"},
               "modeling_vanilla.publish.hub": {"modeling_vanilla.training.checkpoints", "modeling_vanilla"}}
    assert layering_violations(made_up) == ["modeling_vanilla.data.corpus -> modeling_vanilla.training.options",
                                            "modeling_vanilla.publish.hub -> modeling_vanilla.training.checkpoints"]


def test_package_modules_never_import_the_commands():
    offenders = {name: sorted(i for i in imports if i.startswith("modeling_vanilla.cli"))
                 for name, imports in graph().items() if not name.startswith("modeling_vanilla.cli")}
    assert {name: imports for name, imports in offenders.items() if imports} == {}


def test_there_is_no_import_cycle():
    edges = graph()
    # The package's __init__ is what `import modeling_vanilla` runs; a submodule importing it is an edge to it.
    state, cycles = {}, []

    def visit(node, path):
        state[node] = "open"
        for target in sorted(edges.get(node, ())):
            if target not in edges:
                continue
            if state.get(target) == "open":
                cycles.append(path[path.index(target):] + [target])
            elif target not in state:
                visit(target, path + [target])
        state[node] = "done"

    for node in edges:
        if node not in state:
            visit(node, [node])
    assert cycles == []


def test_a_cycle_would_be_found():
    """The cycle search itself can fail: a made-up graph with a cycle through three modules."""
    import tests.test_layering as module

    real = module.graph
    module.graph = lambda: {"a": {"b"}, "b": {"c"}, "c": {"a"}}
    try:
        try:
            test_there_is_no_import_cycle()
        except AssertionError as error:
            assert "'a', 'b', 'c', 'a'" in str(error)
        else:
            raise AssertionError("the cycle a -> b -> c -> a was not reported")
    finally:
        module.graph = real


def test_scripts_are_thin_wrappers_of_the_commands():
    for script in sorted((REPO_ROOT / "scripts").glob("*.py")):
        tree = ast.parse(script.read_text())
        imports = [node for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))]
        assert [(getattr(node, "module", None), [a.name for a in node.names]) for node in imports] == [
            (f"modeling_vanilla.cli.{script.stem}", ["main"])
        ], script.name
        assert len(script.read_text().splitlines()) <= 12, f"{script.name} is more than a wrapper"


def test_no_code_edits_sys_path():
    for folder in ("modeling_vanilla", "scripts", "tests"):
        for path in (REPO_ROOT / folder).rglob("*.py"):
            if path.name == "test_layering.py":
                continue
            assert "sys.path.insert" not in path.read_text() and "sys.path.append" not in path.read_text(), path
