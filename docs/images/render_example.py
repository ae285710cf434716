"""Render docs/images/keypoints_example.png: ground-truth COCO skeletons drawn by
`vitpose_hf.visualization.draw_keypoints` on a plain synthetic canvas.

No trained weights ship with the project and the COCO photographs carry Flickr licences, so the
picture shows the *annotations* of one coco_sample image (CC BY 4.0) on a generated background,
not the photo. Run from the repository root:

    python docs/images/render_example.py [../shared/data/coco_sample]
"""

import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from vitpose_hf.visualization import draw_keypoints

folder = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/coco_sample")
ann = json.loads((folder / "test_coco.json").read_text())
image = next(im for im in ann["images"] if im["id"] == 197388)
persons = [a for a in ann["annotations"] if a["image_id"] == image["id"] and a["num_keypoints"] > 0]

# synthetic background: a vertical grey-blue gradient with a horizon line, same size as the photo
h, w = image["height"], image["width"]
t = np.linspace(0.0, 1.0, h)[:, None, None]
canvas = (np.array([40, 48, 64]) * (1 - t) + np.array([92, 100, 112]) * t) * np.ones((1, w, 1))
canvas[int(0.8 * h) :] *= 0.8
out = draw_keypoints(Image.fromarray(canvas.astype(np.uint8)), persons, schema="coco", keypoint_threshold=0.5)
target = Path(__file__).with_name("keypoints_example.png")
out.save(target, optimize=True)
print(f"{target}: {out.size}, {len(persons)} persons, {target.stat().st_size} bytes")
