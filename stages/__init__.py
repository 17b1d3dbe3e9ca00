"""Thin DVC stage entry points: read params, call ``wsss``, write outputs (``python -m stages.X``)."""
