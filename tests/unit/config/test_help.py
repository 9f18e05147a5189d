"""``mtlrun --help`` lists the config groups a user composes from, and nothing internal."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

CONF = Path(__file__).resolve().parents[3] / "conf"


def _groups_on_disk() -> dict[str, list[str]]:
    """Every folder of options under conf/ (the Hydra config root) and its YAML files; hydra/
    holds settings of Hydra's own groups (``mtlrun --hydra-help`` lists those)."""
    return {
        d.name: sorted(p.stem for p in d.glob("*.yaml"))
        for d in sorted(CONF.iterdir())
        if d.is_dir() and d.name != "hydra" and any(d.glob("*.yaml"))
    }


def _listed_groups(help_text: str) -> dict[str, list[str]]:
    section = help_text.split("== Configuration groups ==", 1)[1].split("== Config ==", 1)[0]
    listed = {}
    for line in section.splitlines():
        group, sep, options = line.partition(": ")
        if sep and " " not in group:
            listed[group] = [o.strip() for o in options.split(",")]
    return listed


def test_help_lists_every_group_and_option_but_no_schema(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "mtlrun", "--help"],
        cwd=tmp_path,
        env={**os.environ, "HYDRA_FULL_ERROR": "0"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "schema/" not in out.stdout
    assert "config_schema" not in out.stdout
    on_disk = _groups_on_disk()
    assert set(on_disk) >= {"data", "backbone", "method", "balancer", "optim", "trainer"}
    assert "experiment" in on_disk
    listed = _listed_groups(out.stdout)
    assert {g: sorted(o) for g, o in listed.items()} == on_disk
    assert "mtlrun: multi-task learning experiments" in out.stdout  # the header is kept
    assert "_target_: mtlrun.data.tagging.toy_data" in out.stdout  # and the composed config
