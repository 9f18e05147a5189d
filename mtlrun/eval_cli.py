"""The ``mtlrun-eval`` command: evaluate a finished run's checkpoint on one of its splits or on
new files in its data set's format, into a new folder (the run's own files are never touched).

The run's data and model are rebuilt from its saved config exactly as the run (and a resumed
run) builds them (:func:`mtlrun.run.rebuild_run`): the masks, policy or tree its search chose
come from its ``last.pt``, the weights from ``best.pt`` (or ``last.pt``), and evaluation uses
the run's evaluation batches, so ``--split test`` gives the run's test metrics exactly on the
device kind and thread count it ran with (see docs/evaluate.md).
"""

from __future__ import annotations

import argparse
import datetime
import logging
import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch
from hydra.errors import InstantiationException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

import mtlrun
from mtlrun.config.saved import upgrade
from mtlrun.errors import ConfigError, DataError, MtlrunError
from mtlrun.training.evaluate import Evaluation, evaluate
from mtlrun.training.finished import (
    CHECKPOINTS,
    CONFIG,
    FinishedRun,
    Weights,
    check_out_dir,
    load_weights,
    make_eval_dir,
    open_finished,
)
from mtlrun.training.outputs import finite, write_json, write_split_predictions

if TYPE_CHECKING:
    from mtlrun.run import RebuiltRun

log = logging.getLogger("mtlrun.eval")

EXIT_ERROR = 2
SPLITS = ("test", "valid", "train")
DEVICES = ("run", "auto", "cpu", "cuda")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mtlrun-eval",
        description="Evaluate a finished mtlrun run (its best or last checkpoint) on a split or "
        "on new files in its data set's format; metrics.json and predictions go to a new folder.",
        epilog="examples: mtlrun-eval outputs/2026-01-05/10-00-00_method=hard | "
        "mtlrun-eval RUN --split valid --checkpoint last | mtlrun-eval RUN --file new.conll",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", type=Path, help="the run's folder")
    p.add_argument(
        "--split",
        action="append",
        choices=SPLITS,
        help="a split of the run's data (repeat for several; default: test, unless --file)",
    )
    p.add_argument(
        "--file",
        action="append",
        type=Path,
        default=[],
        metavar="PATH",
        help="a new file in the data set's format (text data: CoNLL-2003 columns "
        "'word POS chunk NER'), read with the run's vocabularies; repeat for several",
    )
    p.add_argument(
        "--checkpoint",
        choices=CHECKPOINTS,
        default="best",
        help="best: the best validation epoch, which the run tested (default); last: the "
        "last whole epoch",
    )
    p.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="a new or empty folder for the results (default: RUN_DIR/eval/<date>_<time>_<what>)",
    )
    p.add_argument(
        "--device",
        choices=DEVICES,
        default="run",
        help="run: the device kind the run used, for identical numbers (default); "
        "auto: cuda when available",
    )
    p.add_argument(
        "--threads",
        type=positive,
        metavar="N",
        help="torch CPU threads (default: the run's, for identical numbers)",
    )
    return p


def positive(text: str) -> int:
    """``--threads``: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"should be an integer >= 1, not {text!r}")
    return value


@dataclass
class Result:
    """One evaluated split (a split of the run's data, or a new file read as a split)."""

    name: str
    evaluation: Evaluation
    size: dict[str, int]
    file: Path | None = None
    same_as_run: dict[str, bool] = field(default_factory=dict)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(name)s][%(levelname)s] - %(message)s")
    try:
        out, results = evaluate_run(args, "mtlrun-eval " + shlex.join(argv))
    except MtlrunError as e:
        print(f"mtlrun-eval: error: {e}", file=sys.stderr)
        sys.exit(EXIT_ERROR)
    except OmegaConfBaseException as e:  # a key this mtlrun reads that an older config lacks
        first = str(e).strip().splitlines()[0]
        print(f"mtlrun-eval: error: {args.run_dir / CONFIG}: {first}", file=sys.stderr)
        sys.exit(EXIT_ERROR)
    for r in results:
        print(summary(r))
    print(f"outputs in {out}")


def evaluate_run(args: argparse.Namespace, command: str) -> tuple[Path, list[Result]]:
    """Check, rebuild, evaluate, write: the whole of ``mtlrun-eval``; returns the new folder."""
    run = open_finished(args.run_dir)
    if args.out is not None:
        check_out_dir(args.out)
    splits = list(dict.fromkeys(args.split or ([] if args.file else ["test"])))
    for path in args.file:
        if not path.is_file():
            raise DataError(f"--file {path}: no such file")
    device = eval_device(args.device, run)
    threads = args.threads or (run.metrics.get("run") or {}).get("threads")
    if threads:
        torch.set_num_threads(int(threads))
    cfg = load_config(run)
    weights = load_weights(run, args.checkpoint)
    rebuilt = rebuild(run, cfg, weights, device)
    data, named = add_files(rebuilt.data, cfg, args.file, run)
    results = [
        score(rebuilt.model, data, rebuilt.tasks, name, cfg, device, run, named.get(name))
        for name in [*splits, *named]
    ]
    out = make_eval_dir(run.run_dir, args.out, label(splits, named, args.checkpoint))
    write(out, results, data, rebuilt.tasks, run, weights, args, command, device)
    return out, results


