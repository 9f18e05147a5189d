"""Every run that every scripts/reproduce_*.sh starts, full or REDUCED=1, is a config mtlrun
accepts: it composes, validates and asks for no setting its method would ignore (a stand-in
mtlrun records the arguments of each run; ``--cfg`` queries go to the real one)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mtlrun.config.source import compose_config
from mtlrun.config.validate import validate
from mtlrun.run import refuse_ignored_settings

SCRIPTS = Path(__file__).resolve().parents[3] / "scripts"

FAKE = """#!/usr/bin/env bash
# Stand-in for mtlrun: a --cfg query is answered by the real one; a run records its arguments.
for a in "$@"; do
  if [ "$a" = "--cfg" ]; then exec "$PYTHON" -m mtlrun "$@"; fi
done
printf '%s\\0' "$@" > "$(mktemp "$CALLS/call.XXXXXX")"
"""


def recorded_runs(tmp_path: Path, script: Path, reduced: bool) -> list[list[str]]:
    calls = tmp_path / "calls"
    calls.mkdir()
    fake = tmp_path / "fake_mtlrun"
    fake.write_text(FAKE)
    fake.chmod(0o755)
    env = {
        **os.environ,
        "MTLRUN": str(fake),
        "REPORT": "true",
        "PYTHON": sys.executable,
        "CALLS": str(calls),
        "OUT": str(tmp_path / "out"),
        "MTLRUN_DATA": str(tmp_path / "no_data"),  # mnist3 scripts add their KMNIST fallback
        "REDUCED": "1" if reduced else "0",
    }
    done = subprocess.run(
        ["bash", str(script)], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    runs = [f.read_text().split("\0")[:-1] for f in sorted(calls.iterdir())]
    assert runs, f"{script.name} started no run"
    return runs


@pytest.mark.parametrize("reduced", [False, True], ids=["full", "reduced"])
@pytest.mark.parametrize(
    "script",
    sorted(SCRIPTS.glob("reproduce_*.sh")),
    ids=lambda p: p.stem.removeprefix("reproduce_"),
)
def test_every_run_of_a_reproduce_script_is_accepted(
    tmp_path: Path, script: Path, reduced: bool
) -> None:
    has_reduced_mode = "_reproduce_common.sh" in script.read_text()  # ste_fit is toy-sized
    for args in recorded_runs(tmp_path, script, reduced):
        overrides = [a for a in args if not a.startswith("hydra.")]
        cfg = compose_config(overrides)
        validate(cfg)
        refuse_ignored_settings(cfg, overrides)
        if reduced and has_reduced_mode:
            assert cfg.notes == "reduced", args
