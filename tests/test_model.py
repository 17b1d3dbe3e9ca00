"""Tests of the SWTformer model, its Swin backbone, the window layout and checkpoint loading."""
from __future__ import annotations

import os

import numpy as np
import pytest
import timm
import torch
from timm.models.swin_transformer import get_relative_position_index

from wsss.io import ArtifactError, save_weights
from wsss.models import ModelConfig, build_model, swin
from wsss.models.swin import BackboneError, clamped_position_index, load_pretrained, match_training_layout
from wsss.models.swtformer import SWTformerV1, max_norm

torch.set_num_threads(1)

NANO = ModelConfig("v1", "swin_nano", num_classes=5, img_size=224)


def make_model(seed: int = 0) -> SWTformerV1:
    torch.manual_seed(seed)
    return SWTformerV1(NANO).eval()


@pytest.fixture
def model() -> SWTformerV1:
    return make_model()


def images(*shape, seed=1):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------- forward / CAM

def test_logits_are_gap_of_cam_raw(model):
    with torch.no_grad():
        out = model(images(2, 3, 224, 224))
    assert out["logits"].shape == (2, 5)
    assert out["cam_raw"].shape == (2, 5, 7, 7)
    torch.testing.assert_close(out["logits"], out["cam_raw"].mean(dim=(2, 3)))
    # by hand for one entry
    assert out["logits"][1, 3].item() == pytest.approx(out["cam_raw"][1, 3].sum().item() / 49, rel=1e-5)


def test_cam_of_model_output_in_unit_interval(model):
    with torch.no_grad():
        out = model(images(2, 3, 224, 224))
        cam = SWTformerV1.cam(out)
    assert cam.shape == out["cam_raw"].shape
    assert cam.min() >= 0 and cam.max() < 1
    positive = (out["cam_raw"] > 0).flatten(2).any(dim=2)
    peak = cam.flatten(2).amax(dim=2)
    assert torch.allclose(peak[positive], torch.ones_like(peak[positive]), atol=1e-4)
    assert (peak[~positive] == 0).all()


def test_cam_hand_tensor():
    raw = torch.tensor([[[[1.0, -2.0], [3.0, 0.5]],      # class 0: max 3
                         [[-1.0, -0.5], [-3.0, -0.1]],   # class 1: all negative -> all zero
                         [[0.0, 0.0], [0.0, 2.0]]]])     # class 2: max 2
    cam = SWTformerV1.cam({"cam_raw": raw})
    eps = 1e-5
    want = torch.tensor([[[[1 / (3 + eps), 0.0], [3 / (3 + eps), 0.5 / (3 + eps)]],
                          [[0.0, 0.0], [0.0, 0.0]],
                          [[0.0, 0.0], [0.0, 2 / (2 + eps)]]]])
    torch.testing.assert_close(cam, want)
    assert cam.max() < 1
    assert cam[0, 0].max() == pytest.approx(1.0, abs=1e-5)
    assert (cam[0, 1] == 0).all()
    torch.testing.assert_close(max_norm(torch.relu(raw)), want)


def test_max_norm_per_map():
    x = torch.tensor([[[[2.0, 4.0]], [[1.0, 0.5]]], [[[0.0, 8.0]], [[0.0, 0.0]]]])  # (2, 2, 1, 2)
    y = max_norm(x, eps=0.0 + 1e-12)
    torch.testing.assert_close(y, torch.tensor([[[[0.5, 1.0]], [[1.0, 0.5]]], [[[0.0, 1.0]], [[0.0, 0.0]]]]))


def test_build_model_versions():
    assert isinstance(build_model(NANO), SWTformerV1)
    with pytest.raises(ValueError, match="model.version"):
        build_model(ModelConfig("v3", "swin_nano", num_classes=5, img_size=224))


def test_new_parameters_are_the_head(model):
    assert [p.shape for p in model.new_parameters()] == [model.head.weight.shape]
    assert model.head.weight.shape == (5, model.backbone.num_features, 3, 3)


# ------------------------------------------------------------------------------- window layout

def plain_timm(model: SWTformerV1):
    """timm's own Swin (fixed size, no dynamic_img_size) with the backbone's weights."""
    plain = timm.create_model(swin.SMALL_BASE, pretrained=False, num_classes=0, global_pool="", img_size=224,
                              **swin.SMALL_CONFIGS["swin_nano"]).eval()
    plain.load_state_dict(model.backbone.state_dict())
    return plain


