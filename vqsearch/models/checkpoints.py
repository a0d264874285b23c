"""Reading local weight files safely: a state dict or a clear refusal, never code execution.

Every model family loads its local files through `read_state_dict`: safetensors, or torch.load
with weights_only=True (memory-mapped where the file allows, so a large table is only paged in
where it is read).
"""

from __future__ import annotations

import pickle
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch

from vqsearch.errors import VQSearchError


class CheckpointError(VQSearchError, ValueError):
    """A local file that is not a state dict of the expected model."""


def _load(path: Path) -> object:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    with warnings.catch_warnings():  # torch warns about old pickle protocols before refusing them
        warnings.simplefilter("ignore")
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # not a zip archive: no mmap
            return torch.load(path, map_location="cpu", weights_only=True)


def read_state_dict(path: str | Path, what: str, example: str = "", wrappers: Iterable[str] = ("state_dict",),
                    error: type[CheckpointError] = CheckpointError) -> dict[str, torch.Tensor]:
    """A local checkpoint as a flat name -> tensor mapping, "module." prefixes removed.

    Training checkpoints are unwrapped through the first of `wrappers` they hold; anything that is
    not a state dict (a pickled module or list, TorchScript, JSON, a truncated file) raises
    `error`, naming `what` the file should have been (and `example`, a typical file name).
    """
    path = Path(path)
    if not path.is_file():
        raise VQSearchError(f"no such {what} checkpoint file: {path}")
    expected = f"a {what} checkpoint is a mapping of parameter names to tensors" + (f", e.g. {example}" if example else "")
    try:
        obj = _load(path)
    except pickle.UnpicklingError:  # torch's own message advises loading it unsafely: never
        raise error(f"{path} is not a state dict of tensors alone: it holds pickled objects, refused "
                    f"(loading it could run code); {expected}") from None
    except Exception as exc:  # not a torch or safetensors file, truncated, ...
        detail = (str(exc).strip().splitlines() or [""])[0][:200]
        raise error(f"{path} is not a loadable state dict ({type(exc).__name__}: {detail}); {expected}") from None
    if isinstance(obj, Mapping):
        for key in wrappers:
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        raise error(f"{path} is not a state dict (got {type(obj).__name__}): {expected}")
    return {k.removeprefix("module."): v for k, v in obj.items()}
