"""WordNet 3.0 nouns from Debian's `wordnet-base` database files, read directly.

Why: ImageNet's 1000 classes are WordNet noun synsets, so a query word ("dog", "vehicle",
"bird") can gather every class below it (120 dog breeds) instead of matching label names one
by one. Debian ships the Princeton database in /usr/share/wordnet (`apt-get install
wordnet-base`; another copy with `$VQSEARCH_WORDNET`); nltk's reader wants files Debian does not
ship (lexnames), and the files needed here are a documented plain-text format (wndb(5WN)).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Container, Mapping

DEFAULT_DIR = Path("/usr/share/wordnet")

# WordNet's own noun suffix rules (morphy): plural -> singular
_SUFFIXES = (("ses", "s"), ("xes", "x"), ("zes", "z"), ("ches", "ch"), ("shes", "sh"), ("men", "man"),
             ("ies", "y"), ("s", ""))


def wordnet_dir() -> Path | None:
    """The database folder, or None when WordNet is not installed."""
    path = Path(os.environ.get("VQSEARCH_WORDNET") or DEFAULT_DIR)
    return path if (path / "data.noun").is_file() and (path / "index.noun").is_file() else None


class Nouns:
    """Noun synsets' hypernyms (by offset), the synsets of each lemma, irregular plurals."""

    def __init__(self, root: Path) -> None:
        self.hypernyms: dict[int, tuple[int, ...]] = {}
        with open(root / "data.noun", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("  "):
                    continue  # licence header
                fields = line.split(" | ", 1)[0].split()
                offset, count = int(fields[0]), int(fields[3], 16)
                at = 4 + 2 * count  # after the synset's words: its pointers
                pointers = fields[at + 1:at + 1 + 4 * int(fields[at])]
                self.hypernyms[offset] = tuple(int(pointers[i + 1]) for i in range(0, len(pointers), 4)
                                               if pointers[i] in ("@", "@i"))
        self.senses: dict[str, tuple[int, ...]] = {}
        with open(root / "index.noun", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("  "):
                    continue
                fields = line.split()
                self.senses[fields[0]] = tuple(int(f) for f in fields[-int(fields[2]):])
        self.exceptions: dict[str, str] = {}
        exc = root / "noun.exc"
        if exc.is_file():
            for line in exc.read_text(encoding="utf-8").splitlines():
                parts = line.split()
                if len(parts) >= 2:
                    self.exceptions[parts[0]] = parts[1]

    def ancestors(self, offset: int) -> set[int]:
        """Every hypernym (and instance hypernym) above a synset, itself included."""
        seen, todo = {offset}, [offset]
        while todo:
            for parent in self.hypernyms.get(todo.pop(), ()):
                if parent not in seen:
                    seen.add(parent)
                    todo.append(parent)
        return seen

    def vocabulary(self, classes: list[int | None], climb: int = 4, broadest: int = 60
                   ) -> tuple[dict[str, list[int]], list[str]]:
        """Every noun lemma with the indices of the `classes` (synset offsets) it stands for, and
        the lemmas more specific than any class (those that stand for classes above them).

        A lemma stands for the classes at or below its synsets ("dog": 118 breeds). One with none
        below it stands for the classes above its first (most frequent) sense ("girl", "skater"
        are persons: more specific than their labels), or, with none above either, for those
        below that sense's nearest hypernyms that have some, climbing at most `climb` levels
        ("kettle" -> pot -> teapot, coffeepot), unless they are more than `broadest` (so general a
        word says nothing of the object).
        """
        below: dict[int, set[int]] = {}
        labelled: dict[int, int] = {}
        for index, offset in enumerate(classes):
            if offset is None:
                continue
            labelled[offset] = index
            for above in self.ancestors(offset):
                below.setdefault(above, set()).add(index)
        words: dict[str, list[int]] = {}
        specific: list[str] = []
        for lemma, senses in self.senses.items():
            found = set().union(*(below.get(sense, ()) for sense in senses))
            if not found:
                found = {labelled[o] for o in self.ancestors(senses[0]) if o in labelled}
                if found:
                    specific.append(lemma)
                else:
                    found = self._nearest(senses[0], below, climb, broadest)
            if found:
                words[lemma] = sorted(found)
        return words, specific

    def _nearest(self, sense: int, below: dict[int, set[int]], climb: int, broadest: int) -> set[int]:
        """Classes below the nearest hypernyms of a synset that have some (at most `climb` up)."""
        level = {sense}
        for _ in range(climb):
            level = {parent for s in level for parent in self.hypernyms.get(s, ())}
            found = set().union(*(below.get(s, ()) for s in level))
            if found:
                return found if len(found) <= broadest else set()
        return set()


def lemmatize(phrase: str, known: Container[str], exceptions: Mapping[str, str]) -> str | None:
    """The `known` noun lemma of a word or phrase (plurals reduced as WordNet's morphy does)."""
    key = re.sub(r"\s+", "_", phrase.strip().lower())
    if key in known:
        return key
    if exceptions.get(key) in known:
        return exceptions[key]
    for suffix, replacement in _SUFFIXES:
        if key.endswith(suffix) and key[: len(key) - len(suffix)] + replacement in known:
            return key[: len(key) - len(suffix)] + replacement
    return None


# Words that end the head's phrase: what follows them modifies it ("woman in an orange top").
_CLAUSE_WORDS = frozenset("""in on at with of near under over by behind beside next from into onto inside outside
above below between through across along around against without beneath among and or but while for to that which
who whose where when wearing holding carrying""".split())


def _rightmost_noun(words: list[str], known: Container[str], exceptions: Mapping[str, str]
                    ) -> tuple[int, int, str] | None:
    """The rightmost known noun in `words` as (start, end, lemma), the longest run ending there."""
    for end in range(len(words), 0, -1):
        for start in range(end):
            lemma = lemmatize(" ".join(words[start:end]), known, exceptions)
            if lemma is not None:
                return start, end, lemma
    return None


def parse_phrase(query: str, known: Container[str], exceptions: Mapping[str, str]) -> tuple[str | None, list[str]]:
    """(head noun, the other nouns) of a query phrase, as `known` lemmas.

    The head: the query is cut before its first preposition, conjunction or relative word, or an
    -ing word after the first ("woman in an orange top" -> "woman", "children jumping on a bed" ->
    "children"); in what is left, the rightmost run of words that is a known noun, the longest
    such run first ("red plastic cups" -> "cup", "coffee mug" -> "coffee_mug"). When that finds
    none, the same search runs over the whole query ("photo of a dog" -> "dog"). The other nouns
    are the known nouns elsewhere in the query, left to right, without overlapping the head
    ("kite surfer" -> surfer, [kite]; "horse and rider" -> horse, [rider]).
    """
    words = re.findall(r"[\w'-]+", query.lower())
    cut = next((i for i, w in enumerate(words) if w in _CLAUSE_WORDS or (i > 0 and w.endswith("ing"))), len(words))
    found = _rightmost_noun(words[:cut], known, exceptions) or _rightmost_noun(words, known, exceptions)
    if found is None:
        return None, []
    start, end, head = found
    others, taken = [], set(range(start, end))
    for s, e, lemma in _nouns(words, known, exceptions):
        if not taken & set(range(s, e)) and lemma != head and lemma not in others:
            others.append(lemma)
            taken |= set(range(s, e))
    return head, others


def _nouns(words: list[str], known: Container[str], exceptions: Mapping[str, str]) -> list[tuple[int, int, str]]:
    """The known nouns of `words` left to right as (start, end, lemma), the longest run at each start."""
    found = []
    for start in range(len(words)):
        for end in range(len(words), start, -1):
            lemma = lemmatize(" ".join(words[start:end]), known, exceptions)
            if lemma is not None:
                found.append((start, end, lemma))
                break
    return found


def head_noun(query: str, known: Container[str], exceptions: Mapping[str, str]) -> str | None:
    """The head noun of a query phrase (`parse_phrase`)."""
    return parse_phrase(query, known, exceptions)[0]