def test_layout_is_identity_at_training_size(model):
    x = images(2, 3, 224, 224)
    plain = plain_timm(model)
    with torch.no_grad():
        want = plain.forward_features(x)  # (B, 7, 7, C), final-normed
        t_out, stages = model.features(x)
    torch.testing.assert_close(t_out.permute(0, 2, 3, 1), want, rtol=1e-5, atol=1e-5)
    assert [tuple(s.shape[-2:]) for s in stages] == [(56, 56), (28, 28), (14, 14), (7, 7)]
    # after a large input, back at 224 the output is the same again
    with torch.no_grad():
        model(images(1, 3, 448, 448))
        t_again, _ = model.features(x)
    torch.testing.assert_close(t_again, t_out)
    for s, stage in enumerate(model.backbone.layers):
        for block, p_block in zip(stage.blocks, plain.layers[s].blocks):
            assert tuple(block.window_size) == tuple(p_block.window_size)
            assert tuple(block.shift_size) == tuple(p_block.shift_size)
            assert torch.equal(block.attn.relative_position_index, p_block.attn.relative_position_index)


def test_training_layout_recorded(model):
    lay = model.backbone.wsss_layout
    assert [l["global"] for l in lay] == [False, False, False, True]
    assert all(l["window"] == (7, 7) for l in lay)
    assert lay[2]["shifts"] == [(0, 0), (3, 3)]  # swin_nano's stage 3 has a shifted block


def test_layout_at_448x336(model):
    with torch.no_grad():
        out = model(images(1, 3, 448, 336))
    assert out["cam_raw"].shape == (1, 5, 14, 11)  # 336 / 32 = 10.5 -> 11
    layers = model.backbone.layers
    for block in layers[3].blocks:  # stage 4: one window over the whole grid
        assert tuple(block.window_size) == (14, 11)
        assert tuple(block.attn.window_size) == (14, 11)
        assert block.window_area == 14 * 11
        assert tuple(block.shift_size) == (0, 0)
        assert block.attn.relative_position_index.shape == (154, 154)
        assert block.attn.relative_position_bias_table.shape == (13 * 13, 8)  # table kept
    for s in range(3):  # windowed stages keep window and shift
        for block, shift in zip(layers[s].blocks, model.backbone.wsss_layout[s]["shifts"]):
            assert tuple(block.window_size) == (7, 7)
            assert tuple(block.shift_size) == shift
    assert tuple(layers[2].blocks[1].shift_size) == (3, 3)


def test_clamped_index_equals_timm_at_training_window():
    assert torch.equal(clamped_position_index((7, 7), (7, 7)), get_relative_position_index(7, 7))
    assert torch.equal(clamped_position_index((3, 5), (3, 5)), get_relative_position_index(3, 5))


def test_clamped_index_for_larger_window():
    idx = clamped_position_index((9, 9), (7, 7))
    assert idx.shape == (81, 81)

    def tok(y, x):
        return y * 9 + x

    def entry(dy, dx):  # table entry of offset (dy, dx) for a 7x7 table: (dy+6)*13 + (dx+6)
        return (dy + 6) * 13 + (dx + 6)

    assert idx[tok(0, 0), tok(8, 8)] == entry(-6, -6) == 0     # (-8, -8) clamps to (-6, -6)
    assert idx[tok(8, 8), tok(0, 0)] == entry(6, 6) == 168     # (8, 8) clamps to (6, 6)
    assert idx[tok(0, 0), tok(0, 5)] == entry(0, -5) == 79      # within range: exact
    assert idx[tok(4, 0), tok(0, 8)] == entry(4, -6) == 130     # dx -8 clamps to -6
    assert idx[tok(7, 1), tok(0, 1)] == entry(6, 0)             # dy 7 clamps to 6
    assert idx[tok(4, 4), tok(4, 4)] == entry(0, 0) == 84
    assert idx.min() == 0 and idx.max() == 168
    # the top-left 7x7 sub-window has exactly timm's 7x7 index
    sub = torch.tensor([tok(y, x) for y in range(7) for x in range(7)])
    assert torch.equal(idx[sub][:, sub], get_relative_position_index(7, 7))


def test_stage4_attention_is_global_after_matching(model):
    block = model.backbone.layers[3].blocks[0]
    c = model.backbone.num_features
    x = images(1, 14, 14, c, seed=3)
    x2 = x.clone()
    # a random change (a constant shift of the token would be removed by the block's LayerNorm)
    x2[0, 0, 0] += 3.0 * images(c, seed=4)
    # timm's layout (7x7 windows): token (13, 13) is in another window than token (0, 0)
    with torch.no_grad():
        a, b = block(x), block(x2)
    assert torch.equal(a[0, 13, 13], b[0, 13, 13])
    match_training_layout(model.backbone, 448, 448)
    assert tuple(block.window_size) == (14, 14)
    with torch.no_grad():
        a, b = block(x), block(x2)
    assert (a[0, 13, 13] - b[0, 13, 13]).abs().max() > 1e-4
    # every token of the grid now sees token (0, 0)
    changed = (a - b).abs().amax(dim=-1)[0]  # (14, 14)
    assert (changed > 1e-6).all()


