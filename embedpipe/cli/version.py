"""`embedpipe --version`: what is installed and what `device: auto` would run on, for a bug
report or a check that a machine is set up."""

from __future__ import annotations

import os
from importlib import metadata

from embedpipe.encoding.precision import cpu_flags, native_bf16_flags
from embedpipe.sinks.registry import LIBRARIES

# (name shown, distributions that provide it: the first installed one counts); each registered
# sink's library, from the sink registry; then OpenVINO.
COMPONENTS = (
    ("embedpipe", ("embedpipe",)),
    ("torch", ("torch",)),
    ("sentence-transformers", ("sentence-transformers",)),
    *LIBRARIES,
    ("openvino", ("openvino",)),
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


def openvino_bf16() -> bool | None:
    """Whether OpenVINO runs bf16 on this CPU, as OpenVINO itself says; None when not installed."""
    from embedpipe.encoding.openvino import import_openvino, runtime_bf16

    try:
        import_openvino()
    except ImportError:
        return None
    return runtime_bf16()


def cpu_bf16(flags: frozenset[str], openvino: bool | None) -> str:
    """What runs bf16 on a CPU with `flags` whose OpenVINO runs bf16 or not (None: not installed).

    What `precision: auto` may choose: torch bf16 only on native bf16, OpenVINO bf16 where
    OpenVINO runs it (each still within the parity bar).
    """
    native = native_bf16_flags(flags)
    torch = f"native ({', '.join(native)})" if native else "not native: torch runs fp32"
    if openvino is None:
        return f"{torch}; OpenVINO not installed"
    return f"{torch}; OpenVINO runs {'bf16' if openvino else 'fp32'}"


def versions() -> str:
    """One line per component, then the device and what runs bf16 on its CPU."""
    width = max(len(name) for name, _ in COMPONENTS) + 1
    lines = [f"{name:<{width}} {version_of(dists)}" for name, dists in COMPONENTS]
    bf16 = cpu_bf16(cpu_flags(), openvino_bf16())
    return "\n".join([*lines, f"{'device':<{width}} {device()}", f"{'cpu bf16':<{width}} {bf16}"])
