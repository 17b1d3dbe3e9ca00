"""wsss: weakly supervised semantic segmentation with SWTformer seeds, as a DVC pipeline."""
__version__ = "0.1.0"
