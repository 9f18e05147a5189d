"""trainer.precision: bf16 autocast on the CPU, fp16 refused there, fp16's loss scaling (run on
the CPU with torch's CPU GradScaler, the same code path as on CUDA) and a real GPU check."""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from mtlrun.backbones.cnn_bilstm import CNNBiLSTM
from mtlrun.balancers.equal import Equal
from mtlrun.balancers.weighting import NonFiniteWeights
from mtlrun.config.validate import validate
from mtlrun.data.tagging import TaggingData, toy_data
from mtlrun.errors import ConfigError
from mtlrun.methods.hard import HardSharing
from mtlrun.run import build, run
from mtlrun.training import loop
from mtlrun.training.loop import BalancerDiverged, TrainSettings, fit, restore
from mtlrun.training.precision import MixedPrecision, check_precision
from tests.conftest import TINY_TEXT, TOY_SMALL

CPU = torch.device("cpu")
TINY = {"word_dim": 8, "char_dim": 4, "char_filters": 4, "hidden": 6}
QUIET = ["trainer.progress=false", "trainer.plots=false", "trainer.search_cache=null"]


@pytest.fixture(scope="module")
def data() -> TaggingData:
    return toy_data(n_train=24, n_valid=8, n_test=8)


def tagger(data: TaggingData, seed: int = 0, dropout: float = 0.5) -> torch.nn.Module:
    torch.manual_seed(seed)
    backbone = CNNBiLSTM(input_spec=data.input_spec, dropout=dropout, word_dropout=0.0, **TINY)
    return HardSharing().build(backbone, data.tasks)


def settings(**kwargs: object) -> TrainSettings:
    options: dict = {"max_epochs": 1, "batch_size": 8, "steps_per_epoch": 2, "progress": False}
    return TrainSettings(**{**options, **kwargs})


# ------------------------------------------------------------------ the key and the device


def test_fp16_on_the_cpu_is_refused_in_one_line() -> None:
    with pytest.raises(ConfigError) as e:
        check_precision("fp16", CPU)
    assert str(e.value) == (
        "`trainer.precision=fp16` needs a CUDA device; this run is on cpu. Use "
        "trainer.precision=bf16 (autocast on the CPU too) or fp32, or a GPU (trainer.device=cuda)."
    )
    check_precision("bf16", CPU)
    check_precision("fp32", CPU)
    check_precision("fp16", torch.device("cuda"))  # the check itself needs no GPU


