"""Pretrained backbone weights: a checkpoint fits the backbone or is refused with one line.

All on the CPU demo backbone ``swin_demo`` with real tensors: every source tensor is perturbed
so that none equals a fresh backbone's, and "loaded" is checked tensor by tensor.
"""
from __future__ import annotations

import re

import pytest
import timm
import torch
from timm.models.swin_transformer import get_relative_position_index

from wsss.checkpoint import Checkpointer
from wsss.io import save_weights
from wsss.models import ModelConfig, build_model, swin
from wsss.models.swin import BackboneError, load_pretrained

torch.set_num_threads(1)

NAME, CROP = "swin_demo", 128


def backbone(seed: int = 0):
    torch.manual_seed(seed)
    return swin.create_backbone(NAME, CROP, 0.0).eval()


def perturbed(state: dict[str, torch.Tensor], seed: int = 7) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: v + torch.randn(v.shape, generator=g) if v.is_floating_point() else v.clone()
            for k, v in state.items()}


def source_state(seed: int = 7) -> dict[str, torch.Tensor]:
    """A swin_demo backbone's state (timm's names), no tensor equal to a fresh backbone's."""
    return perturbed(backbone(seed).state_dict(), seed)


def snapshot(module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def assert_equal(state, want, keys=None):
    for k in (want if keys is None else keys):
        assert torch.equal(state[k], want[k]), k


def assert_one_line(exc: pytest.ExceptionInfo, path) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and msg.startswith("model.pretrained: ")
    assert str(path) in msg
    return msg


def save(path, state):
    if str(path).endswith(".safetensors"):
        save_weights(path, state)
    else:
        torch.save(state, path)
    return str(path)


# ------------------------------------------------------------------------------- timm's format

def test_fresh_backbone_differs_from_source():
    own, src = backbone().state_dict(), source_state()
    assert set(own) == set(src) and len(own) == 80
    assert all(not torch.equal(own[k], v) for k, v in src.items() if v.is_floating_point())


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_full_checkpoint_loads_every_tensor(tmp_path, suffix):
    src = source_state()
    model = backbone()
    res = load_pretrained(model, NAME, save(tmp_path / f"w{suffix}", src))
    assert res == {"loaded": 80, "missing": [], "unexpected": [], "ignored": [], "ignored_why": None,
                   "source_format": "timm", "resized": [], "partial": False}
    assert set(model.state_dict()) == set(src)
    assert_equal(model.state_dict(), src)


def test_classifier_head_is_expected(tmp_path):
    src = source_state()
    with_head = {**src, "head.fc.weight": torch.randn(1000, 256), "head.fc.bias": torch.zeros(1000)}
    model = backbone()
    res = load_pretrained(model, NAME, save(tmp_path / "in1k.safetensors", with_head))
    assert res["missing"] == [] and res["unexpected"] == [] and not res["partial"]
    assert sorted(res["ignored"]) == ["head.fc.bias", "head.fc.weight"] and "classifier head" in res["ignored_why"]
    assert_equal(model.state_dict(), src)


def test_training_model_state_wrapped(tmp_path):
    """{'state_dict': ...} and a DDP model's 'module.' prefix are unwrapped."""
    src = source_state()
    path = save(tmp_path / "wrapped.pth", {"state_dict": {f"module.{k}": v for k, v in src.items()}})
    model = backbone()
    assert load_pretrained(model, NAME, path)["loaded"] == 80
    assert_equal(model.state_dict(), src)


# ------------------------------------------------------------------------------- partial checkpoints

def drop_last_stage(state):
    return {k: v for k, v in state.items() if not k.startswith(("layers.3.", "norm."))}


def test_partial_checkpoint_refused_listing_the_missing(tmp_path):
    src = drop_last_stage(source_state())
    path = save(tmp_path / "three_stages.safetensors", src)
    model = backbone()
    before = snapshot(model)
    with pytest.raises(BackboneError) as exc:
        load_pretrained(model, NAME, path)
    msg = assert_one_line(exc, path)
    missing = [k for k in before if k.startswith(("layers.3.", "norm."))]
    assert len(missing) == 18
    assert (f"does not cover backbone 'swin_demo': 18 of 80 backbone tensors missing "
            f"({missing[0]}, {missing[1]}, {missing[2]}, ...); set model.pretrained_partial: true") in msg
    assert "unused" not in msg
    assert_equal(model.state_dict(), before)  # nothing half-loaded


def test_partial_checkpoint_loads_when_intended(tmp_path):
    src = drop_last_stage(source_state())
    model = backbone()
    before = snapshot(model)
    res = load_pretrained(model, NAME, save(tmp_path / "three_stages.safetensors", src), partial=True)
    missing = [k for k in before if k not in src]
    assert res["loaded"] == 62 and res["missing"] == missing and res["unexpected"] == [] and res["partial"]
    after = model.state_dict()
    assert_equal(after, src)                      # what the checkpoint has
    assert_equal(after, before, keys=missing)     # the rest stays at its init


def deeper_state(seed: int = 7) -> dict[str, torch.Tensor]:
    """swin_demo with a second block in the last stage: every swin_demo tensor plus 13 more."""
    torch.manual_seed(seed)
    cfg = {**swin.SMALL_CONFIGS[NAME], "depths": (1, 1, 2, 2)}
    deeper = timm.create_model(swin.SMALL_BASE, pretrained=False, num_classes=0, global_pool="",
                               img_size=CROP, **cfg)
    return perturbed(deeper.state_dict(), seed)


def test_unused_tensors_refused_and_listed(tmp_path):
    src = deeper_state()
    extra = sorted(k for k in src if k.startswith("layers.3.blocks.1."))   # safetensors keeps keys sorted
    assert len(extra) == 13
    path = save(tmp_path / "deeper.safetensors", src)
    model = backbone()
    before = snapshot(model)
    with pytest.raises(BackboneError) as exc:
        load_pretrained(model, NAME, path)
    msg = assert_one_line(exc, path)
    assert f"has tensors backbone 'swin_demo' does not take: 13 unused ({extra[0]}, {extra[1]}, {extra[2]}, ...)" in msg
    assert "missing" not in msg and "pretrained_partial: true" in msg
    assert_equal(model.state_dict(), before)
    res = load_pretrained(model, NAME, path, partial=True)
    assert sorted(res["unexpected"]) == extra and res["missing"] == [] and res["loaded"] == 80
    assert_equal(model.state_dict(), src, keys=before)


def test_missing_and_unused_in_one_line(tmp_path):
    src = drop_last_stage(source_state())
    src["neck.weight"] = torch.ones(4)
    path = save(tmp_path / "both.safetensors", src)
    with pytest.raises(BackboneError) as exc:
        load_pretrained(backbone(), NAME, path)
    msg = assert_one_line(exc, path)
    assert re.search(r"18 of 80 backbone tensors missing \(.*\), 1 unused \(neck\.weight\); set ", msg)


def test_no_matching_tensor_refused_even_when_partial(tmp_path):
    path = save(tmp_path / "unrelated.safetensors", {"foo.weight": torch.zeros(3), "head.fc.weight": torch.zeros(2)})
    with pytest.raises(BackboneError, match=r"has no tensor for backbone 'swin_demo'.*foo\.weight") as exc:
        load_pretrained(backbone(), NAME, path, partial=True)
    assert_one_line(exc, path)


def test_shape_mismatch_refused_even_when_partial(tmp_path):
    torch.manual_seed(0)
    cfg = {**swin.SMALL_CONFIGS[NAME], "embed_dim": 48}
    wider = timm.create_model(swin.SMALL_BASE, pretrained=False, num_classes=0, global_pool="", img_size=CROP, **cfg)
    path = save(tmp_path / "wider.safetensors", drop_last_stage(wider.state_dict()))
    model = backbone()
    before = snapshot(model)
    with pytest.raises(BackboneError, match=r"tensors do not fit 'swin_demo', e\.g\. patch_embed\.proj\.weight: "
                                            r"\(48, 3, 4, 4\) in the checkpoint, \(32, 3, 4, 4\) in the backbone") as exc:
        load_pretrained(model, NAME, path, partial=True)
    assert_one_line(exc, path)
    assert_equal(model.state_dict(), before)


def test_other_window_is_resampled_and_recorded(tmp_path):
    """swin_nano (7x7 windows) into swin_demo (4x4): timm resamples the bias tables; the record says so."""
    torch.manual_seed(3)
    nano = perturbed(swin.create_backbone("swin_nano", 224, 0.0).state_dict())
    model = backbone()
    res = load_pretrained(model, NAME, save(tmp_path / "nano.safetensors", nano))
    tables = [k for k in nano if k.endswith("relative_position_bias_table")]
    assert res["resized"] == tables and res["missing"] == [] and res["loaded"] == 80
    assert_equal(model.state_dict(), nano, keys=[k for k in nano if k not in tables])
    assert all(model.state_dict()[k].shape == (49, nano[k].shape[1]) for k in tables)


# ------------------------------------------------------------------------------- Microsoft's format

def microsoft_format(state: dict[str, torch.Tensor], window: int = 4) -> dict:
    """Microsoft's original Swin layout: the patch merging that timm puts at the start of stage
    i + 1 ends stage i; ``head.weight``; the relative position indices and shifted blocks'
    attention masks saved as buffers; all under ``'model'``."""
    out = {}
    for k, v in state.items():
        m = re.match(r"layers\.(\d+)\.downsample\.(.*)", k)
        out[f"layers.{int(m.group(1)) - 1}.downsample.{m.group(2)}" if m else k] = v
        if k.endswith("attn.relative_position_bias_table"):
            out[k.replace("bias_table", "index")] = get_relative_position_index(window, window)
    out["layers.2.blocks.1.attn_mask"] = torch.zeros(4, window * window, window * window)
    out["head.weight"] = torch.randn(1000, 256)
    out["head.bias"] = torch.zeros(1000)
    return {"model": out}


def test_microsoft_checkpoint_loads(tmp_path):
    src = source_state()
    ms = microsoft_format(src)
    assert "layers.0.downsample.reduction.weight" in ms["model"]
    assert "layers.3.downsample.reduction.weight" not in ms["model"]
    model = backbone()
    res = load_pretrained(model, NAME, save(tmp_path / "swin_ms.pth", ms))
    assert res["source_format"] == "microsoft" and res["loaded"] == 80
    assert res["missing"] == [] and res["unexpected"] == [] and res["ignored"] == ["head.weight", "head.bias"]
    assert_equal(model.state_dict(), src)
    # the same numbers as the source
    ref = backbone(7)
    ref.load_state_dict(src)
    x = torch.randn(1, 3, CROP, CROP, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(model.forward_features(x), ref.forward_features(x))


def test_partial_microsoft_checkpoint_names_its_own_tensors(tmp_path):
    """A Microsoft checkpoint without its last stage's blocks (its layers.2.downsample is timm's layers.3's
    downsample, still there), plus a downsample after the last stage: named as the file names them."""
    ms = microsoft_format(source_state())
    ms["model"] = {k: v for k, v in ms["model"].items() if not k.startswith(("layers.3.", "norm."))}
    ms["model"]["layers.3.downsample.reduction.weight"] = torch.zeros(1)   # a stage-3 downsample timm has no place for
    path = save(tmp_path / "ms_partial.pth", ms)
    with pytest.raises(BackboneError) as exc:
        load_pretrained(backbone(), NAME, path)
    msg = assert_one_line(exc, path)
    assert "1 unused (layers.3.downsample.reduction.weight)" in msg
    assert "15 of 80 backbone tensors missing (layers.3.blocks.0.norm1.weight," in msg   # stage 3 keeps its downsample


# ------------------------------------------------------------------------------- this project's own weights

def swtformer(version: str, seed: int):
    torch.manual_seed(seed)
    return build_model(ModelConfig(version, NAME, num_classes=3, img_size=CROP)).eval()


def backbone_part(state):
    return {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_finetune_from_own_weights(tmp_path, version):
    trained = swtformer(version, 1)
    trained.load_state_dict(perturbed(trained.state_dict()))
    path = tmp_path / "models" / "model.safetensors"
    save_weights(path, trained.state_dict(), metadata={"version": version})
    model = swtformer(version, 2)
    fresh = snapshot(model)
    res = load_pretrained(model.backbone, NAME, str(path))
    others = [k for k in fresh if not k.startswith("backbone.")]
    assert res["source_format"] == "wsss" and res["loaded"] == 80
    assert res["missing"] == [] and res["unexpected"] == [] and sorted(res["ignored"]) == sorted(others)
    assert "fine-tuning of the backbone" in res["ignored_why"]
    assert ("V2 branches" in res["ignored_why"]) == (version == "v2")
    assert_equal(model.backbone.state_dict(), backbone_part(trained.state_dict()))
    assert_equal(model.state_dict(), fresh, keys=others)   # head (and HFF): the new model's own init
    # the models/ folder names its model.safetensors
    model = swtformer(version, 2)
    assert load_pretrained(model.backbone, NAME, str(path.parent))["loaded"] == 80
    assert_equal(model.backbone.state_dict(), backbone_part(trained.state_dict()))


def test_finetune_from_training_checkpoint(tmp_path):
    trained = swtformer("v2", 1)
    trained.load_state_dict(perturbed(trained.state_dict()))
    optimizer = torch.optim.AdamW(trained.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    path = tmp_path / "checkpoints" / "last.pt"
    Checkpointer(path, {"params": {}}).save(epoch=1, step=4, model=trained, optimizer=optimizer,
                                            scheduler=scheduler, scaler=scaler, summary={"loss": 1.0})
    model = swtformer("v1", 2)
    res = load_pretrained(model.backbone, NAME, str(path))
    assert res["source_format"] == "wsss-checkpoint" and res["loaded"] == 80 and not res["partial"]
    assert_equal(model.backbone.state_dict(), backbone_part(trained.state_dict()))


def test_own_weights_of_other_backbone_refused(tmp_path):
    torch.manual_seed(0)
    other = build_model(ModelConfig("v1", "swin_micro", num_classes=3, img_size=224))
    path = tmp_path / "micro.safetensors"
    save_weights(path, other.state_dict())
    with pytest.raises(BackboneError, match=r"do not fit 'swin_demo', e\.g\. backbone\.patch_embed\.proj\.weight") as exc:
        load_pretrained(backbone(), NAME, str(path), partial=True)
    assert_one_line(exc, path)


def test_missing_file_under_models_gets_a_hint(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(BackboneError, match=r"'models/model\.safetensors' not found \(models/ is the train stage's own output"):
        load_pretrained(backbone(), NAME, "models/model.safetensors")


# ------------------------------------------------------------------------------- not checkpoints

def not_checkpoints(tmp_path) -> dict:
    files = {
        "text.pth": b"hello\nworld\n",
        "image.safetensors": b"\x89PNG\r\n\x1a\n" + bytes(64),
        "empty.pth": b"",
        "garbage.safetensors": (10 ** 6).to_bytes(8, "little") + b"{oops",
        "truncated.safetensors": None,
        "truncated.pth": None,
        "list.pth": None,
        "nested.pth": None,
        "tensor.pth": None,
        "empty_dict.pth": None,
    }
    src = source_state()
    save_weights(tmp_path / "full.safetensors", src)
    torch.save(src, tmp_path / "full.pth")
    files["truncated.safetensors"] = (tmp_path / "full.safetensors").read_bytes()[:5000]
    files["truncated.pth"] = (tmp_path / "full.pth").read_bytes()[:5000]
    torch.save([torch.zeros(2)], tmp_path / "list.pth")
    torch.save({"epoch": 3, "weights": src}, tmp_path / "nested.pth")
    torch.save(torch.zeros(3), tmp_path / "tensor.pth")
    torch.save({}, tmp_path / "empty_dict.pth")
    for name, data in files.items():
        if data is not None:
            (tmp_path / name).write_bytes(data)
    (tmp_path / "folder").mkdir()
    return {name: tmp_path / name for name in [*files, "folder"]}


def test_files_that_are_not_checkpoints_give_one_line(tmp_path):
    model = backbone()
    before = snapshot(model)
    messages = {}
    for name, path in not_checkpoints(tmp_path).items():
        for partial in (False, True):
            with pytest.raises(BackboneError) as exc:
                load_pretrained(model, NAME, str(path), partial=partial)
            messages[name] = assert_one_line(exc, path)
    assert_equal(model.state_dict(), before)
    assert "is not a checkpoint (neither safetensors nor a torch file; it starts with b'hello\\nworld\\n')" in messages["text.pth"]
    assert "is an empty file" in messages["empty.pth"]
    assert "not a state dict: 2 of its entries are not tensors ('epoch' (int), 'weights' (dict);" in messages["nested.pth"]
    assert "holds no tensors" in messages["empty_dict.pth"]
    assert "expected a state dict, got list" in messages["list.pth"]
    assert "is a folder with no model.safetensors" in messages["folder"]


def test_safetensors_under_another_suffix_loads(tmp_path):
    src = source_state()
    save_weights(tmp_path / "w.safetensors", src)
    path = tmp_path / "w.bin"
    path.write_bytes((tmp_path / "w.safetensors").read_bytes())
    model = backbone()
    assert load_pretrained(model, NAME, str(path))["loaded"] == 80
    assert_equal(model.state_dict(), src)


def test_pickled_code_refused_in_one_line(tmp_path):
    import os

    class Payload:
        def __reduce__(self):
            return (os.system, (f"echo pwned > {tmp_path / 'PWNED'}",))

    path = tmp_path / "evil.pth"
    torch.save({"model": source_state(), "x": Payload()}, path)
    with pytest.raises(BackboneError) as exc:
        load_pretrained(backbone(), NAME, str(path))
    msg = assert_one_line(exc, path)
    assert "weights_only=True" in msg and "system" in msg and "Check the documentation" not in msg
    assert not (tmp_path / "PWNED").exists()
