"""Windowed attention variants (window / shifted / pooled) and the 1/8 feature-resolution option."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import tiny_config_kwargs
from vitpose_hf import VitPoseConfig, VitPoseForPoseEstimation
from vitpose_hf.attention import build_attention_mask_fn, sdpa_or_eager_attention
from vitpose_hf.window_attention import make_windowed_attention, window_layout

KINDS = ("window", "shifted_window", "pooled_window")


def _model(**overrides) -> VitPoseForPoseEstimation:
    return VitPoseForPoseEstimation(VitPoseConfig(**tiny_config_kwargs(**overrides))).eval()


def _set_impl(model, impl):
    model.config._attn_implementation = impl
    return model


# ----------------------------------------------------------------------------- independent reference
def _reference(q, k, v, grid, window, kind, shift, num_prefix, num_heads):
    """Brute force in float64, one query at a time, from token coordinates (no rolling, no padding)."""
    h, w = grid
    wh, ww = min(window[0], h), min(window[1], w)
    sh = wh // 2 if (kind == "shifted_window" and shift and wh < h) else 0
    sw = ww // 2 if (kind == "shifted_window" and shift and ww < w) else 0
    b, n_tok, c = q.shape
    d = c // num_heads
    q, k, v = (t.double().view(b, n_tok, num_heads, d) for t in (q, k, v))
    coords = [(i // w, i % w) for i in range(h * w)]
    win_id = [((r - sh) // wh, (cc - sw) // ww) for r, cc in coords]  # python floor division
    plain_id = [(r // wh, cc // ww) for r, cc in coords]
    pooled_windows = sorted(set(plain_id))
    out = torch.zeros_like(q)
    scale = d**-0.5
    for i in range(n_tok):
        if i < num_prefix:
            keys, vals = k, v
        else:
            me = win_id[i - num_prefix]
            idx = list(range(num_prefix)) + [num_prefix + j for j in range(h * w) if win_id[j] == me]
            keys, vals = k[:, idx], v[:, idx]
            if kind == "pooled_window":
                pk, pv = [], []
                for pw in pooled_windows:
                    members = [num_prefix + j for j in range(h * w) if plain_id[j] == pw]
                    pk.append(k[:, members].mean(1, keepdim=True))
                    pv.append(v[:, members].mean(1, keepdim=True))
                keys = torch.cat([keys] + pk, dim=1)
                vals = torch.cat([vals] + pv, dim=1)
        scores = torch.einsum("bhd,bmhd->bhm", q[:, i], keys) * scale
        out[:, i] = torch.einsum("bhm,bmhd->bhd", scores.softmax(-1), vals)
    return out.reshape(b, n_tok, c)


def _attend(kind, grid, window, shift, num_prefix, q, k, v, num_heads, impl):
    fn = build_attention_mask_fn(kind, grid, window, shift, num_prefix)
    d = q.shape[-1] // num_heads
    return fn(q, k, v, num_heads=num_heads, scaling=d**-0.5, impl=impl, module=None, dropout=0.0,
              kernel=sdpa_or_eager_attention)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("grid,window,shift,num_prefix", [
    ((6, 4), (3, 2), False, 0),      # divisible
    ((7, 5), (3, 2), True, 0),       # padded + shifted (wrap and padding in the same windows)
    ((7, 5), (4, 4), True, 2),       # padded + shifted + knowledge tokens
    ((5, 9), (8, 4), True, 1),       # window taller than the grid: clamped, no shift on that axis
])  # fmt: skip
@pytest.mark.parametrize("impl", ["eager", "sdpa"])
def test_matches_brute_force_reference(kind, grid, window, shift, num_prefix, impl):
    heads, c = 2, 8
    n_tok = num_prefix + grid[0] * grid[1]
    q, k, v = (torch.randn(2, n_tok, c) for _ in range(3))
    out, _ = _attend(kind, grid, window, shift, num_prefix, q, k, v, heads, impl)
    expected = _reference(q, k, v, grid, window, kind, shift, num_prefix, heads)
    assert out.shape == (2, n_tok, c)
    torch.testing.assert_close(out.double(), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", ["window", "shifted_window"])
@pytest.mark.parametrize("impl", ["eager", "sdpa"])
@pytest.mark.parametrize("window", [(8, 6), (20, 20)])
@pytest.mark.parametrize("num_knowledge_tokens", [0, 2])
def test_window_covering_grid_equals_global(kind, impl, window, num_knowledge_tokens):
    windowed = _set_impl(_model(attention_type=kind, window_size=window, num_knowledge_tokens=num_knowledge_tokens), impl)
    reference = _set_impl(_model(num_knowledge_tokens=num_knowledge_tokens), impl)
    reference.load_state_dict(windowed.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 48)  # grid 8 x 6
    with torch.no_grad():
        torch.testing.assert_close(windowed(x).heatmaps, reference(x).heatmaps, atol=1e-5, rtol=1e-5)


def test_shifted_windows_never_attend_across_wrapped_borders():
    # grid 8 x 6, window 4 x 4 -> layer 1 is shifted by (2, 2) with a cyclic roll; the columns are
    # padded to 8 too, so wrap, shift and padding meet in the same windows.
    model = _model(attention_type="shifted_window", window_size=(4, 4), num_knowledge_tokens=1)
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 48), output_attentions=True)
    h, w = 8, 6
    probs = out.attentions[1][0, :, 1:, 1:]  # heads, N, N (patch tokens only)
    assert torch.allclose(out.attentions[1].sum(-1), torch.ones(()), atol=1e-5)
    rows = torch.arange(h * w) // w
    cols = torch.arange(h * w) % w
    dr = (rows[:, None] - rows[None, :]).abs()
    dc = (cols[:, None] - cols[None, :]).abs()
    # tokens farther apart than one window can only meet through a wrapped border
    assert probs[:, (dr >= 4) | (dc >= 4)].abs().max() == 0
    # the wrapped neighbours: first and last rows/columns never see each other
    top, bottom = rows == 0, rows == h - 1
    left, right = cols == 0, cols == w - 1
    assert probs[:, top][:, :, bottom].abs().max() == 0 and probs[:, bottom][:, :, top].abs().max() == 0
    assert probs[:, left][:, :, right].abs().max() == 0 and probs[:, right][:, :, left].abs().max() == 0
    # the shifted windows are [-2, 2), [2, 6), [6, 10) in rows: rows 1 and 2 are split, rows 2 and 5 meet
    same_unshifted = (rows[:, None] // 4 == rows[None, :] // 4) & (cols[:, None] // 4 == cols[None, :] // 4)
    same_shifted = ((rows[:, None] + 2) // 4 == (rows[None, :] + 2) // 4) & ((cols[:, None] + 2) // 4 == (cols[None, :] + 2) // 4)
    assert torch.equal(probs[0] > 0, same_shifted)
    assert torch.equal(out.attentions[0][0, 0, 1:, 1:] > 0, same_unshifted)  # layer 0: plain windows
    # the knowledge token is attended by every patch token and attends to everything
    assert (out.attentions[1][0, :, 1:, 0] > 0).all() and (out.attentions[1][0, :, 0] > 0).all()


def test_layout_mask_keeps_wrapped_regions_apart():
    lay = window_layout((7, 5), (4, 4), shift=True)
    assert lay.shift == (2, 2) and lay.window == (4, 4) and lay.num_windows == 4
    h, w = lay.grid
    token = lay.gather.view(lay.num_windows, -1)
    for win in range(lay.num_windows):
        for a in range(token.shape[1]):
            for b in range(token.shape[1]):
                ta, tb = int(token[win, a]), int(token[win, b])
                if ta == h * w:
                    assert lay.local_allowed[win, a].all()  # padded query: never an empty row
                    continue
                if tb == h * w:
                    assert not lay.local_allowed[win, a, b]  # padded keys are masked
                    continue
                ra, ca, rb, cb = ta // w, ta % w, tb // w, tb % w
                same = (ra - 2) // 4 == (rb - 2) // 4 and (ca - 2) // 4 == (cb - 2) // 4
                assert bool(lay.local_allowed[win, a, b]) == same
    # every token has exactly one slot
    assert torch.equal(lay.gather[lay.scatter], torch.arange(h * w))


@pytest.mark.parametrize("kind", KINDS)
def test_effective_attention_reproduces_context(kind):
    q, k, v = (torch.randn(2, 2 + 35, 8) for _ in range(3))
    out, probs = _attend(kind, (7, 5), (3, 2), True, 2, q, k, v, 2, "eager")
    assert probs.shape == (2, 2, 37, 37)
    vh = v.view(2, 37, 2, 4).transpose(1, 2)
    torch.testing.assert_close((probs @ vh).transpose(1, 2).reshape(2, 37, 8), out, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(probs.sum(-1), torch.ones(2, 2, 37))


@pytest.mark.parametrize("kind", KINDS)
def test_global_checkpoint_loads_and_runs_windowed(tmp_path, kind):
    global_model = _model()
    global_model.save_pretrained(tmp_path)
    model, info = VitPoseForPoseEstimation.from_pretrained(
        tmp_path, attention_type=kind, window_size=(4, 4), output_loading_info=True
    )
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert model.config.layer_attention_types() == [kind, kind]
    windowed = _model(attention_type=kind, window_size=(4, 4))
    windowed.load_state_dict(global_model.state_dict(), strict=True)
    x = torch.randn(1, 3, 64, 48)
    with torch.no_grad():
        a, b = model.eval()(x).heatmaps, windowed(x).heatmaps
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, global_model(x).heatmaps, atol=1e-7)  # the layout changed something


@pytest.mark.parametrize("kind", KINDS)
def test_every_parameter_gets_a_gradient(kind):
    model = _model(attention_type=kind, window_size=(3, 4), num_knowledge_tokens=2).train()
    out = model(torch.randn(2, 3, 64, 48), labels=torch.rand(2, 17, 32, 24))
    out.loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing
    assert model.backbone.embeddings.knowledge_tokens.grad.abs().sum() > 0


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("impl", ["eager", "sdpa"])
def test_non_divisible_grids_never_nan(kind, impl):
    # 72 x 40 input -> grid 9 x 5; window 4 x 4 pads to 12 x 8 (and shifts on layer 1)
    model = _set_impl(_model(attention_type=kind, window_size=(4, 4)), impl).train()
    x = torch.randn(2, 3, 72, 40, requires_grad=True)
    out = model(x)
    assert out.heatmaps.shape == (2, 17, 36, 20) and torch.isfinite(out.heatmaps).all()
    out.heatmaps.square().mean().backward()
    assert torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_per_layer_selection_and_global_override():
    config = VitPoseConfig(**tiny_config_kwargs(
        num_hidden_layers=4, attention_type="shifted_window", global_attention_layers=[3]))
    assert config.layer_attention_types() == ["shifted_window"] * 3 + ["global"]
    model = VitPoseForPoseEstimation(config)
    layers = model.backbone.encoder.layer
    assert [l.attention.attention.shift for l in layers] == [False, True, False, False]
    mixed = VitPoseConfig(**tiny_config_kwargs(attention_type=["pooled_window", "global"]))
    assert mixed.layer_attention_types() == ["pooled_window", "global"]
    with pytest.raises(ValueError, match="attention_type"):
        VitPoseConfig(**tiny_config_kwargs(attention_type="strided"))


def test_bad_inputs_raise_value_error():
    with pytest.raises(ValueError, match="strided"):
        make_windowed_attention("strided", (4, 4), (2, 2), False, 0)
    with pytest.raises(ValueError, match="window_size"):
        make_windowed_attention("window", (4, 4), (0, 2), False, 0)
    fn = make_windowed_attention("window", (4, 4), (2, 2), False, 0)
    q = torch.randn(1, 15, 8)
    with pytest.raises(ValueError, match="15 tokens"):
        fn(q, q, q, num_heads=2, scaling=0.5, impl="eager", module=None, dropout=0.0, kernel=sdpa_or_eager_attention)


def test_pooled_window_is_cheaper_in_keys():
    lay = window_layout((36, 27), (8, 6))
    # 5 x 5 windows of 48 tokens (grid padded to 40 x 30): 48 + 25 keys per query instead of 972
    assert lay.num_windows == 25 and lay.window_tokens == 48
    assert math.prod(lay.grid) == 972


# ----------------------------------------------------------------------------- 1/8 feature resolution
@pytest.mark.parametrize("simple", [False, True])
def test_stride_8_heatmaps_are_quarter_resolution(simple):
    from vitpose_hf.feature_stride import change_feature_stride

    config = VitPoseConfig(**tiny_config_kwargs(patch_size=16, use_simple_decoder=simple))
    teacher = VitPoseForPoseEstimation(config).eval()  # stride 16: grid 4 x 3
    student = change_feature_stride(teacher, 8)
    emb = student.backbone.embeddings
    assert student.config.effective_patch_stride == [8, 8] and student.config.patch_padding == 4
    assert emb.grid == (8, 6) and emb.position_embeddings.shape == (1, 1 + 48, 32)
    x = torch.randn(2, 3, 64, 48)
    with torch.no_grad():
        out = student(x, output_hidden_states=True)
    assert out.feature_map.shape[-2:] == (8, 6) and out.heatmaps.shape == (2, 17, 16, 12)
    # same weights everywhere but the resampled position embeddings (and the dropped second deconv)
    for name, p in teacher.backbone.named_parameters():
        if name != "embeddings.position_embeddings":
            assert torch.equal(p, student.backbone.get_parameter(name))
    # the slot and the grid are resampled independently (bicubic), explicit (h, w) grids
    src = teacher.backbone.embeddings.position_embeddings
    expected = torch.nn.functional.interpolate(
        src[:, 1:].reshape(1, 4, 3, 32).permute(0, 3, 1, 2), size=(8, 6), mode="bicubic", align_corners=False
    ).permute(0, 2, 3, 1).reshape(1, 48, 32)
    torch.testing.assert_close(emb.position_embeddings[:, 1:], expected)
    assert torch.equal(emb.position_embeddings[:, :1], src[:, :1])


def test_stride_8_config_padding_and_preset():
    config = VitPoseConfig.from_preset("base", feature_stride=8)
    assert config.effective_patch_stride == [8, 8] and config.patch_padding == 4 and config.num_deconv_layers == 1
    simple = VitPoseConfig.from_preset("base-simple", feature_stride=8)
    assert simple.scale_factor == 2 and simple.patch_padding == 4
    assert VitPoseConfig().patch_padding == 2  # official stride-16 padding untouched
    # (H + 2p - 16) / 8 + 1 == H / 8 needs 8 <= 2p < 16; padding 2 gives H/8 - 1
    with pytest.raises(ValueError, match="patch_padding 2"):
        VitPoseConfig(patch_stride=8, patch_padding=2)
    assert VitPoseConfig(patch_stride=8, patch_padding=6).patch_padding == 6
    with pytest.raises(ValueError, match="feature_stride"):
        VitPoseConfig.from_preset("base", feature_stride=4)
    # a full-size stride-8 backbone on the official 256 x 192 input: 32 x 24 grid, 64 x 48 heatmaps
    model = VitPoseForPoseEstimation(VitPoseConfig.from_preset("small", feature_stride=8, num_hidden_layers=1))
    assert model.backbone.embeddings.grid == (32, 24)
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 3, 256, 192)).heatmaps.shape == (1, 17, 64, 48)


def test_stride_16_checkpoint_loads_into_stride_8_model(tmp_path):
    from vitpose_hf.feature_stride import change_feature_stride

    teacher = VitPoseForPoseEstimation(VitPoseConfig(**tiny_config_kwargs(patch_size=16)))
    teacher.save_pretrained(tmp_path / "s16")
    student = change_feature_stride(VitPoseForPoseEstimation.from_pretrained(tmp_path / "s16"), 8)
    # plain state-dict route: the backbone loads strictly (position embeddings resampled on load)
    fresh = VitPoseForPoseEstimation(VitPoseConfig(**tiny_config_kwargs(patch_size=16, patch_stride=8, num_deconv_layers=1)))
    fresh.backbone.load_state_dict(teacher.backbone.state_dict(), strict=True)
    torch.testing.assert_close(fresh.backbone.embeddings.position_embeddings, student.backbone.embeddings.position_embeddings)
    student.save_pretrained(tmp_path / "s8")
    again, info = VitPoseForPoseEstimation.from_pretrained(tmp_path / "s8", output_loading_info=True)
    assert not any(info.values())
    assert again.config.patch_padding == 4 and again.config.num_deconv_layers == 1
    x = torch.randn(1, 3, 64, 48)
    with torch.no_grad():
        torch.testing.assert_close(again.eval()(x).heatmaps, student.eval()(x).heatmaps)
        assert again(x).heatmaps.shape == (1, 17, 16, 12)


def test_eager_windowed_forward_builds_no_dense_attention_unless_asked():
    model = _set_impl(_model(attention_type="pooled_window", window_size=(4, 3)), "eager")
    x = torch.randn(1, 3, 64, 48)
    with torch.no_grad():
        plain = model(x)
        probed = model(x, output_attentions=True)
    assert plain.attentions is None
    assert [a.shape for a in probed.attentions] == [(1, 4, 48, 48)] * 2
    torch.testing.assert_close(plain.heatmaps, probed.heatmaps)


@pytest.mark.parametrize("kind", KINDS)
def test_batch_of_one_equals_batched_and_bf16_is_finite(kind):
    model = _model(attention_type=kind, window_size=(3, 4), num_knowledge_tokens=1)
    x = torch.randn(3, 3, 72, 40)  # padded, shifted windows
    with torch.no_grad():
        batched = model(x).heatmaps
        single = torch.cat([model(x[i : i + 1]).heatmaps for i in range(3)])
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(x).heatmaps
    torch.testing.assert_close(batched, single, atol=1e-6, rtol=1e-5)
    assert torch.isfinite(low).all()
    torch.testing.assert_close(low.float(), batched, atol=2e-3, rtol=0.05)


@pytest.mark.parametrize("kind", ["window", "shifted_window", "pooled_window"])
def test_layout_first_built_under_inference_mode_still_trains(kind):
    """Cached window layouts/masks made inside torch.inference_mode() must not break a later backward."""
    from vitpose_hf import VitPoseConfig, VitPoseForPoseEstimation

    # an unusual grid/window so the cache entries are first created in this test, under inference mode
    cfg = VitPoseConfig(
        image_size=(88, 40), patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        attention_type=kind, window_size=(3, 2), drop_path_rate=0.0, decoder_hidden_size=16,
    )
    model = VitPoseForPoseEstimation(cfg).eval()
    x = torch.randn(2, 3, 88, 40)
    with torch.inference_mode():
        model(x)
    model.train()
    model(x).heatmaps.sum().backward()
    assert all(p.grad is not None for p in model.backbone.encoder.parameters())
