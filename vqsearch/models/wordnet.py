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

    def vocabulary(self, classes: list[int]) -> dict[str, list[int]]:
        """Every noun lemma with the indices of the `classes` (synset offsets) at or below it."""
        below: dict[int, list[int]] = {}
        for index, offset in enumerate(classes):
            for above in self.ancestors(offset):
                below.setdefault(above, []).append(index)
        words: dict[str, set[int]] = {}
        for lemma, senses in self.senses.items():
            found = {i for sense in senses for i in below.get(sense, ())}
            if found:
                words[lemma] = found
        return {lemma: sorted(found) for lemma, found in words.items()}


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


def head_noun(query: str, known: Container[str], exceptions: Mapping[str, str]) -> str | None:
    """The longest run of last words of a query that is a `known` noun ("red plastic cups" -> "cup")."""
    words = query.lower().split()
    for start in range(len(words)):
        found = lemmatize(" ".join(words[start:]), known, exceptions)
        if found is not None:
            return found
    return None