def rebuild(
    run: FinishedRun, cfg: DictConfig, weights: Weights, device: torch.device
) -> RebuiltRun:
    """The run's data and model as its training (and a resume) builds them, with the
    checkpoint's weights loaded (:func:`mtlrun.run.rebuild_run`); what this mtlrun cannot
    build is one ConfigError naming the config."""
    from mtlrun.run import rebuild_run  # heavy imports after argparse has handled --help

    try:
        rebuilt = rebuild_run(cfg, weights.last, device)
    except DataError:
        raise
    except MtlrunError as e:
        why = str(e).replace(":\n  - ", ": ").replace("\n  - ", "; ").replace("\n", " ")
        raise ConfigError(f"{run.config_path}: this mtlrun cannot build the run: {why}") from None
    except (InstantiationException, OmegaConfBaseException, ImportError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"{run.config_path}: this mtlrun cannot build the run: {first}") from None
    if rebuilt.method.searches and weights.last is None:
        raise ConfigError(
            f"{run.run_dir / 'checkpoints' / 'last.pt'} does not exist: it holds what the "
            f"search of method={cfg.method.get('name')} chose (masks, policy or tree)"
        )
    load_into(rebuilt.model, weights, rebuilt.method.searches, run)
    return rebuilt


def add_files(
    data: Any, cfg: DictConfig, files: list[Path], run: FinishedRun
) -> tuple[Any, dict[str, Path]]:
    """The run's data with each new file as a split of its own (``file-<stem>``), read in the
    data set's format with the run's tables; returns it and the split names' files."""
    named: dict[str, Path] = {}
    for path in files:
        with_split = getattr(data, "with_split", None)
        if with_split is None:
            raise ConfigError(
                f"--file {path}: data={data.name} cannot read new files (only column-format "
                "text data can); evaluate its splits with --split"
            )
        try:
            sentences = read_new_file(cfg.data, path)
        except (OmegaConfBaseException, TypeError) as e:
            raise ConfigError(
                f"--file {path}: {run.config_path} does not describe the data's file format "
                f"({type(e).__name__}: {e})"
            ) from None
        name = file_split_name(path, [*data.sizes(), *named])
        data, named[name] = with_split(name, sentences), path
    return data, named


def eval_device(choice: str, run: FinishedRun) -> torch.device:
    """``run``: the kind of device the run used (cpu or cuda), cpu when that is cuda and none is
    here; ``auto``: cuda when available; ``cpu``, ``cuda``."""
    cuda = torch.cuda.is_available()
    if choice == "run":
        used = str((run.metrics.get("run") or {}).get("device", "cpu"))
        if used.startswith("cuda") and not cuda:
            log.warning("the run used %s; no CUDA device here, so the CPU evaluates it", used)
        return torch.device("cuda" if used.startswith("cuda") and cuda else "cpu")
    if choice == "cuda" and not cuda:
        raise ConfigError("--device cuda: no CUDA device is available; use --device cpu")
    if choice == "auto":
        return torch.device("cuda" if cuda else "cpu")
    return torch.device(choice)


def load_config(run: FinishedRun) -> DictConfig:
    """The run's resolved config (``.hydra/config.yaml``) as the run composed it."""
    try:
        cfg = OmegaConf.load(run.config_path)
    except (OSError, OmegaConfBaseException, ValueError) as e:
        raise ConfigError(f"{run.config_path}: cannot read it ({e})") from None
    if not isinstance(cfg, DictConfig) or "method" not in cfg or "data" not in cfg:
        raise ConfigError(f"{run.config_path}: not an mtlrun run config (no data or method)")
    # a run of an earlier mtlrun: its keys as today's (the same run)
    return OmegaConf.create(upgrade(cast(dict, OmegaConf.to_container(cfg))))


def load_into(model: Any, weights: Weights, searched: bool, run: FinishedRun) -> None:
    """Load the checkpoint's weights; a checkpoint that does not fit the rebuilt model is a
    one-line error. A searched model may leave out its search parameters (π), as on resume."""
    try:
        missing, unexpected = model.load_state_dict(weights.state, strict=False)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[-1].strip()
        raise ConfigError(
            f"{weights.file} does not fit the model built from {run.config_path}: {first}"
        ) from None
    if missing or (unexpected and not searched):
        what = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
        raise ConfigError(
            f"{weights.file} does not fit the model built from {run.config_path}: {what}"
        )


