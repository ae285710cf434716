"""Reading the JSON files users hand us (annotations, detections), with errors that name the file."""

from __future__ import annotations

import json
import os
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
