"""Keypoint schemas: internal consistency and agreement with the real annotation files."""

from __future__ import annotations

import json
import re

import pytest

from vitpose_hf.keypoint_schemas import SCHEMAS, KeypointSchema, get_schema, schema_for_num_keypoints

EXPECTED = {
    "coco": (17, 0), "aic": (14, 1), "mpii": (16, 2), "crowdpose": (14, None), "ochuman": (17, None),
    "ap10k": (17, 3), "apt36k": (17, 4), "coco_wholebody": (133, 5),
}  # fmt: skip


def test_all_expected_schemas_present():
    assert set(EXPECTED) <= set(SCHEMAS)
    for name, (k, index) in EXPECTED.items():
        schema = SCHEMAS[name]
        assert schema.name == name
        assert schema.num_keypoints == k, name
        assert schema.dataset_index == index, name


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_schema_consistency(name):
    schema = SCHEMAS[name]
    k = schema.num_keypoints
    assert len(set(schema.keypoints)) == k, "keypoint names must be unique"
    seen = set()
    for a, b in schema.flip_pairs:
        assert 0 <= a < k and 0 <= b < k and a != b
        assert a not in seen and b not in seen, "an index may appear in only one flip pair"
        seen |= {a, b}
    perm = schema.flip_permutation()
    assert sorted(perm) == list(range(k))
    assert [perm[perm[i]] for i in range(k)] == list(range(k)), "flip must be an involution"
    # names agree with the pairs: a left joint swaps with its right twin
    for a, b in schema.flip_pairs:
        na, nb = schema.keypoints[a], schema.keypoints[b]
        if "left" in na or "left" in nb:
            assert na.replace("left", "right") == nb or nb.replace("left", "right") == na, (na, nb)
    for a, b in schema.skeleton:
        assert 0 <= a < k and 0 <= b < k and a != b
    if schema.sigmas is not None:
        assert len(schema.sigmas) == k
        assert all(0 < s < 0.2 for s in schema.sigmas)
        # sigmas respect the flip symmetry
        for a, b in schema.flip_pairs:
            # AIC and COCO-WholeBody ship measured, slightly asymmetric sigmas
            if name not in ("aic", "coco_wholebody"):
                assert schema.sigmas[a] == schema.sigmas[b], (name, a, b)
    assert all(0 <= i < k for i in schema.upper_body) and len(set(schema.upper_body)) == len(schema.upper_body)
    # upper body is closed under flipping
    perm_set = {perm[i] for i in schema.upper_body}
    assert perm_set == set(schema.upper_body)


def test_coco_sigmas_match_readme(shared_data):
    text = (shared_data / "README.md").read_text()
    line = next(l for l in text.splitlines() if "OKS sigmas (x10)" in l)
    values = [float(v) for v in re.findall(r"\d*\.\d+", line.split(":", 1)[1])]
    assert len(values) == 17
    assert SCHEMAS["coco"].sigmas == pytest.approx([v / 10 for v in values], abs=1e-12)
    assert SCHEMAS["ochuman"].sigmas == SCHEMAS["coco"].sigmas
    pairs = [tuple(int(x) for x in m) for m in re.findall(r"\((\d+),(\d+)\)", text)]
    assert tuple(pairs) == SCHEMAS["coco"].flip_pairs


def _norm(name: str) -> str:
    return name.lower().replace(" ", "_").replace("top_head", "head_top")


@pytest.mark.parametrize(
    "name,path,check_skeleton",
    [
        ("coco", "coco_sample/test_coco.json", True),
        ("aic", "aic_sample/test_aic.json", True),
        ("ochuman", "ochuman_sample/test_ochuman.json", True),
        ("crowdpose", "crowdpose_sample/test_crowdpose.json", False),  # its json skeleton is COCO's, invalid
    ],
)
def test_schema_matches_annotation_categories(shared_data, name, path, check_skeleton):
    category = json.loads((shared_data / path).read_text())["categories"][0]
    schema = SCHEMAS[name]
    names = [_norm(n) for n in category["keypoints"]]
    ours = [_norm(n) for n in schema.keypoints]
    if name == "crowdpose":
        names = [n if n != "head" else "head_top" for n in names]
    assert names == ours
    if check_skeleton:
        limbs = {tuple(sorted((a - 1, b - 1))) for a, b in category["skeleton"]}
        assert limbs == {tuple(sorted(e)) for e in schema.skeleton}


def test_mpii_joint_count_and_layout(shared_data):
    rows = json.loads((shared_data / "mpii_sample" / "test_mpii.json").read_text())
    assert all(len(r["joints"]) == SCHEMAS["mpii"].num_keypoints for r in rows)
    assert SCHEMAS["mpii"].sigmas is None
    # MPII order: right ankle (0) ... left ankle (5), pelvis 6, thorax 7, upper neck 8, head top 9
    assert SCHEMAS["mpii"].keypoints[6:10] == ("pelvis", "thorax", "upper_neck", "head_top")


def test_lookup_helpers():
    assert get_schema("COCO-WholeBody") is SCHEMAS["coco_wholebody"]
    assert get_schema("AP-10K") is SCHEMAS["ap10k"]
    assert get_schema(SCHEMAS["aic"]) is SCHEMAS["aic"]
    with pytest.raises(ValueError, match="unknown keypoint schema"):
        get_schema("nope")
    assert schema_for_num_keypoints(17).name == "coco"
    assert schema_for_num_keypoints(14).name == "aic"
    assert schema_for_num_keypoints(16).name == "mpii"
    assert schema_for_num_keypoints(133).name == "coco_wholebody"
    with pytest.raises(ValueError, match="5 keypoints"):
        schema_for_num_keypoints(5)
    assert isinstance(SCHEMAS["coco"], KeypointSchema)
    assert SCHEMAS["coco_wholebody"].flip_permutation()[91] == 112  # left hand root <-> right hand root
