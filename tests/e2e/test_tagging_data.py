"""data=tagging end to end on generated files in real formats: CoNLL-2000 (word POS chunk), a
two-column word/tag file and a CoNLL-U file train, learn and record each task's metric as
metrics.json ``primary``; data=conll, now a preset of the same code, gives exactly the numbers
it gave before (pinned), and data=tagging described like it gives them too."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from mtlrun.data.columns import Sentence
from mtlrun.data.conll_hub import HUB_LABELS
from mtlrun.report.collect import collect
from mtlrun.report.tables import generic_table
from mtlrun.run import run
from tests.conftest import TINY_TEXT
from tests.helpers.fakedata import write_conll_parquet

Row = tuple[str, str, str, str]  # word, POS, chunk (IOB2), NER (IOB2)

PEOPLE = [("Anna", "Berg"), ("Omar", "Said"), ("Lena", "Kovac"), ("Ravi", "Nair"), ("Tom", "Hale")]
PLACES = ["Paris", "Oslo", "Lima", "Cairo", "Quito", "Riga"]
ORGS = [("Acme", "Corp"), ("Globex",), ("Initech", "Group"), ("Umbrella",)]
VERBS = ["saw", "met", "left", "visited", "joined", "called"]
ADJS = ["old", "new", "big", "quiet", "busy"]
NOUNS = ["office", "river", "market", "station", "bridge", "garden"]
SIZES = {"train": 60, "valid": 20, "test": 20}


def _entity(words: tuple[str, ...], kind: str) -> list[Row]:
    return [
        (w, "NNP", "B-NP" if i == 0 else "I-NP", ("B-" if i == 0 else "I-") + kind)
        for i, w in enumerate(words)
    ]


def generate(n: int, seed: int) -> list[list[Row]]:
    """``n`` sentences 'PER verb (the adj noun | ORG) in LOC .' with POS, chunk and NER tags."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        rows = _entity(rng.choice(PEOPLE)[: rng.randint(1, 2)], "PER")
        rows.append((rng.choice(VERBS), "VBD", "B-VP", "O"))
        if rng.random() < 0.5:
            rows += [
                ("the", "DT", "B-NP", "O"),
                (rng.choice(ADJS), "JJ", "I-NP", "O"),
                (rng.choice(NOUNS), "NN", "I-NP", "O"),
            ]
        else:
            rows += _entity(rng.choice(ORGS), "ORG")
        rows += [("in", "IN", "B-PP", "O"), *_entity((rng.choice(PLACES),), "LOC")]
        rows.append((".", ".", "O", "O"))
        out.append(rows)
    return out


def iob2_to_iob1(tags: list[str]) -> list[str]:
    """IOB1, as CoNLL-2003 writes it: a span opens with I- unless it follows one of its type."""
    out, previous = [], "O"
    for tag in tags:
        if tag.startswith("B-") and previous[2:] != tag[2:]:
            tag = "I-" + tag[2:]
        out.append(tag)
        previous = tag
    return out


def iob2_to_bioes(tags: list[str]) -> list[str]:
    out = []
    for i, tag in enumerate(tags):
        ends = (tags[i + 1] if i + 1 < len(tags) else "O") != "I-" + tag[2:]
        swap = {"B": "S", "I": "E"} if ends else {}
        out.append(swap.get(tag[0], tag[0]) + tag[1:] if tag != "O" else tag)
    return out


def conll2003_text(sentences: list[list[Row]]) -> str:
    lines = ["-DOCSTART- -X- -X- O", ""]
    for i, rows in enumerate(sentences):
        if i and i % 7 == 0:
            lines += ["-DOCSTART- -X- -X- O", ""]
        words, pos, chunk, ner = (list(c) for c in zip(*rows, strict=True))
        lines += map(" ".join, zip(words, pos, iob2_to_iob1(chunk), iob2_to_iob1(ner), strict=True))
        lines.append("")
    return "\n".join(lines) + "\n"


def conll2000_text(sentences: list[list[Row]]) -> str:
    return "".join("".join(f"{w} {p} {c}\n" for w, p, c, _ in rows) + "\n" for rows in sentences)


def two_column_text(sentences: list[list[Row]]) -> str:
    """word<TAB>NER in BIOES, as many NER corpora of other languages ship."""
    out = []
    for rows in sentences:
        tags = iob2_to_bioes([r[3] for r in rows])
        out.append("".join(f"{r[0]}\t{t}\n" for r, t in zip(rows, tags, strict=True)) + "\n")
    return "".join(out)


