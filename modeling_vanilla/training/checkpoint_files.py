"""The files of a checkpoint on disk: durable writes, sha256 hashes, and the completion marker that lists them.

A checkpoint is trusted only through its marker, `checkpoint_complete.json`, written last: the step and each file's
size and sha256 (`checkpoints.CheckpointManager`). Files are fsynced, then the folder, which is renamed into place
(`replace_folder`), and the parent fsynced. Each process hashes a file once and caches the result per (path, inode,
size, mtime), so the checks after each save and at resume cost one read of each file; a write to a file changes its
mtime and makes it hashed again.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

COMPLETE_MARKER = "checkpoint_complete.json"


def fsync(path: Path) -> None:
    """Flush a file, or a folder's entries, to the disk."""
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except (IsADirectoryError, PermissionError):  # folders cannot be opened on Windows; nothing to flush there
        return
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def write_text(path: Path, text: str) -> None:
    """Write `text` to `path` and flush it to the disk."""
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def replace_folder(temporary: Path, final: Path) -> None:
    """Rename `temporary` to `final` (replacing an earlier one), then fsync their parent."""
    if final.exists():
        old = final.parent / f".tmp-old-{final.name}"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(temporary, final)
        shutil.rmtree(old)
    else:
        os.replace(temporary, final)
    fsync(final.parent)


def link_or_copy(source: Path, target: Path) -> None:
    """A hard link of `source` at `target`, or a durable copy where the filesystem allows no link."""
    try:
        os.link(source, target)  # already fsynced with `source`
    except OSError:
        shutil.copyfile(source, target)
        fsync(target)


_SHA256: dict[tuple, str] = {}  # (path, inode, size, mtime) -> sha256 of the file's bytes, this process


def sha256(path: Path) -> str:
    """The sha256 of the file's bytes, hashed once per (path, inode, size, mtime) in this process."""
    info = path.stat()
    key = (str(path), info.st_ino, info.st_size, info.st_mtime_ns)
    if key not in _SHA256:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
        _SHA256[key] = digest.hexdigest()
    return _SHA256[key]


def marker_files(folder: Path) -> dict | str:
    """The `files` of `folder`'s marker, or why there is none to trust."""
    marker = folder / COMPLETE_MARKER
    if not marker.is_file():
        return "it has no completion marker (writing was interrupted)"
    try:
        files = json.loads(marker.read_text())["files"]
    except (ValueError, KeyError, TypeError) as error:
        return f"its completion marker is unreadable ({error})"
    if not isinstance(files, dict):
        return "its completion marker is unreadable (no list of files)"
    return files


def file_problem(path: Path, entry) -> str | None:
    """Why `path` differs from its marker entry ({"size", "sha256"}, or a bare size from an earlier version)."""
    size = entry["size"] if isinstance(entry, dict) else entry
    if not path.is_file():
        return f"{path.name} is missing"
    if path.stat().st_size != size:
        return f"{path.name} has {path.stat().st_size} bytes, the marker says {size}"
    if isinstance(entry, dict) and "sha256" in entry and sha256(path) != entry["sha256"]:
        return f"{path.name} does not match its sha256 in the marker"
    return None
