"""Training loop: schedule, parameter groups, and a NaN loss stopping with a clear error."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
from torch.utils.data import Dataset

from wsss.classifier import TrainConfig, fit
from wsss.training import EpochShuffle, TrainingError, param_groups, warmup_cosine


class Tiny(nn.Module):
    """A model with the SWTformer interface: logits from a linear layer, one 'new' parameter."""

    def __init__(self, poison: bool = False):
        super().__init__()
        self.body = nn.Linear(4, 3)
        self.head = nn.Parameter(torch.ones(3))
        self.poison = poison

    def new_parameters(self):
        return [self.head]

    def forward(self, x, labels=None):
        logits = self.body(x) * self.head
        if self.poison:
            logits = logits * float("nan")
        return {"logits": logits}


class Rows(Dataset):
    def __init__(self, n=8):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 4, generator=g)
        self.y = (torch.rand(n, 3, generator=g) > 0.5).float()

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], self.y[i], i


def cfg(**kw):
    base = dict(epochs=2, batch_size=4, lr=0.1, head_lr_mult=10, weight_decay=0.0, warmup_epochs=1,
                min_lr_ratio=0.1, num_workers=0, amp=True, seed=0)
    return TrainConfig(**{**base, **kw})


def test_warmup_cosine_by_hand():
    f = warmup_cosine(total_steps=10, warmup_steps=2, min_ratio=0.1)
    assert [f(0), f(1)] == [0.5, 1.0]
    assert f(2) == pytest.approx(1.0)
    assert f(6) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert f(10) == pytest.approx(0.1)


def test_param_groups_rates_and_decay():
    groups = {g["name"]: g for g in param_groups(Tiny(), lr=1.0, head_lr_mult=10, weight_decay=0.05)}
    assert groups["new_no_decay"]["lr"] == 10.0 and groups["new_no_decay"]["weight_decay"] == 0.0
    assert groups["backbone"]["lr"] == 1.0 and groups["backbone"]["weight_decay"] == 0.05
    assert groups["backbone_no_decay"]["weight_decay"] == 0.0  # the bias


def test_epoch_shuffle_repeats_and_changes_per_epoch():
    s = EpochShuffle(10, seed=3)
    a = list(s)
    s.set_epoch(1)
    b = list(s)
    s.set_epoch(0)
    assert list(s) == a and a != b and sorted(b) == list(range(10))


def test_fit_is_deterministic_on_cpu():
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        model = Tiny()
        fit(model, Rows(), None, cfg(), torch.device("cpu"))
        runs.append(model.body.weight.detach().clone())
    assert torch.equal(runs[0], runs[1])


class Boxed(Rows):
    """Rows as 2x2 'images' from crops that carry their image's box: the top row only."""

    def __getitem__(self, i):
        return self.x[i].view(1, 2, 2), self.y[i], i, torch.tensor([0, 0, 1, 2])


class Recorder(Tiny):
    """Tiny that records the pixel mask ``fit`` hands it."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, x, labels=None, valid=None):
        self.seen.append(valid)
        return super().forward(x.flatten(1), labels)


def test_fit_hands_the_crops_padding_mask_to_the_model():
    model = Recorder()
    fit(model, Boxed(), None, cfg(), torch.device("cpu"))
    assert len(model.seen) == 4                      # 2 epochs x 2 batches of 4
    top_row = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    for valid in model.seen:
        assert valid.shape == (4, 1, 2, 2) and torch.equal(valid, top_row.expand(4, 1, 2, 2))
    plain = Recorder()
    fit(plain, Rows(), None, cfg(), torch.device("cpu"))
    assert plain.seen == [None] * 4                  # items without a box: no mask, no keyword


def test_nan_loss_stops_with_a_clear_error():
    model = Tiny(poison=True)
    before = model.body.weight.detach().clone()
    with pytest.raises(TrainingError, match=r"loss is nan at epoch 1, step 1"):
        fit(model, Rows(), None, cfg(), torch.device("cpu"))
    assert torch.equal(model.body.weight, before)  # no step was taken with the bad loss


def test_too_few_images_for_one_batch():
    with pytest.raises(TrainingError, match="fewer than one batch"):
        fit(Tiny(), Rows(3), None, cfg(), torch.device("cpu"))
