"""Checkpoint conversion: official ViTPose / ViTPose++ `.pth` -> vitpose_hf, and vitpose_hf -> the
transformers hub format.

Official checkpoints (the mmpose 0.x fork, `{'state_dict': ..., 'meta': ...}`) use fused `qkv`
projections and mmpose module names; `convert_official_state_dict` maps them to our names (which are
transformers' names) as a pure `dict -> dict` function and reports every key it drops with the
reason. `infer_config_from_state_dict` reads the architecture off the tensor shapes. The command line

    python -m vitpose_hf.convert_vitpose_to_hf --checkpoint vitpose-b.pth --output vitpose-b-hf

writes a directory `VitPoseForPoseEstimation.from_pretrained` loads strictly (checked after writing).

Checkpoints saved by transformers' own `VitPoseForPoseEstimation` need no conversion (our classes
load them as they are); `export_to_transformers` (CLI: `--to-transformers`) goes the other way for
models that only use features transformers supports.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from pathlib import Path
from typing import Mapping, Sequence

import torch

from .checkpoint_keys import BLOCK_KEY, backbone_key_names, map_vit_backbone, read_checkpoint, unwrap_state_dict
from .configuration_vitpose import COCO_KEYPOINT_NAMES, PRESETS, VitPoseConfig
from .image_processing_vitpose import VitPoseTopDownImageProcessor
from .modelcard import write_model_card
from .modeling_vitpose import VitPoseForPoseEstimation, export_to_transformers, infer_grid, resample_position_embeddings

logger = logging.getLogger(__name__)

__all__ = [
    "convert_official_state_dict",
    "infer_config_from_state_dict",
    "load_official_checkpoint",
    "convert_official_checkpoint",
    "export_to_transformers",
    "main",
]

# ViTPose++ extra heads: `associate_keypoint_heads.{j}` serves dataset index j + 1.
PLUS_DATASETS: tuple[tuple[str, int], ...] = (
    ("aic", 14),
    ("mpii", 16),
    ("ap10k", 17),
    ("apt36k", 17),
    ("wholebody", 133),
)
# hidden size -> number of attention heads (official S/B/L/H, our G).
HEADS_BY_WIDTH: dict[int, int] = {hidden: heads for hidden, _, heads, _, _ in PRESETS.values()}

# official classic head: Sequential(deconv, BN, ReLU, deconv, BN, ReLU) + final 1x1 conv.
_HEAD_MAP = {
    "deconv_layers.0.": "deconv1.",
    "deconv_layers.1.": "batchnorm1.",
    "deconv_layers.3.": "deconv2.",
    "deconv_layers.4.": "batchnorm2.",
    "final_layer.": "conv.",
}
_ASSOC_RE = re.compile(r"^associate_keypoint_heads\.(\d+)\.(.+)$")


# ----------------------------------------------------------------------------- loading
def _official_layout(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`state_dict` with its ViT under `backbone.`, as in a full official checkpoint: backbone-only
    files store the bare names (`pos_embed`, `blocks.*`, `last_norm.*`, ...)."""
    return {(key if rel is None or key.startswith("backbone.") else f"backbone.{rel}"): state_dict[key]
            for key, rel in backbone_key_names(state_dict).items()}


def load_official_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """Read an official `.pth` safely (`torch.load(..., weights_only=True)`, no code runs).

    Returns:
        the flat state dict (unwrapped by `checkpoint_keys.read_checkpoint`), the ViT under
        `backbone.` (added for backbone-only files).

    Raises:
        ValueError: the file is missing, corrupt, not a torch checkpoint, or holds no tensor dict.
    """
    return _official_layout(read_checkpoint(path))


# ----------------------------------------------------------------------------- key mapping
def _map_head_key(rest: str) -> str | None:
    for old, new in _HEAD_MAP.items():
        if rest.startswith(old):
            return new + rest[len(old):]
    return None


