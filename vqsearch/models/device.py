"""--device: 'auto' picks a GPU when torch sees one; 'cpu' and 'cuda[:n]' as given."""

from __future__ import annotations

from typing import TYPE_CHECKING

from vqsearch.errors import VQSearchError

if TYPE_CHECKING:
    import torch


def resolve_device(device: "str | torch.device" = "cpu") -> "torch.device":
    """'auto' | 'cpu' | 'cuda[:n]' (or a torch.device) -> a torch device, or one clear error."""
    import torch

    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise VQSearchError(f"unknown device {device!r}; use auto, cpu or cuda") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise VQSearchError("--device cuda asked for, but torch sees no CUDA device")
    if resolved.type not in ("cpu", "cuda"):
        raise VQSearchError(f"unsupported device {device!r}; use auto, cpu or cuda")
    return resolved
