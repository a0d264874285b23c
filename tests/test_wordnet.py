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
    known = {"cup", "coffee_mug", "mouse", "box", "dog", "woman", "child", "bed", "top", "surfer", "kite", "hat"}
    exceptions = {"mice": "mouse", "children": "child"}
    assert lemmatize("cups", known, exceptions) == "cup"
    assert lemmatize("boxes", known, exceptions) == "box"
    assert lemmatize("mice", known, exceptions) == "mouse"
    assert lemmatize("Coffee  Mug", known, exceptions) == "coffee_mug"
    assert lemmatize("kettle", known, exceptions) is None
    assert head_noun("red plastic cups", known, exceptions) == "cup"
    assert head_noun("my blue coffee mug", known, exceptions) == "coffee_mug"
    assert head_noun("steel kettle", known, exceptions) is None
    # the phrase is cut before what modifies the head: prepositions, conjunctions, -ing clauses
    assert head_noun("woman in an orange top", known, exceptions) == "woman"
    assert head_noun("children jumping on a bed", known, exceptions) == "child"
    assert head_noun("woman wearing a hat", known, exceptions) == "woman"
    assert head_noun("kite surfer", known, exceptions) == "surfer"
    assert head_noun("a photo of a dog", known, exceptions) == "dog"  # no head before "of": the whole query


def test_imagenet_classes_gather_under_general_words(nouns):
    from vqsearch.models.conse import imagenet_labels, imagenet_synsets

    table, _ = nouns.vocabulary(imagenet_synsets())
    labels = imagenet_labels()
    dogs = {labels[i] for i in table["dog"]}
    assert len(dogs) > 100 and {"golden retriever", "Chihuahua", "pug"} <= dogs
    assert "tabby" not in dogs
    assert len(table["vehicle"]) > 50 and len(table["bird"]) > 50
    assert [labels[i] for i in table["coffee_mug"]] == ["coffee mug"]
    # no class below "kettle": the nearest hypernym with some (pot) stands in
    assert {labels[i] for i in table["kettle"]} == {"caldron", "coffeepot", "teapot"}
    assert "blorf" not in table  # not a noun: such queries stay plain


def test_coco_labels_join_the_hierarchy(nouns):
    from vqsearch.models.conse import label_names, label_synsets

    table, specific = nouns.vocabulary(label_synsets())
    names = label_names()
    person = names.index("person", 1000)
    for word in ("person", "woman", "man", "child", "dancer", "hiker", "surfer", "rider", "skater"):
        assert person in table[word] and len(table[word]) <= 4, word  # COCO's person (ImageNet: groom, diver..)
    assert table["girl"] == table["skater"] == [person]  # no label below them: the one above
    # more specific than their labels: the words that take the labels above them, and only those
    assert {"girl", "skater", "surfer", "dancer", "puppy"} <= set(specific)
    assert not {"person", "dog", "cup", "kettle", "vehicle"} & set(specific)  # below, or the nearest rule
    assert names.index("dog", 1000) in table["dog"] and len(table["dog"]) > 100
    assert {names[i] for i in table["cup"]} >= {"cup"}


def test_queries_are_embedded_in_label_space(nouns):
    from vqsearch.models.conse import LabelSpaceQueries, label_synsets
    from vqsearch.models.minilm import MiniLMTextEncoder

    queries = LabelSpaceQueries(MiniLMTextEncoder())
    dog, plain = queries.encode(["dog", "blorf"])
    below = nouns.vocabulary(label_synsets())[0]["dog"]
    head = queries.labels[below].mean(0)  # 118 breeds and COCO's dog
    w = queries.HEAD_WEIGHT
    mixed = w * head / np.linalg.norm(head) + (1 - w) * queries.text.encode(["dog"])[0]
    assert np.allclose(dog, mixed / np.linalg.norm(mixed), atol=1e-5)
    assert np.allclose(plain, queries.text.encode(["blorf"])[0], atol=1e-6)
    assert queries.classes("two small dogs") == below
    assert queries.context("dog") is None and queries.context("kite surfer") is not None


def test_a_word_more_specific_than_its_labels_leaves_its_phrase_more_say(nouns):
    from vqsearch.models.conse import LabelSpaceQueries, label_synsets
    from vqsearch.models.minilm import MiniLMTextEncoder

    queries = LabelSpaceQueries(MiniLMTextEncoder())
    person = nouns.vocabulary(label_synsets())[0]["dancer"]
    head = queries.labels[person].mean(0)
    w = queries.SPECIFIC_HEAD_WEIGHT
    assert w < queries.HEAD_WEIGHT
    mixed = w * head / np.linalg.norm(head) + (1 - w) * queries.text.encode(["dancer"])[0]
    assert np.allclose(queries.encode(["dancer"])[0], mixed / np.linalg.norm(mixed), atol=1e-5)


def test_a_person_word_implies_what_is_seen_beside_the_person(nouns):
    from vqsearch.models.conse import LabelSpaceQueries, label_names
    from vqsearch.models.minilm import MiniLMTextEncoder

    queries = LabelSpaceQueries(MiniLMTextEncoder())
    names = label_names()

    def implied(query: str) -> set[str]:
        found = queries.implied(query)
        return {names[int(np.argmax(queries.labels @ token))] for token in found}

    assert "surfboard" in implied("surfer")
    assert "motor scooter" in implied("scooter rider")
    assert "tennis racket" in implied("tennis player")
    assert "person" not in implied("woman") | implied("surfer")  # people are the head, never its context
    assert queries.context("surfer") is not None  # a person word with an implied object
    assert queries.context("woman") is None  # nothing implied near enough
    assert queries.context("dog") is None  # not a person word: its nearest labels are other dogs, not context


def test_imagenet_labels_are_embedded_with_their_meaning():
    from vqsearch.models.conse import imagenet_labels, label_names, label_texts

    texts = label_texts()
    assert len(texts) == len(label_names())
    names = imagenet_labels()
    assert "hawks" in texts[names.index("kite")]  # ImageNet's kite is a bird, COCO's a toy
    assert texts[names.index("pot")].startswith("pot, flowerpot: ")  # a kettle's pot is not a flowerpot
    assert texts[-1] == label_names()[-1]  # COCO's names stay