def test_fp16_run_on_the_cpu_stops_before_training(compose_cfg, tmp_path: Path) -> None:
    cfg = compose_cfg([*TINY_TEXT, *TOY_SMALL, *QUIET, "trainer.precision=fp16"])
    with pytest.raises(ConfigError, match="`trainer.precision=fp16` needs a CUDA device"):
        run(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_an_unknown_precision_is_named_by_validate(compose_cfg) -> None:
    with pytest.raises(ConfigError) as e:
        validate(compose_cfg(["trainer.precision=fp8"]))
    assert (
        "`trainer.precision` should be one of fp32, bf16, fp16. Found `trainer.precision = fp8`."
        in (str(e.value))
    )


# ------------------------------------------------------------------ bf16 on the CPU


def test_bf16_trains_a_step_under_cpu_autocast(data: TaggingData, tmp_path: Path) -> None:
    """The step's matmuls run in bfloat16 (a hook on a head sees bf16 outputs); weights, their
    gradients and the optimiser stay float32; the step changes the weights; the losses are
    finite and near fp32's (the same weights and batches)."""
    dtypes: list[torch.dtype] = []
    results = {}
    for precision in ("fp32", "bf16"):
        model = tagger(data)
        before = copy.deepcopy(model.state_dict())
        head = next(m for m in model.modules() if isinstance(m, torch.nn.Linear))
        hook = head.register_forward_hook(lambda _m, _i, out: dtypes.append(out.dtype))
        optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
        balancer = Equal([t.name for t in data.tasks], kkt_every=0)
        state = fit(model, data, data.tasks, balancer, optimizer, settings(precision=precision), CPU, tmp_path / precision)  # fmt: skip
        hook.remove()
        assert all(p.dtype == torch.float32 for p in model.parameters())
        assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
        results[precision] = state.history[0]
    assert torch.bfloat16 in dtypes and torch.float32 in dtypes  # bf16 run, then fp32 run
    for task in ("pos", "chunk", "ner"):
        fp32, bf16 = results["fp32"][f"train/loss/{task}"], results["bf16"][f"train/loss/{task}"]
        assert math.isfinite(bf16) and bf16 == pytest.approx(fp32, rel=0.05)


def test_a_bf16_run_composes_and_finishes_on_the_cpu(compose_cfg, tmp_path: Path) -> None:
    base = [*TINY_TEXT, *TOY_SMALL, *QUIET, "trainer.max_epochs=2", "optim.lr=0.5"]
    fp32 = run(compose_cfg(base), tmp_path / "fp32")
    bf16 = run(compose_cfg([*base, "trainer.precision=bf16"]), tmp_path / "bf16")
    assert bf16["epochs"]["trained"] == 2
    for task, loss in bf16["loss"]["test"].items():
        assert math.isfinite(loss) and loss == pytest.approx(fp32["loss"]["test"][task], rel=0.1)


# ------------------------------------------------------------------ fp16's loss scaling


class Spy:
    """A balancer that records what it is given and can spoil or refuse a step."""

    uses_taps = False
    deviations = ()

    def __init__(self, inner: object, spoil: Callable[[torch.nn.Module], None] | None = None):
        self.inner, self.spoil = inner, spoil
        self.losses: list[dict[str, float]] = []
        self.grad_norms: list[float] = []

    def backward(self, losses: dict, model: torch.nn.Module) -> dict[str, float]:
        self.losses.append({t: float(v.detach()) for t, v in losses.items()})
        logs = self.inner.backward(losses, model)  # type: ignore[attr-defined]
        grads = [p.grad.norm() for p in model.parameters() if p.grad is not None]
        self.grad_norms.append(float(torch.stack(grads).norm()))
        if self.spoil is not None:
            self.spoil(model)
        return logs

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


def scaled_only(init_scale: float) -> MixedPrecision:
    """fp16's loss scaling without the fp16 autocast: the scaling's own effect, exactly."""
    amp = MixedPrecision("fp16", CPU, init_scale=init_scale)
    amp.dtype = None
    return amp


def one_epoch(data: TaggingData, balancer: object, amp: MixedPrecision | None, seed: int = 0):
    model = tagger(data, dropout=0.0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    torch.manual_seed(seed)
    loop.train_epoch(model, data, balancer, optimizer, settings(), 0, CPU, amp=amp)  # type: ignore[arg-type]
    return model


def test_the_loss_scale_enters_the_backward_pass_only(data: TaggingData) -> None:
    """The balancer reads the true loss values and gradients ``scale`` times larger; after the
    unscaling the update is fp32's, bit for bit (a power-of-two scale is exact)."""
    tasks = [t.name for t in data.tasks]
    plain, scaled = Spy(Equal(tasks, kkt_every=0)), Spy(Equal(tasks, kkt_every=0))
    a = one_epoch(data, plain, None)
    b = one_epoch(data, scaled, scaled_only(2.0**10))
    assert plain.losses == scaled.losses
    for g_plain, g_scaled in zip(plain.grad_norms, scaled.grad_norms, strict=True):
        assert g_scaled == pytest.approx(2.0**10 * g_plain, rel=1e-6)
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())


@pytest.mark.parametrize(
    ("balancer", "invariant"),
    [("equal", True), ("mgda", True), ("uncertainty", True), ("famo", True), ("nash_mtl", False)],
)
def test_which_balancers_make_fp32_updates_under_loss_scaling(
    compose_cfg, data: TaggingData, balancer: str, invariant: bool
) -> None:
    """docs/training.md: updates that scale with the gradients come out as in fp32; Nash-MTL's
    (α solves Gα = 1/α) does not, so bf16 is the precision for it."""
    node = compose_cfg([f"balancer={balancer}"]).balancer
    tasks = [t.name for t in data.tasks]
    a = one_epoch(data, build(node, tasks=tasks), None)
    b = one_epoch(data, build(node, tasks=tasks), scaled_only(2.0**12))
    close = all(
        torch.allclose(v, b.state_dict()[k], rtol=1e-4, atol=1e-6)
        for k, v in a.state_dict().items()
    )
    assert close == invariant


def test_an_overflowed_step_is_skipped_and_the_scale_backs_off(data: TaggingData) -> None:
    tasks = [t.name for t in data.tasks]

    def overflow(model: torch.nn.Module) -> None:
        next(p for p in model.parameters() if p.grad is not None).grad[0] = math.inf

    amp = scaled_only(2.0**10)
    untouched = tagger(data, dropout=0.0)
    model = one_epoch(data, Spy(Equal(tasks, kkt_every=0), spoil=overflow), amp)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in untouched.state_dict().items())
    assert amp.scaler is not None and amp.scaler.get_scale() == 2.0**8  # two steps, two halvings


