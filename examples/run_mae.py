#!/usr/bin/env python
"""MAE pre-training of a ViTPose backbone on pose images (Accelerate; one or many processes).

    # one process (CPU or GPU)
    python examples/run_mae.py --image_dir /data/coco/train2017 --output_dir out/mae-b
    # several GPUs / processes
    accelerate launch --num_processes 8 examples/run_mae.py --coco_json ann.json --image_root imgs \
        --person_crops --output_dir out/mae-b
    # offline smoke run on generated images
    python examples/run_mae.py --synthetic 64 --model_size tiny --max_steps 20 --output_dir /tmp/mae

Data: a folder of images (`--image_dir`, searched recursively), a COCO annotation file
(`--coco_json` + `--image_root`: whole images, or person boxes with `--person_crops`), or generated
images (`--synthetic N`). Augmentation: random resized crop (scale 0.2-1, aspect 3/4-4/3 around
the target aspect, bicubic) + horizontal flip, ImageNet mean/std; written with numpy + OpenCV (no
torchvision). Recipe defaults (MAE): AdamW betas (0.9, 0.95), weight decay 0.05 (none on 1-D
params, position embeddings, mask token), lr = blr 1.5e-4 x effective batch / 256, cosine schedule
with linear warmup, mask ratio 0.75, normalised-pixel loss.

The output directory is a normal `save_pretrained` folder of `VitPoseForMaskedImageModeling`; its
`backbone.*` keys are those of `VitPoseForPoseEstimation`, so
`VitPoseForPoseEstimation.from_pretrained(output_dir)` (what examples/run_pose.py loads) starts the
pose model from the pre-trained encoder (decoder keys are reported unused, the head is new).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from vitpose_hf import VitPoseConfig
from vitpose_hf.configuration_vitpose import PRESETS
from vitpose_hf.image_io import to_rgb_tensor
from vitpose_hf.modeling_vitpose_mae import (
    MAE_CONFIG_DEFAULTS,
    VitPoseForMaskedImageModeling,
    load_mae_checkpoint_into_backbone,
)
from vitpose_hf.training.param_groups import make_adamw

logger = logging.getLogger("run_mae")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
MEAN = np.array(IMAGENET_DEFAULT_MEAN, dtype=np.float32)
STD = np.array(IMAGENET_DEFAULT_STD, dtype=np.float32)
# Encoders: the presets of VitPoseConfig (PRESETS), plus "tiny" for CPU runs. Decoders: the MAE
# defaults (MAE_CONFIG_DEFAULTS, 512 wide, 8 layers, 16 heads) except for the two small encoders.
TINY_ENCODER = (64, 4, 4)  # hidden, layers, heads
SMALL_DECODERS = {"tiny": (64, 2, 4), "small": (256, 4, 8)}  # hidden, layers, heads
MODEL_SIZES = ("tiny", *PRESETS)


# ----------------------------------------------------------------------------- data
def list_images(folder: str | os.PathLike) -> list[Path]:
    """All image files under `folder` (recursive, sorted); ValueError when there are none."""
    root = Path(folder)
    if not root.is_dir():
        raise ValueError(f"image folder {str(root)!r} does not exist")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    if not files:
        raise ValueError(f"image folder {str(root)!r} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    return files


def coco_items(coco_json: str, image_root: str, person_crops: bool, aspect: float, min_size: float = 32.0):
    """`(path, box)` items from a COCO file: whole images (box None) or person boxes (x, y, w, h),
    enlarged x1.25 and widened to the `aspect` (w / h) of the model input."""
    with open(coco_json) as f:
        coco = json.load(f)
    images = {img["id"]: Path(image_root) / img["file_name"] for img in coco.get("images", [])}
    if not person_crops:
        items = [(path, None) for path in images.values()]
    else:
        person_ids = {c["id"] for c in coco.get("categories", []) if c.get("name") == "person"} or {1}
        items = []
        for ann in coco.get("annotations", []):
            x, y, w, h = ann["bbox"]
            if ann.get("iscrowd", 0) or ann.get("category_id") not in person_ids or min(w, h) < min_size:
                continue
            cx, cy = x + w / 2, y + h / 2
            w, h = (h * aspect, h) if w < h * aspect else (w, w / aspect)
            w, h = w * 1.25, h * 1.25
            items.append((images[ann["image_id"]], (cx - w / 2, cy - h / 2, w, h)))
    if not items:
        kind = "person boxes" if person_crops else "images"
        raise ValueError(f"COCO file {coco_json!r} yields no {kind}")
    return items


def write_synthetic_images(folder: str | os.PathLike, num_images: int, seed: int = 0, size=(240, 320)) -> Path:
    """Generated RGB images (smooth background + coloured ellipses and bars) as PNGs; returns the folder."""
    if num_images < 1:
        raise ValueError(f"--synthetic needs at least one image, got {num_images}")
    rng = np.random.default_rng(seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    for i in range(num_images):
        c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
        t = ((xx * rng.uniform(-1, 1) + yy * rng.uniform(-1, 1)) / (h + w) + 1) / 2
        img = (c0 * t[..., None] + c1 * (1 - t[..., None])).astype(np.uint8)
        for _ in range(int(rng.integers(3, 8))):
            color = tuple(int(v) for v in rng.uniform(0, 255, 3))
            center = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            if rng.random() < 0.5:
                axes = (int(rng.integers(8, w // 3)), int(rng.integers(8, h // 3)))
                cv2.ellipse(img, center, axes, float(rng.uniform(0, 180)), 0, 360, color, -1)
            else:
                end = (int(rng.integers(0, w)), int(rng.integers(0, h)))
                cv2.line(img, center, end, color, int(rng.integers(4, 20)))
        cv2.imwrite(str(folder / f"synthetic_{i:05d}.png"), img)
    return folder


def synthetic_items(output_dir: str, num_images: int, seed: int, person_crops: bool = False, aspect: float = 0.75,
                    generate: bool = True) -> list:
    """Items of a generated data set: `vitpose_hf.data.make_synthetic_coco` (COCO-format synthetic
    persons) when the package has it, otherwise plain generated images. With `generate=False` (other
    processes than the main one) the files written by the main process are only read."""
    if num_images < 1:
        raise ValueError(f"--synthetic needs at least one image, got {num_images}")
    target = Path(output_dir) / "synthetic_data"
    try:
        from vitpose_hf.data import make_synthetic_coco
    except ImportError:
        make_synthetic_coco = None
    if make_synthetic_coco is None:
        folder = write_synthetic_images(target, num_images, seed) if generate else target
        return [(p, None) for p in list_images(folder)]
    if generate:
        annotation_file, image_dir = make_synthetic_coco(target, num_images, seed=seed)
    else:
        annotation_file, image_dir = target / "person_keypoints.json", target / "images"
    return coco_items(str(annotation_file), str(image_dir), person_crops, aspect)


class MaeImageDataset(Dataset):
    """Random resized crop + flip of images or image regions, as normalised `(3, H, W)` float tensors.

    Args:
        items: `(path, box)` pairs; box `(x, y, w, h)` in pixels or None for the whole image.
        image_size: output `(H, W)`.
        scale: range of the crop area as a fraction of the region's area.
        train: random crop / flip (True) or the centred region at the target aspect (False).
        seed: base seed; sample `i` of epoch `e` uses `default_rng([seed, e, i])` (reproducible,
            independent of the number of processes and workers).
    """

    def __init__(self, items, image_size=(256, 192), scale=(0.2, 1.0), hflip=0.5, train=True, seed=0):
        if not items:
            raise ValueError("the data set is empty")
        if not 0 < scale[0] <= scale[1] <= 1:
            raise ValueError(f"scale must satisfy 0 < min <= max <= 1, got {scale}")
        self.items, self.size = list(items), (int(image_size[0]), int(image_size[1]))
        self.scale, self.hflip, self.train, self.seed, self.epoch = scale, hflip, train, seed, 0
        aspect = self.size[1] / self.size[0]
        self.log_ratio = (math.log(aspect * 3 / 4), math.log(aspect * 4 / 3))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.items)

    def _crop_box(self, rng, region):
        x0, y0, rw, rh = region
        out_aspect = self.size[1] / self.size[0]
        if self.train:
            for _ in range(10):
                area = rw * rh * rng.uniform(*self.scale)
                ratio = math.exp(rng.uniform(*self.log_ratio))
                w, h = math.sqrt(area * ratio), math.sqrt(area / ratio)
                if w <= rw and h <= rh:
                    return x0 + rng.uniform(0, rw - w), y0 + rng.uniform(0, rh - h), w, h
        w, h = (rw, rw / out_aspect) if rw / rh < out_aspect else (rh * out_aspect, rh)
        return x0 + (rw - w) / 2, y0 + (rh - h) / 2, w, h

    def __getitem__(self, index: int) -> torch.Tensor:
        path, box = self.items[index]
        # the library's one image loader (its rules for EXIF, alpha, 16-bit), channels last for cv2.warpAffine
        rgb = to_rgb_tensor(path)
        image = np.ascontiguousarray(rgb.permute(1, 2, 0).numpy())
        rng = np.random.default_rng([self.seed, self.epoch, index])
        region = box if box is not None else (0.0, 0.0, float(image.shape[1]), float(image.shape[0]))
        x, y, w, h = self._crop_box(rng, region)
        out_h, out_w = self.size
        sx, sy = out_w / w, out_h / h
        matrix = np.array([[sx, 0, -x * sx], [0, sy, -y * sy]], dtype=np.float64)
        if self.train and rng.random() < self.hflip:
            matrix[0] = -matrix[0]
            matrix[0, 2] += out_w
        crop = cv2.warpAffine(image, matrix, (out_w, out_h), flags=cv2.INTER_CUBIC, borderValue=(0, 0, 0))
        crop = (crop.astype(np.float32) / 255.0 - MEAN) / STD
        return torch.from_numpy(crop.transpose(2, 0, 1).copy())


def build_items(args, is_main_process: bool = True) -> list:
    sources = sum(bool(s) for s in (args.image_dir, args.coco_json, args.synthetic))
    if sources != 1:
        raise ValueError("give exactly one of --image_dir, --coco_json, --synthetic")
    if args.image_dir:
        return [(p, None) for p in list_images(args.image_dir)]
    if args.coco_json:
        root = args.image_root or str(Path(args.coco_json).parent)
        return coco_items(args.coco_json, root, args.person_crops, args.image_size[1] / args.image_size[0])
    return synthetic_items(args.output_dir, args.synthetic, args.seed, args.person_crops,
                           args.image_size[1] / args.image_size[0], generate=is_main_process)


# ----------------------------------------------------------------------------- model
def build_config(args) -> VitPoseConfig:
    hidden, layers, heads = TINY_ENCODER if args.model_size == "tiny" else PRESETS[args.model_size][:3]
    dec_hidden, dec_layers, dec_heads = SMALL_DECODERS.get(args.model_size, (
        MAE_CONFIG_DEFAULTS["mae_decoder_hidden_size"], MAE_CONFIG_DEFAULTS["mae_decoder_num_hidden_layers"],
        MAE_CONFIG_DEFAULTS["mae_decoder_num_attention_heads"],
    ))  # fmt: skip
    return VitPoseConfig(
        image_size=args.image_size, patch_size=args.patch_size, hidden_size=hidden, num_hidden_layers=layers,
        num_attention_heads=heads, drop_path_rate=0.0,
        mae_decoder_hidden_size=args.decoder_hidden_size or dec_hidden,
        mae_decoder_num_hidden_layers=args.decoder_num_layers or dec_layers,
        mae_decoder_num_attention_heads=args.decoder_num_heads or dec_heads,
        mae_mask_ratio=args.mask_ratio, mae_norm_pix_loss=args.norm_pix_loss,
    )


def _to_uint8(images: torch.Tensor) -> np.ndarray:
    """Normalised `(B, 3, H, W)` -> `(B, H, W, 3)` uint8 RGB."""
    x = images.detach().float().permute(0, 2, 3, 1).cpu().numpy() * STD + MEAN
    return (np.clip(x, 0, 1) * 255 + 0.5).astype(np.uint8)


@torch.no_grad()
def save_reconstruction_figure(model, images: torch.Tensor, path: str, seed: int = 0, zoom: int = 2) -> None:
    """One row per image: original | masked input | reconstruction | reconstruction + visible patches."""
    model.eval()
    b, _, height, width = images.shape
    ph, pw = model.patch_size
    grid = (height // ph, width // pw)
    noise = torch.rand(b, grid[0] * grid[1], generator=torch.Generator().manual_seed(seed))
    out = model(images, noise=noise)
    recon = model.reconstruction_to_pixels(images, out.reconstruction)
    pixel_mask = out.mask.reshape(b, 1, *grid).repeat_interleave(ph, 2).repeat_interleave(pw, 3)
    gray = torch.tensor(((0.5 - MEAN) / STD).tolist()).view(1, 3, 1, 1)
    masked = images * (1 - pixel_mask) + gray * pixel_mask
    pasted = images * (1 - pixel_mask) + recon * pixel_mask
    columns = [_to_uint8(t) for t in (images, masked, recon, pasted)]
    gap, header = 4, 22
    tile_h, tile_w = height * zoom, width * zoom
    canvas = np.full((header + b * (tile_h + gap), 4 * (tile_w + gap), 3), 255, np.uint8)
    for c, (title, col) in enumerate(zip(("original", "masked", "reconstruction", "+ visible"), columns)):
        x0 = c * (tile_w + gap)
        cv2.putText(canvas, title, (x0 + 2, 15), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (0, 0, 0), 1, cv2.LINE_AA)
        for r in range(b):
            y0 = header + r * (tile_h + gap)
            canvas[y0:y0 + tile_h, x0:x0 + tile_w] = cv2.resize(col[r], (tile_w, tile_h), interpolation=cv2.INTER_NEAREST)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR))


# ----------------------------------------------------------------------------- training
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[1], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    data = p.add_argument_group("data")
    data.add_argument("--image_dir", help="folder of images (recursive)")
    data.add_argument("--coco_json", help="COCO annotation file")
    data.add_argument("--image_root", help="image folder of --coco_json (default: its folder)")
    data.add_argument("--person_crops", action="store_true", help="train on person boxes (--coco_json / --synthetic)")
    data.add_argument("--synthetic", type=int, default=0, help="generate this many images")
    data.add_argument("--image_size", type=int, nargs=2, default=[256, 192], metavar=("H", "W"))
    data.add_argument("--min_crop_scale", type=float, default=0.2)
    data.add_argument("--num_workers", type=int, default=4)
    model = p.add_argument_group("model")
    model.add_argument("--model_size", choices=MODEL_SIZES, default="base")
    model.add_argument("--patch_size", type=int, default=16)
    model.add_argument("--decoder_hidden_size", type=int, default=None)
    model.add_argument("--decoder_num_layers", type=int, default=None)
    model.add_argument("--decoder_num_heads", type=int, default=None)
    model.add_argument("--mask_ratio", type=float, default=0.75)
    model.add_argument("--norm_pix_loss", action=argparse.BooleanOptionalAction, default=True)
    model.add_argument("--init_from", help="MAE checkpoint (facebookresearch/mae layout) to start the encoder from")
    train = p.add_argument_group("optimisation")
    train.add_argument("--output_dir", required=True)
    train.add_argument("--batch_size", type=int, default=64, help="per process")
    train.add_argument("--grad_accum", type=int, default=1)
    train.add_argument("--epochs", type=int, default=400)
    train.add_argument("--max_steps", type=int, default=0, help="stop after this many optimizer steps (0: epochs)")
    train.add_argument("--blr", type=float, default=1.5e-4, help="lr = blr * effective batch / 256")
    train.add_argument("--lr", type=float, default=None, help="absolute lr (overrides --blr)")
    train.add_argument("--weight_decay", type=float, default=0.05)
    train.add_argument("--warmup_ratio", type=float, default=0.1, help="warmup steps as a fraction of all steps")
    train.add_argument("--max_grad_norm", type=float, default=0.0, help="0: no clipping (MAE)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--cpu", action="store_true", help="train on the CPU even when a GPU is present")
    train.add_argument("--log_every", type=int, default=10)
    train.add_argument("--save_reconstruction", help="write a reconstruction figure (PNG) of 4 samples here")
    args = p.parse_args(argv)
    if not 0.0 < args.mask_ratio < 1.0:
        raise ValueError(f"--mask_ratio must be in (0, 1), got {args.mask_ratio}")
    if args.image_size[0] % args.patch_size or args.image_size[1] % args.patch_size:
        raise ValueError(f"--image_size {args.image_size} is not a multiple of --patch_size {args.patch_size}")
    if args.batch_size < 1 or args.grad_accum < 1:
        raise ValueError(f"--batch_size ({args.batch_size}) and --grad_accum ({args.grad_accum}) must be >= 1")
    return args


def main(argv=None) -> dict:
    """Train; returns `{"history": [{"step", "loss", "lr"}...], "output_dir": str}`."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from transformers import get_cosine_schedule_with_warmup

    args = parse_args(argv)
    # several processes without a GPU (torchrun / `accelerate launch --multi_gpu` on a CPU machine):
    # Accelerate only forms a gloo group when told to run on the CPU.
    cpu = args.cpu or (not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1)
    accelerator = Accelerator(gradient_accumulation_steps=args.grad_accum, cpu=cpu)
    logging.basicConfig(level=logging.INFO if accelerator.is_main_process else logging.WARNING,
                        format="%(asctime)s %(name)s %(message)s")
    with accelerator.main_process_first():
        items = build_items(args, accelerator.is_main_process)
    dataset = MaeImageDataset(items, args.image_size, (args.min_crop_scale, 1.0), seed=args.seed)

    set_seed(args.seed)  # identical initial weights in every process
    model = VitPoseForMaskedImageModeling(build_config(args))
    if args.init_from:
        logger.info("encoder init: %s", load_mae_checkpoint_into_backbone(model, args.init_from))
    set_seed(args.seed + accelerator.process_index)  # different masks per process
    world = accelerator.num_processes
    effective_batch = args.batch_size * world * args.grad_accum
    lr = args.lr if args.lr is not None else args.blr * effective_batch / 256
    optimizer = make_adamw(model, lr=lr, weight_decay=args.weight_decay, betas=(0.9, 0.95), layer_decay=1.0)
    loader = DataLoader(dataset, batch_size=args.batch_size, shuffle=True, num_workers=args.num_workers,
                        drop_last=len(dataset) >= args.batch_size * world,
                        generator=torch.Generator().manual_seed(args.seed))
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    steps_per_epoch = max(len(loader) // args.grad_accum, 1)
    total = args.max_steps or args.epochs * steps_per_epoch
    scheduler = get_cosine_schedule_with_warmup(optimizer, int(args.warmup_ratio * total), total)
    logger.info("%d images, %d processes, effective batch %d, lr %.3g, %d steps", len(dataset), world,
                effective_batch, lr, total)

    history, step, epoch = [], 0, 0
    while step < total:
        dataset.set_epoch(epoch)
        for batch in loader:
            with accelerator.accumulate(model):
                loss = model(pixel_values=batch).loss
                if not torch.isfinite(loss):
                    raise ValueError(f"non-finite loss {loss.item()} at step {step}; lower the learning rate")
                accelerator.backward(loss)
                if accelerator.sync_gradients and args.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad()
            if accelerator.sync_gradients:
                scheduler.step()
                step += 1
                mean_loss = accelerator.gather(loss.detach()[None]).mean().item()
                history.append({"step": step, "loss": mean_loss, "lr": scheduler.get_last_lr()[0]})
                if step % args.log_every == 0 or step == 1:
                    logger.info("epoch %d step %d/%d loss %.4f lr %.3g", epoch, step, total, mean_loss, history[-1]["lr"])
                if step >= total:
                    break
        epoch += 1

    accelerator.wait_for_everyone()
    unwrapped = accelerator.unwrap_model(model)
    if accelerator.is_main_process:
        unwrapped.save_pretrained(args.output_dir)
        with open(Path(args.output_dir) / "train_history.json", "w") as f:
            json.dump({"history": history, "args": vars(args), "num_processes": world}, f, indent=1)
        if args.save_reconstruction:
            eval_set = MaeImageDataset(items, args.image_size, train=False)
            picks = np.unique(np.linspace(0, len(eval_set) - 1, 4).round().astype(int))
            images = torch.stack([eval_set[int(i)] for i in picks])
            save_reconstruction_figure(unwrapped.float().cpu(), images, args.save_reconstruction, args.seed)
        logger.info("saved to %s", args.output_dir)
    accelerator.wait_for_everyone()
    return {"history": history, "output_dir": args.output_dir}


if __name__ == "__main__":
    main()
