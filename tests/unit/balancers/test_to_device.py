"""``to_device``: a balancer's own learned tensor and its Adam move together (GradNorm's weights,
uncertainty's log-variances, IMTL's scales, FAMO's logits), moments and settings kept."""

from __future__ import annotations

import torch

from mtlrun.balancers.base import to_device


def stepped() -> tuple[torch.Tensor, torch.optim.Adam]:
    p = torch.tensor([0.5, -1.0, 2.0], requires_grad=True)
    opt = torch.optim.Adam([p], lr=0.025, weight_decay=1e-3)
    for _ in range(3):
        opt.zero_grad()
        (p**2).sum().backward()
        opt.step()
    return p, opt


def test_values_moments_and_settings_move_to_the_device() -> None:
    p, opt = stepped()
    before = {k: v.clone() for k, v in opt.state[p].items()}
    moved, rebuilt = to_device(
        p, opt, torch.device("meta"), lambda q: torch.optim.Adam([q], lr=0.025, weight_decay=1e-3)
    )
    assert moved.device.type == "meta" and moved.requires_grad and moved.is_leaf
    assert rebuilt.param_groups[0]["params"][0] is moved
    assert (
        rebuilt.param_groups[0]["lr"] == 0.025 and rebuilt.param_groups[0]["weight_decay"] == 1e-3
    )
    state = rebuilt.state[moved]
    assert state["exp_avg"].device.type == "meta" and state["exp_avg_sq"].device.type == "meta"
    assert float(state["step"]) == float(before["step"]) == 3.0


def test_already_there_is_returned_unchanged() -> None:
    p, opt = stepped()
    same, same_opt = to_device(p, opt, torch.device("cpu"), lambda q: torch.optim.Adam([q]))
    assert same is p and same_opt is opt
