"""SWTformer models (one module per family) and the Swin backbone they stand on."""
from .swtformer import ModelConfig, build_model

__all__ = ["ModelConfig", "build_model"]
