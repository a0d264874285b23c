"""The torch-free MiniLM text encoder computes what sentence-transformers computes."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from vqsearch.models.minilm import MiniLMTextEncoder, model_dir

TEXTS = [
    "cup",
    "a red coffee mug on the kitchen table",
    "Where did I leave my keys? I think they were next to the laptop, near the window.",
    "",
    "The quick brown fox jumps over the lazy dog. " * 40,  # > 256 tokens: exercises truncation
]
TOL = 1e-4


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One export shared by the module, in a tmp dir so nothing lands in ~/.cache."""
    path = tmp_path_factory.mktemp("vqsearch_cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VQSEARCH_CACHE", str(path))
        yield path


@pytest.fixture(scope="module")
def encoder(cache: Path) -> MiniLMTextEncoder:
    return MiniLMTextEncoder()


def test_matches_sentence_transformers(encoder: MiniLMTextEncoder) -> None:
    st = pytest.importorskip("sentence_transformers")
    model = st.SentenceTransformer(str(model_dir()), device="cpu")
    expected = model.encode(TEXTS, normalize_embeddings=True)
    got = encoder.encode(TEXTS)
    assert got.shape == (len(TEXTS), 384) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=TOL)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_onnx_matches_torch(encoder: MiniLMTextEncoder) -> None:
    np.testing.assert_allclose(encoder.encode(TEXTS), encoder.encode_torch(TEXTS), atol=TOL)
    # Batch padding must not change an embedding.
    np.testing.assert_allclose(encoder.encode(TEXTS[:1]), encoder.encode(TEXTS)[:1], atol=TOL)
    assert encoder.encode([]).shape == (0, 384)


def test_semantic_sanity(encoder: MiniLMTextEncoder) -> None:
    mug, cup, dog = encoder.encode(["coffee mug", "cup", "dog"])
    assert mug @ cup > mug @ dog


def test_warm_cache_encodes_without_torch(encoder: MiniLMTextEncoder, cache: Path) -> None:
    expected = encoder.encode(["coffee mug"])  # makes sure the export exists
    assert list(cache.glob("minilm-l6-v2-*.onnx"))
    code = (
        "import sys, numpy as np\n"
        "from vqsearch.models.minilm import MiniLMTextEncoder\n"
        "v = MiniLMTextEncoder().encode(['coffee mug'])\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "assert 'transformers' not in sys.modules, 'transformers was imported'\n"
        "sys.stdout.write(' '.join(map(repr, v[0].tolist())))\n"
    )
    env = {**os.environ, "VQSEARCH_CACHE": str(cache)}
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, "-c", code], env=env, cwd=root,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    got = np.array([float(x) for x in result.stdout.split()], dtype=np.float32)
    np.testing.assert_allclose(got, expected[0], atol=1e-6)
