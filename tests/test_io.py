"""Tests of artifact I/O (wsss.io) and the seed-map files (wsss.artifacts)."""
from __future__ import annotations

import os
import stat

import numpy as np
import pytest
import torch

from wsss import artifacts, io
from wsss.io import ArtifactError
from wsss.models import trained


def listing(d):
    return sorted(p.name for p in d.iterdir())


# ------------------------------------------------------------------------------- npz

def test_npz_round_trip(tmp_path):
    a = np.arange(12, dtype=np.float32).reshape(3, 4) / 7
    b = np.array([1, -2, 3], dtype=np.int16)
    c = np.zeros((0, 5), dtype=np.uint8)
    path = tmp_path / "sub" / "x.npz"  # parent created
    io.save_npz(path, a=a, b=b, c=c)
    got = io.load_npz(path)
    assert sorted(got) == ["a", "b", "c"]
    for name, want in dict(a=a, b=b, c=c).items():
        assert got[name].dtype == want.dtype and got[name].shape == want.shape
        np.testing.assert_array_equal(got[name], want)
    assert listing(path.parent) == ["x.npz"]  # no temp file left


def test_save_npz_refuses_object_arrays(tmp_path):
    with pytest.raises(TypeError, match="'bad'"):
        io.save_npz(tmp_path / "x.npz", bad=np.array([{"a": 1}], dtype=object))
    assert listing(tmp_path) == []


def test_load_npz_refuses_pickled_object_array(tmp_path):
    path = tmp_path / "evil.npz"
    np.savez(path, ok=np.ones(3), obj=np.array([{"a": 1}, None], dtype=object))  # allow_pickle default
    with pytest.raises(ArtifactError, match="pickled objects") as info:
        io.load_npz(path)
    assert str(path) in str(info.value)


def test_load_npz_missing_and_corrupt(tmp_path):
    with pytest.raises(ArtifactError, match="not found"):
        io.load_npz(tmp_path / "none.npz")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04 this is not a zip")
    with pytest.raises(ArtifactError, match="not a readable"):
        io.load_npz(bad)


# ------------------------------------------------------------------------------- weights

def test_weights_round_trip(tmp_path):
    base = torch.arange(6, dtype=torch.float32)
    state = {"w": base.view(2, 3), "shared": base[:3], "t": torch.ones(2, 2).t(), "i": torch.tensor([1, 2])}
    path = tmp_path / "m.safetensors"
    io.save_weights(path, state, metadata={"note": "x"})
    got = io.load_weights(path)
    assert set(got) == set(state)
    for k, v in state.items():
        assert torch.equal(got[k], v), k
    assert listing(tmp_path) == ["m.safetensors"]


def test_load_weights_torch_state_dict(tmp_path):
    path = tmp_path / "m.pth"
    torch.save({"a": torch.arange(3.0)}, path)
    got = io.load_weights(path)
    assert torch.equal(got["a"], torch.arange(3.0))


def test_load_weights_not_a_mapping(tmp_path):
    path = tmp_path / "m.pth"
    torch.save(torch.zeros(2), path)
    with pytest.raises(ArtifactError, match="expected a state dict"):
        io.load_weights(path)


