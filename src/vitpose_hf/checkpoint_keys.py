"""ViT checkpoints of other layouts: reading them, unwrapping them, naming their tensors in ours.

One key table serves every ViT layout vitpose_hf reads:

- official ViTPose / ViTPose++ (the mmpose 0.x fork): `backbone.patch_embed.proj`, `backbone.pos_embed`,
  `backbone.blocks.{i}.*` with a fused `attn.qkv` and ViTPose++'s `mlp.experts.{e}`,
  `backbone.last_norm`; backbone-only files store the same names without `backbone.`;
- facebookresearch/mae and timm ViTs: the same block names without a prefix, the final norm named
  `norm`, plus `cls_token`, the MAE decoder (`decoder_*`, `mask_token`) or a classification head
  (`head.*`, `fc_norm.*`); BEiT-style blocks store `attn.q_bias` / `attn.v_bias` instead of a qkv bias.

Names on the right are ours (= transformers' VitPose), relative to `VitPoseModel`
(`embeddings.*`, `encoder.layer.{i}.*`, `layernorm.*`). `map_vit_backbone` applies the table;
what a particular model does with a tensor that needs adapting (a patch kernel of another size,
position embeddings of another grid, one `fc2` shared by MoE experts) is up to the caller, told by
the rule of each `MappedTensor`.

This module is copied beside MAE checkpoints with `modeling_vitpose_mae` (transformers'
custom-code saving, see `saved_code`), so it imports only torch, safetensors and the standard library.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Mapping, NamedTuple

import torch
from safetensors.torch import load_file

__all__ = [
    "WRAPPER_KEYS",
    "BLOCK_KEYS",
    "BACKBONE_KEYS",
    "BLOCK_KEY",
    "EXPERT_KEY",
    "COPY",
    "QKV",
    "Q_BIAS",
    "FC2",
    "PATCH",
    "POSITION",
    "FINAL_NORM",
    "MappedTensor",
    "unwrap_state_dict",
    "read_checkpoint",
    "split_fused_qkv",
    "backbone_key_names",
    "map_vit_backbone",
]

# Training scripts nest the tensors one level down under one of these names (mmpose `state_dict`,
# facebookresearch/mae `model`, a pickled DDP wrapper `module`); the first present is taken.
WRAPPER_KEYS = ("state_dict", "model", "module")
DDP_PREFIX = "module."
BACKBONE_PREFIX = "backbone."

# What a caller may have to do with a mapped tensor beyond storing it under its name.
COPY = "copy"  # store as it is
QKV = "qkv"  # one third of a fused q, k, v
Q_BIAS = "q_bias"  # BEiT's query bias, or the zero key bias BEiT does not store
FC2 = "fc2"  # timm / MAE: every output row; ViTPose++: the rows shared by all experts
PATCH = "patch"  # patch-embedding kernel, maybe of another size than the model's
POSITION = "position"  # `(1, [1 +] N, C)` position embeddings, maybe of another grid
FINAL_NORM = "final_norm"  # timm / MAE's `norm`: the same place as ViTPose's `last_norm`

# `blocks.{i}.<key>` -> `encoder.layer.{i}.<name>`, rule; `{}` in a qkv name takes query, key, value.
BLOCK_KEYS: dict[str, tuple[str, str]] = {
    "norm1.weight": ("layernorm_before.weight", COPY),
    "norm1.bias": ("layernorm_before.bias", COPY),
    "attn.qkv.weight": ("attention.attention.{}.weight", QKV),
    "attn.qkv.bias": ("attention.attention.{}.bias", QKV),
    "attn.q_bias": ("attention.attention.query.bias", Q_BIAS),
    "attn.v_bias": ("attention.attention.value.bias", COPY),
    "attn.proj.weight": ("attention.output.dense.weight", COPY),
    "attn.proj.bias": ("attention.output.dense.bias", COPY),
    "norm2.weight": ("layernorm_after.weight", COPY),
    "norm2.bias": ("layernorm_after.bias", COPY),
    "mlp.fc1.weight": ("mlp.fc1.weight", COPY),
    "mlp.fc1.bias": ("mlp.fc1.bias", COPY),
    "mlp.fc2.weight": ("mlp.fc2.weight", FC2),
    "mlp.fc2.bias": ("mlp.fc2.bias", FC2),
}
# ViTPose++ experts, any count: `blocks.{i}.mlp.experts.{e}.*` -> `encoder.layer.{i}.mlp.experts.{e}.*`
EXPERT_KEY = re.compile(r"^mlp\.experts\.(\d+)\.(weight|bias)$")
BLOCK_KEY = re.compile(r"^blocks\.(\d+)\.(.+)$")

# the rest of the ViT, outside its blocks
BACKBONE_KEYS: dict[str, tuple[str, str]] = {
    "patch_embed.proj.weight": ("embeddings.patch_embeddings.projection.weight", PATCH),
    "patch_embed.proj.bias": ("embeddings.patch_embeddings.projection.bias", COPY),
    "pos_embed": ("embeddings.position_embeddings", POSITION),
    "last_norm.weight": ("layernorm.weight", COPY),
    "last_norm.bias": ("layernorm.bias", COPY),
    "norm.weight": ("layernorm.weight", FINAL_NORM),
    "norm.bias": ("layernorm.bias", FINAL_NORM),
}
_UNUSED_BACKBONE_KEYS = {
    "cls_token": "cls token: ViTPose has none (its position-embedding slot is added to every patch instead)",
}
# first name segments of a ViT's own keys when a file stores them without the `backbone.` prefix
_BARE_ROOTS = frozenset({"patch_embed", "pos_embed", "cls_token", "blocks", "last_norm", "norm"})
# keys outside the backbone, by prefix
_OUTSIDE_REASONS = (
    (("keypoint_head.", "associate_keypoint_heads."), "pose head: not part of the backbone"),
    (("decoder", "mask_token"), "MAE decoder: not part of the backbone"),
    (("head.", "fc_norm."), "classification head: not part of the backbone"),
)


class MappedTensor(NamedTuple):
    """One tensor of a checkpoint under our name.

    Attributes:
        source: the checkpoint key it comes from (a fused qkv gives three entries with one source).
        name: our name, relative to `VitPoseModel` (e.g. `encoder.layer.0.attention.attention.key.weight`).
        value: the tensor (a view of the checkpoint's, not a copy; zeros for BEiT's missing key bias).
        rule: one of the rule names of the key table (`copy`, `qkv`, `q_bias`, `fc2`, `patch`,
            `position`, `final_norm`): what else a caller may have to do to fit it to a model.
        block: the block index for `blocks.{i}.*` keys, else None.
    """

    source: str
    name: str
    value: torch.Tensor
    rule: str
    block: int | None


# ----------------------------------------------------------------------------- reading
def unwrap_state_dict(obj: Any, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The flat `{key: tensor}` dict of a loaded checkpoint.

    One rule for every layout: the value of the first of `WRAPPER_KEYS` (`state_dict`, `model`,
    `module`) that holds a dict replaces the checkpoint (other entries, e.g. `meta`, `epoch`, are
    ignored); a `module.` prefix (DDP) is removed when every key carries it. Keys are otherwise
    left as they are (a `backbone.` prefix included).

    Args:
        obj: what `torch.load` / `safetensors.torch.load_file` returned.
        source: how error messages name the checkpoint (its path, for a file).

    Returns:
        `{key: tensor}`, the tensors not copied.

    Raises:
        ValueError: `obj` is not a dict, the dict is empty, or an entry is not a tensor (named with
            its type: a state dict holds tensors only, so anything else means a layout this does not know).
    """
    if not isinstance(obj, Mapping):
        raise ValueError(f"{source} holds a {type(obj).__name__}, expected a dict of tensors")
    state: Mapping[str, Any] = obj
    for wrapper in WRAPPER_KEYS:
        if isinstance(state.get(wrapper), Mapping):
            state = state[wrapper]
            break
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"{source}: entry {key!r} is a {type(value).__name__}, not a tensor")
    if not state:
        raise ValueError(f"{source} holds no tensors")
    if all(key.startswith(DDP_PREFIX) for key in state):
        return {key[len(DDP_PREFIX):]: value for key, value in state.items()}
    return dict(state)


