"""Reading the JSON files users hand us (annotations, detections), with errors that name the file;
checking and writing output files (atomic JSON, JSON Lines partial results)."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any


def read_json(path: str | os.PathLike, what: str = "json file") -> Any:
    """Load `path` as JSON.

    Args:
        path: file to read.
        what: what the file is, for the error message (e.g. "annotation file").

    Raises:
        ValueError: the file does not exist, cannot be read, or is not valid JSON; the message names
            `what` and the path.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"{what} not found: {path!r}")
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as err:
        raise ValueError(f"{what} {path!r} is not valid JSON: {err}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"cannot read {what} {path!r}: {err}") from None


# ---------------------------------------------------------------------------------------- writing


def _nearest_existing(path: Path) -> Path:
    current = path
    while not current.exists() and current.parent != current:
        current = current.parent
    return current


def _probe_writable(folder: Path, what: str, path: Path) -> None:
    """Create and delete a temp file in `folder` (root ignores permission bits; a read-only mount does not)."""
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".vitpose_write_check_")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise ValueError(f"{what} {str(path)!r}: cannot write in {str(folder)!r} ({err.strerror or err})") from None


def check_output_file(path: str | os.PathLike, what: str = "output file") -> Path:
    """Check, before any work, that a file can be written at `path`; nothing is created.

    The path must not be an existing directory, an existing file must be writable, and the nearest
    existing ancestor folder must be a directory we can write in (missing folders between it and
    the file are created only when the file is written).

    Raises:
        ValueError: naming `what` (e.g. "--output"), the path and the reason.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{what} {str(path)!r} is a directory; expected a file path")
    if path.exists() and not os.access(path, os.W_OK):
        raise ValueError(f"{what} {str(path)!r} exists and is not writable")
    anchor = _nearest_existing(path.parent if str(path.parent) else Path("."))
    if not anchor.is_dir():
        raise ValueError(f"{what} {str(path)!r}: {str(anchor)!r} is not a directory")
    _probe_writable(anchor, what, path)
    return path


def check_output_dir(path: str | os.PathLike, what: str = "output folder") -> Path:
    """Check, before any work, that `path` is (or can become) a folder we can write in; nothing is created.

    Raises:
        ValueError: `path` or an ancestor is an existing non-directory, or the folder is not writable.
    """
    path = Path(path)
    anchor = _nearest_existing(path)
    if not anchor.is_dir():
        raise ValueError(f"{what} {str(path)!r}: {str(anchor)!r} exists and is not a directory")
    _probe_writable(anchor, what, path)
    return path


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write `text` to a temp file next to `path`, flush it to the disk, then `os.replace` it onto
    `path`.

    A crash never leaves a truncated `path`: it holds the previous content or the whole new one.
    Missing parent folders are created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def write_json_atomic(path: str | os.PathLike, obj: Any, indent: int | None = None) -> Path:
    """`write_text_atomic` of `obj` as JSON (a serialisation error leaves `path` untouched)."""
    return write_text_atomic(path, json.dumps(obj, indent=indent))


class JsonLinesWriter:
    """Append one JSON object per line to a file, flushed after each record (a crash keeps every
    finished record). Used for the `<output>.partial.jsonl` files of `predict` and `evaluate`.

    Use as a context manager; `remove()` deletes the file once the final output is written.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = open(self.path, "w", encoding="utf-8")

    def write(self, record: Any) -> None:
        """Append `record` (JSON-serialisable) as one line and flush it to the OS."""
        self._handle.write(json.dumps(record) + "\n")
        self._handle.flush()

    def close(self) -> None:
        if not self._handle.closed:
            self._handle.close()

    def remove(self) -> None:
        """Close and delete the file (the complete output has been written)."""
        self.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def __enter__(self) -> "JsonLinesWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
