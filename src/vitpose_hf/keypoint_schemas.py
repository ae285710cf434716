"""Keypoint schemas: names, flip pairs, skeleton edges and OKS sigmas of each dataset, in one table.

Every part of the package (flip test, evaluation, training targets, drawing) reads them from here,
and `resolve_schema` / `head_spec` are the one answer to "which head and which schema serve this
`dataset_index` of this model". The module imports only the standard library: it is copied beside
saved checkpoints, and it reads a model config by duck typing (vitpose_hf's or transformers' own).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence


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

# The tables below were read from the dataset definitions of mmpose (`configs/_base_/datasets/*.py`,
# the files ViTPose's configs use) and checked against the `categories` of the real annotation files
# in ../shared/data. `upper_body` lists the joints typed "upper" there (mmpose's half-body
# augmentation); for COCO-WholeBody that is the 11 body joints only, as in mmpose.
# MPII is evaluated with PCKh and defines no OKS sigmas (mmpose carries an unofficial list; we do not).
# AP-10K names are the snake_case names of its annotation files (mmpose abbreviates them: "L_F_Paw").

AIC = KeypointSchema(
    name="aic",
    keypoints=(
        "right_shoulder", "right_elbow", "right_wrist", "left_shoulder", "left_elbow", "left_wrist",
        "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle", "head_top", "neck",
    ),
    flip_pairs=(
        (0, 3), (1, 4), (2, 5), (6, 9), (7, 10), (8, 11),
    ),
    skeleton=(
        (2, 1), (1, 0), (0, 13), (13, 3), (3, 4), (4, 5), (8, 7), (7, 6), (6, 9), (9, 10), (10, 11),
        (12, 13), (0, 6), (3, 9),
    ),
    sigmas=(
        0.01388152, 0.01515228, 0.01057665, 0.01417709, 0.01497891, 0.01402144, 0.03909642, 0.03686941,
        0.01981803, 0.03843971, 0.03412318, 0.02415081, 0.01291456, 0.01236173,
    ),
    dataset_index=1,
    upper_body=(0, 1, 2, 3, 4, 5, 12, 13),
)  # fmt: skip


MPII = KeypointSchema(
    name="mpii",
    keypoints=(
        "right_ankle", "right_knee", "right_hip", "left_hip", "left_knee", "left_ankle", "pelvis", "thorax",
        "upper_neck", "head_top", "right_wrist", "right_elbow", "right_shoulder", "left_shoulder",
        "left_elbow", "left_wrist",
    ),
    flip_pairs=(
        (0, 5), (1, 4), (2, 3), (10, 15), (11, 14), (12, 13),
    ),
    skeleton=(
        (0, 1), (1, 2), (2, 6), (6, 3), (3, 4), (4, 5), (6, 7), (7, 8), (8, 9), (8, 12), (12, 11), (11, 10),
        (8, 13), (13, 14), (14, 15),
    ),
    sigmas=None,
    dataset_index=2,
    upper_body=(7, 8, 9, 10, 11, 12, 13, 14, 15),
)  # fmt: skip


CROWDPOSE = KeypointSchema(
    name="crowdpose",
    keypoints=(
        "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
        "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle", "top_head", "neck",
    ),
    flip_pairs=(
        (0, 1), (2, 3), (4, 5), (6, 7), (8, 9), (10, 11),
    ),
    skeleton=(
        (10, 8), (8, 6), (11, 9), (9, 7), (6, 7), (0, 6), (1, 7), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5),
        (12, 13), (1, 13), (0, 13),
    ),
    sigmas=(
        0.079, 0.079, 0.072, 0.072, 0.062, 0.062, 0.107, 0.107, 0.087, 0.087, 0.089, 0.089, 0.079, 0.079,
    ),
    dataset_index=None,
    upper_body=(0, 1, 2, 3, 4, 5, 12, 13),
)  # fmt: skip


# OCHuman annotates COCO's 17 keypoints; only the name (and the dataset) differ.
OCHUMAN = KeypointSchema(
    name="ochuman",
    keypoints=COCO.keypoints,
    flip_pairs=COCO.flip_pairs,
    skeleton=COCO.skeleton,
    sigmas=COCO.sigmas,
    dataset_index=None,
    upper_body=COCO.upper_body,
)


AP10K = KeypointSchema(
    name="ap10k",
    keypoints=(
        "left_eye", "right_eye", "nose", "neck", "root_of_tail", "left_shoulder", "left_elbow",
        "left_front_paw", "right_shoulder", "right_elbow", "right_front_paw", "left_hip", "left_knee",
        "left_back_paw", "right_hip", "right_knee", "right_back_paw",
    ),
    flip_pairs=(
        (0, 1), (5, 8), (6, 9), (7, 10), (11, 14), (12, 15), (13, 16),
    ),
    skeleton=(
        (0, 1), (0, 2), (1, 2), (2, 3), (3, 4), (3, 5), (5, 6), (6, 7), (3, 8), (8, 9), (9, 10), (4, 11),
        (11, 12), (12, 13), (4, 14), (14, 15), (15, 16),
    ),
    sigmas=(
        0.025, 0.025, 0.026, 0.035, 0.035, 0.079, 0.072, 0.062, 0.079, 0.072, 0.062, 0.107, 0.087, 0.089,
        0.107, 0.087, 0.089,
    ),
    dataset_index=3,
    # mmpose types right_front_paw "lower" (left_front_paw "upper"): a slip; we keep the front legs together.
    upper_body=(0, 1, 2, 3, 5, 6, 7, 8, 9, 10),
)  # fmt: skip


COCO_WHOLEBODY = KeypointSchema(
    name="coco_wholebody",
    keypoints=COCO.keypoints + (
        "left_big_toe", "left_small_toe", "left_heel",
        "right_big_toe", "right_small_toe", "right_heel", "face-0", "face-1", "face-2", "face-3", "face-4",
        "face-5", "face-6", "face-7", "face-8", "face-9", "face-10", "face-11", "face-12", "face-13",
        "face-14", "face-15", "face-16", "face-17", "face-18", "face-19", "face-20", "face-21", "face-22",
        "face-23", "face-24", "face-25", "face-26", "face-27", "face-28", "face-29", "face-30", "face-31",
        "face-32", "face-33", "face-34", "face-35", "face-36", "face-37", "face-38", "face-39", "face-40",
        "face-41", "face-42", "face-43", "face-44", "face-45", "face-46", "face-47", "face-48", "face-49",
        "face-50", "face-51", "face-52", "face-53", "face-54", "face-55", "face-56", "face-57", "face-58",
        "face-59", "face-60", "face-61", "face-62", "face-63", "face-64", "face-65", "face-66", "face-67",
        "left_hand_root", "left_thumb1", "left_thumb2", "left_thumb3", "left_thumb4", "left_forefinger1",
        "left_forefinger2", "left_forefinger3", "left_forefinger4", "left_middle_finger1",
        "left_middle_finger2", "left_middle_finger3", "left_middle_finger4", "left_ring_finger1",
        "left_ring_finger2", "left_ring_finger3", "left_ring_finger4", "left_pinky_finger1",
        "left_pinky_finger2", "left_pinky_finger3", "left_pinky_finger4", "right_hand_root", "right_thumb1",
        "right_thumb2", "right_thumb3", "right_thumb4", "right_forefinger1", "right_forefinger2",
        "right_forefinger3", "right_forefinger4", "right_middle_finger1", "right_middle_finger2",
        "right_middle_finger3", "right_middle_finger4", "right_ring_finger1", "right_ring_finger2",
        "right_ring_finger3", "right_ring_finger4", "right_pinky_finger1", "right_pinky_finger2",
        "right_pinky_finger3", "right_pinky_finger4",
    ),
    flip_pairs=(
        (1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16), (17, 20), (18, 21), (19, 22),
        (23, 39), (24, 38), (25, 37), (26, 36), (27, 35), (28, 34), (29, 33), (30, 32), (40, 49), (41, 48),
        (42, 47), (43, 46), (44, 45), (54, 58), (55, 57), (59, 68), (60, 67), (61, 66), (62, 65), (63, 70),
        (64, 69), (71, 77), (72, 76), (73, 75), (78, 82), (79, 81), (83, 87), (84, 86), (88, 90), (91, 112),
        (92, 113), (93, 114), (94, 115), (95, 116), (96, 117), (97, 118), (98, 119), (99, 120), (100, 121),
        (101, 122), (102, 123), (103, 124), (104, 125), (105, 126), (106, 127), (107, 128), (108, 129),
        (109, 130), (110, 131), (111, 132),
    ),
    skeleton=(
        (15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7), (6, 8), (7, 9),
        (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6), (15, 17), (15, 18), (15, 19),
        (16, 20), (16, 21), (16, 22), (91, 92), (92, 93), (93, 94), (94, 95), (91, 96), (96, 97), (97, 98),
        (98, 99), (91, 100), (100, 101), (101, 102), (102, 103), (91, 104), (104, 105), (105, 106),
        (106, 107), (91, 108), (108, 109), (109, 110), (110, 111), (112, 113), (113, 114), (114, 115),
        (115, 116), (112, 117), (117, 118), (118, 119), (119, 120), (112, 121), (121, 122), (122, 123),
        (123, 124), (112, 125), (125, 126), (126, 127), (127, 128), (112, 129), (129, 130), (130, 131),
        (131, 132),
    ),
    sigmas=(
        0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072, 0.062, 0.062, 0.107, 0.107, 0.087,
        0.087, 0.089, 0.089, 0.068, 0.066, 0.066, 0.092, 0.094, 0.094, 0.042, 0.043, 0.044, 0.043, 0.04,
        0.035, 0.031, 0.025, 0.02, 0.023, 0.029, 0.032, 0.037, 0.038, 0.043, 0.041, 0.045, 0.013, 0.012,
        0.011, 0.011, 0.012, 0.012, 0.011, 0.011, 0.013, 0.015, 0.009, 0.007, 0.007, 0.007, 0.012, 0.009,
        0.008, 0.016, 0.01, 0.017, 0.011, 0.009, 0.011, 0.009, 0.007, 0.013, 0.008, 0.011, 0.012, 0.01,
        0.034, 0.008, 0.008, 0.009, 0.008, 0.008, 0.007, 0.01, 0.008, 0.009, 0.009, 0.009, 0.007, 0.007,
        0.008, 0.011, 0.008, 0.008, 0.008, 0.01, 0.008, 0.029, 0.022, 0.035, 0.037, 0.047, 0.026, 0.025,
        0.024, 0.035, 0.018, 0.024, 0.022, 0.026, 0.017, 0.021, 0.021, 0.032, 0.02, 0.019, 0.022, 0.031,
        0.029, 0.022, 0.035, 0.037, 0.047, 0.026, 0.025, 0.024, 0.035, 0.018, 0.024, 0.022, 0.026, 0.017,
        0.021, 0.021, 0.032, 0.02, 0.019, 0.022, 0.031,
    ),
    dataset_index=5,
    upper_body=(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10),
)  # fmt: skip


# APT-36K uses the AP-10K keypoint definition; only the ViTPose++ dataset index differs.
APT36K = KeypointSchema(
    name="apt36k",
    keypoints=AP10K.keypoints,
    flip_pairs=AP10K.flip_pairs,
    skeleton=AP10K.skeleton,
    sigmas=AP10K.sigmas,
    dataset_index=4,
    upper_body=AP10K.upper_body,
)

SCHEMAS: dict[str, KeypointSchema] = {
    schema.name: schema for schema in (COCO, AIC, MPII, CROWDPOSE, OCHUMAN, AP10K, APT36K, COCO_WHOLEBODY)
}


_ALIASES = {
    "ap_10k": "ap10k", "apt_36k": "apt36k", "wholebody": "coco_wholebody", "ai_challenger": "aic",
    "aichallenger": "aic", "oc_human": "ochuman", "crowd_pose": "crowdpose",
}


def get_schema(name: str | KeypointSchema) -> KeypointSchema:
    """Look a schema up by name (case-insensitive); a `KeypointSchema` is returned as is."""
    if isinstance(name, KeypointSchema):
        return name
    key = str(name).lower().replace("-", "_").replace(" ", "_")
    key = _ALIASES.get(key, key)
    if key not in SCHEMAS:
        raise ValueError(f"unknown keypoint schema {name!r}; known: {sorted(SCHEMAS)}")
    return SCHEMAS[key]


def schema_for_num_keypoints(num_keypoints: int) -> KeypointSchema:
    """The default schema for a model with `num_keypoints` output channels.

    17 -> COCO (not OCHuman / AP-10K, which share the count), 14 -> AIC (CrowdPose also has 14),
    16 -> MPII, 133 -> COCO-WholeBody. Raises ValueError for any other count.
    """
    defaults = {17: COCO, 14: AIC, 16: MPII, 133: COCO_WHOLEBODY}
    k = int(num_keypoints)
    if k not in defaults:
        raise ValueError(
            f"no keypoint schema with {num_keypoints} keypoints; known counts: {sorted(defaults)}"
        )
    return defaults[k]


def normalize_keypoint_name(name: Any) -> str:
    """Keypoint name in the form names are compared in: stripped, lower-case, `_` for spaces and `-`."""
    return str(name).strip().lower().replace(" ", "_").replace("-", "_")


def infer_flip_pairs(names: Sequence[str]) -> tuple[tuple[int, int], ...]:
    """Index pairs of names that differ only by a left/right token (`left_x` <-> `right_x`,
    `l_x` <-> `r_x`); names are compared normalised (see `normalize_keypoint_name`)."""
    normed = [normalize_keypoint_name(n) for n in names]
    index = {n: i for i, n in enumerate(normed)}
    pairs: list[tuple[int, int]] = []
    for i, n in enumerate(normed):
        tokens = n.split("_")
        for a, b in (("left", "right"), ("l", "r")):
            if a in tokens:
                j = index.get("_".join(b if t == a else t for t in tokens))
                if j is not None and (i, j) not in pairs and (j, i) not in pairs:
                    pairs.append((i, j))
    return tuple(pairs)


def known_schema_for_names(names: Sequence[str]) -> KeypointSchema | None:
    """The first schema of `SCHEMAS` whose keypoint names equal `names` (compared normalised), else None.

    COCO and OCHuman share their names; COCO comes first."""
    normed = [normalize_keypoint_name(n) for n in names]
    for schema in SCHEMAS.values():
        if [normalize_keypoint_name(n) for n in schema.keypoints] == normed:
            return schema
    return None


def schema_from_names(
    names: Sequence[str], name: str = "custom", skeleton: Sequence[Sequence[int]] = ()
) -> KeypointSchema:
    """A known schema when `names` match one (`known_schema_for_names`), else a custom schema named
    `name` with flip pairs inferred from left/right names, the given 0-based `skeleton` (pairs
    outside `0..K-1` are dropped), no OKS sigmas and no ViTPose++ dataset index."""
    if not names:
        raise ValueError("a keypoint schema needs at least one keypoint name")
    known = known_schema_for_names(names)
    if known is not None:
        return known
    k = len(names)
    edges = tuple((int(a), int(b)) for a, b in skeleton if 0 <= int(a) < k and 0 <= int(b) < k)
    return KeypointSchema(
        name=normalize_keypoint_name(name), keypoints=tuple(str(n) for n in names),
        flip_pairs=infer_flip_pairs(names), skeleton=edges,
    )


# ----------------------------------------------------------------------------- heads of a model
# names transformers (LABEL_i) and the converter (keypoint_i) write when a head's keypoints are unnamed
_GENERIC_NAME = re.compile(r"(LABEL|keypoint)_\d+")


def _main_index(config: Any) -> int:
    # transformers' own VitPoseConfig has no main_dataset_index: its single head serves index 0
    return int(getattr(config, "main_dataset_index", 0) or 0)


def _labels_in_order(id2label: Mapping | None, count: int) -> list[str] | None:
    """The `count` names of an `id2label` mapping (int or str keys) in channel order, else None."""
    if not id2label or len(id2label) != count:
        return None
    by_int = {int(k): str(v) for k, v in id2label.items()}
    if sorted(by_int) != list(range(count)):
        return None
    return [by_int[i] for i in range(count)]


def head_spec(config: Any, dataset_index: int | None = None) -> dict:
    """The head serving `dataset_index` of a pose-model config, as a dict.

    Keys: `dataset_index` (the index asked for; None means the main head's, `main_dataset_index`,
    0 for transformers' configs), `num_labels` (K, the head's channels), `own_head` (False when the
    index has no head of its own and the main head serves it, e.g. a ViTPose++ expert index of a
    single-head model), `name` (the schema name the config states for that head, or None) and
    `labels` (its K keypoint names in channel order, or None). Works on vitpose_hf's `VitPoseConfig`
    (`head_specs()`, `keypoint_schema`) and on transformers' own VitPose config (one head)."""
    main = _main_index(config)
    index = main if dataset_index is None else int(dataset_index)
    main_k = int(config.num_labels)
    main_spec = {
        "dataset_index": index, "num_labels": main_k, "own_head": index == main,
        "name": getattr(config, "keypoint_schema", None) or None,
        "labels": _labels_in_order(getattr(config, "id2label", None), main_k),
    }
    if index == main:
        return main_spec
    for spec in getattr(config, "dataset_heads", None) or ():
        if int(spec["dataset_index"]) == index:
            k = int(spec["num_labels"])
            return {
                "dataset_index": index, "num_labels": k, "own_head": True, "name": spec.get("name") or None,
                "labels": _labels_in_order(spec.get("id2label"), k),
            }
    return main_spec


