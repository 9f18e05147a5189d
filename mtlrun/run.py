"""run(cfg): the one place where the composed config becomes objects, then a linear run."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import functools
import logging
import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

import mtlrun
from mtlrun import sweep
from mtlrun.config.validate import validate
from mtlrun.errors import ConfigError, MtlrunError, StorageError
from mtlrun.model.masked import MaskedModel
from mtlrun.training import checkpoint
from mtlrun.training.context import RunContext, SearchStopped
from mtlrun.training.device import pick_device
from mtlrun.training.evaluate import evaluate
from mtlrun.training.interrupt import STOP, stop_on_signals
from mtlrun.training.loop import FitState, TrainSettings, fit, restore
from mtlrun.training.outputs import (
    plot_balancer,
    plot_curves,
    write_history,
    write_json,
    write_predictions,
)
from mtlrun.training.resume import Resume, find_resume, refuse_nothing_to_train
from mtlrun.training.run_dir import (
    RunFolder,
    no_space,
    resume_override,
    storage_error,
)
from mtlrun.training.search_cache import SearchCache, cache_root, key_material
from mtlrun.training.trackers import Trackers

log = logging.getLogger("mtlrun")


def build(node: Any, runtime: dict[str, Any] | None = None, **kwargs: Any) -> Any:
    """``instantiate`` that lets mtlrun's own errors through unwrapped (Hydra wraps them).

    ``runtime`` objects (data specs, tasks) are passed after instantiation: Hydra would turn
    a dataclass keyword argument into config. A component's ValueError is a config error.
    """
    target = node.get("_target_", "?")
    try:
        if runtime is None:
            return instantiate(node, _convert_="all", **kwargs)
        return instantiate(node, _convert_="all", _partial_=True, **kwargs)(**runtime)
    except InstantiationException as e:
        cause = e.__cause__
        if isinstance(cause, MtlrunError):
            raise cause from None
        if isinstance(cause, (ValueError, TypeError)):
            raise ConfigError(f"{target}: {cause}") from None
        raise
    except ValueError as e:
        raise ConfigError(f"{target}: {e}") from None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def git_commit() -> str | None:
    """The commit of the mtlrun source tree (with ``-dirty`` when it has uncommitted changes).

    ``MTLRUN_GIT_COMMIT``, when set, wins: a launcher that copies the tree to another machine
    knows the commit better than a ``.git`` that may have travelled stale with the copy.
    Otherwise the tree is read once per process (:func:`run` reads it before training), so a
    commit made while a long run trains is not credited with that run's results.
    """
    if os.environ.get("MTLRUN_GIT_COMMIT"):
        return os.environ["MTLRUN_GIT_COMMIT"]
    return _source_commit()


@functools.cache
def _source_commit() -> str | None:
    """HEAD of the checkout this process imported mtlrun from, read once; None without git."""
    root = Path(mtlrun.__file__).resolve().parent.parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def _settings(cfg: DictConfig) -> TrainSettings:
    t = cfg.trainer
    return TrainSettings(
        max_epochs=t.max_epochs,
        batch_size=t.batch_size,
        eval_batch_size=t.eval_batch_size,
        seed=t.seed,
        grad_clip=t.grad_clip,
        patience=t.patience,
        max_minutes=t.max_minutes,
        steps_per_epoch=t.steps_per_epoch,
        progress=t.progress,
        scheduler=build(cfg.scheduler),  # conf/scheduler/: the lr of each epoch of a phase
        precision=t.precision,
    )


def _provenance(
    cfg: DictConfig,
    config: dict[str, Any],
    seed: int,
    device: torch.device | str,
    command: str | None,
    overrides: list[str] | None,
    resume: Resume | None = None,
) -> dict[str, Any]:
    """The ``config`` and ``run`` entries of metrics.json: what ran, how, from which commit."""
    return {
        "config": {
            "name": cfg.name,
            "data": cfg.data.name,
            "method": cfg.method.name,
            "backbone": cfg.backbone._target_.rsplit(".", 1)[-1],
            "balancer": cfg.balancer.get("name") or cfg.balancer._target_.rsplit(".", 1)[-1],
            "method_args": {
                k: v for k, v in config["method"].items() if k not in ("_target_", "name")
            },
            "overrides": list(overrides or []),
        },
        "run": {
            "command": command or "mtlrun " + " ".join(sys.argv[1:]),
            "seed": seed,
            "git_commit": git_commit(),
            "mtlrun_version": mtlrun.__version__,
            "torch_version": torch.__version__,
            "device": str(device),
            "threads": torch.get_num_threads(),
            "resumed_from": str(resume.last or resume.run_dir) if resume else None,
            "resumed_from_dir": str(resume.run_dir.resolve()) if resume else None,
            # when the result was written (UTC): reports keep the newest run of a seed by it
            "finished_at": datetime.datetime.now(datetime.timezone.utc).isoformat(
                timespec="seconds"
            ),
        },
    }


def _standalone(
    cfg: DictConfig,
    result: dict[str, Any],
    seconds: float,
    run_dir: Path,
    config: dict[str, Any],
    command: str | None,
    overrides: list[str] | None,
) -> dict[str, Any]:
    """Metrics of an experiment that trains no multi-task network (e.g. seed 000 Appendix A)."""
    metrics = {
        **result,
        "time": {"train_s": round(seconds, 3), "search_s": None},
        **_provenance(cfg, config, cfg.trainer.seed, "cpu", command, overrides),
    }
    write_json(run_dir / "metrics.json", metrics)
    log.info("outputs in %s", run_dir)
    return metrics


def setup(
    cfg: DictConfig, method: Any, device: torch.device
) -> tuple[Any, list, Any, Any, torch.optim.Optimizer, dict[str, list[str]]]:
    """Data, tasks, the multi-task model (on ``device``), balancer, θ optimiser of a config and
    its ``fidelity`` entry (see :func:`fidelity`)."""
    data, tasks, backbone, model = build_model(cfg, method, device)
    balancer = build(cfg.balancer, tasks=[t.name for t in tasks])
    optimizer = build(cfg.optim)(model.weight_parameters())
    return data, tasks, model, balancer, optimizer, fidelity(backbone, method, balancer)


def build_model(cfg: DictConfig, method: Any, device: torch.device) -> tuple[Any, list, Any, Any]:
    """Data, tasks, backbone and the freshly initialised multi-task model (on ``device``) of a
    config: what a run trains, what a resumed run and ``mtlrun-eval`` rebuild."""
    data = build(cfg.data)
    for split, counts in data.sizes().items():
        log.info(
            "data %s %s: %s", data.name, split, ", ".join(f"{v} {k}" for k, v in counts.items())
        )
    for note in data.deviations:
        log.warning("deviation from the paper's protocol: %s", note)
    tasks = data.tasks
    backbone = build(cfg.backbone, runtime={"input_spec": data.input_spec})
    torch.manual_seed(cfg.trainer.seed)
    model = method.build(backbone=backbone, tasks=tasks).to(device)
    return data, tasks, backbone, model


def restore_structure(
    method: Any, model: Any, payload: dict[str, Any] | None, device: torch.device
) -> Any:
    """``model`` (freshly built) with the structure a run's search chose, read from a main-phase
    checkpoint payload (``last.pt``): the policy or tree (``method.rebuild`` of its ``search``)
    and the fixed per-task masks (``masks``), which must exist before the weights load.
    Resuming a run and ``mtlrun-eval`` rebuild a searched model this way."""
    saved = (payload or {}).get("search")
    if saved:
        model = method.rebuild(model, saved)
    masks = (payload or {}).get("masks")
    if masks:
        model.set_masks(masks)
    return model.to(device)


@dataclasses.dataclass
class RebuiltRun:
    """A finished run rebuilt from its saved config: its method, data, tasks and model (the
    structure its search chose; the weights are the initial ones until a checkpoint's load)."""

    method: Any
    data: Any
    tasks: list
    model: Any


def rebuild_run(
    cfg: DictConfig, payload: dict[str, Any] | None, device: torch.device
) -> RebuiltRun:
    """The data and model of a run from its resolved config (``.hydra/config.yaml``), built as
    the run built them (validated, seeded by ``trainer.seed``), with the structure of its
    main-phase checkpoint ``payload`` (:func:`restore_structure`)."""
    validate(cfg)
    method = build(cfg.method)
    seed_everything(cfg.trainer.seed)
    data, tasks, _, model = build_model(cfg, method, device)
    return RebuiltRun(method, data, tasks, restore_structure(method, model, payload, device))


def fidelity(*components: Any) -> dict[str, list[str]]:
    """The ``fidelity`` entry of metrics.json: per component kind (backbone, method, balancer),
    every way the run departs from its authors' code with the options it was given (each
    component's ``deviations``; README *Fidelity*). Kinds without deviations are left out."""
    out: dict[str, list[str]] = {}
    for kind, component in zip(("backbone", "method", "balancer"), components, strict=True):
        notes = [str(d) for d in component.deviations]
        for note in notes:
            log.warning("%s departs from its authors' code: %s", kind, note)
        if notes:
            out[kind] = notes
    return out


def run(
    cfg: DictConfig,
    run_dir: Path,
    command: str | None = None,
    overrides: list[str] | None = None,
    sweep_job: bool = False,
) -> dict[str, Any]:
    """Train, select on validation, test, and write every output of METHODS §6 into ``run_dir``.

    The run owns ``run_dir`` (an exclusive lock; a folder holding another run's result is
    refused). A SIGTERM or SIGINT stops training after the current mini-batch; the best whole
    epoch is still tested and written, with ``metrics.json`` marked ``interrupted``. A
    non-finite loss stops the run marked ``diverged``; a full disk, marked ``interrupted``.

    ``sweep_job``: the run is one job of a sweep. With ``trainer.resume=true`` a job whose
    folder holds a finished result returns that result untouched (a re-run sweep skips it), a
    job with a checkpoint in its folder continues it, and any other starts afresh.
    """
    git_commit()  # read before training: the commit of the code that runs
    if sweep_job and cfg.trainer.resume and not cfg.trainer.resume_dir:
        done = checkpoint.read_metrics(run_dir)
        if done is not None and "interrupted" not in done:
            log.info("%s holds a finished result: skipped (trainer.resume=true)", run_dir)
            return done
    with stop_on_signals():
        return _run(cfg, run_dir, command, overrides, sweep_job)


def refuse_ignored_settings(cfg: DictConfig, overrides: list[str] | None) -> None:
    """A setting given on the command line that the chosen method would not use is refused."""
    given = {o.lstrip("+~").split("=", 1)[0] for o in overrides or []}
    method = cfg.method.get("name")
    if method == "sparse_ste" and "trainer.max_epochs" in given:
        raise ConfigError(
            "`trainer.max_epochs` is not used by method=sparse_ste: its epochs are "
            "method.warmup_epochs (dense warm-up), method.search_epochs (mask search) and "
            "method.finetune_epochs (fine-tuning with the fixed masks); set those instead."
        )


def epoch_plan(cfg: DictConfig, method: Any, trainer_epochs: int) -> dict[str, int]:
    """Epochs per phase, as the start-up log states them (how trainer.max_epochs is used)."""
    m = cfg.method
    plan: dict[str, int] = {}
    if m.get("warmup_epochs"):
        plan["warmup"] = int(m.warmup_epochs)
    if m.get("search_epochs"):
        plan["search"] = int(m.search_epochs)
    if m.get("policy_epochs"):
        plan["policy"] = int(m.policy_epochs)
    if "prune_epochs" in m:  # null: each IMP round trains trainer.max_epochs (Sun et al.'s code)
        plan["imp (per round and task)"] = int(m.prune_epochs or trainer_epochs)
    main = method.main_epochs(trainer_epochs)
    plan["train" if not m.get("search_epochs") else "finetune"] = main
    return plan


def _phase_totals(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Epochs and seconds per phase kind (``imp/pos/round3`` counts as ``imp``)."""
    out: dict[str, dict[str, float]] = {}
    for row in rows:
        kind = str(row.get("phase", "train")).split("/", 1)[0]
        entry = out.setdefault(kind, {"epochs": 0, "train_s": 0.0, "epoch_s": 0.0})
        entry["epochs"] += 1
        entry["train_s"] = round(entry["train_s"] + float(row.get("time/train_s", 0.0)), 3)
        entry["epoch_s"] = round(entry["epoch_s"] + float(row.get("time/epoch_s", 0.0)), 3)
    return out


def _write_hydra_files(run_dir: Path, cfg: DictConfig, overrides: list[str] | None) -> None:
    """``.hydra/config.yaml`` (the composed config, resolved) and ``.hydra/overrides.yaml``."""
    folder = run_dir / ".hydra"
    folder.mkdir(exist_ok=True)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    (folder / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(resolved)))
    (folder / "overrides.yaml").write_text(OmegaConf.to_yaml(list(overrides or [])))


@contextmanager
def _run_log(run_dir: Path) -> Iterator[None]:
    """The run's log file, ``mtlrun.log``, for the duration of the run."""
    handler = logging.FileHandler(run_dir / "mtlrun.log")
    handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
        handler.close()


def _trackers(cfg: DictConfig, run_dir: Path, config: dict[str, Any]) -> Trackers:
    """The experiment trackers of ``logger=...`` (``trainer.tensorboard=true`` is an alias of
    ``logger=tensorboard``); a sweep's jobs share the sweep folder as their group."""
    from mtlrun.config.schema import SCHEMAS

    nodes = dict(cfg.get("logger") or {})
    unknown = sorted(str(k) for k in nodes if k not in SCHEMAS["logger"])
    if unknown:
        raise ConfigError(
            f"`logger.{unknown[0]}` is not a logger (allowed: {', '.join(SCHEMAS['logger'])})."
        )
    if cfg.trainer.get("tensorboard") and "tensorboard" not in nodes:
        nodes["tensorboard"] = OmegaConf.structured(SCHEMAS["logger"]["tensorboard"])
    group = sweep.sweep_folder() or str(cfg.name)
    runtime = {"run_dir": run_dir, "config": config, "default_group": group}
    return Trackers([build(node, runtime=runtime) for node in nodes.values()], run_dir)


def _run(
    cfg: DictConfig,
    run_dir: Path,
    command: str | None,
    overrides: list[str] | None,
    sweep_job: bool = False,
) -> dict[str, Any]:
    validate(cfg)
    refuse_ignored_settings(cfg, overrides)
    config = cast(dict[str, Any], OmegaConf.to_container(cfg, resolve=True))
    method = build(cfg.method)
    with contextlib.ExitStack() as claims:  # the folder this run writes and the one it resumes
        resume = find_resume(cfg, run_dir, config, claims, sweep_job)
        own = resume is not None and not resume.into(run_dir)
        folder = claims.enter_context(RunFolder(run_dir, resuming_own=own))
        try:
            if resume is not None:
                refuse_nothing_to_train(resume, method.main_epochs(cfg.trainer.max_epochs))
                if not own:  # the run it resumes is superseded once this one holds it
                    checkpoint.mark_resumed(resume.run_dir, run_dir)
            with _run_log(run_dir):
                try:
                    _write_hydra_files(run_dir, cfg, overrides)
                except OSError as e:
                    raise storage_error(e, run_dir) from None
                trackers = _trackers(cfg, run_dir, config)  # logger=...; a missing library: here
                try:
                    metrics = _train(
                        cfg, method, run_dir, config, command, overrides, resume, trackers
                    )
                except BaseException:
                    trackers.close("failed")
                    raise
                trackers.finish(metrics)  # after metrics.json; a tracker's failure: a warning
                return metrics
        except MtlrunError:
            folder.forget_if_unused()  # e.g. a data error: the rejected run leaves nothing
            raise


def _train(
    cfg: DictConfig,
    method: Any,
    run_dir: Path,
    config: dict[str, Any],
    command: str | None,
    overrides: list[str] | None,
    resume: Resume | None,
    trackers: Trackers | None = None,
) -> dict[str, Any]:
    settings = _settings(cfg)
    cuda_count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    device = pick_device(sweep.job_device(cfg.trainer.device, cuda_count))
    threads = sweep.job_threads(cfg.trainer.get("threads"))
    if threads is not None:
        torch.set_num_threads(threads)
    log.info("device %s, %d CPU threads", device, torch.get_num_threads())
    seed_everything(settings.seed)
    started = time.perf_counter()
    standalone = method.standalone(run_dir)
    if standalone is not None:
        seconds = time.perf_counter() - started
        return _standalone(cfg, standalone, seconds, run_dir, config, command, overrides)

    data, tasks, model, balancer, optimizer, departures = setup(cfg, method, device)
    params = model.param_counts()
    log.info(
        "model: %s on %s; encoder params used %d (per task %s)",
        cfg.method._target_.rsplit(".", 1)[-1],
        device,
        params["used"],
        params["per_task"],
    )
    plan = epoch_plan(cfg, method, settings.max_epochs)
    log.info("epochs per phase: %s", ", ".join(f"{k} {v}" for k, v in plan.items()))

    def make_optimizer(params: Any) -> torch.optim.Optimizer:
        return build(cfg.optim)(params)

    search_source = resume.run_dir if resume is not None and resume.last is None else None
    cache = _search_cache(cfg, method, config, data, device, run_dir)
    ctx = RunContext(
        model,
        data,
        tasks,
        balancer,
        settings,
        device,
        run_dir,
        make_optimizer,
        search_source,
        cache,
    )
    ctx.on_history = trackers.rows if trackers is not None else None
    epochs = method.main_epochs(settings.max_epochs)
    state: FitState | None = None
    search: dict[str, Any] | None = None
    if resume is not None and resume.last is not None:
        if (resume.payload or {}).get("search"):  # policy, tree, masks before the weights load
            model = restore_structure(method, model, resume.payload, device)
            ctx.model = model
            params = model.param_counts()  # of the searched structure, as a run that searched
            optimizer = make_optimizer(model.weight_parameters())
        state, payload = restore(
            resume.last, model, optimizer, balancer, strict=not method.searches
        )
        search = payload.get("search")
        ctx.history = [r for r in payload.get("search_history", [])]
        log.info("resuming %s after epoch %d", resume.last, state.epoch)
    elif method.searches:
        if search_source is not None:
            log.info("resuming the search of %s", search_source)
        try:
            with cache.locked() if cache is not None else contextlib.nullcontext():
                search = method.search(ctx)  # warm-up / search phases, blocks of history.csv
        except SearchStopped as e:
            return _write_stopped(cfg, run_dir, config, command, overrides, ctx, e.halt, resume)
        except StorageError as e:
            halt = {"storage": str(e)}
            return _write_stopped(cfg, run_dir, config, command, overrides, ctx, halt, resume)
        except (OSError, RuntimeError) as e:
            if no_space(e) is None:
                raise
            halt = {"storage": str(storage_error(e, run_dir))}
            return _write_stopped(cfg, run_dir, config, command, overrides, ctx, halt, resume)
        reused = cache.summary() if cache is not None else None
        if search is not None and reused is not None:
            search["reused_from"] = reused
            log.info(
                "search: %d phase(s) loaded from the search cache (%s)",
                len(reused["phases"]),
                ", ".join(reused["runs"]),
            )
        if search is not None:
            model = method.after_search(model, search).to(device)
            ctx.model = model
        params = model.param_counts()
        log.info(
            "after search: encoder params used %d (per task %s)", params["used"], params["per_task"]
        )
        optimizer = make_optimizer(model.weight_parameters())

    def after_epoch(s: FitState) -> None:
        ctx.write_history(s.history)
        ctx.discard_search_checkpoints()  # the main phase's last.pt now holds the search result

    def extra_state() -> dict[str, Any]:
        masks = model.fixed_masks() if isinstance(model, MaskedModel) else {}
        return {
            "config": config,
            "search": search,
            "search_history": ctx.history,
            **({"masks": masks} if masks else {}),
        }

    main = dataclasses.replace(settings, max_epochs=epochs, update=method.update)
    if epochs > 0:
        state = fit(
            model,
            data,
            tasks,
            balancer,
            optimizer,
            main,
            device,
            run_dir / "checkpoints",
            state=state,
            extra_state=extra_state,
            on_epoch=after_epoch,
        )
    else:
        state = FitState()
    if epochs > 0 and state.best_model is None:  # no whole epoch: nothing honest to test
        return _write_stopped(cfg, run_dir, config, command, overrides, ctx, state.halt, resume)
    if state.best_model is not None:
        model.load_state_dict(state.best_model)
    start = time.perf_counter()
    test = evaluate(model, data, "test", tasks, settings.eval_batch_size, device)
    valid = evaluate(model, data, "valid", tasks, settings.eval_batch_size, device)
    phases = _phase_totals(ctx.history + state.history)
    metrics = {
        "test": test.metrics,
        "valid": valid.metrics,
        "primary": {t.name: t.metric for t in tasks},
        "params": params,
        "time": {
            "train_s": round(state.train_s, 3),
            "search_s": round(search["search_s"], 3) if search else None,
            "epoch_s": round(state.train_s / max(len(state.history), 1), 3),
            "eval_s": round(time.perf_counter() - start, 3),
            "phases": {k: v["epoch_s"] for k, v in phases.items()},
        },
        "epochs": {
            "trained": state.epoch,
            "best": state.best_epoch,
            "phases": {k: int(v["epochs"]) for k, v in phases.items()},
        },
        **_stop_entries(state.halt, run_dir, resume),
        **({"balancer": balancer.summary()} if balancer.summary() else {}),
        "loss": {"test": test.loss, "valid": valid.loss},
        **(
            {"masks": _public_mask_stats(search["masks"])} if search and search.get("masks") else {}
        ),
        **(
            {"before_finetune": search["before_finetune"]}
            if search and search.get("before_finetune")
            else {}
        ),
        **({"search": _public_search(search)} if _public_search(search) else {}),
        "data": {
            "name": data.name,
            "tasks": [t.name for t in tasks],
            "sizes": data.sizes(),
            "deviations": data.deviations,
        },
        "fidelity": departures,
        **_provenance(cfg, config, settings.seed, device, command, overrides, resume),
    }
    # The finished result goes to disk first; nothing written after it can lose it.
    _write_metrics(run_dir, metrics, state.halt)
    if epochs == 0:
        ctx.discard_search_checkpoints()
    log.info(
        "test: %s", {t: {m: round(v, 4) for m, v in ms.items()} for t, ms in test.metrics.items()}
    )
    _write_artefacts(cfg, run_dir, data, tasks, test, state)
    if "diverged" in metrics:
        log.info("outputs in %s", run_dir)
    else:
        log.info("outputs in %s (to continue it: %s)", run_dir, resume_override(run_dir))
    return metrics


def _search_cache(
    cfg: DictConfig,
    method: Any,
    config: dict[str, Any],
    data: Any,
    device: torch.device,
    run_dir: Path,
) -> SearchCache | None:
    """The run's entry of ``trainer.search_cache`` when its method's search can be shared."""
    free = method.search_free_keys()
    root = cache_root(cfg.trainer.get("search_cache"))
    if free is None or root is None:
        return None
    data_key = {"name": data.name, "sizes": data.sizes(), "deviations": data.deviations}
    return SearchCache(root, key_material(config, free, device.type, data_key), run_dir)


def _stop_entries(
    halt: dict[str, Any] | None, run_dir: Path, resume: Resume | None = None
) -> dict[str, Any]:
    """The ``interrupted`` / ``diverged`` entries of metrics.json, with a note that is true and
    names the run to continue as an override ready to paste."""
    ckpt = checkpoint.resumable_checkpoint(run_dir)
    if ckpt is None and resume is not None and resume.into(run_dir):
        resumable = (
            f"no whole epoch was saved here; the run it resumed, {resume.run_dir}, still holds "
            f"its checkpoint: trainer.resume=true goes on from it, as does "
            f"{resume_override(resume.run_dir)}"
        )
    elif ckpt is None:
        resumable = "no whole epoch was saved, so there is nothing to resume"
    elif ckpt.parent.name == "search":
        resumable = (
            "checkpoints/search/ holds the search's finished phases and the cut phase's last "
            "whole epoch; trainer.resume=true continues the search, as does "
            f"{resume_override(run_dir)}"
        )
    else:
        resumable = (
            "checkpoints/last.pt holds the last whole epoch; trainer.resume=true goes on, as "
            f"does {resume_override(run_dir)}"
        )
    if halt and "diverged" in halt:
        return {"diverged": {**halt["diverged"], "resumable": False}}
    if halt and "storage" in halt:
        return {
            "interrupted": {
                "signal": None,
                "reason": halt["storage"],
                "note": f"stopped because a file could not be written; {resumable}",
            }
        }
    if STOP.requested:
        return {
            "interrupted": {
                "signal": STOP.signal,
                "reason": f"signal {STOP.signal}",
                "note": f"training stopped by a signal; an epoch cut short is not counted; "
                f"{resumable}",
            }
        }
    return {}


def _write_metrics(run_dir: Path, metrics: dict[str, Any], halt: dict[str, Any] | None) -> None:
    """Write metrics.json; after a storage stop, say that it could not be written either."""
    try:
        write_json(run_dir / "metrics.json", metrics)
    except StorageError:
        if halt and "storage" in halt:
            raise StorageError(
                f"{halt['storage']}; metrics.json could not be written either"
            ) from None
        raise


def _write_stopped(
    cfg: DictConfig,
    run_dir: Path,
    config: dict[str, Any],
    command: str | None,
    overrides: list[str] | None,
    ctx: RunContext,
    halt: dict[str, Any] | None,
    resume: Resume | None,
) -> dict[str, Any]:
    """metrics.json of a run stopped before any whole epoch it could test: no test metrics."""
    if ctx.history:
        with contextlib.suppress(StorageError):
            write_history(run_dir / "history.csv", ctx.history)
    phases = _phase_totals(ctx.history)
    metrics = {
        **_stop_entries(halt, run_dir, resume),
        "epochs": {
            "trained": 0,
            "best": 0,
            "phases": {k: int(v["epochs"]) for k, v in phases.items()},
        },
        "time": {"phases": {k: v["epoch_s"] for k, v in phases.items()}},
        **_provenance(cfg, config, cfg.trainer.seed, ctx.device, command, overrides, resume),
    }
    if not _stop_entries(halt, run_dir):  # stopped for a reason of its own (should not happen)
        metrics["interrupted"] = {"signal": None, "reason": "stopped", "note": "no whole epoch"}
    _write_metrics(run_dir, metrics, halt)
    log.warning("no whole epoch finished: metrics.json holds no test metrics")
    return metrics


def _public_search(search: dict[str, Any] | None) -> dict[str, Any]:
    """The ``search`` entry of metrics.json: what a search chose (AdaShare's policy, the tree
    search's tree and task affinity), besides its time, masks and pre-fine-tuning scores."""
    internal = ("search_s", "masks", "before_finetune")
    return {k: v for k, v in (search or {}).items() if k not in internal}


def _public_mask_stats(stats: dict[str, Any]) -> dict[str, Any]:
    """The metrics.json ``masks`` entry (per-parameter densities stay in masks.json)."""
    return {
        k: stats[k]
        for k in ("density", "iou", "overlap_ratio", "kept", "union", "rounds")
        if k in stats
    }


def _write_artefacts(
    cfg: DictConfig, run_dir: Path, data: Any, tasks: list, test: Any, state: FitState
) -> None:
    """Predictions and plots; a failure here is logged, never fatal (metrics.json is written)."""
    try:
        if cfg.trainer.save_predictions and hasattr(data, "example_words"):
            (run_dir / "predictions").mkdir(exist_ok=True)
            words = data.example_words("test")
            for t in tasks:
                write_predictions(
                    run_dir / "predictions" / f"test_{t.name}.txt",
                    words,
                    test.gold[t.name],
                    test.pred[t.name],
                )
        if cfg.trainer.plots and state.history:
            plot_curves(
                run_dir / "curves.png",
                state.history,
                [t.name for t in tasks],
                {t.name: t.metric for t in tasks},
            )
            plot_balancer(run_dir / "balancer.png", state.history, [t.name for t in tasks])
    except Exception as e:  # noqa: BLE001 - artefacts must not lose the finished metrics
        log.warning(
            "could not write every artefact (%s: %s); metrics.json is complete", type(e).__name__, e
        )
