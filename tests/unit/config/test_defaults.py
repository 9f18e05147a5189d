"""Each config-facing default lives in one place: the schema of its option (mtlrun/config/schema.py).

Components keep signature defaults so that they stay usable from Python (tests, benches,
notebooks) without Hydra; these tests pin every such default to the schema's, and keep the option
YAMLs from restating schema values. A new group option, a new keyword or a changed default on one
side only fails here.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from omegaconf import MISSING

from mtlrun.config.schema import SCHEMAS
from mtlrun.training.loop import TrainSettings

CONF = Path(__file__).resolve().parents[3] / "conf"

# Schema values that differ from the component's signature on purpose: the option exists to set
# them, so its schema is the one place for them.
INTENDED_SCHEMA = {
    ("balancer", "mgda_ub"): {
        "on": "MGDA-UB is MGDA on representation gradients (seed 001 eq. 4.6-4.7)",
        "name": "the option's own name in logs and metrics.json",
    },
}

# Schema fields that run.py reads itself (no component, so no second default).
READ_BY_RUN = {
    ("trainer", "default"): {
        "device",
        "resume",
        "resume_dir",
        "save_predictions",
        "plots",
        "threads",
        "tensorboard",
        "search_cache",
    },
}

# Component keywords with a default that no config key reaches.
NOT_CONFIG = {
    ("trainer", "default"): {
        "update": "set by the method (joint or per-task updates)",
        "scheduler": "built from the scheduler group (conf/scheduler/), not a trainer key",
    },
    ("balancer", "per_block"): {"errors": "a subclass's argument problems, raised with its own"},
    ("balancer", "loss_based"): {"errors": "a subclass's argument problems, raised with its own"},
}

# Values that a group option's YAML sets besides its own schema, on purpose: the one place for
# that value when the option is chosen. ``/group`` stands for a defaults-list override.
INTENDED_YAML = {
    ("data", "conll"): {"trainer.batch_size": "seed 000 Table 4.1: batches of 10 sentences"},
    ("data", "mnist3"): {
        "trainer.batch_size": "seed 001 §4.5: batches of 64 images per task",
        "/backbone": "image data needs an image backbone (lenet_bn, seed 001 §4.5)",
    },
    ("data", "vision"): {"/backbone": "image data needs an image backbone (as data=mnist3)"},
    ("data", "python"): {"/backbone": "TaskTensors are images: an image backbone (as mnist3)"},
    ("balancer", "hybrid"): {
        "/balancer@first": "seed 001 Algorithm 1: GradNorm while every task still improves",
        "/balancer@then": "seed 001 Algorithm 1: then MGDA",
    },
}


def _component(group: str, schema: type) -> Callable[..., Any]:
    if group == "trainer":  # no _target_: run.py builds TrainSettings from the trainer group
        return TrainSettings
    module, _, name = _schema_defaults(schema)["_target_"].rpartition(".")
    return getattr(importlib.import_module(module), name)


def _schema_defaults(schema: type) -> dict[str, Any]:
    out = {}
    for f in dataclasses.fields(schema):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


def _signature_defaults(component: Callable[..., Any]) -> dict[str, Any]:
    """Keyword → default (``inspect.Parameter.empty`` if required), following ``**kwargs`` up
    the class hierarchy (``SingleSubnet(*args, **kwargs)`` forwards to ``SparseIMP``)."""
    if inspect.isclass(component):
        inits = [vars(c)["__init__"] for c in component.__mro__ if "__init__" in vars(c)]
    else:
        inits = [component]
    out: dict[str, Any] = {}
    for init in inits:
        params = inspect.signature(init).parameters.values()
        for p in params:
            if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                out.setdefault(p.name, p.default)
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _signature_drift(group: str, option: str) -> list[str]:
    """Schema defaults against the component's signature defaults, keyword by keyword."""
    schema = SCHEMAS[group][option]
    component = _component(group, schema)
    ours = component.__module__.startswith("mtlrun.")  # torch.optim's defaults are not ours
    fields = _schema_defaults(schema)
    signature = _signature_defaults(component)
    intended = INTENDED_SCHEMA.get((group, option), {})
    name = component.__qualname__
    problems = []
    for key, value in fields.items():
        if key.startswith("_") or key in READ_BY_RUN.get((group, option), ()):
            continue
        if key not in signature:
            problems.append(f"`{group}.{key}` is not a keyword of {name}")
            continue
        default = signature[key]
        if not ours or default is inspect.Parameter.empty or value == MISSING:
            continue
        if (_plain(value) == _plain(default)) == (key in intended):
            problems.append(
                f"`{group}.{key}`: schema {value!r}, {name} {default!r}"
                + (" (listed in INTENDED_SCHEMA, but equal)" if key in intended else "")
            )
    unreachable = set(fields) | set(NOT_CONFIG.get((group, option), {}))
    for key, default in signature.items():
        if ours and default is not inspect.Parameter.empty and key not in unreachable:
            problems.append(f"{name}({key}={default!r}) has no field in the schema")
    return problems


def _flatten(node: Any, prefix: str) -> dict[str, Any]:
    if not isinstance(node, dict):
        return {prefix: node}
    out: dict[str, Any] = {}
    for k, v in node.items():
        out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def _schema_value(key: str, choices: dict[str, str]) -> Any:
    group, _, rest = key.partition(".")
    field = rest.split(".")[0]
    fields = _schema_defaults(SCHEMAS[group][choices[group]])
    return _flatten(fields.get(field), field).get(rest, MISSING)