def convert_official_state_dict(
    state_dict: Mapping[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Map an official ViTPose / ViTPose++ state dict to vitpose_hf (= transformers) names.

    The backbone goes through the key table of `checkpoint_keys.map_vit_backbone`: fused `attn.qkv`
    (`(3C, C)` weight, `(3C,)` bias, rows ordered q, k, v) split into
    `attention.attention.{query,key,value}`, `norm1/norm2` -> `layernorm_before/after`, `attn.proj`
    -> `attention.output.dense`, `last_norm` -> `layernorm`, `mlp.experts.{e}` kept. The heads:
    `deconv_layers.{0,1,3,4}` -> `deconv1/batchnorm1/deconv2/batchnorm2`, `final_layer` -> `conv`, and
    `associate_keypoint_heads.{j}` becomes `extra_heads.{j + 1}` (the head of ViTPose++ dataset
    index j + 1). Tensors are not copied.

    Args:
        state_dict: official keys (`backbone.*`, `keypoint_head.*`, `associate_keypoint_heads.*`).

    Returns:
        `(new_state_dict, dropped)` where `dropped` maps every key that was not carried over to the
        reason (e.g. `backbone.cls_token`, unused by ViTPose's forward).

    Raises:
        ValueError: no `backbone.patch_embed.proj.weight`, or a fused qkv tensor that is not
            `(3C, C)` / `(3C,)` for the patch embedding's width C.
    """
    heads = ("keypoint_head.", "associate_keypoint_heads.")
    backbone, dropped = map_vit_backbone({k: v for k, v in state_dict.items() if not k.startswith(heads)})
    new = {f"backbone.{entry.name}": entry.value for entry in backbone}
    for key, value in state_dict.items():
        if key.startswith("keypoint_head."):
            mapped = _map_head_key(key[len("keypoint_head."):])
            if mapped is None:
                dropped[key] = "keypoint head parameter with no vitpose_hf counterpart"
            else:
                new["head." + mapped] = value
            continue
        assoc = _ASSOC_RE.match(key)
        if assoc:
            j, rest = assoc.groups()
            mapped = _map_head_key(rest)
            if mapped is None:
                dropped[key] = "extra dataset head parameter with no vitpose_hf counterpart"
            else:
                new[f"extra_heads.{int(j) + 1}.{mapped}"] = value
    return new, dropped


# ----------------------------------------------------------------------------- config inference
def _require(state_dict: Mapping[str, torch.Tensor], key: str) -> torch.Tensor:
    if key not in state_dict:
        raise ValueError(f"the official checkpoint lacks {key!r}; is it a ViTPose checkpoint?")
    return state_dict[key]


def _head_spec(state_dict: Mapping[str, torch.Tensor], prefix: str, hidden: int) -> dict:
    """Decoder kind and sizes of the head stored under `prefix` (e.g. `keypoint_head.`)."""
    final = _require(state_dict, prefix + "final_layer.weight")
    if final.ndim != 4:
        raise ValueError(f"{prefix}final_layer.weight has shape {tuple(final.shape)}, expected a conv weight")
    if prefix + "deconv_layers.0.weight" in state_dict:
        deconv = state_dict[prefix + "deconv_layers.0.weight"]
        if prefix + "deconv_layers.6.weight" in state_dict:
            raise ValueError(f"{prefix}deconv_layers has 3 deconvolutions; vitpose_hf supports 1 or 2")
        if tuple(final.shape[2:]) != (1, 1):
            raise ValueError(f"{prefix}final_layer is a {tuple(final.shape[2:])} conv; the classic head uses 1x1")
        return {
            "use_simple_decoder": False,
            "num_labels": int(final.shape[0]),
            "decoder_hidden_size": int(deconv.shape[1]),
            "num_deconv_layers": 2 if prefix + "deconv_layers.3.weight" in state_dict else 1,
        }
    if tuple(final.shape[2:]) != (3, 3) or final.shape[1] != hidden:
        raise ValueError(
            f"{prefix}final_layer.weight has shape {tuple(final.shape)}; a simple head needs "
            f"(K, {hidden}, 3, 3)"
        )
    return {"use_simple_decoder": True, "num_labels": int(final.shape[0])}


def infer_config_from_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    use_simple_decoder: bool | None = None,
    image_size: Sequence[int] | None = None,
    num_attention_heads: int | None = None,
    aspect: float = 4 / 3,
) -> VitPoseConfig:
    """Read the architecture of an official checkpoint off its tensor shapes.

    Width from `pos_embed`, depth from the block count, patch size and channels from the patch
    conv, heads from the size table (384 -> 12, 768 -> 12, 1024 -> 16, 1280 -> 16, 1408 -> 16),
    MLP ratio from `fc1`, experts and `part_features` from `mlp.experts`, decoder kind and keypoint
    count from `keypoint_head`, and one `dataset_heads` entry per `associate_keypoint_heads.{j}`
    (dataset index j + 1: AIC, MPII, AP-10K, APT-36K, COCO-WholeBody).

    Args:
        state_dict: official keys (see `load_official_checkpoint`).
        use_simple_decoder: the decoder to build; must agree with the weights when they hold a head.
            Needed for backbone-only checkpoints (the head then starts from random weights).
        image_size: `(H, W)` to run at; defaults to the size the position embeddings were trained for.
        num_attention_heads: override of the size table (required for a width not in it).
        aspect: H / W of the training grid used to factor the position-embedding count (4:3 for
            every official checkpoint).

    Returns:
        a `VitPoseConfig` (eps 1e-6, patch padding 2, no drop path).

    Raises:
        ValueError: missing keys, inconsistent shapes, or a decoder choice contradicting the weights.
    """
    pos = _require(state_dict, "backbone.pos_embed")
    proj = _require(state_dict, "backbone.patch_embed.proj.weight")
    if pos.ndim != 3 or pos.shape[0] != 1:
        raise ValueError(f"backbone.pos_embed has shape {tuple(pos.shape)}, expected (1, 1 + N, C)")
    hidden = int(pos.shape[-1])
    if proj.ndim != 4 or proj.shape[0] != hidden:
        raise ValueError(f"backbone.patch_embed.proj.weight has shape {tuple(proj.shape)}, expected ({hidden}, 3, p, p)")
    patch = (int(proj.shape[2]), int(proj.shape[3]))
    blocks = sorted({int(m.group(1)) for rel in backbone_key_names(state_dict).values()
                     if rel is not None and (m := BLOCK_KEY.match(rel))})
    if not blocks:
        raise ValueError("the official checkpoint has no backbone.blocks.* keys")
    if blocks != list(range(len(blocks))):
        missing = sorted(set(range(blocks[-1] + 1)) - set(blocks))
        raise ValueError(f"the official checkpoint lacks backbone.blocks {missing}")
    depth = len(blocks)
    heads = num_attention_heads or HEADS_BY_WIDTH.get(hidden)
    if heads is None:
        if hidden % 64:
            raise ValueError(f"width {hidden} is not in the size table; pass num_attention_heads")
        heads = hidden // 64
        logger.warning("width %d is not in the size table; assuming %d heads of 64", hidden, heads)
    fc1 = _require(state_dict, "backbone.blocks.0.mlp.fc1.weight")
    ratio = fc1.shape[0] / hidden
    mlp_ratio: float | int = int(ratio) if float(ratio).is_integer() else ratio
    experts = sorted({int(m.group(1)) for k in state_dict if (m := re.match(r"^backbone\.blocks\.0\.mlp\.experts\.(\d+)\.weight$", k))})
    num_experts = len(experts) if experts else 1
    part_features = int(state_dict["backbone.blocks.0.mlp.experts.0.weight"].shape[0]) if experts else None

    num_patches = int(pos.shape[1]) - 1
    trained_grid = infer_grid(num_patches, aspect)
    trained_size = (trained_grid[0] * patch[0], trained_grid[1] * patch[1])

    has_head = "keypoint_head.final_layer.weight" in state_dict
    if has_head:
        head = _head_spec(state_dict, "keypoint_head.", hidden)
        if use_simple_decoder is not None and use_simple_decoder != head["use_simple_decoder"]:
            kind = "simple" if head["use_simple_decoder"] else "classic"
            raise ValueError(
                f"the checkpoint holds a {kind} head but a {'simple' if use_simple_decoder else 'classic'} "
                "decoder was requested"
            )
    elif use_simple_decoder is None:
        raise ValueError(
            "the checkpoint has no keypoint_head.*: choose a decoder (--simple or --classic) to build a fresh head"
        )
    else:
        head = {"use_simple_decoder": use_simple_decoder, "num_labels": len(COCO_KEYPOINT_NAMES)}
        logger.warning("no keypoint_head in the checkpoint: the %s head starts from random weights",
                       "simple" if use_simple_decoder else "classic")

    dataset_heads = []
    assoc = sorted({int(m.group(1)) for k in state_dict if (m := _ASSOC_RE.match(k))})
    for j in assoc:
        spec = _head_spec(state_dict, f"associate_keypoint_heads.{j}.", hidden)
        if spec["use_simple_decoder"] != head["use_simple_decoder"] or spec.get("decoder_hidden_size") != head.get(
            "decoder_hidden_size"
        ) or spec.get("num_deconv_layers") != head.get("num_deconv_layers"):
            raise ValueError(f"associate_keypoint_heads.{j} is not built like keypoint_head")
        name = PLUS_DATASETS[j][0] if j < len(PLUS_DATASETS) else f"dataset_{j + 1}"
        dataset_heads.append({"dataset_index": j + 1, "num_labels": spec["num_labels"], "name": name})

    num_labels = head.pop("num_labels")
    id2label = dict(enumerate(COCO_KEYPOINT_NAMES)) if num_labels == len(COCO_KEYPOINT_NAMES) else {
        i: f"keypoint_{i}" for i in range(num_labels)
    }
    return VitPoseConfig(
        image_size=tuple(image_size) if image_size is not None else trained_size,
        patch_size=patch,
        patch_padding=2,
        num_channels=int(proj.shape[1]),
        hidden_size=hidden,
        num_hidden_layers=depth,
        num_attention_heads=heads,
        mlp_ratio=mlp_ratio,
        qkv_bias="backbone.blocks.0.attn.qkv.bias" in state_dict or "backbone.blocks.0.attn.q_bias" in state_dict,
        layer_norm_eps=1e-6,
        drop_path_rate=0.0,
        num_experts=num_experts,
        part_features=part_features,
        dataset_heads=dataset_heads,
        id2label=id2label,
        **head,
    )


# ----------------------------------------------------------------------------- conversion
def _trained_grid(state_dict: Mapping[str, torch.Tensor], aspect: float = 4 / 3) -> tuple[int, int]:
    return infer_grid(int(state_dict["backbone.pos_embed"].shape[1]) - 1, aspect)


def convert_official_checkpoint(
    checkpoint: str | Path | Mapping[str, torch.Tensor],
    output_dir: str | Path | None = None,
    use_simple_decoder: bool | None = None,
    image_size: Sequence[int] | None = None,
    num_attention_heads: int | None = None,
):
    """Convert an official `.pth` (path or already loaded dict) into a `VitPoseForPoseEstimation`.

    The converted tensors are loaded strictly (every model key present, no key left over); with
    `output_dir`, the model is saved there (safetensors + config.json) and read back to check that
    `from_pretrained` finds no missing, unexpected or mismatched key.

    Returns:
        `(model, dropped)`: the model in eval mode and `{official key: reason}` for dropped keys.

    Raises:
        ValueError: unreadable file, missing or unexpected keys, shape mismatches.
    """
    if isinstance(checkpoint, (str, Path)):
        official = load_official_checkpoint(checkpoint)
    else:
        official = _official_layout(unwrap_state_dict(checkpoint))
    config = infer_config_from_state_dict(official, use_simple_decoder, image_size, num_attention_heads)
    new_sd, dropped = convert_official_state_dict(official)
    for key, reason in sorted(dropped.items()):
        logger.info("dropped %s: %s", key, reason)

    model = VitPoseForPoseEstimation(config)
    old_grid = _trained_grid(official)
    new_grid = model.backbone.embeddings.grid
    pos_key = "backbone.embeddings.position_embeddings"
    if tuple(old_grid) != tuple(new_grid):
        logger.info("resampling position embeddings %s -> %s for image_size %s", old_grid, new_grid, config.image_size)
        new_sd[pos_key] = resample_position_embeddings(new_sd[pos_key], old_grid, new_grid)

    expected = set(model.state_dict())
    missing = sorted(expected - set(new_sd))
    unexpected = sorted(set(new_sd) - expected)
    fresh_head = "keypoint_head.final_layer.weight" not in official
    if fresh_head:
        missing = [k for k in missing if not k.startswith("head.")]
    if missing or unexpected:
        raise ValueError(f"converted checkpoint does not fit the inferred model: missing keys {missing}, "
                         f"unexpected keys {unexpected}")
    try:
        model.load_state_dict(new_sd, strict=not fresh_head)
    except RuntimeError as err:
        raise ValueError(f"converted checkpoint does not fit the inferred model: {err}") from err
    model.eval()

    if output_dir is not None:
        output_dir = Path(output_dir)
        model.save_pretrained(output_dir)
        with open(output_dir / "conversion.json", "w") as f:
            json.dump({"dropped_keys": dropped}, f, indent=2, sort_keys=True)
        reloaded, info = VitPoseForPoseEstimation.from_pretrained(output_dir, output_loading_info=True)
        problems = {k: v for k, v in info.items() if k in ("missing_keys", "unexpected_keys", "mismatched_keys") and v}
        if problems:
            raise ValueError(f"the written checkpoint in {output_dir} does not load strictly: {problems}")
        reloaded_sd = reloaded.state_dict()
        for key, value in model.state_dict().items():
            if not torch.equal(reloaded_sd[key], value):
                raise ValueError(f"the written checkpoint in {output_dir} differs from the conversion at {key}")
        logger.info("wrote %s (%d tensors, %d keys dropped)", output_dir, len(new_sd), len(dropped))
    return model, dropped


# ----------------------------------------------------------------------------- CLI
def _parser(prog: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog or "python -m vitpose_hf.convert_vitpose_to_hf",
        description="Convert an official ViTPose / ViTPose++ .pth checkpoint to a vitpose_hf directory.",
    )
    parser.add_argument("--checkpoint", required=True,
                        help="official .pth file (mmpose layout), or a save_pretrained directory (ours or "
                             "transformers' VitPose format)")
    parser.add_argument("--output", required=True,
                        help="directory to write (config.json, model.safetensors, preprocessor_config.json)")
    parser.add_argument("--to-transformers", action="store_true",
                        help="write transformers' VitPose hub format instead of ours")
    kind = parser.add_mutually_exclusive_group()
    kind.add_argument("--simple", dest="simple", action="store_true", default=None,
                      help="expect / build the simple decoder")
    kind.add_argument("--classic", dest="simple", action="store_false", help="expect / build the classic decoder")
    parser.add_argument("--image-size", type=int, nargs=2, metavar=("H", "W"),
                        help="input size to run at (position embeddings are resampled)")
    parser.add_argument("--num-attention-heads", type=int, help="override the heads of the size table")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every step (DEBUG)")
    return parser


def _save_processor(model, output: str | Path, transformers_format: bool) -> None:
    """Write the image processor of `model`'s input size next to it (an upload is then complete):
    ours, or transformers' own `VitPoseImageProcessor` for the transformers hub format."""
    if transformers_format:
        from transformers import VitPoseImageProcessor as TransformersProcessor

        height, width = (int(v) for v in model.config.image_size)
        TransformersProcessor(size={"height": height, "width": width}).save_pretrained(output)
    else:
        VitPoseTopDownImageProcessor.for_config(model.config).save_pretrained(output)


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """Command line entry point; returns the exit status (0 on success, 1 on a conversion error).
    `prog` is the program name shown by `--help` (`vitpose-hf convert` from the `vitpose-hf` CLI)."""
    args = _parser(prog).parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s")
    try:
        if Path(args.checkpoint).is_dir():
            model = VitPoseForPoseEstimation.from_pretrained(args.checkpoint, strict=True, image_size=args.image_size)
            if args.simple is not None and args.simple != model.config.use_simple_decoder:
                raise ValueError(f"{args.checkpoint} does not hold the requested decoder")
            dropped: dict[str, str] = {}
            if not args.to_transformers:
                model.save_pretrained(args.output)
        else:
            model, dropped = convert_official_checkpoint(
                args.checkpoint, None if args.to_transformers else args.output, use_simple_decoder=args.simple,
                image_size=args.image_size, num_attention_heads=args.num_attention_heads,
            )
        if args.to_transformers:
            export_to_transformers(model, args.output)
        _save_processor(model, args.output, args.to_transformers)
        write_model_card(args.output, model.config, source=f"converted from {Path(args.checkpoint).name}",
                         transformers_format=args.to_transformers)
    except (ValueError, OSError) as err:
        logger.error("conversion failed: %s", err)
        return 1
    cfg = model.config  # (the dropped keys were logged by convert_official_checkpoint)
    logger.info(
        "converted %s -> %s: width %d, depth %d, heads %d, %s head, %d keypoints, %d experts, %d extra heads",
        args.checkpoint, args.output, cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads,
        "simple" if cfg.use_simple_decoder else "classic", cfg.num_labels, cfg.num_experts, len(cfg.dataset_heads),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
