"""V2's seed collapse (issue 13): the loop that caused it is cut by default, and a short V2
training on the demo (where the paper's setting collapsed: README "Demo variants") keeps its
seeds of both kinds.

The collapse: GSC pulls the CAM towards the R-CAM, whose prototypes come from seeds the CAM
made. Once one kind of seed dominates, its prototype's reactivation covers more of the image,
GSC drags the CAM after it, and the next seeds dominate more. ``loss.grad_to: rcam`` (the
default) lets GSC and CCL train only the fused branch: the classifier and its CAM train exactly
as V1's (tested below, weight for weight), so no loop through the seeds can flatten them.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from wsss import runtime
from wsss.data.datasets import TrainCrops
from wsss.data.demo import VARIANTS, generate_demo
from wsss.data.manifest import build_manifest
from wsss.losses import LossWeights
from wsss.models import ModelConfig, build_model
from wsss.classifier import TrainConfig, fit

REPO = Path(__file__).resolve().parents[1]
DEFAULTS = yaml.safe_load((REPO / "params.yaml").read_text())
CROP = 64


@pytest.fixture(scope="module")
def demo_set(tmp_path_factory):
    """64 images of the standard demo variant, 80-112 px: (root, ids, labels)."""
    root = tmp_path_factory.mktemp("collapse") / "VOC2012"
    generate_demo(root, seed=3, n_train_aug=64, n_train=8, n_val=8, min_size=80, max_size=112,
                  style=VARIANTS["standard"])
    manifest = build_manifest(root, ["train_aug", "val"], scored=[], train="train_aug", held_out=["val"])
    return root, manifest["splits"]["train_aug"], manifest["labels"]


def _train(demo_set, version: str, grad_to: str, epochs: int):
    root, ids, labels = demo_set
    runtime.seed_everything(0)
    torch.set_num_threads(1)
    m = DEFAULTS["model"]
    model = build_model(ModelConfig(version=version, backbone=m["backbone"], num_classes=6, img_size=CROP,
                                    hff_dims=m["hff_dims"], hff_detach=m["hff_detach"], affinity=m["affinity"],
                                    bg_weight=m["bg_weight"], seed_features=m["seed_features"],
                                    every_class=m["every_class"]))
    crops = TrainCrops([root / "JPEGImages" / f"{i}.jpg" for i in ids], ids, labels, 6, CROP, [48, 96], True, 0.0, 0)
    loss = DEFAULTS["loss"]
    cfg = TrainConfig(epochs=epochs, batch_size=16, lr=DEFAULTS["train"]["lr"], head_lr_mult=4.0,
                      weight_decay=0.05, warmup_epochs=1, min_lr_ratio=0.01, num_workers=0, amp=False, seed=0,
                      collapse_floor=DEFAULTS["train"]["collapse_floor"],
                      loss=LossWeights(w_gsc=loss["w_gsc"], w_ccl=loss["w_ccl"], ccl=loss["ccl"], grad_to=grad_to))
    summary = fit(model, crops, None, cfg, torch.device("cpu"))
    return model, summary


def test_the_default_cuts_the_loop_the_classifier_trains_as_v1(demo_set):
    """With grad_to rcam, V2's backbone and CAM head end up equal to V1's trained from the same
    seed on the same batches; with the paper's setting (both) GSC and CCL move them."""
    assert DEFAULTS["loss"]["grad_to"] == "rcam"
    v1, _ = _train(demo_set, "v1", "both", 2)
    cut, _ = _train(demo_set, "v2", "rcam", 2)
    paper, _ = _train(demo_set, "v2", "both", 2)
    ref = v1.state_dict()
    for name, value in cut.state_dict().items():
        if name in ref:
            torch.testing.assert_close(value, ref[name], rtol=0, atol=1e-6, msg=name)
    moved = max((paper.state_dict()[n] - ref[n]).abs().max().item() for n in ref)
    assert moved > 1e-3


def test_short_v2_training_keeps_seeds_of_both_kinds(demo_set):
    """Six epochs of V2 with the defaults: no epoch's mean background seed share leaves
    [collapse_floor, 1 - collapse_floor] (0.02 .. 0.98; the paper's setting reached 0.99 on the
    full demo, README), the watch reports no collapse, and the last epoch's seeds, R-CAM and
    prototypes still hold background and foreground. At this size (24 steps) the paper's
    setting has not collapsed yet either (it takes ~200 steps of 128 px crops): the test above is
    the one that fails if the loop is ever closed again."""
    floor = DEFAULTS["train"]["collapse_floor"]
    _, summary = _train(demo_set, "v2", DEFAULTS["loss"]["grad_to"], 6)
    report, health = summary["collapse"], summary["health"]
    assert not report["collapsed"], report
    assert all(floor <= s <= 1 - floor for s in report["epoch_seed_bg"]), report["epoch_seed_bg"]
    assert floor <= health["rcam_bg"] <= 1 - floor
    assert health["proto_bg"] > 0.5 and health["proto_fg"] > 0.1
    assert health["cam_in_seed"] > health["cam_off_seed"]
