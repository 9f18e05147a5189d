"""mtlrun-eval's parts: which folders are finished runs, which weights are the best, where an
evaluation writes (never over anything), new files read as splits, prediction formats."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from mtlrun.data.base import IGNORE_INDEX
from mtlrun.data.conll import Sentence
from mtlrun.data.tagging import UNK, toy_data
from mtlrun.errors import ConfigError, DataError
from mtlrun.eval_cli import (
    Result,
    eval_device,
    file_split_name,
    label,
    read_new_file,
    summary,
)
from mtlrun.training.evaluate import Evaluation
from mtlrun.training.finished import (
    check_out_dir,
    load_weights,
    make_eval_dir,
    open_finished,
)
from mtlrun.training.outputs import write_split_predictions
from tests.helpers.fakedata import conll_text

TEST = {"pos": {"accuracy": 0.5}}


def finished(folder: Path, metrics: dict | None = None, config: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    base = {"test": TEST, "valid": TEST, "epochs": {"trained": 4, "best": 3}}
    (folder / "metrics.json").write_text(json.dumps(base if metrics is None else metrics))
    if config:
        (folder / ".hydra").mkdir(exist_ok=True)
        (folder / ".hydra" / "config.yaml").write_text("data: {}\nmethod: {}\n")
    return folder


# ------------------------------------------------------------------ which folders are runs


def test_a_finished_run_is_opened(tmp_path: Path) -> None:
    run = open_finished(finished(tmp_path / "run"))
    assert run.metrics["test"] == TEST
    assert run.config_path == tmp_path / "run" / ".hydra" / "config.yaml"


def test_folders_that_are_not_finished_runs_are_refused_naming_them(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=f"^{tmp_path / 'x'}: no such run folder$"):
        open_finished(tmp_path / "x")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match="is not a finished run: it has no metrics.json .give"):
        open_finished(empty)
    (empty / "checkpoints").mkdir()
    (empty / "checkpoints" / "last.pt").write_bytes(b"x")
    with pytest.raises(ConfigError, match=r"holds a checkpoint: still training.*resume_dir="):
        open_finished(empty)
    stopped = finished(tmp_path / "stopped", {"test": TEST, "interrupted": {"reason": "SIGTERM"}})
    with pytest.raises(ConfigError, match=r"it was interrupted \(SIGTERM\).*finish it first"):
        open_finished(stopped)
    untested = finished(tmp_path / "untested", {"ste_fit": {}})
    with pytest.raises(ConfigError, match="holds no tested network: .* no `test` entry"):
        open_finished(untested)
    bare = finished(tmp_path / "bare", config=False)
    with pytest.raises(ConfigError, match=r"\.hydra/config.yaml does not exist"):
        open_finished(bare)
    (bare / "metrics.json").write_text("[1, 2")
    with pytest.raises(ConfigError, match="metrics.json: not a readable JSON object"):
        open_finished(bare)


def test_a_diverged_run_with_a_best_epoch_is_a_result(tmp_path: Path) -> None:
    run = finished(tmp_path / "run", {"test": TEST, "diverged": {"epoch": 3}})
    assert open_finished(run).metrics["diverged"] == {"epoch": 3}


# ------------------------------------------------------------------ which weights


def weights(value: float) -> dict[str, torch.Tensor]:
    return {"w": torch.full((2,), value)}


def save_checkpoints(run: Path, best: int | None, last_best: int | None) -> None:
    folder = run / "checkpoints"
    folder.mkdir(exist_ok=True)
    if best is not None:
        torch.save({"model": weights(best), "epoch": best, "score": 0.5}, folder / "best.pt")
    fit = {"epoch": 4, "best_epoch": last_best, "best_model": None}
    if last_best is not None:
        fit["best_model"] = weights(10 + last_best)
    torch.save({"model": weights(4.0), "fit": fit, "search": {"policy": 1}}, folder / "last.pt")


@pytest.mark.parametrize(
    ("best", "last_best", "value", "file"),
    [
        (3, 3, 3.0, "best.pt"),  # best.pt: the run's best epoch
        (None, 3, 13.0, "last.pt"),  # a resumed run that never improved wrote no best.pt
        (2, 3, 13.0, "last.pt"),  # a best.pt of another epoch than metrics.json's best
    ],
)
def test_best_is_the_epoch_metrics_json_names(
    tmp_path: Path, best: int | None, last_best: int, value: float, file: str
) -> None:
    run = finished(tmp_path / "run")
    save_checkpoints(run, best, last_best)
    got = load_weights(open_finished(run), "best")
    assert torch.equal(got.state["w"], torch.full((2,), value))
    assert (got.file.name, got.epoch) == (file, 3)
    assert got.last is not None and got.last["search"] == {"policy": 1}


def test_last_is_the_last_epoch_and_missing_files_are_named(tmp_path: Path) -> None:
    run = finished(tmp_path / "run")
    with pytest.raises(ConfigError, match=r"checkpoints/last.pt does not exist: no last epoch"):
        load_weights(open_finished(run), "last")
    with pytest.raises(ConfigError, match=r"checkpoints/best.pt does not exist, nor does a last"):
        load_weights(open_finished(run), "best")
    save_checkpoints(run, None, None)
    got = load_weights(open_finished(run), "last")
    assert torch.equal(got.state["w"], weights(4.0)["w"]) and got.epoch == 4
    with pytest.raises(ConfigError, match="best.pt does not exist"):
        load_weights(open_finished(run), "best")
    (run / "checkpoints" / "last.pt").write_bytes(b"truncated")
    with pytest.raises(ConfigError, match="cannot read checkpoint .*last.pt"):
        load_weights(open_finished(run), "last")


# ------------------------------------------------------------------ where it writes


def test_every_evaluation_gets_a_new_folder_under_eval(tmp_path: Path) -> None:
    run = finished(tmp_path / "run")
    made = [make_eval_dir(run, None, "test_best") for _ in range(3)]
    assert len(set(made)) == 3
    assert all(
        p.parent == run / "eval" and p.name.endswith(("test_best", "-2", "-3")) for p in made
    )
    assert all(p.is_dir() and not any(p.iterdir()) for p in made)
    odd = make_eval_dir(run, None, "file-a b/c_best")
    assert odd.parent == run / "eval" and odd.name.endswith("file-a_b_c_best")


def test_out_must_be_new_or_empty(tmp_path: Path) -> None:
    new = tmp_path / "a" / "b"
    assert make_eval_dir(tmp_path, new, "x") == new and new.is_dir()
    assert make_eval_dir(tmp_path, new, "x") == new  # still empty
    (new / "metrics.json").write_text("{}")
    with pytest.raises(ConfigError, match=f"--out {new}: exists and is not an empty folder"):
        check_out_dir(new)
    with pytest.raises(ConfigError, match="exists and is not an empty folder"):
        make_eval_dir(tmp_path, new, "x")
    with pytest.raises(ConfigError, match="exists and is not an empty folder"):
        check_out_dir(new / "metrics.json")  # a file
    assert (new / "metrics.json").read_text() == "{}"


def test_split_names_of_files_and_folder_labels() -> None:
    assert file_split_name(Path("x/test.txt"), ["train", "valid", "test"]) == "file-test"
    assert file_split_name(Path("y/test.txt"), ["file-test"]) == "file-test-2"
    assert file_split_name(Path("y/test.txt"), ["file-test", "file-test-2"]) == "file-test-3"
    assert file_split_name(Path("new data (1).conll"), []) == "file-new_data__1_"
    assert label(["test", "valid"], {"file-a": Path("a")}, "last") == "file-a_test_valid_last"


# ------------------------------------------------------------------ new files as splits


def test_a_new_file_is_a_split_encoded_with_the_runs_tables(tmp_path: Path) -> None:
    data = toy_data(n_train=20, n_valid=5, n_test=5)
    known = data.sentences["test"][0]
    odd = Sentence(
        ("Zyxxyq", *known.words[1:]),
        {**known.tags, "ner": ("B-UNSEEN", *known.tags["ner"][1:])},
    )
    path = tmp_path / "new.txt"
    path.write_text(conll_text([known, odd]))
    cfg = OmegaConf.create({"name": "toy", "tasks": ["pos", "chunk", "ner"]})
    sentences = read_new_file(cfg, path)
    assert [s.words for s in sentences] == [known.words, odd.words]
    assert sentences[0].tags == known.tags
    view = data.with_split("file-new", sentences)
    assert "file-new" not in data.sizes()  # the original is unchanged
    assert view.sizes()["file-new"] == {"sentences": 2, "tokens": 2 * len(known)}
    assert view.input_spec == data.input_spec and view.tasks == data.tasks
    (inputs, targets), *_ = view.eval_groups("file-new", 8)
    (test_inputs, test_targets), *_ = data.eval_groups("test", 1)
    n = len(known)
    assert torch.equal(inputs.words[0, :n], test_inputs.words[0, :n])  # the same word ids
    assert int(inputs.words[1, 0]) == data.words(UNK) == 1  # a form unseen anywhere: unknown
    assert torch.equal(targets["pos"][0, :n], test_targets["pos"][0, :n])
    assert int(targets["ner"][1, 0]) == IGNORE_INDEX  # a tag unseen in training: never trained
    assert view.gold_tags("file-new", "ner")[1][0] == "B-UNSEEN"  # but scored
    assert view.example_words("file-new")[1][0] == "Zyxxyq"
    with pytest.raises(ValueError, match="already has a split named 'test'"):
        data.with_split("test", sentences)


def test_a_column_data_sets_new_file_is_read_in_its_described_layout(tmp_path: Path) -> None:
    path = tmp_path / "new.tsv"
    path.write_text("# a comment\nB-PER\tJohn Smith\tNNP\nO\truns\tVBZ\n\nO\tok\tJJ\n")
    cfg = OmegaConf.create(
        {
            "tasks": ["tag", "ner"],
            "columns": {"ner": {"column": 0, "scheme": "bio"}, "tag": {"column": -1}},
            "word_column": 1,
            "separator": "tab",
            "comment": "#",
            "docstart": None,
            "id_column": None,
        }
    )
    first, second = read_new_file(cfg, path)
    assert first.words == ("John Smith", "runs") and second.words == ("ok",)
    assert first.tags == {"tag": ("NNP", "VBZ"), "ner": ("B-PER", "O")}


def test_data_tagging_without_columns_reads_a_new_file_as_conll_2003(tmp_path: Path) -> None:
    """data=tagging's default `columns: null` means CoNLL-2003's four columns."""
    path = tmp_path / "new.txt"
    path.write_text("-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\n")
    cfg = OmegaConf.create(
        {"tasks": ["pos", "chunk", "ner"], "columns": None, "word_column": 0,
         "separator": "whitespace", "comment": None, "docstart": "-DOCSTART-", "id_column": None}
    )  # fmt: skip
    (only,) = read_new_file(cfg, path)
    assert only.words == ("EU", "rejects")
    assert only.tags == {"pos": ("NNP", "VBZ"), "chunk": ("B-NP", "B-VP"), "ner": ("B-ORG", "O")}


def test_a_malformed_new_file_is_named_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.txt"
    path.write_text("Paris NNP B-NP\n")
    with pytest.raises(DataError, match=f"{path}:1: "):
        read_new_file(OmegaConf.create({"tasks": ["pos", "chunk", "ner"]}), path)


# ------------------------------------------------------------------ outputs


def test_predictions_in_the_runs_text_format_and_as_csv_for_images(tmp_path: Path) -> None:
    gold = {"pos": [["NN", "VB"], ["DT"]]}
    pred = {"pos": [["NN", "NN"], ["DT"]]}
    written = write_split_predictions(tmp_path, "test", [["a", "b"], ["c"]], gold, pred)
    assert written == [tmp_path / "test_pos.txt"]
    assert written[0].read_text() == "a NN NN\nb VB NN\n\nc DT DT\n\n"
    images = write_split_predictions(
        tmp_path, "valid", None, {"fashion": [["Ankle boot"], ["Bag"]]}, {"fashion": [["Bag"]] * 2}
    )
    with images[0].open(newline="") as f:
        assert list(csv.reader(f)) == [
            ["index", "gold", "pred"],
            ["0", "Ankle boot", "Bag"],
            ["1", "Bag", "Bag"],
        ]


def test_the_summary_line_says_whether_the_run_is_reproduced() -> None:
    ev = Evaluation({"pos": {"accuracy": 0.5}, "ner": {"f1": 0.25, "precision": 1 / 3}}, {})
    same = Result("test", ev, {}, same_as_run={"metrics": True})
    assert summary(same) == (
        "test: pos accuracy 0.5000 | ner f1 0.2500 precision 0.3333 "
        "(the same as the run's metrics.json)"
    )
    other = Result("valid", ev, {}, same_as_run={"metrics": False})
    assert summary(other).endswith("(differs from the run's metrics.json)")
    new = Result("file-a", ev, {}, file=Path("a.txt"))
    assert summary(new).startswith("file-a (a.txt): pos accuracy 0.5000")
    assert "metrics.json" not in summary(new)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_the_device_defaults_to_the_runs_kind(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run = open_finished(finished(tmp_path / "run", {"test": TEST, "run": {"device": "cuda:0"}}))
    with caplog.at_level(logging.WARNING):
        assert eval_device("run", run) == torch.device("cpu")
    assert "the run used cuda:0; no CUDA device here" in caplog.text
    assert eval_device("auto", run) == torch.device("cpu")
    with pytest.raises(ConfigError, match="--device cuda: no CUDA device is available"):
        eval_device("cuda", run)
