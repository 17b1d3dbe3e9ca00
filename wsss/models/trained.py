"""The trained networks, read back from their artifacts: the classifier from ``models/`` and IRN's
relation net from ``relations/`` (safetensors; paths in :mod:`wsss.artifacts`)."""
from __future__ import annotations

from pathlib import Path

from .. import io
from ..artifacts import MODEL_INFO, RELATION_INFO, RELATION_WEIGHTS, WEIGHTS
from .relations import RelationNet
from .swtformer import ModelConfig, build_model


def load_model_config(path: Path = MODEL_INFO) -> ModelConfig:
    info = io.read_json(path)
    return ModelConfig(**info["config"])


def load_model(device=None, folder: Path | None = None):
    """The trained model from ``models/`` (or ``folder``; safetensors), in eval mode on ``device``."""
    info, weights = (MODEL_INFO, WEIGHTS) if folder is None else (folder / MODEL_INFO.name, folder / WEIGHTS.name)
    cfg = load_model_config(info)
    model = build_model(cfg)
    state = io.load_weights(weights)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise io.ArtifactError(f"{weights}: does not fit {cfg.version}/{cfg.backbone}: "
                               f"missing {missing[:3]}, unexpected {unexpected[:3]}")
    return model.to(device or "cpu").eval()


def load_relation_net(dim: int, device=None):
    """The classifier from ``models/`` with the trained boundary head from ``relations/``."""
    info = io.read_json(RELATION_INFO)
    if not info.get("trained"):
        raise io.ArtifactError(f"{RELATION_INFO}: no relation net was trained ({info.get('reason', '?')})")
    net = RelationNet(load_model(device), dim)
    try:
        net.head.load_state_dict(io.load_weights(RELATION_WEIGHTS))
    except RuntimeError as exc:
        raise io.ArtifactError(f"{RELATION_WEIGHTS}: does not fit a head of dim {dim}: {exc}") from None
    return net.to(device or "cpu").eval()