def read_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a checkpoint file safely and unwrap it (`unwrap_state_dict`).

    Args:
        path: a folder holding `model.safetensors` or `pytorch_model.bin` (as `save_pretrained`
            writes it), a `.safetensors` file, or a torch file (`.pth`, `.bin`, `.pt`, ...), read with
            `torch.load(map_location="cpu", weights_only=True)`: no code in the file runs.

    Returns:
        `{key: tensor}` on the CPU.

    Raises:
        ValueError: the path does not exist, the folder has no weights file, or the file cannot be
            read (corrupt, truncated, not a checkpoint, needs arbitrary classes) or holds no tensor dict;
            the message names the path.
    """
    file = Path(path)
    if file.is_dir():
        for name in ("model.safetensors", "pytorch_model.bin"):
            if (file / name).is_file():
                file = file / name
                break
        else:
            raise ValueError(f"{file}: no model.safetensors or pytorch_model.bin in this folder")
    if not file.is_file():
        raise ValueError(f"checkpoint file {file} does not exist")
    try:
        if file.suffix == ".safetensors":
            obj = load_file(str(file))
        else:
            obj = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt zip, truncated pickle, disallowed globals, bad safetensors header, ...
        raise ValueError(f"cannot read checkpoint {file}: {type(err).__name__}: {err}") from err
    return unwrap_state_dict(obj, str(file))


# ----------------------------------------------------------------------------- key mapping
def split_fused_qkv(fused: torch.Tensor, width: int, name: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Split a fused q, k, v projection (rows ordered q, k, v, as timm and the official ViTPose store it).

    Args:
        fused: weight `(3C, C)` or bias `(3C,)`.
        width: C, the ViT's hidden size.
        name: the checkpoint key, for the error message.

    Returns:
        `(query, key, value)`, each `(C, C)` or `(C,)`: views of `fused`, not copies.

    Raises:
        ValueError: `fused` is neither `(3C, C)` nor `(3C,)`.
    """
    if tuple(fused.shape) not in ((3 * width, width), (3 * width,)):
        raise ValueError(
            f"{name} has shape {tuple(fused.shape)}; a fused q, k, v of width {width} is "
            f"({3 * width}, {width}) or ({3 * width},)"
        )
    query, key, value = fused.chunk(3, dim=0)
    return query, key, value


