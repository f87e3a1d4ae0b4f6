"""Device names: the one place that says which devices evomerge accepts."""

from __future__ import annotations

import torch

from evomerge.errors import ConfigError


def parse_device(device: str | torch.device) -> torch.device:
    """A supported device from its name (whether CUDA is present is checked by the job)."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"device {device!r} is not a device (use cpu, cuda or cuda:N)"
                          ) from None
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"device {device!r} is not supported (use cpu, cuda or cuda:N)")
    return dev


def resolve_device(device: str | torch.device) -> torch.device:
    """A device this machine has (a CUDA request without CUDA is a one-line error)."""
    dev = parse_device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device} requested but CUDA is not available")
    return dev