def read_new_file(data_cfg: DictConfig, path: Path) -> list[Any]:
    """The sentences of a new file in the run's data format, with the tags of the run's tasks:
    a column-file data set's described columns and layout (``data.columns``,
    ``data.word_column``, ``data.separator``...), else CoNLL-2003's four columns (conll, toy)."""
    from mtlrun.data.conll import read_conll, warn_long_sentences

    tasks = [str(t) for t in data_cfg.tasks]
    if "columns" in data_cfg:
        from mtlrun.data.columns import ColumnFormat, read_columns
        from mtlrun.data.tagging import described_columns

        layout = ("word_column", "separator", "comment", "docstart", "id_column")
        columns = data_cfg.columns
        given = None if columns is None else cast(dict, OmegaConf.to_container(columns))
        described = described_columns(given)  # null: CoNLL-2003's columns
        fmt = ColumnFormat(**{k: data_cfg[k] for k in layout})
        sentences = read_columns(path, [described[t] for t in tasks], fmt)
    else:
        sentences = read_conll(path, tasks)
    warn_long_sentences(sentences, path, "new", None)
    return sentences


def file_split_name(path: Path, taken: list[str]) -> str:
    """``file-<stem>`` (``-2``, ``-3``... when taken): the split name of a ``--file``."""
    base = "file-" + re.sub(r"[^A-Za-z0-9._+-]", "_", path.stem)[:60]
    name, k = base, 1
    while name in taken:
        k += 1
        name = f"{base}-{k}"
    return name


def score(
    model: Any,
    data: Any,
    tasks: list,
    name: str,
    cfg: DictConfig,
    device: torch.device,
    run: FinishedRun,
    file: Path | None,
) -> Result:
    """Evaluate one split with the run's evaluation batches, and compare it with the run's own
    scores of that split when it recorded them."""
    ev = evaluate(model, data, name, tasks, int(cfg.trainer.eval_batch_size), device)
    result = Result(name, ev, data.sizes()[name], file)
    recorded = run.metrics.get(name) if file is None else None
    if isinstance(recorded, dict):
        result.same_as_run["metrics"] = finite(ev.metrics) == recorded
        losses = (run.metrics.get("loss") or {}).get(name)
        if isinstance(losses, dict):
            result.same_as_run["loss"] = finite(ev.loss) == losses
    return result


def label(splits: list[str], files: dict[str, Path], which: str) -> str:
    """What an evaluation folder's name says: ``test_best``, ``file-new_valid_last``..."""
    return "_".join([*files, *splits, which])


def write(
    out: Path,
    results: list[Result],
    data: Any,
    tasks: list,
    run: FinishedRun,
    weights: Weights,
    args: argparse.Namespace,
    command: str,
    device: torch.device,
) -> None:
    """``metrics.json`` (scores per split, provenance) and ``predictions/`` into ``out``."""
    from mtlrun.run import git_commit

    words = getattr(data, "example_words", None)
    for r in results:
        write_split_predictions(
            out / "predictions",
            r.name,
            words(r.name) if words is not None else None,
            r.evaluation.gold,
            r.evaluation.pred,
        )
    metrics = {
        "metrics": {r.name: r.evaluation.metrics for r in results},
        "loss": {r.name: r.evaluation.loss for r in results},
        "primary": {t.name: t.metric for t in tasks},
        "same_as_run": {r.name: r.same_as_run for r in results if r.same_as_run},
        "data": {
            "name": data.name,
            "tasks": [t.name for t in tasks],
            "sizes": {r.name: r.size for r in results},
            "files": {r.name: str(r.file.resolve()) for r in results if r.file is not None},
        },
        "evaluation": {
            "run_dir": str(run.run_dir.resolve()),
            "checkpoint": {
                "which": args.checkpoint,
                "file": str(weights.file.resolve()),
                "epoch": weights.epoch,
            },
            "splits": [r.name for r in results if r.file is None],
            "command": command,
            "git_commit": git_commit(),
            "mtlrun_version": mtlrun.__version__,
            "torch_version": torch.__version__,
            "device": str(device),
            "threads": torch.get_num_threads(),
            "finished_at": datetime.datetime.now(datetime.timezone.utc).isoformat(
                timespec="seconds"
            ),
        },
        "source_run": {k: run.metrics[k] for k in ("config", "run") if k in run.metrics},
    }
    write_json(out / "metrics.json", metrics)


def summary(r: Result) -> str:
    """One line per evaluated split: each task's metrics, and whether they are the run's."""
    scores = " | ".join(
        f"{task} " + " ".join(f"{m} {v:.4f}" for m, v in ms.items())
        for task, ms in r.evaluation.metrics.items()
    )
    where = f" ({r.file})" if r.file is not None else ""
    note = {
        None: "",
        True: " (the same as the run's metrics.json)",
        False: " (differs from the run's metrics.json)",
    }[r.same_as_run.get("metrics")]
    return f"{r.name}{where}: {scores}{note}"


if __name__ == "__main__":
    main()
