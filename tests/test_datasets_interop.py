"""`datasets` images (issue 14, datasets interop): `TopDownTransform` reads `datasets.Image` columns,
`load_coco_keypoints(..., images="embed")` makes a self-contained dataset that survives
save_to_disk / load_from_disk, and run_pose.py trains from such a folder."""

from __future__ import annotations

import datasets
import pytest
import torch
from PIL import Image
from test_reliability_training import TINY_ARGS, _run

from vitpose_hf.data import TopDownTransform
from vitpose_hf.data.coco import load_coco_keypoints


def _crops(rows):
    transform = TopDownTransform("coco", image_size=(64, 48), heatmap_size=(32, 24), train=False)
    return transform(rows[:])


def test_embedded_images_survive_save_to_disk_and_give_the_same_crops(shared_data, tmp_path):
    folder = shared_data / "coco_sample"
    by_path = load_coco_keypoints(folder / "test_coco.json", folder)
    embedded = load_coco_keypoints(folder / "test_coco.json", folder, images="embed")
    assert isinstance(embedded.features["image"], datasets.Image)
    embedded.save_to_disk(str(tmp_path / "saved"))
    reloaded = datasets.load_from_disk(str(tmp_path / "saved"))
    # the image files are not needed any more: the bytes are in the arrow files
    reloaded = reloaded.map(lambda row: {"image_path": "/nonexistent/" + row["image_path"].rsplit("/", 1)[-1]})
    reference = _crops(by_path)
    # bytes and decoded PIL images go through the same loader as files: bit-identical crops
    for rows in (reloaded.cast_column("image", datasets.Image(decode=False)), reloaded):
        got = _crops(rows)
        assert len(got["pixel_values"]) == len(reference["pixel_values"]) == len(by_path)
        for a, b in zip(got["pixel_values"], reference["pixel_values"]):
            assert torch.equal(a, b)
        for a, b in zip(got["labels"], reference["labels"]):
            assert torch.equal(a, b)


def test_a_pil_image_column_from_the_hub_layout_plugs_in(shared_data):
    folder = shared_data / "coco_sample"
    rows = load_coco_keypoints(folder / "test_coco.json", folder)
    # a decoded Image column (what a Hub dataset gives): PIL images, no image_path
    pil = rows.add_column("image", [{"path": p, "bytes": None} for p in rows["image_path"]], feature=datasets.Image())
    pil = pil.remove_columns("image_path")
    assert isinstance(pil[0]["image"], Image.Image)
    got, reference = _crops(pil), _crops(rows)
    assert all(torch.equal(a, b) for a, b in zip(got["pixel_values"], reference["pixel_values"]))
    with pytest.raises(ValueError, match="unsupported type int"):
        TopDownTransform("coco", image_size=(64, 48), train=False)({**rows[:1], "image": [3]})
    with pytest.raises(ValueError, match="could not read image bytes"):
        TopDownTransform("coco", image_size=(64, 48), train=False)({**rows[:1], "image": [{"bytes": b"no image", "path": None}]})


def test_load_coco_keypoints_names_a_bad_images_mode(shared_data):
    folder = shared_data / "coco_sample"
    with pytest.raises(ValueError, match="images must be 'path' or 'embed', got 'bytes'"):
        load_coco_keypoints(folder / "test_coco.json", folder, images="bytes")


def test_run_pose_trains_from_a_saved_dataset(shared_data, tmp_path):
    folder = shared_data / "coco_sample"
    load_coco_keypoints(folder / "test_coco.json", folder, images="embed").save_to_disk(str(tmp_path / "saved"))
    out = tmp_path / "run"
    result = _run([
        "--train_dataset_dir", str(tmp_path / "saved"), "--eval_annotations", str(folder / "test_coco.json"),
        "--eval_images", str(folder), "--output_dir", str(out), *TINY_ARGS, "--max_steps", "2", "--save_steps", "2",
        "--eval_strategy", "no", "--per_device_train_batch_size", "4", "--augmentation", "False",
        "--logging_steps", "1", "--flip_test", "False",
    ])
    assert result["global_step"] == 2 and (out / "model.safetensors").is_file()
    assert "trained for 2 steps on the saved dataset saved" in (out / "README.md").read_text()
    with pytest.raises(ValueError, match="--train_dataset_dir .*not a dataset saved with save_to_disk"):
        _run(["--train_dataset_dir", str(tmp_path / "nothing"), "--output_dir", str(tmp_path / "run2"), *TINY_ARGS])