UPOS = {"NNP": "PROPN", "VBD": "VERB", "DT": "DET", "JJ": "ADJ", "NN": "NOUN", "IN": "ADP"}


def conllu_text(sentences: list[list[Row]]) -> str:
    """CoNLL-U: comments, 10 tab-separated columns, "in the" also as a multiword token."""
    out = []
    for k, rows in enumerate(sentences):
        lines = [f"# sent_id = {k}", "# text = " + " ".join(r[0] for r in rows)]
        for i, (word, pos, _, _) in enumerate(rows, start=1):
            if word == "in" and i < len(rows):
                lines.append(f"{i}-{i + 1}\tin+{rows[i][0]}" + "\t_" * 8)
            lines.append(
                f"{i}\t{word}\t{word.lower()}\t{UPOS.get(pos, 'PUNCT')}\t{pos}" + "\t_" * 5
            )
        out.append("\n".join(lines) + "\n\n")
    return "".join(out)


def write_splits(root: Path, text, suffix: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for k, (split, n) in enumerate(SIZES.items()):
        (root / f"{split}{suffix}").write_text(text(generate(n, seed=k)), encoding="utf-8")
    return root


QUICK = ["trainer.progress=false", "trainer.plots=false", "trainer.seed=0"]
# Small but able to learn the generated grammar in a few epochs.
LEARNS = [*TINY_TEXT, *QUICK, "backbone.hidden=16", "backbone.word_dim=16", "optim=adam"]
LEARNS += ["optim.lr=0.02"]

# data=conll on the generated CoNLL-2003 files (write_splits(conll2003_text)), 3 epochs of
# LEARNS, computed with the code before data=conll became a preset of data=tagging.
CONLL_PIN = {
    "test": {
        "pos": {"accuracy": 0.7532467532467533},
        "chunk": {
            "f1": 0.7064676616915423,
            "precision": 0.7029702970297029,
            "recall": 0.71,
            "accuracy": 0.7792207792207793,
        },
        "ner": {
            "f1": 0.48,
            "precision": 0.75,
            "recall": 0.35294117647058826,
            "accuracy": 0.7207792207792207,
        },
    },
    "valid": {
        "pos": {"accuracy": 0.7733333333333333},
        "chunk": {
            "f1": 0.673469387755102,
            "precision": 0.6875,
            "recall": 0.66,
            "accuracy": 0.76,
        },
        "ner": {
            "f1": 0.4657534246575343,
            "precision": 0.7727272727272727,
            "recall": 0.3333333333333333,
            "accuracy": 0.7266666666666667,
        },
    },
}


@pytest.fixture()
def conll2003(tmp_path: Path) -> Path:
    return write_splits(tmp_path / "conll2003", conll2003_text, ".txt")


def test_conll_preset_gives_the_numbers_it_gave_before(compose_cfg, conll2003, tmp_path) -> None:
    cfg = compose_cfg(["data=conll", f"data.root={conll2003}", *LEARNS, "trainer.max_epochs=3"])
    metrics = run(cfg, tmp_path / "conll")
    assert {"test": metrics["test"], "valid": metrics["valid"]} == CONLL_PIN
    assert metrics["primary"] == {"pos": "accuracy", "chunk": "f1", "ner": "f1"}


def test_conll_from_the_hub_layout_gives_the_same_numbers(compose_cfg, tmp_path: Path) -> None:
    """data.source=hub on a parquet copy of the same sentences (the hub's layout and label ids)."""
    pytest.importorskip("pyarrow.parquet", reason="needs the hub extra (pip install mtlrun[hub])")
    for k, (split, n) in enumerate(SIZES.items()):
        sentences = [
            Sentence(tuple(w), {"pos": tuple(p), "chunk": tuple(c), "ner": tuple(e)})
            for w, p, c, e in (zip(*rows, strict=True) for rows in generate(n, seed=k))
        ]
        hub_split = "validation" if split == "valid" else split
        write_conll_parquet(tmp_path / "hub" / f"{hub_split}.parquet", sentences, HUB_LABELS)
    cfg = compose_cfg(
        ["data=conll", "data.source=hub", f"data.root={tmp_path / 'hub'}", *LEARNS]
        + ["trainer.max_epochs=3"]
    )
    metrics = run(cfg, tmp_path / "conll_hub")
    assert {"test": metrics["test"], "valid": metrics["valid"]} == CONLL_PIN


def test_tagging_described_like_conll_gives_the_same_numbers(compose_cfg, conll2003, tmp_path):
    cfg = compose_cfg(
        [
            "data=tagging",
            f"data.root={conll2003}",
            "data.columns={pos: {column: 1}, chunk: {column: 2, scheme: iob1}, "
            "ner: {column: 3, scheme: iob1}}",
            "data.tag_schemes={chunk: bio, ner: bioes}",
            "trainer.batch_size=10",  # data=conll's
            *LEARNS,
            "trainer.max_epochs=3",
        ]
    )
    metrics = run(cfg, tmp_path / "tagging")
    assert {"test": metrics["test"], "valid": metrics["valid"]} == CONLL_PIN
    assert metrics["data"]["name"] == "tagging"


def _majority(tags: list[str]) -> float:
    """Accuracy of always predicting the commonest of ``tags``."""
    return max(tags.count(t) for t in set(tags)) / len(tags)


def test_conll2000_file_trains_through_data_tagging(compose_cfg, tmp_path: Path) -> None:
    root = write_splits(tmp_path / "conll2000", conll2000_text, ".txt")
    cfg = compose_cfg(
        [
            "data=tagging",
            "data.name=conll2000",
            f"data.root={root}",
            "data.columns={pos: {column: 1}, chunk: {column: 2, scheme: iob2}}",
            "data.tasks=[pos,chunk]",
            *LEARNS,
            "trainer.max_epochs=6",
        ]
    )
    metrics = run(cfg, tmp_path / "run")
    written = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert written["primary"] == {"pos": "accuracy", "chunk": "f1"}
    assert written["data"]["name"] == "conll2000"
    assert set(written["test"]["chunk"]) == {"f1", "precision", "recall", "accuracy"}
    test = generate(SIZES["test"], seed=2)
    assert metrics["test"]["pos"]["accuracy"] > _majority([r[1] for s in test for r in s]) + 0.3
    assert metrics["test"]["chunk"]["f1"] > 0.6


def test_two_column_bioes_file_trains_through_data_tagging(compose_cfg, tmp_path: Path) -> None:
    root = write_splits(tmp_path / "ner", two_column_text, ".tsv")
    cfg = compose_cfg(
        [
            "data=tagging",
            "data.name=ner2",
            f"data.root={root}",
            "data.train=train.tsv",
            "data.valid=valid.tsv",
            "data.test=test.tsv",
            "data.separator=tab",
            "data.columns={entity: {column: 1, scheme: bioes}}",
            "data.tasks=[entity]",
            "data.tag_schemes={entity: bioes}",
            *LEARNS,
            "trainer.max_epochs=6",
        ]
    )
    metrics = run(cfg, tmp_path / "run")
    written = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert written["primary"] == {"entity": "f1"}
    assert metrics["test"]["entity"]["f1"] > 0.6
    # The report reads the metric from metrics.json, not from the task's name.
    (row,) = (table := generic_table(collect(tmp_path / "run"))).rows
    assert row[table.headers.index("entity F1")] == f"{100 * metrics['test']['entity']['f1']:.2f}"
    # Gold read into IOB2 from the BIOES file (the predictions file's second column).
    lines = (tmp_path / "run" / "predictions" / "test_entity.txt").read_text().splitlines()
    gold = [line.split()[1] for line in lines if line]
    assert gold == [t for s in generate(SIZES["test"], seed=2) for t in (r[3] for r in s)]


def test_conllu_file_trains_through_data_tagging(compose_cfg, tmp_path: Path) -> None:
    root = write_splits(tmp_path / "ud", conllu_text, ".conllu")
    cfg = compose_cfg(
        [
            "data=tagging",
            "data.name=ud",
            f"data.root={root}",
            *[f"data.{s}={s}.conllu" for s in SIZES],
            "data.separator=tab",
            "data.comment='#'",
            "data.id_column=0",
            "data.word_column=1",
            "data.docstart=null",
            "data.columns={upos: {column: 3}, xpos: {column: 4}}",
            "data.tasks=[upos,xpos]",
            *LEARNS,
            "trainer.max_epochs=6",
        ]
    )
    metrics = run(cfg, tmp_path / "run")
    assert metrics["primary"] == {"upos": "accuracy", "xpos": "accuracy"}
    test = generate(SIZES["test"], seed=2)
    assert metrics["data"]["sizes"]["test"]["tokens"] == sum(map(len, test))  # no 3-4 lines
    upos = [UPOS.get(r[1], "PUNCT") for s in test for r in s]
    assert metrics["test"]["upos"]["accuracy"] > _majority(upos) + 0.3
