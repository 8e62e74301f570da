"""Package logger. Library code logs through ``get_logger(__name__)``; never ``print``."""

from __future__ import annotations

import logging

_CONFIGURED = False


def get_logger(name: str) -> logging.Logger:
    """Return a logger under the ``longrecipe`` namespace with a default stderr handler."""
    global _CONFIGURED
    if not _CONFIGURED:
        root = logging.getLogger("longrecipe")
        if not root.handlers:
            handler = logging.StreamHandler()
            handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] %(message)s"))
            root.addHandler(handler)
            root.setLevel(logging.INFO)
            root.propagate = False
        _CONFIGURED = True
    if not name.startswith("longrecipe"):
        name = f"longrecipe.{name}"
    return logging.getLogger(name)
