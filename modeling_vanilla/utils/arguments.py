"""What the commands check in their arguments before any data or model work, and how they read and write the text
files named on their command lines.

Numbers: argparse `type=` callables. A bad value ends the command right after parsing, with exit status 2 and a
message that names the flag and the allowed range, e.g.
`vanilla-translate: error: argument --batch-size: must be a positive integer, got 0`. NaN and infinities are
refused by every float type.

    parser.add_argument("--batch-size", type=positive_int, default=32)
    parser.add_argument("--label-smoothing", type=probability, default=0.1)
    parser.add_argument("--vocab-size", type=int_at_least(260), default=37000)

Files: `same_file` (two paths for one file: symlinks, `..`, relative paths, hard links), `read_lines` (UTF-8 lines
split at "\\n" only, an invalid byte named by file and line) and `replacing` (an output written to a temporary file
beside it and renamed into place at the end, so that a failure never leaves it truncated or half written).
"""

from __future__ import annotations

import argparse
import math
import os
import stat
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TextIO

__all__ = [
    "TextFileError", "finite_float", "int_at_least", "non_negative_float", "non_negative_int", "number_in_range",
    "positive_float", "positive_int", "probability", "read_lines", "replacing", "same_file",
]


# Numbers


def _integer(text: str, requirement: str) -> int:
    try:
        return int(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"must be {requirement}, got {text!r}") from None


def _number(text: str, requirement: str) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"must be {requirement}, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be {requirement}, got {text}")
    return value


def positive_int(text: str) -> int:
    """An integer >= 1."""
    value = _integer(text, "a positive integer")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def non_negative_int(text: str) -> int:
    """An integer >= 0."""
    value = _integer(text, "a non-negative integer")
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {text}")
    return value


def int_at_least(minimum: int, why: str = "") -> Callable[[str], int]:
    """A type for integers >= `minimum`; `why`, when given, ends the message ("... (256 bytes + 4 special tokens)")."""

    def at_least(text: str) -> int:
        requirement = f"an integer >= {minimum}" + (f" ({why})" if why else "")
        value = _integer(text, requirement)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be {requirement}, got {text}")
        return value

    at_least.__name__ = f"int_at_least_{minimum}"
    return at_least


def finite_float(text: str) -> float:
    """Any finite number (not nan, not inf)."""
    return _number(text, "a finite number")


def positive_float(text: str) -> float:
    """A finite number > 0."""
    value = _number(text, "a positive number")
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def non_negative_float(text: str) -> float:
    """A finite number >= 0."""
    value = _number(text, "a non-negative number")
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative number, got {text}")
    return value


def probability(text: str) -> float:
    """A number in [0, 1): dropout, label smoothing."""
    value = _number(text, "a probability in [0, 1)")
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be a probability in [0, 1), got {text}")
    return value


def number_in_range(low: float, high: float, what: str = "a number") -> Callable[[str], float]:
    """A type for finite numbers in [low, high], e.g. `number_in_range(0, 100, "a BLEU score")`."""

    def in_range(text: str) -> float:
        requirement = f"{what} in [{low:g}, {high:g}]"
        value = _number(text, requirement)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be {requirement}, got {text}")
        return value

    in_range.__name__ = "number_in_range"
    return in_range


# Files


class TextFileError(ValueError):
    """A file named on the command line cannot be read as UTF-8 text: the message names the file and the line."""


def output_file_problem(flag: str, path: str | Path) -> str | None:
    """Why `path`, given as `flag`, cannot be written as a new file: it is a folder, or its folder does not exist;
    None when it can. For checking a command's output files before any work is done."""
    path = Path(path)
    if path.is_dir():
        return f"{flag} {path} is a folder: give a file name."
    if not path.resolve().parent.is_dir():
        return f"{flag} {path}: the folder {path.resolve().parent} does not exist."
    return None


def same_file(a: str | Path, b: str | Path) -> bool:
    """Whether two paths name one file: the same path once resolved (symlinks, `..`, relative to the current
    folder), or, both existing, the same file on disk (hard links)."""
    a, b = Path(a), Path(b)
    with suppress(OSError):
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    return a.resolve() == b.resolve()


def read_lines(path: str | Path, raw_lines: Iterable[bytes | str] | None = None) -> Iterator[str]:
    """The lines of a UTF-8 text file, without their line ends, one per "\\n".

    Only "\\n" ends a line ("\\r\\n" too, the "\\r" removed): a lone "\\r" or another Unicode line separator inside
    a line stays in it, so that line i of an output made from these lines answers line i of the input, as `wc -l`
    and `paste` count them. A line that is not UTF-8 raises `TextFileError` naming `path`, the line and the byte.
    `raw_lines` (bytes or already decoded lines, such as standard input's) are read instead of opening `path`, which
    then only names them in messages.
    """
    if raw_lines is None:
        with open(path, "rb") as handle:  # binary: iteration splits at b"\n" only
            yield from read_lines(path, handle)
        return
    for number, raw in enumerate(raw_lines, start=1):
        if isinstance(raw, bytes):
            try:
                raw = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise TextFileError(
                    f"{path}, line {number}: not UTF-8 text (byte {raw[error.start]:#04x} at byte {error.start + 1} "
                    "of the line). Convert the file to UTF-8 first, e.g. `iconv -f latin1 -t utf-8`."
                ) from None
        yield raw.removesuffix("\n").removesuffix("\r")


def _new_file_mode() -> int:
    """The permissions a newly created file gets (0o666 less the umask), as `open(path, "w")` would give it."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextmanager
def replacing(path: str | Path) -> Iterator[TextIO]:
    """A UTF-8 text handle whose content replaces `path` when the block ends without an exception.

    It writes a temporary file in the folder of `path` (of the file it links to, for a symlink), fsyncs it and
    renames it over `path`, which is atomic: `path` holds either its old content or the complete new one. On an
    exception the temporary file is removed and `path` is left as it was. The file keeps the old file's permissions,
    or gets a new file's.
    """
    target = Path(path).resolve()
    mode = stat.S_IMODE(target.stat().st_mode) if target.exists() else _new_file_mode()
    descriptor, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8", newline="\n") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, target)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