def test_load_weights_missing_and_corrupt(tmp_path):
    with pytest.raises(ArtifactError, match="not found"):
        io.load_weights(tmp_path / "none.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 20)
    with pytest.raises(ArtifactError, match="safetensors"):
        io.load_weights(bad)


class Malicious:
    """Unpickling this runs a shell command."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.system, (f"echo pwned > {self.target}",))


def test_load_weights_refuses_malicious_pickle(tmp_path):
    target = tmp_path / "FILE"
    path = tmp_path / "evil.pt"
    torch.save({"w": torch.zeros(2), "x": Malicious(target)}, path)
    assert not target.exists()  # saving did not run it
    with pytest.raises(ArtifactError, match="refused") as info:
        io.load_weights(path)
    assert str(path) in str(info.value)
    assert not target.exists()


class Harmless:
    """An ordinary custom class: still not allowed in a weights file (its import runs code)."""

    def __init__(self):
        self.lr = 0.1


def test_load_weights_refuses_custom_class_instance(tmp_path):
    path = tmp_path / "obj.pt"
    torch.save({"w": torch.zeros(1), "cfg": Harmless()}, path)
    with pytest.raises(ArtifactError, match="weights_only"):
        io.load_weights(path)


# ------------------------------------------------------------------------------- atomic writes

def test_atomic_write_success_leaves_only_target(tmp_path):
    path = tmp_path / "a.txt"
    io.write_text(path, "one")
    io.write_text(path, "two")
    assert path.read_text() == "two"
    assert listing(tmp_path) == ["a.txt"]
    io.write_json(tmp_path / "b.json", {"x": [1, 2]})
    assert io.read_json(tmp_path / "b.json") == {"x": [1, 2]}
    assert listing(tmp_path) == ["a.txt", "b.json"]


def test_atomic_write_failure_keeps_original(tmp_path):
    path = tmp_path / "a.txt"
    io.write_text(path, "original")
    with pytest.raises(RuntimeError, match="boom"):
        with io.atomic_path(path) as tmp:
            assert tmp != path and tmp.parent == path.parent
            tmp.write_text("half written")
            assert path.read_text() == "original"  # not visible before the block ends
            raise RuntimeError("boom")
    assert path.read_text() == "original"
    assert listing(tmp_path) == ["a.txt"]


def test_atomic_write_failure_without_original(tmp_path):
    path = tmp_path / "new.npz"
    with pytest.raises(KeyError):
        with io.atomic_path(path, suffix=".npz") as tmp:
            tmp.write_bytes(b"x")
            raise KeyError("stop")
    assert listing(tmp_path) == []


def test_atomic_file_mode_follows_umask(tmp_path):
    old = os.umask(0o022)
    try:
        io.write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o644


def test_read_json_errors(tmp_path):
    with pytest.raises(ArtifactError, match="not found"):
        io.read_json(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        io.read_json(tmp_path / "bad.json")


# ------------------------------------------------------------------------------- seed maps

def test_cams_round_trip_float16(tmp_path):
    rng = np.random.default_rng(0)
    cam = rng.random((2, 5, 7)).astype(np.float32)
    cam[0, 0, 0], cam[1, 4, 6] = 0.0, 1.0
    path = tmp_path / artifacts.cam_name("img_1")
    artifacts.save_cams(path, [3, 15], {"cam": cam})
    with np.load(path, allow_pickle=False) as z:  # stored compactly
        assert z["cam"].dtype == np.float16 and z["keys"].dtype == np.int16
    got = artifacts.load_cams(path, expect_shape=(5, 7))
    assert got["cam"].dtype == np.float32 and got["keys"].dtype == np.int64
    np.testing.assert_array_equal(got["keys"], [3, 15])
    assert np.abs(got["cam"] - cam).max() <= 1e-3
    assert got["cam"][0, 0, 0] == 0.0 and got["cam"][1, 4, 6] == 1.0


def test_cams_shape_mismatch(tmp_path):
    path = tmp_path / "c.npz"
    artifacts.save_cams(path, [1], {"cam": np.zeros((1, 5, 7), dtype=np.float32)})
    with pytest.raises(ArtifactError, match=r"\(5, 7\).*\(7, 5\)"):
        artifacts.load_cams(path, expect_shape=(7, 5))
    assert artifacts.load_cams(path)["cam"].shape == (1, 5, 7)  # no check asked


def test_cams_channel_count_mismatch(tmp_path):
    path = tmp_path / "c.npz"
    artifacts.save_cams(path, [1, 2, 3], {"cam": np.zeros((2, 4, 4), dtype=np.float32)})
    with pytest.raises(ArtifactError, match="2 CAM channels for 3 keys"):
        artifacts.load_cams(path)


def test_cams_file_without_cam(tmp_path):
    path = tmp_path / "c.npz"
    io.save_npz(path, keys=np.array([1], dtype=np.int16))
    with pytest.raises(ArtifactError, match="not a seed-map file"):
        artifacts.load_cams(path)


def _evil_bytes(target) -> bytes:
    import pickle

    return pickle.dumps({"w": torch.zeros(1), "x": Malicious(target)})


@pytest.mark.parametrize("where", ["cams", "val_scores", "weights", "relation_weights", "manifest",
                                   "weights_as_torch_file"])
def test_pulled_artifacts_that_are_malicious_pickles_are_refused(tmp_path, monkeypatch, where):
    """What a teammate's remote could hand over, in every place a stage reads from: a pickle whose
    unpickling would run a shell command. Each loader refuses it, naming the file; nothing runs."""
    from wsss.models import ModelConfig

    monkeypatch.chdir(tmp_path)
    target = tmp_path / "PWNED"
    cfg = ModelConfig(version="v1", backbone="swin_demo", num_classes=3, img_size=64)
    io.write_json(artifacts.MODEL_INFO, {"config": cfg.to_dict(), "seed_map": "cam"})
    io.write_json(artifacts.RELATION_INFO, {"trained": True})
    paths = {"cams": tmp_path / "x.npz", "val_scores": artifacts.VAL_SCORES,
             "weights": artifacts.WEIGHTS, "relation_weights": artifacts.RELATION_WEIGHTS,
             "manifest": artifacts.MANIFEST, "weights_as_torch_file": tmp_path / "ckpt.pt"}
    loaders = {"cams": lambda: artifacts.load_cams(paths["cams"]),
               "val_scores": lambda: io.load_npz(paths["val_scores"]),
               "weights": lambda: trained.load_model(),
               "relation_weights": lambda: trained.load_relation_net(dim=8),
               "manifest": lambda: artifacts.load_manifest(),
               "weights_as_torch_file": lambda: io.load_weights(paths["weights_as_torch_file"])}
    if where == "relation_weights":   # a sound classifier, a malicious head
        from wsss.models import build_model

        io.save_weights(artifacts.WEIGHTS, build_model(cfg).state_dict())
    paths[where].parent.mkdir(parents=True, exist_ok=True)
    paths[where].write_bytes(_evil_bytes(target))
    with pytest.raises(ArtifactError) as info:
        loaders[where]()
    assert str(paths[where]) in str(info.value)
    assert not target.exists()
