"""Where models run: the accelerator to use and the CPUs this process may use. Shared by the
sentence encoder and the local LLM backend, so both pick the same device the same way."""

from __future__ import annotations

import os


def pick_device(requested: str | None = None) -> str:
    """CUDA when present, then Apple MPS, else CPU; an explicit choice wins."""
    if requested:
        return requested
    import torch

    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask, which containers and taskset narrow),
    not the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1
