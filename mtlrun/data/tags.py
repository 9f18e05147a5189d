"""Span tag schemes: BIO (IOB2) and BIOES, and the conversions between them.

``bio``: a span is ``B-X`` then ``I-X``…; ``bioes`` also marks a span's last token ``E-X`` and a
one-token span ``S-X``. Sun et al.'s code (``prepare-data.py``: fastNLP's ``Conll2003Pipe`` with
``chunk_encoding_type="bio"``, ``ner_encoding_type="bioes"``) trains NER on BIOES and chunking on
BIO. Both schemes mark the same spans, so entity F1 does not depend on the scheme: mtlrun scores
every span task in BIO (see :func:`to_bio`).
"""

from __future__ import annotations

from collections.abc import Sequence

SCHEMES: tuple[str, ...] = ("bio", "bioes")


def bio_to_bioes(tags: Sequence[str]) -> tuple[str, ...]:
    """IOB2 tags -> BIOES: a span's last token becomes ``E-X``, a one-token span ``S-X``.

    A span ends where the next tag is not ``I-`` of the same type (O, B-, another type or the
    end of the sentence). Input must be IOB2 (every span opened by ``B-``).
    """
    out: list[str] = []
    for i, tag in enumerate(tags):
        following = tags[i + 1] if i + 1 < len(tags) else "O"
        ends = following != "I-" + tag[2:]
        if tag.startswith("B-"):
            out.append(("S-" if ends else "B-") + tag[2:])
        elif tag.startswith("I-"):
            out.append(("E-" if ends else "I-") + tag[2:])
        else:
            out.append(tag)
    return tuple(out)


def bioes_to_bio(tags: Sequence[str]) -> tuple[str, ...]:
    """BIOES tags -> IOB2: ``S-X`` -> ``B-X``, ``E-X`` -> ``I-X``; ``O``, ``B-``, ``I-`` unchanged.

    The exact inverse of :func:`bio_to_bioes` on well-formed input; BIO input comes back
    unchanged. A malformed predicted sequence (``E-X`` after ``O``, say) maps tag by tag, and the
    scorer then reads it as conlleval reads a stray ``I-X``: as the start of a span.
    """
    swap = {"S": "B", "E": "I"}
    return tuple(swap[t[0]] + t[1:] if t[:2] in ("S-", "E-") else t for t in tags)


def to_scheme(tags: Sequence[str], scheme: str) -> tuple[str, ...]:
    """IOB2 ``tags`` in ``scheme`` (one of :data:`SCHEMES`)."""
    if scheme == "bio":
        return tuple(tags)
    if scheme == "bioes":
        return bio_to_bioes(tags)
    raise ValueError(f"unknown tag scheme {scheme!r}; schemes are {list(SCHEMES)}")


def to_bio(tags: Sequence[str], scheme: str) -> tuple[str, ...]:
    """``tags`` written in ``scheme``, back in IOB2 (the form seqeval scores)."""
    if scheme == "bio":
        return tuple(tags)
    if scheme == "bioes":
        return bioes_to_bio(tags)
    raise ValueError(f"unknown tag scheme {scheme!r}; schemes are {list(SCHEMES)}")
