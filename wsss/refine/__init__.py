"""Pseudo-label refinement: seeds -> labels (threshold / argmax), dense CRF, IRN-style relations."""
