"""Run the Triton kernels under the interpreter when there is no GPU.

``triton.jit`` reads ``TRITON_INTERPRET`` when a kernel module is imported, so it is set here,
before any test module imports ``ponder.local.kernels._triton``.
"""

from __future__ import annotations

import importlib
import os
import sys


def _has_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


if not _has_cuda():
    os.environ.setdefault("TRITON_INTERPRET", "1")
    # A module imported earlier in the session (before this was set) holds compiled-mode kernels.
    for _name in ("ponder.local.kernels._triton", "ponder.local.kernels._triton_fused"):
        if _name in sys.modules and os.environ["TRITON_INTERPRET"] == "1":
            importlib.reload(sys.modules[_name])
