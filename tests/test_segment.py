"""Step 3: the segmenter (library parts, weights it accepts and refuses), its loss, the labelled
crops it trains on, its scoring, and the predict command on a folder of odd images."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from PIL import Image

from wsss import io
from wsss.data import files, voc
from wsss.data.datasets import LabelledCrops
from wsss.errors import BackboneError
from wsss.models.segmenter import Segmenter, SegmenterConfig, build_segmenter, create_backbone, load_segmenter
from wsss.segmentation import IGNORE, Scorer, SegmentTask, predict
from wsss.training import LoopConfig, run

REPO = Path(__file__).resolve().parents[1]
TINY = SegmenterConfig(backbone="test_resnet", num_classes=4, output_stride=8, feature_stage=-1, aspp_channels=8,
                       aspp_rates=(1, 2, 3), class_names=("background", "a", "b", "c"))


def test_segmenter_gives_logits_at_the_input_size_for_any_size():
    model = build_segmenter(TINY).eval()
    for h, w in [(64, 64), (70, 93), (33, 129)]:
        assert model(torch.randn(2, 3, h, w)).shape == (2, 4, h, w)
    # the head is torchvision's ASPP, the backbone timm's dilated feature extractor
    assert type(model.head[0]).__module__ == "torchvision.models.segmentation.deeplabv3"
    assert model.backbone.feature_info.reduction()[-1] == 8


def test_imagenet_weights_from_a_file_load_key_for_key(tmp_path):
    """A timm (or torchvision: same keys) ResNet checkpoint with its classifier 'fc' fills the
    dilated feature extractor exactly; a file missing backbone tensors is refused in one line."""
    full = timm.create_model("resnet18", pretrained=False)
    path = tmp_path / "resnet18_imagenet.pth"
    torch.save(full.state_dict(), path)
    cfg = SegmenterConfig(backbone="resnet18", num_classes=3, output_stride=16)
    backbone = create_backbone(cfg, str(path))
    assert torch.equal(backbone.state_dict()["layer4.1.conv2.weight"], full.state_dict()["layer4.1.conv2.weight"])
    partial = {k: v for k, v in full.state_dict().items() if not k.startswith("layer2.")}
    torch.save(partial, tmp_path / "partial.pth")
    with pytest.raises(BackboneError, match=r"segment.pretrained: .*partial.pth.* not in the file"):
        create_backbone(cfg, str(tmp_path / "partial.pth"))


@pytest.mark.parametrize("name, keys", [
    ("weights.pth", ["backbone.conv1.weight", "classifier.4.weight", "aux_classifier.0.weight"]),
    ("deeplabv3_resnet101_coco-586e9e4e.pth", ["conv1.weight"]),
    ("smp.safetensors", ["encoder.conv1.weight", "decoder.blocks.0.conv.weight", "segmentation_head.0.weight"]),
])
def test_weights_trained_on_segmentation_masks_are_refused(tmp_path, name, keys):
    path = tmp_path / name
    state = {k: torch.zeros(1) for k in keys}
    if path.suffix == ".safetensors":
        io.save_weights(path, state)
    else:
        torch.save(state, path)
    with pytest.raises(BackboneError, match="segmentation model's weights.*not be weakly supervised|weakly"):
        create_backbone(SegmenterConfig(backbone="resnet18"), str(path))


def test_cross_entropy_ignores_255_by_hand():
    task = SegmentTask(build_segmenter(TINY), 1.0, 4)
    logits = torch.zeros(1, 4, 1, 3)
    logits[0, 2, 0, 0] = math.log(3.0)        # pixel 0: p(class 2) = 3 / 6
    y = torch.tensor([[[2, 0, IGNORE]]])
    terms, health = task.loss({"logits": logits}, (y,), 0.0)
    expected = (-math.log(3 / 6) - math.log(1 / 4)) / 2      # pixel 1 uniform; the ignored one counts for nothing
    assert terms["total"].item() == pytest.approx(expected, rel=1e-5)
    assert health["labelled"].item() == pytest.approx(2 / 3)
    nothing, _ = task.loss({"logits": logits.requires_grad_()}, (torch.full_like(y, IGNORE),), 0.0)
    assert nothing["total"].item() == 0.0         # all ignored: 0, not NaN


def _write_set(root: Path, n: int = 6, size=(40, 56)):
    """Images whose left part is class 1 (red) and right part class 2 (blue), with masks."""
    ids, masks = [], []
    for i in range(n):
        h, w = size
        cut = w // 3 + i
        img = np.zeros((h, w, 3), np.uint8)
        img[:, :cut] = (220, 30, 30)
        img[:, cut:] = (30, 30, 220)
        lab = np.ones((h, w), np.uint8)
        lab[:, cut:] = 2
        lab[0, :] = 255
        iid = f"im{i}"
        (root / "JPEGImages").mkdir(parents=True, exist_ok=True)
        (root / "SegmentationClass").mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(root / "JPEGImages" / f"{iid}.png", format="PNG")
        (root / "JPEGImages" / f"{iid}.png").rename(root / "JPEGImages" / f"{iid}.jpg")
        (root / "SegmentationClass" / f"{iid}.png").write_bytes(files.palette_png(lab))
        ids.append(iid)
        masks.append(root / "SegmentationClass" / f"{iid}.png")
    return ids, masks


def _images(root, ids):
    return [voc.image_path(root, i) for i in ids]


def test_labelled_crops_keep_labels_on_their_pixels(tmp_path):
    ids, masks = _write_set(tmp_path)
    crops = LabelledCrops(_images(tmp_path, ids), ids, masks, crop_size=48, resize_long=(40, 80), seed=0)
    for epoch in range(2):
        crops.set_epoch(epoch)
        for k in range(len(ids)):
            x, y = crops[k]
            assert x.shape == (3, 48, 48) and y.shape == (48, 48)
            red = x[0] > x[2]                      # normalised: red channel above blue on class 1
            inside = (y == 1) | (y == 2)
            assert ((y == 1) == red)[inside].float().mean() > 0.97
            assert (y[~inside] == IGNORE).all()
    x4, y4 = LabelledCrops(_images(tmp_path, ids), ids, masks, 48, (40, 80), seed=0, stride=4)[0]
    assert y4.shape == (12, 12)


def test_the_loop_trains_the_segmenter_and_it_learns(tmp_path):
    """The one training loop with the segmenter's task: a few epochs on six two-colour images
    take the val mIoU (validate, on the same images) far above chance."""
    torch.manual_seed(0)
    ids, masks = _write_set(tmp_path)
    model = build_segmenter(TINY)
    items = [(voc.image_path(tmp_path, i), m) for i, m in zip(ids, masks)]
    task = SegmentTask(model, 1.0, 4, val=items)
    cfg = LoopConfig(epochs=8, batch_size=3, lr=5e-3, weight_decay=0.0, warmup_epochs=0, name="segment")
    summary = run(task, LabelledCrops(_images(tmp_path, ids), ids, masks, 48, (40, 64), seed=0), cfg, torch.device("cpu"))
    assert summary["epoch"] == 8 and "ce" in summary["terms"]
    assert summary["miou"] > 0.6, summary


def test_scorer_oracle_and_predict_averages_probabilities(tmp_path):
    ids, masks = _write_set(tmp_path, n=2)
    s = Scorer(3, ["background", "a", "b"])
    for m in masks:
        gt = files.read_mask(m)
        s.update(np.where(gt == 255, 0, gt), gt)
    r = s.summary()
    assert r["pixel_accuracy"] == 1.0 and r["per_class"]["background"]["iou"] is None
    assert r["miou"] == 1.0
    model = build_segmenter(TINY).eval()
    image = files.read_image(voc.image_path(tmp_path, ids[0]))
    p = predict(model, image, [1.0, 0.5], True, torch.device("cpu"))
    assert p.shape == (4, *image.shape[:2]) and np.allclose(p.sum(0), 1, atol=1e-5)
    with torch.no_grad():
        x = torch.from_numpy(image).float()
        one = predict(model, image, [1.0], False, torch.device("cpu"))
    from wsss.data.datasets import normalize, to_tensor
    direct = F.softmax(model(to_tensor(normalize(image))[None]), dim=1)[0].detach().numpy()
    assert np.allclose(one, direct, atol=1e-5)
    del x


def _tiny_classifier():
    from wsss.models import ModelConfig, build_model
    return build_model(ModelConfig(version="v1", backbone="swin_demo_p2", num_classes=3, img_size=64))


def test_classifier_backbone_starts_from_the_classifiers_weights_at_any_size(tmp_path):
    """segment.backbone classifier: the SWTformer's Swin (its weights, not a copy at init) feeds
    ASPP; any input size is padded to the Swin's multiple and its map cropped back; a trained
    segmenter of that kind loads back from its model.json alone."""
    classifier = _tiny_classifier()
    cfg = SegmenterConfig(backbone="classifier", num_classes=4, aspp_channels=8, aspp_rates=(1, 2, 3),
                          classifier=classifier.cfg.to_dict())
    model = build_segmenter(cfg, "none", classifier.state_dict()).eval()
    mine = model.backbone.backbone.state_dict()
    assert all(torch.equal(v, classifier.backbone.state_dict()[k]) for k, v in mine.items())
    for h, w in [(64, 64), (70, 93), (33, 129)]:
        x = torch.randn(1, 3, h, w)
        assert model(x).shape == (1, 4, h, w)
        assert model.backbone(x)[0].shape[-2:] == (-(-h // 16), -(-w // 16))
    folder = tmp_path / "seg"
    folder.mkdir()
    io.save_weights(folder / "model.safetensors", model.state_dict())
    (folder / "model.json").write_text(json.dumps({"config": cfg.to_dict()}))
    back = load_segmenter(folder / "model.safetensors", folder / "model.json")
    x = torch.randn(1, 3, 50, 70)
    assert torch.allclose(back(x), model(x), atol=1e-6)


def _saved_segmenter(folder: Path) -> None:
    model = Segmenter(TINY)
    folder.mkdir(parents=True)
    io.save_weights(folder / "model.safetensors", model.state_dict())
    (folder / "model.json").write_text(json.dumps({"config": TINY.to_dict()}))


def test_load_segmenter_round_trip(tmp_path):
    _saved_segmenter(tmp_path / "seg")
    model = load_segmenter(tmp_path / "seg/model.safetensors", tmp_path / "seg/model.json")
    assert model.cfg == TINY and not model.training


def test_predict_writes_masks_for_odd_images_and_names_the_unreadable(tmp_path):
    _saved_segmenter(tmp_path / "seg")
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (37, 61), dtype=np.uint8), "L").save(images / "grey.png")
    Image.fromarray(rng.integers(0, 255, (50, 30, 4), dtype=np.uint8), "RGBA").save(images / "rgba.png")
    Image.fromarray(rng.integers(0, 255, (80, 100, 3), dtype=np.uint8)).save(images / "photo.jpg")
    (images / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "wsss.predict", "--images", str(images), "--out", str(out),
                           "--model", str(tmp_path / "seg"), "--flip"], cwd=REPO, capture_output=True, text=True,
                          env={"WSSS_DEVICE": "cpu", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 1, proc.stderr
    assert "broken.jpg" in proc.stdout + proc.stderr
    for name, shape in [("grey", (37, 61)), ("rgba", (50, 30)), ("photo", (80, 100))]:
        mask = files.read_mask(out / f"{name}.png")
        assert mask.shape == shape and mask.max() < 4
        assert (out / f"{name}_overlay.jpg").stat().st_size > 0
    assert not (out / "broken.png").exists()
