"""The experiment scripts' tables (experiments/variants.py): means, spreads and issue 13's targets
from hand-made experiment metrics, no DVC run."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))

import variants  # noqa: E402


def _metrics(cam, rcam=None, map_=0.8):
    m = {"cam": {"miou": cam}, "cls": {"map_per_image": map_}}
    if rcam is not None:
        m["rcam"] = {"miou": rcam}
    return m


def test_variants_summary_means_and_targets():
    found = {
        "busy-v1-0": _metrics(0.40, map_=0.80), "busy-v1-1": _metrics(0.44, map_=0.82),
        "busy-v2-0": _metrics(0.41, 0.45, 0.80), "busy-v2-1": _metrics(0.43, 0.47, 0.81),
        "large-v1-0": _metrics(0.50), "large-v2-0": _metrics(0.49, 0.51, 0.70),
    }
    health = {"large-v2-0": {"collapse": {"collapsed": True}}, "busy-v2-0": {"collapse": {"collapsed": False}}}
    out = variants.summarise(found, health, ["busy", "large"], [0, 1])
    busy, large = out["busy"], out["large"]
    assert busy["V1 CAM"]["mean"] == pytest.approx(42.0) and busy["V1 CAM"]["std"] == pytest.approx(2.828, abs=1e-3)
    assert busy["V2 R-CAM"]["values"] == pytest.approx([45.0, 47.0])
    assert busy["targets"] == {"R-CAM >= V1 CAM + 2": True, "V2 CAM >= V1 CAM": True, "V2 mAP >= V1 mAP - 1": True}
    assert busy["collapsed"] == []
    assert large["targets"] == {"R-CAM >= V1 CAM + 2": False, "V2 CAM >= V1 CAM": False,
                                "V2 mAP >= V1 mAP - 1": False}
    assert large["collapsed"] == [0] and large["V1 CAM"]["n"] == 1
    text = variants.table(out)
    assert "| busy | 42.00 +- 2.83 |" in text and "| [0] | 0 of 3 |" in text
    # a variant with no V2 runs: its targets are unknown, not failed
    only_v1 = variants.summarise({"busy-v1-0": _metrics(0.4)}, {}, ["busy"], [0])["busy"]
    assert set(only_v1["targets"].values()) == {None}
