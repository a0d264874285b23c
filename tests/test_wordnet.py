"""Text queries in ConSE's label space with WordNet's noun hierarchy (Debian's wordnet-base)."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import need_shared
from vqsearch.models.wordnet import DEFAULT_DIR, Nouns, head_noun, lemmatize, wordnet_dir


@pytest.fixture(scope="module")
def nouns() -> Nouns:
    """WordNet as scripts/setup.sh installs it: missing is a skip here, a failure under CI."""
    need_shared(wordnet_dir() or DEFAULT_DIR / "data.noun")
    return Nouns(wordnet_dir())


def test_lemmas_and_head_nouns():
    known = {"cup", "coffee_mug", "mouse", "box", "dog"}
    exceptions = {"mice": "mouse"}
    assert lemmatize("cups", known, exceptions) == "cup"
    assert lemmatize("boxes", known, exceptions) == "box"
    assert lemmatize("mice", known, exceptions) == "mouse"
    assert lemmatize("Coffee  Mug", known, exceptions) == "coffee_mug"
    assert lemmatize("kettle", known, exceptions) is None
    assert head_noun("red plastic cups", known, exceptions) == "cup"
    assert head_noun("my blue coffee mug", known, exceptions) == "coffee_mug"
    assert head_noun("steel kettle", known, exceptions) is None


def test_imagenet_classes_gather_under_general_words(nouns):
    from vqsearch.models.conse import imagenet_labels, imagenet_synsets

    table = nouns.vocabulary(imagenet_synsets())
    labels = imagenet_labels()
    dogs = {labels[i] for i in table["dog"]}
    assert len(dogs) > 100 and {"golden retriever", "Chihuahua", "pug"} <= dogs
    assert "tabby" not in dogs
    assert len(table["vehicle"]) > 50 and len(table["bird"]) > 50
    assert [labels[i] for i in table["coffee_mug"]] == ["coffee mug"]
    assert "kettle" not in table  # no ImageNet class below it: such queries stay plain


def test_queries_are_embedded_in_label_space(nouns):
    from vqsearch.models.conse import LabelSpaceQueries, imagenet_synsets
    from vqsearch.models.minilm import MiniLMTextEncoder

    queries = LabelSpaceQueries(MiniLMTextEncoder())
    dog, plain = queries.encode(["dog", "kettle"])
    below = nouns.vocabulary(imagenet_synsets())["dog"]
    mean = queries.labels[below].mean(0)
    assert np.allclose(dog, mean / np.linalg.norm(mean), atol=1e-6)
    assert np.allclose(plain, queries.text.encode(["kettle"])[0], atol=1e-6)
    assert queries.classes("two small dogs") == below
