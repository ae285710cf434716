"""The bf16 fast path (`optimize_for_inference(model, dtype=torch.bfloat16)`) and its float32 heatmaps.

- every head's final conv stays float32 (its original weights) and gets the bf16 features upcast, so
  the heatmaps are float32 and equal a float64 reference conv of those bf16 features;
- `float32_heatmaps=False` gives the all-bf16 model (bf16 heatmaps), and a model cast to bf16 before
  the call gets the float32 final conv too;
- the bf16 path stays close to fp32, and differs from the all-bf16 path only by the rounding of the
  final conv's weights and output;
- `predict_heatmaps` and `post_process_pose_estimation` add no bf16 rounding of their own (the flip
  average is taken in float32, decoding upcasts first).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_config_kwargs

from vitpose_hf import VitPoseConfig, VitPoseForPoseEstimation
from vitpose_hf.image_processing_vitpose import VitPoseTopDownImageProcessor, predict_heatmaps
from vitpose_hf.keypoint_schemas import get_schema
from vitpose_hf.inference import optimize_for_inference

BF16_U = 2.0**-8  # bf16 unit roundoff: 8 significant bits, rounding moves a value by <= 2^-8 of itself


def _model(**overrides) -> VitPoseForPoseEstimation:
    torch.manual_seed(0)
    model = VitPoseForPoseEstimation(VitPoseConfig(**tiny_config_kwargs(**overrides))).eval()
    with torch.no_grad():  # non-trivial biases and BN statistics, so that heatmaps are not near zero
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.1)
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.normal_(0, 0.1)
            elif name.endswith("running_var"):
                b.uniform_(0.5, 1.5)
    return model


def _not_bf16_representable(t: torch.Tensor) -> bool:
    return bool((t.float() != t.float().to(torch.bfloat16).float()).any())


@pytest.mark.parametrize("simple", [False, True])
def test_final_conv_stays_float32_with_original_weights(simple):
    model = _model(use_simple_decoder=simple, dataset_heads=[{"dataset_index": 1, "num_labels": 14}])
    originals = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimize_for_inference(model, dtype=torch.bfloat16)
    for name, p in model.named_parameters():
        final = name.startswith(("head.conv.", "extra_heads.1.conv."))
        assert p.dtype == (torch.float32 if final else torch.bfloat16), name
        if final:  # the fp32 weights themselves, not bf16-rounded copies
            assert torch.equal(p, originals[name]), name
    x = torch.randn(2, 3, 64, 48)
    with torch.inference_mode():
        out = model(x, dataset_index=torch.tensor([0, 1])).heatmaps
    assert out.dtype == torch.float32 and out.shape == (2, 17, 32, 24)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("grad", [False, True])
@pytest.mark.parametrize("simple", [False, True])
def test_heatmaps_are_float32_conv_of_bf16_features(simple, grad):
    """Documented values: the layers before the final conv run in bf16; the final conv is float32 on the
    upcast bf16 features. Reference: that conv in float64 (classic: 1x1 conv; simple: ReLU, bilinear
    x4, 3x3 conv), on the bf16 features the model itself produced."""
    model = optimize_for_inference(_model(use_simple_decoder=simple), dtype=torch.bfloat16)
    x = torch.randn(3, 3, 64, 48)
    with torch.set_grad_enabled(grad):  # grad: the plain head path; no grad: the inference fast path
        out = model(x, output_hidden_states=True)
    heat, features = out.heatmaps.detach(), out.feature_map.detach()
    assert features.dtype == torch.bfloat16 and heat.dtype == torch.float32
    head = model.head
    w, b = head.conv.weight.detach().double(), head.conv.bias.detach().double()
    with torch.no_grad():
        if simple:
            up = F.interpolate(F.relu(features.double()), scale_factor=4, mode="bilinear", align_corners=False)
            ref = F.conv2d(up, w, b, padding=1)
        else:
            hidden = F.relu(head.batchnorm1(head.deconv1(features)))
            hidden = F.relu(head.batchnorm2(head.deconv2(hidden)))
            assert hidden.dtype == torch.bfloat16
            ref = F.conv2d(hidden.double(), w, b)
    # float32 arithmetic on exact bf16 inputs: relative error ~1e-7 per term
    torch.testing.assert_close(heat.double(), ref, rtol=1e-5, atol=1e-5 * ref.abs().max().item())
    assert _not_bf16_representable(heat)  # not rounded to bf16 on the way out


def test_float32_heatmaps_false_is_all_bf16_and_prior_cast_is_upgraded():
    x = torch.randn(2, 3, 64, 48)
    plain = optimize_for_inference(_model(), dtype=torch.bfloat16, float32_heatmaps=False)
    assert all(p.dtype == torch.bfloat16 for p in plain.parameters())
    with torch.inference_mode():
        assert plain(x).heatmaps.dtype == torch.bfloat16
    # the benchmark's route: cast first, then optimize without a dtype -> float32 final conv (the
    # weights were already rounded to bf16, so they are those values upcast)
    cast = _model().to(torch.bfloat16)
    rounded = cast.head.conv.weight.detach().clone()
    optimize_for_inference(cast)
    assert cast.head.conv.weight.dtype == torch.float32 and torch.equal(cast.head.conv.weight, rounded.float())
    with torch.inference_mode():
        assert cast(x).heatmaps.dtype == torch.float32
    # a float32 model without dtype is untouched
    model = _model()
    optimize_for_inference(model)
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_bf16_path_close_to_fp32_and_differs_from_all_bf16_only_by_the_final_rounding():
    model = _model()
    x = torch.randn(4, 3, 64, 48)
    fast = optimize_for_inference(copy.deepcopy(model), dtype=torch.bfloat16)
    all16_model = optimize_for_inference(copy.deepcopy(model), dtype=torch.bfloat16, float32_heatmaps=False)
    with torch.inference_mode():
        ref32 = model(x).heatmaps
        out = fast(x, output_hidden_states=True)
        all16 = all16_model(x).heatmaps
    heat = out.heatmaps
    # vs fp32: rounding the heatmaps alone to bf16 can move them by BF16_U |h|, and the bf16 backbone
    # and deconvs add their own error. With the float32 final conv the bf16 path must stay within one
    # BF16_U of the heatmap range, better than the output rounding alone could promise (measured on this
    # model: 0.06% of the range with the float32 conv, 0.42% for the all-bf16 model; BF16_U = 0.39%).
    scale = ref32.abs().max()
    assert (heat - ref32).abs().max() <= BF16_U * scale
    # vs the all-bf16 path: same bf16 features, so the only differences are the bf16 rounding of the
    # final conv's weights (|dw| <= BF16_U |w|), of its bias and of its output (<= BF16_U |h|)
    with torch.no_grad():
        head = fast.head
        hidden = F.relu(head.batchnorm2(head.deconv2(F.relu(head.batchnorm1(head.deconv1(out.feature_map))))))
        bound_w = F.conv2d(hidden.double().abs(), head.conv.weight.double().abs()) * BF16_U
        bound_b = head.conv.bias.double().abs().view(1, -1, 1, 1) * BF16_U
    diff = (all16.double() - heat.double()).abs()
    assert (diff <= bound_w + bound_b + BF16_U * heat.double().abs() + 1e-7).all()
    assert diff.max() > 0  # the float32 conv really changed something


def test_predict_heatmaps_flip_average_in_float32():
    """With bf16 heatmaps out of the model, the flip-test average is taken in float32: it equals the
    numpy float64 average of the two bf16 halves (exact in float32) and is not bf16-rounded."""
    model = optimize_for_inference(_model(), dtype=torch.bfloat16, float32_heatmaps=False)
    pairs = get_schema("coco").flip_pairs
    x = torch.randn(3, 3, 64, 48)
    got = predict_heatmaps(model, x, flip_test=True, flip_pairs=pairs)
    with torch.no_grad():
        raw = model(torch.cat([x, x.flip(-1)]).to(torch.bfloat16)).heatmaps
    assert raw.dtype == torch.bfloat16
    both = raw.float().numpy().astype(np.float64)
    plain, mirrored = both[:3], both[3:]
    order = list(range(17))
    for left, right in pairs:
        order[left], order[right] = right, left
    back = mirrored[:, order, :, ::-1]
    expected = (0.5 * (plain + back)).astype(np.float32)
    assert got.dtype == torch.float32
    np.testing.assert_array_equal(got.numpy(), expected)
    assert _not_bf16_representable(got)


def test_post_processing_bf16_heatmaps_equals_float32_input():
    """Decoding upcasts first: bf16 heatmaps decode exactly like the same values in float32."""
    torch.manual_seed(1)
    yy, xx = torch.meshgrid(torch.arange(16.0), torch.arange(12.0), indexing="ij")
    centers = torch.rand(2, 17, 2) * torch.tensor([10.0, 14.0]) + 1.0
    heat = torch.exp(-((xx - centers[..., :1, None]) ** 2 + (yy - centers[..., 1:, None]) ** 2) / 8.0)
    heat16 = heat.to(torch.bfloat16)
    processor = VitPoseTopDownImageProcessor()
    boxes = [[[10.0, 20.0, 60.0, 80.0], [5.0, 5.0, 30.0, 40.0]]]
    a = processor.post_process_pose_estimation(heat16, boxes=boxes)
    b = processor.post_process_pose_estimation(heat16.float(), boxes=boxes)
    for pa, pb in zip(a[0], b[0]):
        assert pa["keypoints"].dtype == torch.float32
        torch.testing.assert_close(pa["keypoints"], pb["keypoints"], rtol=0, atol=0)
        torch.testing.assert_close(pa["scores"], pb["scores"], rtol=0, atol=0)