def head_num_keypoints(config: Any, dataset_index: int | None = None) -> int:
    """K of the head serving `dataset_index` (None = the main head); see `head_spec`."""
    return int(head_spec(config, dataset_index)["num_labels"])


def resolve_schema(config: Any, dataset_index: int | None = None, schema: Any = None) -> KeypointSchema:
    """The keypoint schema that names, flips and draws the output of the head serving `dataset_index`.

    The one rule used by the image processor's flip test, the pipeline, the evaluation and the CLI:
      1. `schema` when given (a name or a `KeypointSchema`); it must have the head's K, else ValueError;
      2. for an index with a head of its own: the schema name the config states for that head (the
         main head's `keypoint_schema`, an extra head's `name`) when it is known and has K keypoints;
         then the known schema whose names equal the head's `id2label`; then, when those are real
         names that match no known schema, a custom schema from them (`schema_from_names`: flip
         pairs from left/right names, the config's `edges` as skeleton for the main head);
      3. the known schema with that ViTPose++ dataset index and K keypoints (an expert index without
         its own head, e.g. 3 -> AP-10K);
      4. for an index without a head of its own: the main head's stated name or names, as in 2;
      5. the default schema for K keypoints (`schema_for_num_keypoints`);
      6. a custom schema of generic names `keypoint_i` without flip pairs.
    """
    spec = head_spec(config, dataset_index)
    k = int(spec["num_labels"])
    if schema is not None:
        found = get_schema(schema)
        if found.num_keypoints != k:
            head = "main head" if dataset_index is None else f"head of dataset_index {spec['dataset_index']}"
            raise ValueError(
                f"schema {found.name!r} has {found.num_keypoints} keypoints, the model's {head} has {k}"
            )
        return found

    def stated(s: dict) -> KeypointSchema | None:
        name = s["name"]
        if name and name != "main":
            key = _ALIASES.get(normalize_keypoint_name(name), normalize_keypoint_name(name))
            if key in SCHEMAS and SCHEMAS[key].num_keypoints == k:
                return SCHEMAS[key]
        if s["labels"] is not None:
            return known_schema_for_names(s["labels"])
        return None

    is_main = spec["dataset_index"] == _main_index(config)
    edges = (getattr(config, "edges", None) or ()) if is_main else ()
    if spec["own_head"]:
        found = stated(spec)
        if found is not None:
            return found
        if spec["labels"] is not None and not all(_GENERIC_NAME.fullmatch(n) for n in spec["labels"]):
            return schema_from_names(spec["labels"], name=spec["name"] or "custom", skeleton=edges)
    for candidate in SCHEMAS.values():
        if candidate.dataset_index == spec["dataset_index"] and candidate.num_keypoints == k:
            return candidate
    if not spec["own_head"]:
        found = stated(spec)
        if found is not None:
            return found
    try:
        return schema_for_num_keypoints(k)
    except ValueError:
        pass
    return schema_from_names([f"keypoint_{i}" for i in range(k)], name=spec["name"] or "custom", skeleton=edges)