def test_pad_multiple(model):
    assert model.pad_multiple == 112  # lcm(4*7, 8*7, 16*7); stage 4 is global
    assert swin.pad_multiple(model.backbone) == 112
    assert swin.stage_strides(model.backbone) == [4, 8, 16, 32]


def test_non_square_input(model):
    with torch.no_grad():
        out = model(images(2, 3, 224, 336))
    assert out["cam_raw"].shape == (2, 5, 7, 11)
    assert out["logits"].shape == (2, 5)
    assert torch.isfinite(out["cam_raw"]).all()
    torch.testing.assert_close(out["logits"], out["cam_raw"].mean(dim=(2, 3)))


def test_unknown_backbone():
    with pytest.raises(BackboneError, match="unknown model 'swin_nope'"):
        swin.create_backbone("swin_nope", 224, 0.0)


def test_non_swin_backbone_refused():
    with pytest.raises(BackboneError, match="not a Swin"):
        swin.create_backbone("vit_tiny_patch16_224", 224, 0.0)


def test_non_swin_backbone_without_img_size_refused():
    with pytest.raises(BackboneError):
        swin.create_backbone("resnet18", 224, 0.0)


# ------------------------------------------------------------------------------- pretrained weights

def source_state(seed: int = 7) -> dict[str, torch.Tensor]:
    """A swin_nano backbone's state, every tensor perturbed so none equals a fresh model's."""
    torch.manual_seed(seed)
    src = swin.create_backbone("swin_nano", 224, 0.0)
    g = torch.Generator().manual_seed(seed)
    return {k: v + torch.randn(v.shape, generator=g) if v.is_floating_point() else v.clone()
            for k, v in src.state_dict().items()}


def microsoft_format(state: dict[str, torch.Tensor]) -> dict:
    """Microsoft's layout: stage i ends with the downsample timm puts at the start of stage i+1;
    the classifier is ``head.weight``; the relative position index buffers are saved too."""
    import re

    out = {}
    for k, v in state.items():
        m = re.match(r"layers\.(\d+)\.downsample\.(.*)", k)
        if m:
            k = f"layers.{int(m.group(1)) - 1}.downsample.{m.group(2)}"
        out[k] = v
        if k.endswith("attn.relative_position_bias_table"):
            out[k.replace("relative_position_bias_table", "relative_position_index")] = \
                get_relative_position_index(7, 7)
    out["head.weight"] = torch.randn(1000, 256)
    out["head.bias"] = torch.zeros(1000)
    return {"model": out}


def assert_backbone_equals(backbone, state):
    own = backbone.state_dict()
    assert set(own) == set(state)
    for k, v in state.items():
        assert torch.equal(own[k], v), k


def test_source_differs_before_loading(model):
    own = model.backbone.state_dict()
    state = source_state()
    float_keys = [k for k, v in state.items() if v.is_floating_point()]
    assert float_keys and all(not torch.equal(own[k], state[k]) for k in float_keys)


def test_load_timm_safetensors(model, tmp_path):
    state = source_state()
    path = tmp_path / "swin_nano.safetensors"
    save_weights(path, state)
    res = load_pretrained(model.backbone, "swin_nano", str(path))
    assert res["missing"] == [] and res["unexpected"] == []
    assert res["loaded"] == len(state)
    assert_backbone_equals(model.backbone, state)


