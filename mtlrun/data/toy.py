"""A generated CoNLL-like data set with the tasks ``pos``, ``chunk``, ``ner`` (no files).

Grammar (probabilistic, English-like, Penn POS tags, IOB2 chunk and NER tags)::

    S      -> [ADVP ","] CLAUSE ["," "and" CLAUSE] [PP] "."
    CLAUSE -> NP VP
    VP     -> VBZ|VBD NP [PP] | MD VB NP | [RB] VBZ|VBD PP
    NP     -> DT [JJ|NATIONALITY]* NN | [CD] NNS | PRP | NAME-NP | "on" DAY (as PP)
    PP     -> IN NP

The lexicon is a fixed set of a few hundred pseudo-words. Ambiguity that only context resolves:
"dual" stems are nouns (NN/NNS) after a determiner and verbs (VB/VBZ) after a subject or "will";
dual names are PER after "Mr"/"Ms"/"minister" and ORG after "the firm"/before "Corp"; sentence
starts and day names are capitalised but not entities. Chunks follow the POS structure and every
entity sits inside an NP chunk, so the three tasks are related but different.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from mtlrun.data.conll import Sentence

# (word, POS, NER) before chunking; a chunk is a list of these plus its chunk label.
Token = tuple[str, str, str]
Chunk = tuple[str, list[Token]]

# The lexicon is part of the "language", so it does not change with the sampling seed.
_LEXICON_SEED = 20240601
_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "st", "tr")
_VOWELS = ("a", "e", "i", "o", "u", "ai", "ou")
_CODAS = ("", "", "n", "r", "l", "k", "m", "sh")

_DETERMINERS = ("the", "a", "this", "every", "some")
_PREPOSITIONS = ("in", "on", "with", "near", "from", "for", "after")
_PRONOUNS = ("he", "she", "they", "it")
_ADVERBS = ("often", "rarely", "soon", "never", "later")
_DAYS = ("Monday", "Tuesday", "Friday", "Sunday")
_TITLES = ("Mr", "Ms", "minister")
_ORG_SUFFIXES = ("Corp", "Group", "Union")


class _Lexicon:
    """Word forms per category, generated once from syllables."""

    def __init__(self, rng: random.Random) -> None:
        self._seen: set[str] = set()
        self.adjectives = self._words(rng, 40, 2)
        self.nouns = self._words(rng, 70, 2)
        self.verbs = self._words(rng, 45, 2)
        self.dual = self._words(rng, 20, 1)  # noun in one context, verb in another
        self.first_names = self._names(rng, 25)
        self.surnames = self._names(rng, 25)
        self.dual_names = self._names(rng, 15)  # PER or ORG depending on a cue word
        self.org_names = self._names(rng, 10)
        self.places = self._names(rng, 20)
        self.nationalities = tuple(p + "ian" for p in self.places[:10])

    def _word(self, rng: random.Random, syllables: int) -> str:
        while True:
            word = "".join(
                rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS)
                for _ in range(syllables)
            )
            # Inflected forms (+s, +ed, +ian) must not collide with another entry either.
            forms = {word, word + "s", word + "ed", word + "ian"}
            if len(word) >= 3 and not forms & self._seen:
                self._seen |= forms
                return word

    def _words(self, rng: random.Random, n: int, syllables: int) -> tuple[str, ...]:
        return tuple(self._word(rng, rng.choice((syllables, syllables + 1))) for _ in range(n))

    def _names(self, rng: random.Random, n: int) -> tuple[str, ...]:
        return tuple(self._word(rng, rng.choice((2, 3))).capitalize() for _ in range(n))


_LEX = _Lexicon(random.Random(_LEXICON_SEED))


def _np(tokens: list[Token]) -> Chunk:
    return ("NP", tokens)


def _common_np(rng: random.Random) -> Chunk:
    if rng.random() < 0.3:
        # Bare plurals: the +s form of a dual stem is NNS here and VBZ after a subject.
        noun = rng.choice(_LEX.nouns + _LEX.dual) + "s"
        head = [(str(rng.randint(2, 99)), "CD", "O")] if rng.random() < 0.3 else []
        return _np(head + [(noun, "NNS", "O")])
    tokens: list[Token] = [(rng.choice(_DETERMINERS), "DT", "O")]
    for _ in range(rng.choice((0, 0, 1, 1, 2))):
        if rng.random() < 0.2:
            tokens.append((rng.choice(_LEX.nationalities), "JJ", "B-MISC"))
        else:
            tokens.append((rng.choice(_LEX.adjectives), "JJ", "O"))
    noun = rng.choice(_LEX.dual) if rng.random() < 0.3 else rng.choice(_LEX.nouns)
    return _np(tokens + [(noun, "NN", "O")])


def _entity(words: list[str], label: str) -> list[Token]:
    return [(w, "NNP", ("B-" if i == 0 else "I-") + label) for i, w in enumerate(words)]


def _person_np(rng: random.Random) -> Chunk:
    roll = rng.random()
    if roll < 0.4:
        # The title is the cue that makes a dual name a person.
        title = rng.choice(_TITLES)
        name = rng.choice(_LEX.dual_names + _LEX.surnames)
        return _np([(title, "NNP" if title != "minister" else "NN", "O")] + _entity([name], "PER"))
    words = [rng.choice(_LEX.first_names)]
    if roll < 0.8:
        words.append(rng.choice(_LEX.surnames))
    return _np(_entity(words, "PER"))


def _org_np(rng: random.Random) -> Chunk:
    name = rng.choice(_LEX.dual_names + _LEX.org_names)
    if rng.random() < 0.5:
        return _np(_entity([name, rng.choice(_ORG_SUFFIXES)], "ORG"))
    # "the firm X": the cue noun precedes the name inside the same NP.
    return _np([("the", "DT", "O"), ("firm", "NN", "O")] + _entity([name], "ORG"))


def _place_np(rng: random.Random) -> Chunk:
    words = [rng.choice(_LEX.places)]
    if rng.random() < 0.2:
        words.insert(0, "New")
    return _np(_entity(words, "LOC"))


def _subject(rng: random.Random) -> Chunk:
    makers: tuple[Callable[[random.Random], Chunk], ...] = (
        _common_np,
        _common_np,
        _common_np,
        _person_np,
        _org_np,
        _place_np,
    )
    if rng.random() < 0.15:
        return _np([(rng.choice(_PRONOUNS), "PRP", "O")])
    return rng.choice(makers)(rng)


def _object(rng: random.Random) -> Chunk:
    makers = (_common_np, _common_np, _person_np, _org_np, _place_np)
    return rng.choice(makers)(rng)


def _pp(rng: random.Random) -> list[Chunk]:
    prep = rng.choice(_PREPOSITIONS)
    if prep == "on" and rng.random() < 0.4:
        # Capitalised, NNP, yet not an entity (as in CoNLL-2003).
        return [("PP", [(prep, "IN", "O")]), _np([(rng.choice(_DAYS), "NNP", "O")])]
    return [("PP", [(prep, "IN", "O")]), _object(rng)]


def _verb(rng: random.Random) -> Token:
    stem = rng.choice(_LEX.dual) if rng.random() < 0.35 else rng.choice(_LEX.verbs)
    if rng.random() < 0.5:
        return (stem + "s", "VBZ", "O")
    return (stem + "ed", "VBD", "O")


def _vp(rng: random.Random) -> list[Chunk]:
    roll = rng.random()
    if roll < 0.25:
        stem = rng.choice(_LEX.dual) if rng.random() < 0.5 else rng.choice(_LEX.verbs)
        chunks: list[Chunk] = [("VP", [("will", "MD", "O"), (stem, "VB", "O")]), _object(rng)]
    elif roll < 0.4:
        chunks = [("ADVP", [(rng.choice(_ADVERBS), "RB", "O")]), ("VP", [_verb(rng)])]
        chunks += _pp(rng)
    else:
        chunks = [("VP", [_verb(rng)]), _object(rng)]
    if rng.random() < 0.35:
        chunks += _pp(rng)
    return chunks


def _clause(rng: random.Random) -> list[Chunk]:
    return [_subject(rng)] + _vp(rng)


def _punct(word: str) -> Chunk:
    return ("O", [(word, word, "O")])


def _sentence_chunks(rng: random.Random) -> list[Chunk]:
    chunks: list[Chunk] = []
    if rng.random() < 0.15:
        chunks += [("ADVP", [(rng.choice(_ADVERBS), "RB", "O")]), _punct(",")]
    chunks += _clause(rng)
    if rng.random() < 0.25:
        chunks += [_punct(","), ("O", [("and", "CC", "O")])] + _clause(rng)
    if rng.random() < 0.2:
        chunks += _pp(rng)
    return chunks + [_punct(".")]


def _to_sentence(chunks: list[Chunk]) -> Sentence:
    words: list[str] = []
    tags: dict[str, list[str]] = {"pos": [], "chunk": [], "ner": []}
    for label, tokens in chunks:
        for i, (word, pos, ner) in enumerate(tokens):
            words.append(word)
            tags["pos"].append(pos)
            tags["ner"].append(ner)
            tags["chunk"].append("O" if label == "O" else ("B-" if i == 0 else "I-") + label)
    # Sentence-initial capitals: "The", "Often" look like names but are not entities.
    words[0] = words[0][0].upper() + words[0][1:]
    return Sentence(words=tuple(words), tags={k: tuple(v) for k, v in tags.items()})


def _sample_sentence(rng: random.Random, min_len: int = 6, max_len: int = 20) -> Sentence:
    while True:
        chunks = _sentence_chunks(rng)
        length = sum(len(tokens) for _, tokens in chunks)
        if min_len <= length <= max_len:
            return _to_sentence(chunks)


def generate_toy(
    n_train: int = 2000, n_valid: int = 300, n_test: int = 300, seed: int = 0
) -> dict[str, list[Sentence]]:
    """Generate the toy tagging set: ``{"train"|"valid"|"test": [Sentence, ...]}``.

    Deterministic in ``seed``; the splits are consecutive draws of one stream, so they differ.
    Each sentence has 6-20 tokens and tags for the tasks ``pos``, ``chunk`` and ``ner``.
    """
    rng = random.Random(seed)
    sizes = {"train": n_train, "valid": n_valid, "test": n_test}
    return {split: [_sample_sentence(rng) for _ in range(n)] for split, n in sizes.items()}