class Refusing(Equal):
    """A min-norm balancer meeting inf in scaled gradients refuses the step (a ValueError)."""

    def backward(self, losses: dict, model: torch.nn.Module) -> dict[str, float]:
        raise NonFiniteWeights("balancer=refusing gave block 'x' the weights [nan, nan]")


def test_a_balancer_refusing_scaled_gradients_skips_the_step(data: TaggingData) -> None:
    tasks = [t.name for t in data.tasks]
    amp = scaled_only(2.0**10)
    untouched = tagger(data, dropout=0.0)
    model = one_epoch(data, Refusing(tasks, kkt_every=0), amp)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in untouched.state_dict().items())
    assert amp.scaler is not None and amp.scaler.get_scale() == 2.0**8
    # at a scale of 1 the gradients are not finite unscaled either: the run diverged
    with pytest.raises(BalancerDiverged, match="the weights \\[nan, nan\\]"):
        one_epoch(data, Refusing(tasks, kkt_every=0), scaled_only(1.0))


def test_fp16_uses_a_grad_scaler_on_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[tuple] = []

    class Recording:
        def __init__(self, device: str, init_scale: float) -> None:
            made.append((device, init_scale))

    monkeypatch.setattr(torch.amp, "GradScaler", Recording)
    cuda = torch.device("cuda")
    assert isinstance(MixedPrecision("fp16", cuda).scaler, Recording)
    assert made == [("cuda", 2.0**16)]
    assert MixedPrecision("fp16", cuda).dtype == torch.float16
    assert (
        MixedPrecision("bf16", cuda).scaler is None and MixedPrecision("fp32", cuda).scaler is None
    )
    assert MixedPrecision("bf16", cuda).dtype == torch.bfloat16


class ScaledOnly(MixedPrecision):
    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.dtype = None  # float16 kernels (oneDNN's LSTM) are missing on many CPUs


def test_fp16_fit_saves_and_restores_its_scaler(
    data: TaggingData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """fit() with fp16 (its CUDA code path, let run on the CPU, loss scaling only): the
    GradScaler steps the weights; its scale goes into last.pt and a resumed fit goes on with it."""
    monkeypatch.setattr(loop, "check_precision", lambda *_: None)
    monkeypatch.setattr(loop, "MixedPrecision", ScaledOnly)
    fp16 = settings(precision="fp16", max_epochs=2)
    model = tagger(data)
    before = copy.deepcopy(model.state_dict())
    balancer = Equal([t.name for t in data.tasks], kkt_every=0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    state = fit(model, data, data.tasks, balancer, optimizer, fp16, CPU, tmp_path)
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert state.scaler is not None and state.scaler["scale"] == 2.0**16
    payload = torch.load(tmp_path / "last.pt", weights_only=False)
    assert payload["fit"]["scaler"] == state.scaler
    payload["fit"]["scaler"]["scale"] = 2.0**5  # as if overflows had backed it off
    torch.save(payload, tmp_path / "last.pt")
    model = tagger(data, seed=1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    restored, _ = restore(tmp_path / "last.pt", model, optimizer, balancer)
    longer = dataclasses.replace(fp16, max_epochs=3)
    resumed = fit(model, data, data.tasks, balancer, optimizer, longer, CPU, tmp_path, restored)
    assert resumed.epoch == 3 and resumed.scaler is not None
    assert resumed.scaler["scale"] == 2.0**5


# ------------------------------------------------------------------ on a GPU


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_trains_on_cuda(compose_cfg, tmp_path: Path, precision: str) -> None:
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bfloat16")
    base = [*TINY_TEXT, *TOY_SMALL, *QUIET, "trainer.device=cuda", "trainer.max_epochs=2"]
    fp32 = run(compose_cfg(base), tmp_path / "fp32")
    metrics = run(compose_cfg([*base, f"trainer.precision={precision}"]), tmp_path / precision)
    assert metrics["run"]["device"].startswith("cuda") and metrics["epochs"]["trained"] == 2
    for task, loss in metrics["loss"]["test"].items():
        assert math.isfinite(loss) and loss == pytest.approx(fp32["loss"]["test"][task], rel=0.1)
    if precision == "fp16":
        from mtlrun.training import checkpoint

        saved = checkpoint.load(tmp_path / "fp16" / "checkpoints" / "last.pt")
        assert saved["fit"]["scaler"]["scale"] > 0