def backbone_key_names(state_dict: Mapping[str, Any]) -> dict[str, str | None]:
    """Each key's name relative to the ViT backbone, or None for keys outside it.

    With any key under `backbone.` (full official checkpoints, ours), the backbone is what is under
    that prefix; without (timm / MAE files, official backbone-only files), the bare ViT names
    (`patch_embed.*`, `pos_embed`, `cls_token`, `blocks.*`, `last_norm.*`, `norm.*`).

    Returns:
        `{checkpoint key: relative name or None}`, in the order of `state_dict`.
    """
    if any(key.startswith(BACKBONE_PREFIX) for key in state_dict):
        return {key: key[len(BACKBONE_PREFIX):] if key.startswith(BACKBONE_PREFIX) else None for key in state_dict}
    return {key: key if key.split(".", 1)[0] in _BARE_ROOTS else None for key in state_dict}


def _outside_reason(key: str) -> str:
    for prefixes, reason in _OUTSIDE_REASONS:
        if key.startswith(prefixes):
            return reason
    return "not part of the ViT backbone"


def map_vit_backbone(state_dict: Mapping[str, torch.Tensor]) -> tuple[list[MappedTensor], dict[str, str]]:
    """Name the backbone tensors of an official ViTPose / MAE / timm checkpoint in ours (the key table).

    The fused `attn.qkv` is split (`split_fused_qkv`, width from `patch_embed.proj.weight`);
    BEiT's `attn.q_bias` also gives a zero key bias (BEiT's key projection has none). The backbone is
    found with `backbone_key_names`.

    Args:
        state_dict: `{key: tensor}` as `unwrap_state_dict` returns it.

    Returns:
        `(mapped, dropped)`: every backbone tensor under our name (relative to `VitPoseModel`, in
        checkpoint order), and `{checkpoint key: reason}` for every other key (cls token, heads,
        decoders, names with no counterpart).

    Raises:
        ValueError: no `patch_embed.proj.weight` (not a ViT checkpoint), a fused qkv of another
            width, or two checkpoint keys for one of our names (e.g. both `norm.*` and `last_norm.*`).
    """
    names = backbone_key_names(state_dict)
    patch_key = next((key for key, rel in names.items() if rel == "patch_embed.proj.weight"), None)
    if patch_key is None:
        raise ValueError(
            f"not a ViT checkpoint: no 'patch_embed.proj.weight' key (first keys: {sorted(state_dict)[:5]})"
        )
    width = int(state_dict[patch_key].shape[0])
    mapped: list[MappedTensor] = []
    dropped: dict[str, str] = {}
    owner: dict[str, str] = {}

    def emit(source: str, name: str, value: torch.Tensor, rule: str, block: int | None = None) -> None:
        if name in owner:
            raise ValueError(f"checkpoint keys {owner[name]!r} and {source!r} both map to {name}")
        owner[name] = source
        mapped.append(MappedTensor(source, name, value, rule, block))

    for key, value in state_dict.items():
        rel = names[key]
        if rel is None:
            dropped[key] = _outside_reason(key)
            continue
        if rel in BACKBONE_KEYS:
            name, rule = BACKBONE_KEYS[rel]
            emit(key, name, value, rule)
            continue
        if rel in _UNUSED_BACKBONE_KEYS:
            dropped[key] = _UNUSED_BACKBONE_KEYS[rel]
            continue
        block = BLOCK_KEY.match(rel)
        if block is None:
            dropped[key] = "backbone parameter with no vitpose_hf counterpart"
            continue
        index, rest = int(block.group(1)), block.group(2)
        prefix = f"encoder.layer.{index}."
        expert = EXPERT_KEY.match(rest)
        if expert:
            emit(key, f"{prefix}{rest}", value, COPY, index)
        elif rest not in BLOCK_KEYS:
            dropped[key] = "block parameter with no vitpose_hf counterpart"
        elif BLOCK_KEYS[rest][1] == QKV:
            for part, tensor in zip(("query", "key", "value"), split_fused_qkv(value, width, key)):
                emit(key, prefix + BLOCK_KEYS[rest][0].format(part), tensor, QKV, index)
        else:
            name, rule = BLOCK_KEYS[rest]
            emit(key, prefix + name, value, rule, index)
            if rule == Q_BIAS:
                emit(key, f"{prefix}attention.attention.key.bias", torch.zeros_like(value), Q_BIAS, index)
    return mapped, dropped
