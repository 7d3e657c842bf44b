"""The command-line parser of the training commands: transformers' `HfArgumentParser` over typed option
dataclasses, with what `vanilla-train` and `vanilla-finetune` add to it.

- A field declared with `option(...)` may name its checking type (`check=`, an argparse type of `utils.arguments`,
  so that 0 or -1 where meaningless ends the command with the flag's name), its section of `--help` (`group=`), and
  `positional=True`. `HfArgumentParser` would give a bare `int` or `float`.
- `--config FILE` (.yaml, .yml or .json): option values that become the defaults, so that a flag given on the
  command line wins. A `--recipe` is such a file (`training/recipes/`). A list option marked `merge=True`
  (`--override`) adds the command line's items after the files' instead of replacing them.
- Old flag names work for one release (`deprecate`), each naming the flag that replaces it.
- Errors name an option once, the way README writes it: `--max-tokens`, not `--max_tokens/--max-tokens`.

`parse_namespace` reads the command line into a namespace; the command resolves what depends on the machine
there, then `build` makes each (frozen) options dataclass from it.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import importlib.util
import json
import re
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import MappingProxyType

import yaml


def load_hf_argument_parser() -> type:
    """transformers' `HfArgumentParser`. Importing transformers takes a second or more, and makes this package
    register its model, which imports torch (modeling_vanilla/__init__.py): `--help` would take seconds. The
    parser's own module needs only the standard library and yaml, so it is run alone from transformers' installed
    files, unless transformers is imported already (then that costs nothing) or the file needs more of it."""
    if "transformers" not in sys.modules:
        found = importlib.util.find_spec("transformers")
        for folder in (found.submodule_search_locations or []) if found else []:
            name = f"{__name__}._hf_argparser"
            spec = importlib.util.spec_from_file_location(name, Path(folder) / "hf_argparser.py")
            module = sys.modules[name] = importlib.util.module_from_spec(spec)
            try:
                spec.loader.exec_module(module)
                return module.HfArgumentParser
            except ImportError:
                del sys.modules[name]
    from transformers import HfArgumentParser

    return HfArgumentParser


HfArgumentParser = load_hf_argument_parser()
# What `option(...)` puts in a field's metadata for this parser, beside HfArgumentParser's own (help, metavar, ...);
# MARK says the field is declared with `option` (another dataclass's metadata goes to add_argument as it is).
OUR_METADATA = ("check", "group", "positional", "merge", "nargs")
MARK = "vanilla_option"
CONFIG_SUFFIXES = (".yaml", ".yml", ".json")


def option(help: str | None = None, *, default=dataclasses.MISSING, default_factory=dataclasses.MISSING,
           check=None, group: str | None = None, positional: bool = False, merge: bool = False, **metadata):
    """A dataclass field that is a command-line option (see the module docstring for `check`, `group`,
    `positional` and `merge`; other keywords, such as `metavar` or `choices`, go to `add_argument`)."""
    metadata.update(help=help, check=check, group=group, positional=positional, merge=merge, **{MARK: True})
    return dataclasses.field(default=default, default_factory=default_factory,
                             metadata={k: v for k, v in metadata.items() if v not in (None, False)})


class Deprecated(argparse.Action):
    """An old flag name: says which flag replaces it, then does what that flag would (kept for one release)."""

    def __init__(self, option_strings, dest, replacement: str, **kwargs):
        super().__init__(option_strings, dest, **kwargs)
        self.replacement = replacement

    def __call__(self, parser, namespace, values, option_string=None):
        warn_deprecated(parser.prog, option_string, self.replacement)
        setattr(namespace, self.dest, self.const if self.nargs == 0 else values)


def warn_deprecated(prog: str, old: str, replacement: str) -> None:
    print(f"{prog}: {old} is deprecated and goes in the next release: use {replacement}", file=sys.stderr)


class OptionsParser(HfArgumentParser):
    """`HfArgumentParser` with checked numbers, help sections, positionals, config files and deprecated names."""

    def __init__(self, dataclass_types: Iterable[type], *, groups: Iterable[str] = (),
                 recipes: Mapping[str, Path] | None = None, **kwargs):
        self._sections = {}  # title: argument group, in the order of `groups`
        self._pending = list(groups)
        self._foreign = None  # the section of a dataclass that is not ours (Seq2SeqTrainingArguments)
        self._deprecated = {}  # old name as a field name: (replacement, dest, const or type)
        self._fields = {}  # field name: the action of its flag
        self.recipes = dict(recipes or {})
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(list(dataclass_types), **kwargs)
        self.add_argument("--config", metavar="FILE", action="append",
                          help="a .yaml or .json file of option values (names as in this help, e.g. max_tokens: "
                               "4096), taken as the defaults: flags given here win")

    # Building: HfArgumentParser calls these for each dataclass and each field.

    def _add_dataclass_arguments(self, dtype):
        while self._pending:
            self.section(self._pending.pop(0))
        ours = any(MARK in f.metadata for f in dataclasses.fields(dtype))
        self._foreign = None if ours else self.section(f"{dtype.__name__} (transformers): every field is a flag")
        super()._add_dataclass_arguments(dtype)

    def _parse_dataclass_field(self, parser, field):
        metadata = dict(field.metadata)
        ours = metadata.pop(MARK, False)
        check, group, positional, merge, nargs = (metadata.pop(key, None) if ours else None for key in OUR_METADATA)
        target = self.section(group) if group else self._foreign or parser
        if positional:
            self._fields[field.name] = target.add_argument(field.name, type=check, **metadata)
            self._fields[field.name].merge = False
            return
        field = copy.copy(field)
        field.metadata = MappingProxyType(metadata)
        optional_bool = field.type == bool | None and ours
        HfArgumentParser._parse_dataclass_field(target, field)
        action = self._fields[field.name] = self._option_string_actions[f"--{field.name}"]
        action.option_strings.sort(key=lambda flag: "_" in flag and ours)  # ours first as README writes them
        action.merge = merge
        if check is not None:
            action.type = check
        if nargs is not None:
            action.nargs = nargs
        if optional_bool:  # unset means "decide from the machine": --flag, --flag false, --no-flag
            action.nargs, action.const = "?", True
            flag = f"--{field.name.replace('_', '-')}"
            target.add_argument(f"--no-{flag[2:]}", dest=field.name, action="store_false",
                                default=argparse.SUPPRESS, help=f"the same as {flag} false")

    def section(self, title: str):
        """The `--help` section titled `title`, made on first use."""
        if title not in self._sections:
            self._sections[title] = self.add_argument_group(title)
        return self._sections[title]

    def check(self, name: str, check) -> None:
        """Check the field `name` with the argparse type `check` (for fields of a dataclass that is not ours)."""
        self._fields[name].type = check

    def note(self, name: str, note: str) -> None:
        """Add `note` to the help of the field `name`."""
        action = self._fields[name]
        action.help = f"{action.help} ({note})" if action.help else note

    def deprecate(self, old: str, replacement: str, dest: str, **kwargs) -> None:
        """Keep the flag `old` for one release: it sets `dest` as `replacement` would (`const=` for a flag without a
        value, `type=` for one with a value), after saying which flag replaces it."""
        nargs = 0 if "const" in kwargs else None
        self.section("old names, kept for one release").add_argument(
            old, dest=dest, action=Deprecated, replacement=replacement, nargs=nargs, default=argparse.SUPPRESS,
            help=f"use {replacement}", metavar=None if nargs == 0 else "VALUE", **kwargs)
        self._deprecated[old.lstrip("-").replace("-", "_")] = (replacement, dest, kwargs)

    # Parsing

    def parse_namespace(self, argv: list[str] | None = None) -> argparse.Namespace:
        """The command line as a namespace, over the defaults of its `--recipe` and `--config` files."""
        argv = sys.argv[1:] if argv is None else list(argv)
        merged = {}
        for source in self._option_files(argv):
            for dest, value in self._file_values(source).items():
                merged[dest] = merged.get(dest, []) + value if self._fields[dest].merge else value
        for dest, value in merged.items():
            action = self._fields[dest]
            action.required = False
            if not action.option_strings:
                action.nargs = "?"
            if not action.merge:
                action.default = value
        namespace = self.parse_args(argv)
        for dest, value in merged.items():
            if self._fields[dest].merge:
                setattr(namespace, dest, value + (getattr(namespace, dest) or []))
        return namespace

    def build(self, namespace: argparse.Namespace, dtype: type, **derived):
        """An instance of the dataclass `dtype` from the namespace's values of its fields (and `derived`); a value
        that the dataclass refuses (a ValueError), or a package its values need and that is not installed (Trainer's
        --deepspeed), ends the command with the dataclass's message."""
        names = {f.name for f in dataclasses.fields(dtype) if f.init}
        values = {name: getattr(namespace, name) for name in names if hasattr(namespace, name)}
        try:
            return dtype(**{**values, **derived})
        except (ValueError, ImportError) as error:
            self.error(str(error).strip())

    def error(self, message: str):
        """argparse's error, naming each option once: `--max-tokens` for `--max_tokens/--max-tokens`."""

        def once(match: re.Match) -> str:
            a, b = match.group(1), match.group(2)
            return f"--{a.replace('_', '-')}" if a.replace("_", "-") == b.replace("_", "-") else match.group(0)

        super().error(re.sub(r"--([\w-]+)/--([\w-]+)", once, message))

    # Option files

    def _option_files(self, argv: list[str]) -> list[Path]:
        """The recipe's file then the --config files, in the order given: later ones win."""
        pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False, exit_on_error=False)
        pre.add_argument("--config", action="append", default=[])
        if self.recipes:
            pre.add_argument("--recipe")
        try:
            known = pre.parse_known_args(argv)[0]
        except argparse.ArgumentError as error:
            self.error(str(error))
        files = []
        if getattr(known, "recipe", None) in self.recipes:  # another name is refused by the --recipe option's choices
            files.append(self.recipes[known.recipe])
        for name in known.config:
            path = Path(name)
            if path.suffix not in CONFIG_SUFFIXES:
                self.error(f"--config {name}: give a .yaml, .yml or .json file")
            if not path.is_file():
                self.error(f"--config {name}: no such file")
            files.append(path)
        return files

    def _file_values(self, path: Path) -> dict:
        """The option values of one file, each checked as its flag would be: {dest: value}."""
        try:
            text = path.read_text(encoding="utf-8")
            values = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        except (ValueError, yaml.YAMLError) as error:
            self.error(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {error}")
        if values is None:
            return {}
        if not isinstance(values, dict):
            self.error(f"{path}: expected option names and values (a mapping), got a {type(values).__name__}")
        checked = {}
        for key, value in values.items():
            dest = str(key).lstrip("-").replace("-", "_")
            if dest in self._deprecated:
                replacement, dest, kwargs = self._deprecated[dest]
                warn_deprecated(self.prog, f"{key} (in {path})", replacement)
                if "const" in kwargs:  # a flag without a value: true sets it, false leaves the default
                    if value is False:
                        continue
                    value = kwargs["const"] if value is True else value
            action = self._fields.get(dest)
            if action is None:
                self.error(f"{path}: unknown option {key!r}: not an option of {self.prog} (see {self.prog} --help)")
            try:
                checked[dest] = self._checked(action, value)
            except (argparse.ArgumentTypeError, TypeError, ValueError) as error:
                self.error(f"{path}: {key}: {error}")
        return checked

    @staticmethod
    def _checked(action: argparse.Action, value):
        """A file's value as the action's type and choices would take it from a command line."""
        if value is None:
            if action.default is not None:
                raise ValueError("null is allowed only for options whose default is unset")
            return None
        if action.nargs in ("+", "*"):
            if not isinstance(value, list):
                raise TypeError(f"expected a list, got {value!r}")
            return [OptionsParser._checked_one(action, item) for item in value]
        return OptionsParser._checked_one(action, value)

    @staticmethod
    def _checked_one(action: argparse.Action, value):
        if isinstance(value, (list, dict)):
            raise TypeError(f"expected one value, got {value!r}")
        text = value if isinstance(value, str) else json.dumps(value)
        converted = action.type(text) if action.type is not None else text
        if action.choices is not None and converted not in action.choices:
            raise ValueError(f"invalid choice: {converted!r} (choose from {', '.join(map(repr, action.choices))})")
        return converted
