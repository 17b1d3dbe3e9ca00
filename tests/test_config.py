"""Tests of the parameter schema and its validation (wsss.config)."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from wsss import config
from wsss.config import ParamsError, load_params, thresholds, to_dict, validate_params

REPO = Path(__file__).resolve().parents[1]
PARAMS = REPO / "params.yaml"


@pytest.fixture(scope="module")
def raw() -> dict:
    """The real params.yaml as a plain dict (tests deep-copy it before mutating)."""
    return yaml.safe_load(PARAMS.read_text())


def write_params(tmp_path: Path, tree: dict) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(tree, sort_keys=False))
    return path


def mutated(raw: dict, dotted: str, value) -> dict:
    """A deep copy of ``raw`` with the leaf ``dotted`` (e.g. 'train.epochs') set to ``value``."""
    tree = copy.deepcopy(raw)
    *parents, leaf = dotted.split(".")
    node = tree
    for key in parents:
        node = node[key]
    node[leaf] = value
    return tree


def load_error(tmp_path: Path, tree: dict) -> str:
    """Load ``tree`` from a yaml file; it must fail with ParamsError; return the message."""
    path = write_params(tmp_path, tree)
    with pytest.raises(ParamsError) as info:
        load_params(path)
    msg = str(info.value)
    assert str(path) in msg  # the file is named too
    return msg


# ------------------------------------------------------------------------------- the real file

def test_real_params_validate():
    p = load_params(PARAMS)
    raw = yaml.safe_load(PARAMS.read_text())
    # the namespace holds exactly what the file holds
    assert to_dict(p) == raw
    assert p.train.epochs == raw["train"]["epochs"]
    assert p.data.seed_split in p.cams.splits
    assert p.model.version in ("v1", "v2")


def test_schema_covers_every_key_of_the_real_file(raw):
    def leaves(tree, prefix=""):
        for k, v in tree.items():
            if isinstance(v, dict):
                yield from leaves(v, prefix + k + ".")
            else:
                yield prefix + k

    assert sorted(leaves(raw)) == sorted(leaves(config.SCHEMA))


def test_mutated_copy_still_loads(tmp_path, raw):
    """A valid change loads and is visible (the yaml round trip itself is not the error source)."""
    p = load_params(write_params(tmp_path, mutated(raw, "train.epochs", 3)))
    assert p.train.epochs == 3
    # an int where a float is asked is fine
    p = load_params(write_params(tmp_path, mutated(raw, "train.lr", 1)))
    assert p.train.lr == 1


# ------------------------------------------------------------------------------- errors

def test_unknown_key_named_with_suggestion(tmp_path, raw):
    tree = copy.deepcopy(raw)
    tree["train"]["epoch"] = tree["train"].pop("epochs")
    msg = load_error(tmp_path, tree)
    assert "'train.epoch'" in msg
    assert "train.epochs" in msg
    assert "did you mean" in msg


def test_unknown_top_level_key(tmp_path, raw):
    tree = copy.deepcopy(raw)
    tree["sede"] = 1
    msg = load_error(tmp_path, tree)
    assert "'sede'" in msg
    assert "'seed'" in msg  # suggested


def test_wrong_type_named(tmp_path, raw):
    msg = load_error(tmp_path, mutated(raw, "train.epochs", "ten"))
    assert "'train.epochs'" in msg
    assert "int" in msg and "'ten'" in msg


@pytest.mark.parametrize("key", ["train.epochs", "train.batch_size", "seed", "train.lr"])
def test_bool_refused_where_number_expected(tmp_path, raw, key):
    msg = load_error(tmp_path, mutated(raw, key, True))
    assert f"'{key}'" in msg
    assert "bool" in msg


def test_number_refused_where_bool_expected(tmp_path, raw):
    msg = load_error(tmp_path, mutated(raw, "train.hflip", 1))
    assert "'train.hflip'" in msg


def test_float_refused_where_int_expected(tmp_path, raw):
    msg = load_error(tmp_path, mutated(raw, "train.epochs", 2.5))
    assert "'train.epochs'" in msg


def test_model_version_v3_refused(tmp_path, raw):
    msg = load_error(tmp_path, mutated(raw, "model.version", "v3"))
    assert "'model.version'" in msg
    assert "v1" in msg and "v2" in msg


def test_scale_of_zero_refused(tmp_path, raw):
    msg = load_error(tmp_path, mutated(raw, "cams.scales", [1.0, 0, 2.0]))
    assert "'cams.scales'" in msg
    assert "> 0" in msg


@pytest.mark.parametrize("scales", [[], [1.0, -0.5], [1.0, True], [1.0, "2"], [float("nan")]])
def test_other_bad_scales_refused(tmp_path, raw, scales):
    msg = load_error(tmp_path, mutated(raw, "cams.scales", scales))
    assert "'cams.scales'" in msg


def test_missing_key_named(tmp_path, raw):
    tree = copy.deepcopy(raw)
    del tree["train"]["batch_size"]
    msg = load_error(tmp_path, tree)
    assert "missing key 'train.batch_size'" in msg


def test_missing_section_named(tmp_path, raw):
    tree = copy.deepcopy(raw)
    del tree["evaluate"]
    msg = load_error(tmp_path, tree)
    assert "'evaluate'" in msg


def test_section_that_is_not_a_mapping(tmp_path, raw):
    msg = load_error(tmp_path, mutated(raw, "cams", [1, 2]))
    assert "'cams'" in msg


def test_cams_splits_must_hold_seed_split(tmp_path, raw):
    tree = mutated(raw, "cams.splits", ["val"])
    assert tree["data"]["seed_split"] == "train"
    msg = load_error(tmp_path, tree)
    assert "'cams.splits'" in msg
    assert "'train'" in msg


def test_irn_needs_seeds_of_the_training_split(tmp_path, raw):
    tree = mutated(mutated(raw, "refine.method", "irn"), "cams.splits", ["train"])
    msg = load_error(tmp_path, tree)
    assert "'refine.method'" in msg and "'train_aug'" in msg and "cams.splits" in msg
    write_params(tmp_path, mutated(mutated(raw, "refine.method", "irn"), "cams.splits", ["train", "train_aug"]))
    assert load_params(tmp_path / "params.yaml").refine.method == "irn"


def test_irn_confident_thresholds_ordered(tmp_path, raw):
    tree = mutated(mutated(raw, "refine.irn.conf_fg", 0.2), "refine.irn.conf_bg", 0.4)
    assert "'refine.irn.conf_fg'" in load_error(tmp_path, tree)


@pytest.mark.parametrize("key,value", [
    ("train.crop_size", 200),           # not a multiple of 32
    ("train.resize_long", [320, 160]),  # low > high
    ("train.resize_long", [160]),
    ("model.drop_path_rate", 1.5),
    ("model.head_kernel", 5),
    ("train.lr", 0),
    ("seed", -1),
    ("model.pretrained", "   "),
    ("train.nproc", 0),
    ("cams.nproc", 0),
])
def test_bad_values_named(tmp_path, raw, key, value):
    msg = load_error(tmp_path, mutated(raw, key, value))
    assert f"'{key}'" in msg


@pytest.mark.parametrize("key,value,named", [
    ("data.demo.min_size", 300, "data.demo.min_size"),       # > max_size 256
    ("data.demo.num_train", 1000, "data.demo.num_train"),    # > num_train_aug
    ("evaluate.threshold_start", 0.99, "evaluate.threshold_start"),
    ("train.nproc", 3, "train.batch_size"),                  # 16 does not split over 3
    ("segment.nproc", 3, "segment.batch_size"),
    ("data.val_split", "train_aug", "data.val_split"),       # the segmenter's training split
    ("cams.splits", ["train"], "cams.splits"),                # no pseudo labels for train_aug
])
def test_cross_checks(tmp_path, raw, key, value, named):
    msg = load_error(tmp_path, mutated(raw, key, value))
    assert named in msg


def test_classifier_backbone_takes_no_other_weights(tmp_path, raw):
    tree = mutated(mutated(raw, "segment.backbone", "classifier"), "segment.pretrained", "timm")
    assert "'segment.pretrained' must be none with segment.backbone classifier" in load_error(tmp_path, tree)
    gt = mutated(mutated(raw, "segment.labels", "gt"), "cams.splits", ["train"])
    assert validate_params(gt).segment.labels == "gt"      # ground truth needs no pseudo labels


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ParamsError, match="not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(bad)


def test_validate_params_names_source(raw):
    tree = mutated(raw, "train.epochs", "ten")
    with pytest.raises(ParamsError, match=r"^somewhere: 'train.epochs'"):
        validate_params(tree, "somewhere")


def test_params_error_is_value_error():
    assert issubclass(ParamsError, ValueError)


# ------------------------------------------------------------------------------- thresholds

def test_default_thresholds():
    t = thresholds(load_params(PARAMS))
    assert len(t) == 20
    assert t[0] == 0.0 and t[-1] == 0.95
    # exactly the decimal grid 0.00, 0.05, ..., 0.95 (no 0.15000000000000002)
    assert t == [round(0.05 * i, 2) for i in range(20)]
    steps = [b - a for a, b in zip(t, t[1:])]
    assert all(abs(s - 0.05) < 1e-9 for s in steps)


def test_thresholds_custom(tmp_path, raw):
    tree = copy.deepcopy(raw)
    tree["evaluate"] = {"workers": 0, "threshold_start": 0.2, "threshold_stop": 0.4, "num_thresholds": 5}
    assert thresholds(load_params(write_params(tmp_path, tree))) == [0.2, 0.25, 0.3, 0.35, 0.4]
    tree["evaluate"] = {"workers": 0, "threshold_start": 0.3, "threshold_stop": 0.9, "num_thresholds": 1}
    assert thresholds(load_params(write_params(tmp_path, tree))) == [0.3]