def _default_choices() -> dict[str, str]:
    primary = yaml.safe_load((CONF / "config.yaml").read_text())["defaults"]
    return {k: v for d in primary if isinstance(d, dict) for k, v in d.items() if v is not None}


def _yaml_restatements(group: str, option: str) -> list[str]:
    """What the option's YAML sets besides pulling its schema, unless listed in INTENDED_YAML
    with a value the schema (or config.yaml's default option) does not already give."""
    path = CONF / group / f"{option}.yaml"
    text = path.read_text()
    body = yaml.safe_load(text) or {}
    defaults = body.pop("defaults", [])
    problems = []
    own = f"/schema/{group}/{option}@"
    if not any(isinstance(d, str) and d.startswith(own) for d in defaults):
        problems.append(f"{path.name} should pull its schema: `- {own}...` in its defaults list")
    values = _flatten(body, "" if "# @package _global_" in text else group)
    overrides = {
        k.removeprefix("override ").strip(): v
        for d in defaults
        if isinstance(d, dict)
        for k, v in d.items()
    }
    intended = INTENDED_YAML.get((group, option), {})
    choices = {**_default_choices(), group: option}
    for key in sorted((set(values) | set(overrides)) - set(intended)):
        problems.append(f"{path.name} sets `{key}`: its default lives in the schema")
    for key in sorted(set(intended) - set(values) - set(overrides)):
        problems.append(f"INTENDED_YAML lists `{key}`, which {path.name} no longer sets")
    for key, value in values.items():
        if key in intended and value == _schema_value(key, choices):
            problems.append(f"{path.name}: `{key} = {value}` restates the schema")
    for key, value in overrides.items():
        if key in intended and value == choices.get(key.lstrip("/")):
            problems.append(f"{path.name}: `{key}: {value}` restates config.yaml's default")
    return problems


# Schemas of a driver that many options share (each option's YAML names its weighting): they
# have no YAML of their own. The option is then the one place for what its YAML sets under
# DRIVER_KEYS; the arguments of an mtlrun weighting must equal that class's signature defaults
# (torchjd's weightings take LibMTL's published values over torchjd's own on purpose).
DRIVERS = {("balancer", "per_block"), ("balancer", "loss_based")}
DRIVER_KEYS = {"name", "paper", "weighting", "stat", "deviations", "block_deviation"}


def _driver_option(group: str, option: str) -> str | None:
    """The driver schema an option's YAML pulls, if any."""
    defaults = yaml.safe_load((CONF / group / f"{option}.yaml").read_text()).get("defaults", [])
    for g, driver in DRIVERS:
        if g == group and f"/schema/{group}/{driver}@_here_" in defaults:
            return driver
    return None


def _weighting_drift(group: str, option: str) -> list[str]:
    body = yaml.safe_load((CONF / group / f"{option}.yaml").read_text())
    problems = [f"{option}.yaml sets `{group}.{k}`: only {sorted(DRIVER_KEYS)} belong to a "
                "driver option" for k in body if k not in DRIVER_KEYS | {"defaults"}]  # fmt: skip
    node = dict(body.get("weighting") or {})
    target = node.pop("_target_", "")
    node.pop("_partial_", None)
    if target.startswith("mtlrun."):
        module, _, name = target.rpartition(".")
        signature = _signature_defaults(getattr(importlib.import_module(module), name))
        for key, value in node.items():
            if key not in signature:
                problems.append(f"`{group}.weighting.{key}` is not a keyword of {target}")
            elif _plain(signature[key]) != _plain(value):
                problems.append(f"`{group}.weighting.{key}`: {option}.yaml {value!r}, "
                                f"{target} {signature[key]!r}")  # fmt: skip
    return problems


CASES = sorted(
    {(g, o) for g, options in SCHEMAS.items() for o in options}
    | {(g, p.stem) for g in SCHEMAS for p in (CONF / g).glob("*.yaml")}
)


@pytest.mark.parametrize(("group", "option"), CASES, ids=[f"{g}={o}" for g, o in CASES])
def test_each_default_lives_in_one_place(group: str, option: str) -> None:
    """Schema ↔ component signature ↔ option YAML agree for every option of every group.

    experiment/ presets are not checked: they pin a paper's settings on purpose, so that a later
    change of a default leaves them as published.
    """
    if (group, option) in DRIVERS:
        problems = _signature_drift(group, option)
        assert not problems, f"{group}={option}: defaults in two places:\n" + "\n".join(problems)
        return
    if option not in SCHEMAS[group] and _driver_option(group, option):
        problems = _weighting_drift(group, option)
        assert not problems, f"{group}={option}: defaults in two places:\n" + "\n".join(problems)
        return
    assert option in SCHEMAS[group], f"conf/{group}/{option}.yaml has no schema in SCHEMAS"
    assert (CONF / group / f"{option}.yaml").is_file(), f"no conf/{group}/{option}.yaml"
    problems = _signature_drift(group, option) + _yaml_restatements(group, option)
    assert not problems, f"{group}={option}: defaults in two places:\n" + "\n".join(problems)
