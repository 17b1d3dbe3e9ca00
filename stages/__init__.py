"""Thin DVC stage entry points: read params, call ``wsss``, write outputs (``python -m stages.X``)."""
from wsss.cli import stop_cleanly

stop_cleanly(__name__)   # Ctrl-C / SIGTERM from the first import on (torch's too): one line, no traceback
