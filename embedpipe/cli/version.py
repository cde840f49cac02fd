"""`embedpipe --version`: what is installed and what `device: auto` would run on, for a bug
report or a check that a machine is set up."""

from __future__ import annotations

import os
from importlib import metadata

# (name shown, distributions that provide it: the first installed one counts)
COMPONENTS = (
    ("embedpipe", ("embedpipe",)),
    ("torch", ("torch",)),
    ("sentence-transformers", ("sentence-transformers",)),
    ("qdrant-edge", ("qdrant-edge-py", "qdrant-edge")),
    ("qdrant-client", ("qdrant-client",)),
    ("faiss", ("faiss-cpu", "faiss-gpu", "faiss-gpu-cu12", "faiss")),
)


def version_of(distributions: tuple[str, ...]) -> str:
    """The installed version of the first of `distributions` present, or 'not installed'."""
    for name in distributions:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return "not installed"


def device() -> str:
    """What `device: auto` picks here: the CUDA device's name, or the CPU and its cores."""
    try:
        import torch
    except ImportError:
        return "unknown (torch is not installed)"
    if torch.cuda.is_available():
        count = torch.cuda.device_count()
        return f"cuda ({torch.cuda.get_device_name(0)}{f', {count} devices' if count > 1 else ''})"
    return f"cpu ({os.cpu_count() or 1} cores, {torch.get_num_threads()} torch threads)"


def versions() -> str:
    """One line per component, then the device."""
    width = max(len(name) for name, _ in COMPONENTS) + 1
    lines = [f"{name:<{width}} {version_of(dists)}" for name, dists in COMPONENTS]
    return "\n".join([*lines, f"{'device':<{width}} {device()}"])
