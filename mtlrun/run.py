"""run(cfg): the one place where the composed config becomes objects, then a linear run."""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

import mtlrun
from mtlrun.config.validate import validate
from mtlrun.errors import ConfigError, MtlrunError
from mtlrun.model.masked import MaskedModel
from mtlrun.training import checkpoint
from mtlrun.training.context import RunContext
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
    """
    if os.environ.get("MTLRUN_GIT_COMMIT"):
        return os.environ["MTLRUN_GIT_COMMIT"]
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
        lr_decay=t.lr_decay,
        patience=t.patience,
        max_minutes=t.max_minutes,
        steps_per_epoch=t.steps_per_epoch,
        progress=t.progress,
    )


def _resume_path(cfg: DictConfig, run_dir: Path, config: dict[str, Any]) -> Path | None:
    if not cfg.trainer.resume:
        return None
    if cfg.trainer.resume_dir:
        path = Path(cfg.trainer.resume_dir) / "checkpoints" / "last.pt"
        if not path.is_file():
            raise ConfigError(f"`trainer.resume_dir` has no checkpoint: {path} does not exist.")
        diff = checkpoint.config_differences(checkpoint.load(path).get("config", {}), config)
        if diff:
            raise ConfigError(
                f"cannot resume {path}: it was trained with different values of {diff}."
            )
        return path
    root = next(
        (p for p in run_dir.resolve().parents if p.name == "outputs"), run_dir.resolve().parent
    )
    found = checkpoint.find_resumable(root, config, exclude=run_dir.resolve())
    if found is None:
        raise ConfigError(
            f"`trainer.resume=true` but no checkpoint under {root} was saved with this "
            "configuration; give `trainer.resume_dir=RUN_DIR`."
        )
    return found


def _provenance(
    cfg: DictConfig,
    config: dict[str, Any],
    seed: int,
    device: torch.device | str,
    command: str | None,
    overrides: list[str] | None,
    resumed_from: Path | None = None,
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
            "resumed_from": str(resumed_from) if resumed_from else None,
        },
    }


def _standalone(
    cfg: DictConfig,
    method: Any,
    run_dir: Path,
    config: dict[str, Any],
    command: str | None,
    overrides: list[str] | None,
) -> dict[str, Any]:
    """Experiments that train no multi-task network (e.g. seed 000 Appendix A)."""
    start = time.perf_counter()
    result = method.standalone(run_dir)
    metrics = {
        **result,
        "time": {"train_s": round(time.perf_counter() - start, 3), "search_s": None},
        **_provenance(cfg, config, cfg.trainer.seed, "cpu", command, overrides),
    }
    write_json(run_dir / "metrics.json", metrics)
    log.info("outputs in %s", run_dir)
    return metrics


def setup(
    cfg: DictConfig, method: Any, device: torch.device
) -> tuple[Any, list, Any, Any, torch.optim.Optimizer]:
    """Data, tasks, the multi-task model (on ``device``), balancer and θ optimiser of a config."""
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
    balancer = build(cfg.balancer, tasks=[t.name for t in tasks])
    optimizer = build(cfg.optim)(model.weight_parameters())
    return data, tasks, model, balancer, optimizer


def run(
    cfg: DictConfig, run_dir: Path, command: str | None = None, overrides: list[str] | None = None
) -> dict[str, Any]:
    """Train, select on validation, test, and write every output of METHODS §6 into ``run_dir``.

    A SIGTERM or SIGINT stops training after the current mini-batch; the best weights so far
    are still tested and written, with ``metrics.json`` marked ``interrupted``.
    """
    with stop_on_signals():
        return _run(cfg, run_dir, command, overrides)


def _run(
    cfg: DictConfig, run_dir: Path, command: str | None, overrides: list[str] | None
) -> dict[str, Any]:
    validate(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    config = cast(dict[str, Any], OmegaConf.to_container(cfg, resolve=True))
    settings = _settings(cfg)
    device = pick_device(cfg.trainer.device)
    seed_everything(settings.seed)
    method = build(cfg.method)
    if hasattr(method, "standalone"):
        return _standalone(cfg, method, run_dir, config, command, overrides)

    data, tasks, model, balancer, optimizer = setup(cfg, method, device)
    params = model.param_counts()
    log.info(
        "model: %s on %s; encoder params used %d (per task %s)",
        cfg.method._target_.rsplit(".", 1)[-1],
        device,
        params["used"],
        params["per_task"],
    )

    def make_optimizer(params: Any) -> torch.optim.Optimizer:
        return build(cfg.optim)(params)

    ctx = RunContext(model, data, tasks, balancer, settings, device, run_dir, make_optimizer)
    state: FitState | None = None
    search: dict[str, Any] | None = None
    resumed_from = _resume_path(cfg, run_dir, config)
    if resumed_from is not None:
        state, payload = restore(
            resumed_from, model, optimizer, balancer, strict=not hasattr(method, "search")
        )
        search = payload.get("search")
        log.info("resuming %s after epoch %d", resumed_from, state.epoch)
    elif hasattr(method, "search"):
        search = method.search(ctx)  # warm-up / mask search phases, each a block of history.csv
        params = model.param_counts()
        log.info(
            "after search: encoder params used %d (per task %s)", params["used"], params["per_task"]
        )
        optimizer = make_optimizer(model.weight_parameters())

    def after_epoch(s: FitState) -> None:
        write_history(run_dir / "history.csv", ctx.history + s.history)

    def extra_state() -> dict[str, Any]:
        masks = model.fixed_masks() if isinstance(model, MaskedModel) else {}
        return {"config": config, "search": search, **({"masks": masks} if masks else {})}

    epochs = (
        method.main_epochs(settings.max_epochs)
        if hasattr(method, "main_epochs")
        else settings.max_epochs
    )
    main = dataclasses.replace(
        settings, max_epochs=epochs, update=getattr(method, "update", "joint")
    )
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
    if state.best_model is not None:
        model.load_state_dict(state.best_model)
    start = time.perf_counter()
    test = evaluate(model, data, "test", tasks, settings.eval_batch_size, device)
    valid = evaluate(model, data, "valid", tasks, settings.eval_batch_size, device)
    metrics = {
        "test": test.metrics,
        "valid": valid.metrics,
        "params": params,
        "time": {
            "train_s": round(state.train_s, 3),
            "search_s": round(search["search_s"], 3) if search else None,
            "epoch_s": round(state.train_s / max(len(state.history), 1), 3),
            "eval_s": round(time.perf_counter() - start, 3),
        },
        "epochs": {"trained": state.epoch, "best": state.best_epoch},
        **(
            {
                "interrupted": {
                    "signal": STOP.signal,
                    "note": "training stopped by a signal; an epoch cut short is not counted and "
                    "checkpoints/last.pt holds the last whole one (trainer.resume=true goes on)",
                }
            }
            if STOP.requested
            else {}
        ),
        **({"balancer": balancer.summary()} if hasattr(balancer, "summary") else {}),
        "loss": {"test": test.loss, "valid": valid.loss},
        **(
            {"masks": _public_mask_stats(search["masks"])} if search and search.get("masks") else {}
        ),
        **(
            {"before_finetune": search["before_finetune"]}
            if search and search.get("before_finetune")
            else {}
        ),
        "data": {
            "name": data.name,
            "tasks": [t.name for t in tasks],
            "sizes": data.sizes(),
            "deviations": data.deviations,
        },
        **_provenance(cfg, config, settings.seed, device, command, overrides, resumed_from),
    }
    # The finished result goes to disk first; nothing written after it can lose it.
    write_json(run_dir / "metrics.json", metrics)
    log.info(
        "test: %s", {t: {m: round(v, 4) for m, v in ms.items()} for t, ms in test.metrics.items()}
    )
    _write_artefacts(cfg, run_dir, data, tasks, test, state)
    log.info("outputs in %s", run_dir)
    return metrics


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
