"""Named recipes of `vanilla-train` (`--recipe NAME`): one YAML file of flags per recipe, in this folder and
installed with the package. A recipe is read as a `--config` file whose values are the defaults: flags given on
the command line win, and its `override` list comes before the command line's `--override` items."""

from __future__ import annotations

from pathlib import Path

import yaml

FOLDER = Path(__file__).parent


def recipe_files() -> dict[str, Path]:
    """{name: its YAML file}, for every recipe of this folder."""
    return {path.stem: path for path in sorted(FOLDER.glob("*.yaml"))}


def load_recipe(name: str) -> dict:
    """The flags of the recipe `name`, as its file writes them (field names, YAML values)."""
    files = recipe_files()
    if name not in files:
        raise KeyError(f"no recipe {name!r}: the recipes are {', '.join(files) or 'none'}")
    return yaml.safe_load(files[name].read_text(encoding="utf-8"))