def test_load_microsoft_torch_file(model, tmp_path):
    state = source_state()
    ms = microsoft_format(state)
    assert "layers.0.downsample.reduction.weight" in ms["model"]
    assert "layers.3.downsample.reduction.weight" not in ms["model"]
    path = tmp_path / "swin_nano_ms.pth"
    torch.save(ms, path)
    res = load_pretrained(model.backbone, "swin_nano", str(path))
    assert res["missing"] == [] and res["unexpected"] == []
    assert_backbone_equals(model.backbone, state)
    # and the model now computes what the source computes
    torch.manual_seed(7)
    src = swin.create_backbone("swin_nano", 224, 0.0).eval()
    src.load_state_dict(state)
    x = images(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(model.backbone.forward_features(x), src.forward_features(x))


def test_load_none_leaves_weights(model):
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    assert load_pretrained(model.backbone, "swin_nano", "none") == {"loaded": 0, "missing": [], "unexpected": []}
    assert_backbone_equals(model.backbone, before)


def test_timm_hub_refused_for_demo_backbone(model):
    with pytest.raises(BackboneError, match="no weights"):
        load_pretrained(model.backbone, "swin_nano", "timm")


def test_missing_checkpoint(model, tmp_path):
    with pytest.raises(BackboneError, match="not found"):
        load_pretrained(model.backbone, "swin_nano", str(tmp_path / "nope.pth"))


def test_checkpoint_of_other_width_refused(model, tmp_path):
    """Same depths, wider: shapes differ, the error names a tensor and both shapes."""
    torch.manual_seed(0)
    wider = timm.create_model(swin.SMALL_BASE, pretrained=False, num_classes=0, global_pool="",
                              embed_dim=48, depths=(1, 1, 2, 1), num_heads=(1, 2, 4, 8))
    path = tmp_path / "wider.safetensors"
    save_weights(path, wider.state_dict())
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    with pytest.raises(BackboneError, match=r"do not fit 'swin_nano'.*\(48,.*\(32,"):
        load_pretrained(model.backbone, "swin_nano", str(path))
    assert_backbone_equals(model.backbone, before)  # nothing half-loaded


def test_checkpoint_of_deeper_model_refused(model, tmp_path):
    torch.manual_seed(0)
    deeper = swin.create_backbone("swin_micro", 224, 0.0)
    path = tmp_path / "micro.safetensors"
    save_weights(path, deeper.state_dict())
    with pytest.raises(BackboneError):
        load_pretrained(model.backbone, "swin_nano", str(path))


def test_checkpoint_with_no_matching_tensor(model, tmp_path):
    path = tmp_path / "unrelated.safetensors"
    save_weights(path, {"foo.weight": torch.zeros(3)})
    with pytest.raises(BackboneError, match="no tensor"):
        load_pretrained(model.backbone, "swin_nano", str(path))


class Payload:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.system, (f"echo pwned > {self.target}",))


def test_pickled_object_checkpoint_refused(model, tmp_path):
    target = tmp_path / "PWNED"
    path = tmp_path / "evil.pth"
    torch.save({"model": {"patch_embed.proj.weight": torch.zeros(1)}, "x": Payload(target)}, path)
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    with pytest.raises((BackboneError, ArtifactError)):
        load_pretrained(model.backbone, "swin_nano", str(path))
    assert not target.exists()
    assert_backbone_equals(model.backbone, before)


# ------------------------------------------------------------------------------- seed inference

def test_multiscale_single_scale_by_hand(model):
    """One scale, no flip, no padding needed: ReLU'd class maps of the present keys, upsampled
    bilinearly to the image size, divided by their max."""
    import torch.nn.functional as F

    from wsss.data.datasets import normalize, to_tensor
    from wsss.inference import multiscale_maps

    rng = torch.Generator().manual_seed(0)
    img = (torch.rand(112, 224, 3, generator=rng) * 255).to(torch.uint8).numpy()
    keys = [2, 5]
    got = multiscale_maps(model, img, keys, [1.0], flip=False, device=torch.device("cpu"))["cam"]
    with torch.no_grad():
        raw = model(to_tensor(normalize(img))[None])["cam_raw"]
    want = F.interpolate(torch.relu(raw[:, [1, 4]]), size=(112, 224), mode="bilinear", align_corners=False)[0]
    want = want / (want.flatten(1).amax(dim=1)[:, None, None] + 1e-5)
    assert got.shape == (2, 112, 224)
    torch.testing.assert_close(torch.from_numpy(got), want, rtol=1e-4, atol=1e-5)
    assert got.min() >= 0 and got.max() < 1


def test_multiscale_flip_equivariant(model):
    """With flip on, the maps of the mirrored image are the mirrored maps (no padding at 112 x 224)."""
    from wsss.inference import multiscale_maps

    rng = torch.Generator().manual_seed(1)
    img = (torch.rand(112, 224, 3, generator=rng) * 255).to(torch.uint8).numpy()
    cpu = torch.device("cpu")
    a = multiscale_maps(model, img, [1, 3], [1.0], flip=True, device=cpu)["cam"]
    b = multiscale_maps(model, img[:, ::-1].copy(), [1, 3], [1.0], flip=True, device=cpu)["cam"]
    assert a.shape == (2, 112, 224)
    torch.testing.assert_close(torch.from_numpy(a[..., ::-1].copy()), torch.from_numpy(b), rtol=1e-4, atol=1e-5)


def test_multiscale_odd_size_and_scales(model):
    from wsss.inference import multiscale_maps

    img = np.zeros((50, 70, 3), dtype=np.uint8)
    img[10:30, 20:50] = 200
    out = multiscale_maps(model, img, [4], [1.0, 0.5, 1.5], flip=True, device=torch.device("cpu"))["cam"]
    assert out.shape == (1, 50, 70) and out.dtype == np.float32
    assert np.isfinite(out).all() and out.min() >= 0 and out.max() < 1
