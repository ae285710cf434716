"""Keypoint schemas: names, flip pairs, skeleton edges and OKS sigmas of each dataset, in one table.

Every part of the package (flip test, evaluation, training targets, drawing) reads them from here.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class KeypointSchema:
    """One keypoint layout.

    Attributes:
        name: short id, e.g. "coco".
        keypoints: K keypoint names, in model channel order.
        flip_pairs: (left, right) index pairs swapped by a horizontal flip.
        skeleton: (i, j) index pairs drawn as limbs (0-based).
        sigmas: K OKS sigmas (COCO convention, not x10), or None when the dataset defines none.
        dataset_index: ViTPose++ dataset index (0 COCO, 1 AIC, 2 MPII, 3 AP-10K, 4 APT-36K,
            5 COCO-WholeBody), or None.
        upper_body: indices counted as upper body by the half-body augmentation.
    """

    name: str
    keypoints: tuple[str, ...]
    flip_pairs: tuple[tuple[int, int], ...]
    skeleton: tuple[tuple[int, int], ...]
    sigmas: tuple[float, ...] | None = None
    dataset_index: int | None = None
    upper_body: tuple[int, ...] = field(default_factory=tuple)

    @property
    def num_keypoints(self) -> int:
        return len(self.keypoints)

    def flip_permutation(self) -> list[int]:
        """Channel order after a horizontal flip: `perm[i]` is the channel that lands on `i`."""
        perm = list(range(self.num_keypoints))
        for a, b in self.flip_pairs:
            perm[a], perm[b] = b, a
        return perm

    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.keypoints))


COCO = KeypointSchema(
    name="coco",
    keypoints=(
        "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
        "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee",
        "right_knee", "left_ankle", "right_ankle",
    ),
    flip_pairs=((1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16)),
    skeleton=(
        (15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7), (6, 8),
        (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6),
    ),
    sigmas=(
        0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072, 0.062, 0.062, 0.107, 0.107,
        0.087, 0.087, 0.089, 0.089,
    ),
    dataset_index=0,
    upper_body=tuple(range(11)),
)  # fmt: skip

SCHEMAS: dict[str, KeypointSchema] = {"coco": COCO}


def get_schema(name: str | KeypointSchema) -> KeypointSchema:
    """Look a schema up by name (case-insensitive); a `KeypointSchema` is returned as is."""
    if isinstance(name, KeypointSchema):
        return name
    key = str(name).lower().replace("-", "_")
    if key not in SCHEMAS:
        raise ValueError(f"unknown keypoint schema {name!r}; known: {sorted(SCHEMAS)}")
    return SCHEMAS[key]
