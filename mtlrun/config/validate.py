"""Checks beyond types: choices, ranges and combinations, all reported at once."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig, OmegaConf

from mtlrun.data.buckets import BATCHING
from mtlrun.data.conll import CONLL_TASKS
from mtlrun.data.mnist3 import MNIST3_TASKS
from mtlrun.errors import ConfigError
from mtlrun.training.precision import PRECISIONS

TASKS = {"toy": CONLL_TASKS, "conll": CONLL_TASKS, "mnist3": MNIST3_TASKS}
TEXT_ONLY_METHODS = ("soft", "hierarchical")
# method -> the backbones whose blocks end in BatchNorm (seed 001 §5.2 reads that layer)
BATCHNORM_BACKBONE_METHODS = {"tree_search": ("lenet_bn", "resnet")}
ADASHARE_BACKBONES = ("resnet",)  # backbones whose blocks offer `skip` (a residual shortcut)
BACKBONES_FOR = {"text": ["cnn_bilstm"], "image": ["lenet_bn", "resnet"]}
# run.py seeds numpy with trainer.seed, and np.random.seed takes 0 <= seed < 2**32 only.
SEED_LIMIT = 2**32
DATA_ENV = "MTLRUN_DATA"


def _get(cfg: DictConfig, key: str) -> Any:
    return OmegaConf.select(cfg, key, default=None)


def _check(
    problems: list[str], cfg: DictConfig, key: str, ok: Callable[[Any], bool], should: str
) -> None:
    if OmegaConf.select(cfg, key, default="__absent__") == "__absent__":
        return
    value = _get(cfg, key)
    if not ok(value):
        problems.append(f"`{key}` should be {should}. Found `{key} = {value}`.")


def _positive_or_null(v: Any) -> bool:
    return v is None or v >= 1


MULTI_INPUT_DATA = ("mnist3", "vision")
PER_TASK_OUTPUT_METHODS = ("single_subnet", "sparse_imp", "sparse_ste", "soft")


def _representation_key(cfg: DictConfig) -> str | None:
    """The key that asks for representation gradients (seed 001 eq. 4.6), or None."""
    balancer = _get(cfg, "balancer.name")
    if balancer == "mgda_ub" or _get(cfg, "balancer.on") == "z":
        return "balancer=mgda_ub" if balancer == "mgda_ub" else "balancer.on=z"
    if _get(cfg, "balancer.ub") == "z":
        return "balancer.ub=z"
    if _get(cfg, "balancer.ub") == "each":  # a hybrid's phases keep their own `on`
        for phase in ("first", "then"):
            if _get(cfg, f"balancer.{phase}.on") == "z":
                return f"balancer.{phase}.on=z"
    return None


def _check_gradient_space(p: list[str], cfg: DictConfig, data: Any, method: Any) -> None:
    """Representation gradients need one Z per block read by every task (METHODS §5)."""
    key = _representation_key(cfg)
    if key is None:
        return
    fix = (
        "use parameter gradients: balancer=mgda, balancer.on=params, or balancer=hybrid with "
        "balancer.ub=params (or auto)"
    )
    if data in MULTI_INPUT_DATA:
        p.append(
            f"`{key}` balances on gradients w.r.t. shared block outputs Z, which needs every task "
            f"to read the same input (the bound of seed 001 eq. 4.6); data={data} gives each "
            f"task its own input stream, so there is no shared Z. Instead {fix}."
        )
    elif method in PER_TASK_OUTPUT_METHODS:
        p.append(
            f"`{key}` needs one output per shared block for all tasks, but method={method} gives "
            f"each task its own (per-task masks or cross-stitch mixing). Instead {fix}."
        )


def _check_data_env(p: list[str], cfg: DictConfig) -> None:
    """An empty ``MTLRUN_DATA`` made ``data.root`` ``/conll2003`` (under the file system's
    root) for conll, and the current folder for mnist3: refused rather than read as unset, so a
    variable left empty by mistake (``MTLRUN_DATA=$UNSET``) is seen."""
    value = os.environ.get(DATA_ENV)
    if value is None or value.strip():
        return
    data = _get(cfg, "data")
    if not isinstance(data, DictConfig) or "root" not in data:
        return
    raw = OmegaConf.to_container(data, resolve=False)
    if isinstance(raw, dict) and DATA_ENV in str(raw.get("root")):
        p.append(
            f"`{DATA_ENV}` should be a folder, or unset for the default `data` folder. Found "
            f"`{DATA_ENV} = {value!r}`, which makes `data.root = {_get(cfg, 'data.root')!r}`. Set "
            f"it to the folder holding conll2003/ and MNIST/, unset it, or pass data.root=PATH."
        )


def _check_policy_split(p: list[str], cfg: DictConfig) -> None:
    """AdaShare holds part of the training set out for its policy: both parts need an example
    (a training set of 1 fails only after the warm-up epochs otherwise)."""
    for key in ("data.limit_train", "data.n_train"):
        if _get(cfg, key) == 1:
            p.append(
                f"`{key}` should be >= 2 with method=adashare: `method.policy_split` "
                f"({_get(cfg, 'method.policy_split')}) holds part of the training set out for "
                f"the policy, and both parts need at least one example. Found `{key} = 1`. "
                f"Raise `{key}`"
                + (" (or set it to null)" if key == "data.limit_train" else "")
                + ", or use a method without a policy split (e.g. method=hard)."
            )


def _check_bn_backbone(p: list[str], cfg: DictConfig, method: str) -> None:
    """Methods that read the BatchNorm at the end of each block need such a backbone."""
    from mtlrun.config.schema import SCHEMAS

    target = _get(cfg, "backbone._target_")
    names = {getattr(c, "_target_", None): n for n, c in SCHEMAS["backbone"].items()}
    allowed = BATCHNORM_BACKBONE_METHODS[method]
    if target is not None and names.get(target) not in allowed:
        p.append(
            f"`backbone` should be one of {', '.join(allowed)} for method={method} (it reads the "
            f"BatchNorm that ends each block). Found `backbone={names.get(target, target)}`."
        )


def _schema_of(group: str, node: Any) -> type | None:
    """The schema dataclass of a composed group node (by its ``name``, else its ``_target_``)."""
    from mtlrun.config.schema import SCHEMAS, Config

    if group == "":
        return Config
    options = SCHEMAS.get(group.split(".")[0], {})  # logger.mlflow: an option of logger
    if group == "trainer":
        return options.get("default")
    name = node.get("name") if isinstance(node, DictConfig) else None
    if name in options:
        return options[name]
    target = node.get("_target_") if isinstance(node, DictConfig) else None
    matches = [c for c in options.values() if getattr(c, "_target_", None) == target]
    return matches[0] if matches else None


def _unknown_keys(p: list[str], cfg: DictConfig) -> None:
    """Keys the schemas do not know (``+trainer.max_epoch=3`` gets past Hydra's typo check)."""
    import dataclasses
    import difflib

    groups = ["", "data", "backbone", "method", "balancer", "optim", "scheduler", "trainer"]
    groups += [f"logger.{name}" for name in _get(cfg, "logger") or {}]  # logger=[a,b]: each
    for group in groups:
        node = cfg if group == "" else _get(cfg, group)
        schema = _schema_of(group, node)
        if schema is None or not isinstance(node, DictConfig):
            continue
        known = [f.name for f in dataclasses.fields(schema)]
        if group == "":
            known += ["hydra", "experiment"]
        for key in [str(k) for k in node]:
            if key in known:
                continue
            full = f"{group}.{key}" if group else str(key)
            near = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
            hint = f"; did you mean `{group + '.' if group else ''}{near[0]}`?" if near else ""
            allowed = ", ".join(k for k in known if not k.startswith("_"))
            p.append(f"`{full}` is not a key of this config{hint} (allowed: {allowed}).")


def validate(cfg: DictConfig) -> None:
    """Raise one :class:`ConfigError` listing every problem of a composed config."""
    p: list[str] = []
    _unknown_keys(p, cfg)
    t = "trainer"
    _check(p, cfg, f"{t}.max_epochs", lambda v: v >= 1, "an integer >= 1")
    _check(p, cfg, f"{t}.batch_size", lambda v: v >= 1, "an integer >= 1")
    _check(p, cfg, f"{t}.eval_batch_size", lambda v: v >= 1, "an integer >= 1")
    _check(
        p,
        cfg,
        f"{t}.device",
        lambda v: re.fullmatch(r"auto|cpu|cuda(:\d+)?", v) is not None,
        "one of auto, cpu, cuda, cuda:N",
    )
    _check(
        p, cfg, f"{t}.grad_clip", lambda v: v is None or v > 0, "> 0, or null to disable clipping"
    )
    _check(p, cfg, f"{t}.precision", lambda v: v in PRECISIONS, "one of " + ", ".join(PRECISIONS))
    _check(p, cfg, f"{t}.patience", _positive_or_null, "an integer >= 1 or null")
    _check(p, cfg, f"{t}.max_minutes", lambda v: v is None or v > 0, "> 0 or null")
    _check(p, cfg, f"{t}.threads", lambda v: v is None or v >= 1, "an integer >= 1 or null")
    _check(p, cfg, f"{t}.steps_per_epoch", _positive_or_null, "an integer >= 1 or null")
    _check(
        p,
        cfg,
        f"{t}.seed",
        lambda v: 0 <= v < SEED_LIMIT,
        f"an integer in [0, {SEED_LIMIT - 1}] (numpy's seed range, 2**32 - 1 at most)",
    )
    for split in ("train", "valid", "test"):  # data=toy: the generated set's sizes
        _check(p, cfg, f"data.n_{split}", lambda v: v >= 1, "an integer >= 1")
    _check(p, cfg, "data.limit_train", _positive_or_null, "an integer >= 1 or null")
    _check(p, cfg, "data.limit_eval", _positive_or_null, "an integer >= 1 or null")
    _check(p, cfg, "data.max_sentence_len", _positive_or_null, "an integer >= 1 or null")
    _check(p, cfg, "data.source", lambda v: v in ("files", "hub"), "one of files, hub")
    _check(p, cfg, "data.batching", lambda v: v in BATCHING, "one of " + ", ".join(BATCHING))
    _check(p, cfg, "data.buckets", lambda v: v >= 1, "an integer >= 1")
    _check(
        p,
        cfg,
        "data.missing_train",
        lambda v: v in ("error", "split_test"),
        "one of error, split_test",
    )
    _check(p, cfg, "data.valid_size", lambda v: v >= 1, "an integer >= 1")
    _check(p, cfg, "optim.lr", lambda v: v > 0, "> 0")
    _check(p, cfg, "optim.momentum", lambda v: 0 <= v < 1, "in [0, 1)")
    _check(p, cfg, "optim.weight_decay", lambda v: v >= 0, ">= 0")
    _check(
        p,
        cfg,
        "optim.betas",
        lambda v: len(v) == 2 and all(0 <= b < 1 for b in v),
        "two numbers in [0, 1)",
    )
    if _get(cfg, "optim.nesterov") and not _get(cfg, "optim.momentum"):
        p.append("`optim.nesterov=true` needs `optim.momentum` > 0. Found `optim.momentum = 0.0`.")

    name = _get(cfg, "data.name")
    available = TASKS.get(name, ())
    tasks = list(_get(cfg, "data.tasks") or [])
    if available and (
        not tasks or any(x not in available for x in tasks) or len(set(tasks)) != len(tasks)
    ):
        p.append(
            f"`data.tasks` should be a non-empty subset of {list(available)} without repeats. "
            f"Found `data.tasks = {tasks}`."
        )
    weights = _get(cfg, "balancer.weights") or {}
    if isinstance(weights, DictConfig):
        weights = OmegaConf.to_container(weights)
    if not isinstance(weights, dict) or not all(
        isinstance(v, (int, float)) and v >= 0 for v in weights.values()
    ):
        p.append(
            f"`balancer.weights` should map task names to numbers >= 0, e.g. {{ner: 2.0}}. "
            f"Found `balancer.weights = {weights}`."
        )
        weights = {}
    unknown = sorted(set(weights) - set(tasks))
    if unknown:
        p.append(
            f"`balancer.weights` has keys {unknown} that are not tasks of this run; allowed: {tasks}."
        )

    data_modality, bb_modality = _get(cfg, "data.modality"), _get(cfg, "backbone.modality")
    if data_modality and bb_modality and data_modality != bb_modality:
        p.append(
            f"`backbone` does not fit `data={name}`: it reads {bb_modality} inputs but "
            f"{name} is {data_modality}. Allowed backbones for data={name}: "
            f"{BACKBONES_FOR.get(data_modality, [])}."
        )
    method = _get(cfg, "method.name")
    if method in TEXT_ONLY_METHODS and bb_modality and bb_modality != "text":
        p.append(
            f"`method={method}` couples BiLSTM layers: it needs backbone=cnn_bilstm (text data), "
            f"not an {bb_modality} backbone."
        )
    bb_module = str(_get(cfg, "backbone._target_") or "").split(".")[:-1]  # …backbones.<name>
    bb_name = bb_module[-1] if bb_module else ""
    if method == "adashare" and bb_name and bb_name not in ADASHARE_BACKBONES:
        p.append(
            "`method=adashare` needs a backbone of residual blocks (allowed: "
            f"{', '.join(ADASHARE_BACKBONES)}); found backbone={bb_name}"
        )
    if method in BATCHNORM_BACKBONE_METHODS:
        _check_bn_backbone(p, cfg, method)
    if method == "adashare":
        _check_policy_split(p, cfg)
    _check_gradient_space(p, cfg, name, method)
    _check_data_env(p, cfg)
    if p:
        raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(p))
