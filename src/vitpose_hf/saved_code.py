"""The model code saved beside a checkpoint, for `trust_remote_code=True` without vitpose_hf.

transformers' custom-code mechanism (`register_for_auto_class`): `save_pretrained` copies the
module that defines the saved class, and every sibling it imports as `from .x import y` (found by
a regex, copied flat), into the folder, and writes `auto_map` into `config.json` /
`preprocessor_config.json`. `AutoModel*.from_pretrained(folder, trust_remote_code=True)` then
imports those copies, checking first that everything they import is installed. So the modules that
get copied (configuration, modeling, attention, window attention, the image processor and its
geometry, the MAE model and its checkpoint key table) import only torch, the standard library and
what transformers installs (numpy, safetensors, huggingface_hub) at module level; optional ones
(OpenCV, Pillow) sit in `try` blocks, which transformers' check skips.

With vitpose_hf installed and imported, transformers prefers the registered classes: the copies
are only used where the package is missing (or with an explicit `trust_remote_code=True`).

This module imports only the standard library, transformers and `version`: it is copied too.
"""

from __future__ import annotations

import importlib
import logging
import os
from pathlib import Path

from .version import __version__

logger = logging.getLogger(__name__)

__all__ = ["stamp_saved_code", "package_attr", "STAMP_PREFIX"]

STAMP_PREFIX = "# Saved by vitpose_hf "


def _stamp_lines() -> str:
    return (
        f"{STAMP_PREFIX}{__version__} beside a checkpoint: transformers runs this copy with\n"
        "# trust_remote_code=True where vitpose_hf is not installed; with `pip install vitpose_hf` (and\n"
        "# `import vitpose_hf`) the installed package runs instead.\n"
    )


def stamp_saved_code(folder: str | os.PathLike, module_file: str | os.PathLike) -> list[Path]:
    """Prefix the copies of `module_file` and its relative imports in `folder` with the version stamp.

    Args:
        folder: the checkpoint folder `save_pretrained` just wrote.
        module_file: the source file of the saved class (its siblings are found as transformers does).

    Returns:
        the stamped files (already stamped ones, e.g. a folder saved twice, are left as they are).
    """
    from transformers.dynamic_module_utils import get_relative_import_files

    names = [Path(module_file).name] + [Path(f).name for f in get_relative_import_files(module_file)]
    stamped = []
    for name in names:
        path = Path(folder) / name
        if not path.is_file():
            continue
        text = path.read_text(encoding="utf-8")
        if text.startswith(STAMP_PREFIX):
            continue
        path.write_text(_stamp_lines() + text, encoding="utf-8")
        stamped.append(path)
    if stamped:
        logger.debug("saved the model code %s in %s", [p.name for p in stamped], folder)
    return stamped


def package_attr(module: str, name: str):
    """`vitpose_hf.<module>.<name>` of the installed package.

    For methods of the saved classes that need more than the copied code (uploading with a model
    card and a default image processor): importing by name keeps transformers from copying the
    card writer, the processor and their imports into every checkpoint, and a copy running without
    the package gets a clear ImportError at call time.
    """
    try:
        return getattr(importlib.import_module(f"vitpose_hf.{module}"), name)
    except ImportError as err:
        raise ImportError(f"this needs the vitpose_hf package (pip install vitpose_hf): {err}") from err
