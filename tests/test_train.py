"""The fused group engine on real MNIST images: the fusion contract, early stopping,
divergence."""

import math

import pytest
import torch
import torch.nn.functional as F

from mlplab.config import RunConfig
from mlplab.errors import UserError
from mlplab.train import loss_and_grad, resolve_device, train_group


def small(**kw):
    base = dict(architecture="784-64-32-10", batch_norm=True, batch_size=64, epochs=2,
                validation="split")
    return RunConfig(**{**base, **kw})


def test_fusion_contract_group_equals_solo(mnist_slice):
    members = [small(seed=0), small(seed=1, lr=3e-3, weight_decay=1e-4),
               small(seed=2, init="glorot_uniform")]
    noisy = small(seed=3, dropout=0.5)  # a dropout member in the group must not disturb the rest
    group = train_group(members + [noisy], mnist_slice)
    assert [r.status for r in group] == ["finished"] * 4
    for cfg, fused in zip(members, group, strict=False):
        (solo,) = train_group([cfg], mnist_slice)
        assert len(solo.history) == len(fused.history) == 2
        for a, b in zip(solo.history, fused.history, strict=True):
            for key in ("train_loss", "train_acc", "val_loss", "val_acc"):
                assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-4), key
        # Whole tensors agree to float rounding (Adam can amplify rounding on a few weights whose
        # gradient is ~0, so the check is on the relative norm of the difference, not max error).
        for name, t in solo.state.items():
            rel = ((fused.state[name] - t).norm() / t.norm().clamp(min=1e-12)).item()
            assert rel < 5e-3, (name, rel)  # measured: ~1e-3 after 64 Adam steps
    # members really differ from each other, and learned something
    assert group[0].history[-1]["val_acc"] != group[1].history[-1]["val_acc"]
    assert all(r.history[-1]["val_acc"] > 0.7 for r in group[:3])  # chance is 0.1
    assert group[3].history[-1]["val_acc"] > 0.5


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_loss_and_its_gradient_match_cross_entropy(smoothing):
    z = torch.randn(3, 17, 10, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 10, (3, 17))
    loss, grad = loss_and_grad(z.detach(), y, smoothing)
    ref = torch.stack([F.cross_entropy(z[k], y[k], label_smoothing=smoothing) for k in range(3)])
    ref.sum().backward()
    torch.testing.assert_close(loss, ref.detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad, z.grad, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "nesterov"])
def test_step_equals_autograd_then_one_optimizer_step(optimizer, mnist_slice):
    """The step updates each layer during the backward pass; three such steps must equal
    autograd's gradients followed by one optimizer step each (same dropout masks), element by
    element. Optimizers linear in the gradient show a parameter updated too early without
    amplifying rounding: with Adam or RMSprop, a bias feeding BatchNorm whose gradient is
    mathematically zero (pure rounding noise) gets a visible step of either sign. Their own
    parity with torch.optim is tested in test_optim.py."""
    from mlplab.model import StackedMLP
    from mlplab.optim import make_optimizer
    from mlplab.train import Step

    cfgs = [small(seed=s, optimizer=optimizer, dropout=p, lr=0.05)
            for s, p in ((0, 0.0), (1, 0.3), (2, 0.5))]
    ours, ref = StackedMLP(cfgs).train(), StackedMLP(cfgs).train()
    step = Step(ours, make_optimizer(list(ours.parameters()), cfgs), mnist_slice.x_train,
                mnist_slice.y_train, cfgs)
    ref_opt = make_optimizer(list(ref.parameters()), cfgs)
    for s in range(3):
        idx = torch.arange(s * 64, (s + 1) * 64).expand(3, -1)
        torch.manual_seed(s)
        step(idx)
        torch.manual_seed(s)
        z = ref(mnist_slice.x_train[idx].float() / 255)
        loss = sum(F.cross_entropy(z[k], mnist_slice.y_train[idx][k]) for k in range(3))
        ref_opt.step(list(torch.autograd.grad(loss, list(ref.parameters()))))
    for (name, p), q in zip(ours.named_parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)
    for name, buf in ours.named_buffers():
        torch.testing.assert_close(buf, ref.get_buffer(name), msg=name)


def test_stopped_members_leave_the_group_and_the_rest_train_on_unchanged(mnist_slice):
    events: list = []
    short = [small(seed=s, epochs=1) for s in (7, 8)]
    long = [small(seed=0, epochs=3), small(seed=1, epochs=3, lr=3e-3)]
    group = train_group(short + long, mnist_slice, progress=events.append)
    # after epoch 1 half of the group has stopped: the last two epochs compute two members
    # (a slow epoch also emits batch events: only epoch events count here)
    assert [e["computing"] for e in events if e["event"] == "epoch"] == [4, 2, 2]
    assert [r.epochs_run for r in group] == [1, 1, 3, 3]
    for cfg, fused in zip(long, group[2:], strict=True):  # the fusion contract still holds
        (solo,) = train_group([cfg], mnist_slice)
        for a, b in zip(solo.history, fused.history, strict=True):
            for key in ("train_loss", "train_acc", "val_loss", "val_acc"):
                assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-4), key
        for name, t in solo.state.items():
            assert ((fused.state[name] - t).norm() / t.norm().clamp(min=1e-12)).item() < 5e-3, name


def test_data_order_comes_from_the_seed(mnist_slice):
    a, b = train_group([small(seed=5, epochs=1), small(seed=5, epochs=1, lr=1e-3)], mnist_slice)
    # Identical members agree to float rounding, not always to the bit: torch's fused CPU Adam
    # runs 16 floats per vector and the rest in a scalar tail, so member 1's biases (elements
    # 10-19 of a [2, 1, 10] tensor) straddle the two paths, which round differently.
    assert a.history[0]["train_loss"] == pytest.approx(b.history[0]["train_loss"], rel=1e-6)
    (c,) = train_group([small(seed=6, epochs=1)], mnist_slice)
    assert abs(c.history[0]["train_loss"] - a.history[0]["train_loss"]) > 1e-3


def test_early_stopping_restores_the_best_epoch(mnist_slice):
    # lr high enough that validation loss soon gets worse; patience 1 stops right after
    cfg = small(seed=0, epochs=30, patience=1, lr=0.05, batch_norm=False)
    long_run = small(seed=1, epochs=3, batch_norm=False)
    stopper, other = train_group([cfg, long_run], mnist_slice)
    assert stopper.status == "finished" and other.status == "finished"
    assert stopper.epochs_run < 30 and other.epochs_run == 3
    best = min(stopper.history, key=lambda r: r["val_loss"])
    assert stopper.best_epoch == best["epoch"] == stopper.epochs_run - 1
    # the kept weights are the best epoch's: re-evaluating them gives the best val loss
    from mlplab.evaluate import logits, loss_acc
    from mlplab.model import StackedMLP

    m = StackedMLP([cfg])
    m.load_member_state(0, stopper.state)
    val_loss, _ = loss_acc(logits(m, mnist_slice.x_val), mnist_slice.y_val)
    assert val_loss.item() == pytest.approx(best["val_loss"], rel=1e-5)


def test_divergence_is_flagged_per_member(mnist_slice):
    bad = small(seed=0, optimizer="sgd", lr=1e6, batch_norm=False, epochs=3)
    good = small(seed=1, optimizer="sgd", lr=0.05, batch_norm=False, epochs=3)
    r_bad, r_good = train_group([bad, good], mnist_slice)
    assert r_bad.status == "diverged" and r_bad.epochs_run == 1
    assert not math.isfinite(r_bad.history[-1]["train_loss"])
    assert r_good.status == "finished" and r_good.epochs_run == 3
    assert r_good.history[-1]["val_acc"] > 0.7  # a NaN neighbour does not disturb it


def test_mixed_shapes_are_refused_and_devices_resolve(mnist_slice):
    with pytest.raises(ValueError, match="group_key"):
        train_group([small(), small(architecture="784-65-10")], mnist_slice)
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in ("cpu", "cuda")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="no CUDA device"):
            resolve_device("cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_graph_step_matches_eager(mnist_slice):
    cfgs = [small(seed=0), small(seed=1, lr=3e-3)]
    graphed = train_group(cfgs, mnist_slice, "cuda", graphs=True, tf32=False)
    eager = train_group(cfgs, mnist_slice, "cuda", graphs=False, tf32=False)
    for g, e in zip(graphed, eager, strict=True):
        for a, b in zip(g.history, e.history, strict=True):
            assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
            assert a["val_acc"] == pytest.approx(b["val_acc"], abs=2e-3)


def _native(monkeypatch, native: bool) -> None:
    """Fake the bf16 capability probe (the real one reads CPU flags)."""
    import mlplab.bf16

    monkeypatch.setattr(mlplab.bf16, "native_bf16", lambda device_type: native)


def test_bf16_trains_in_bf16_where_it_is_native(mnist_slice, monkeypatch):
    _native(monkeypatch, True)
    events: list = []
    (r,) = train_group([small(seed=0, precision="bf16")], mnist_slice, progress=events.append)
    (f,) = train_group([small(seed=0)], mnist_slice)
    assert not [e for e in events if e["event"] == "log"]  # nothing to say
    assert r.status == "finished" and r.history[-1]["val_acc"] > 0.7
    assert all(t.dtype == torch.float32 for t in r.state.values())  # master weights stay fp32
    # same trajectory up to bf16 rounding, not the identical one
    assert r.history[-1]["train_loss"] != f.history[-1]["train_loss"]
    assert abs(r.history[-1]["val_acc"] - f.history[-1]["val_acc"]) < 0.05
    from mlplab.work import final_metrics

    (m,), _ = final_metrics([r], mnist_slice, 10, torch.device("cpu"))
    assert m["precision_used"] == "bf16"


def test_bf16_falls_back_to_fp32_with_one_line_where_it_is_not_native(mnist_slice, monkeypatch):
    _native(monkeypatch, False)
    events: list = []
    (r,) = train_group([small(seed=0, precision="bf16")], mnist_slice, progress=events.append)
    (f,) = train_group([small(seed=0)], mnist_slice)
    logs = [e["message"] for e in events if e["event"] == "log"]
    assert len(logs) == 1 and logs[0].startswith("precision bf16: this CPU") and "fp32" in logs[0]
    assert r.history == [{**h, "seconds": r.history[i]["seconds"]} for i, h in enumerate(f.history)]
    for name, t in f.state.items():  # exactly the fp32 run: no bf16 product anywhere
        assert torch.equal(r.state[name], t), name
    from mlplab.work import final_metrics

    (m,), _ = final_metrics([r], mnist_slice, 10, torch.device("cpu"))
    assert m["precision_used"] == "fp32"  # recorded with the run: asked bf16, computed fp32


def test_the_bf16_probe_reads_capability_flags(monkeypatch):
    import mlplab.bf16 as bf16

    monkeypatch.setattr(bf16.torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    for flags, native in (({"avx2", "fma"}, False), ({"avx512f", "avx512_bf16"}, True),
                          ({"amx_bf16", "amx_tile"}, True), ({"asimd", "bf16"}, True)):
        monkeypatch.setattr(bf16, "cpu_flags", lambda f=flags: f)
        assert bf16._cpu_has_bf16() is native, flags
    assert isinstance(bf16.native_bf16("cpu"), bool)  # the real probe, cached per process


def test_a_failing_graph_capture_falls_back_to_the_eager_step(mnist_slice, monkeypatch):
    """The capture path (GraphStep) run where it must fail: on CPU, and on CUDA by a forced
    error; the group trains eagerly from the state it had, with one line saying so."""
    import mlplab.train as train_mod

    cfgs = [small(seed=0), small(seed=1, dropout=0.2)]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        monkeypatch.setattr(train_mod.torch.cuda, "CUDAGraph", lambda: (_ for _ in ()).throw(
            RuntimeError("forced capture failure")))
    events = []
    fallback = train_group(cfgs, mnist_slice, device, graphs=True, progress=events.append)
    eager = train_group(cfgs, mnist_slice, device, graphs=False)
    logs = [e["message"] for e in events if e["event"] == "log"]
    assert len(logs) == 1 and "CUDA graph capture failed" in logs[0] and "trains eagerly" in logs[0]
    for f, e in zip(fallback, eager, strict=True):
        assert [h["train_loss"] for h in f.history] == [h["train_loss"] for h in e.history]
        for name, t in e.state.items():
            assert torch.equal(f.state[name], t), name


def test_dropout_seed_is_the_same_in_every_process():
    import os
    import subprocess
    import sys

    from mlplab.fused import dropout_seed

    code = "from mlplab.fused import dropout_seed; print(dropout_seed([0, 1, 2]), dropout_seed([7]))"
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           env={"PYTHONHASHSEED": str(h), "PATH": "/usr/bin",  # and this mlplab
                                **{k: v for k, v in os.environ.items() if k == "PYTHONPATH"}}).stdout
            for h in (1, 2)}
    assert outs == {f"{dropout_seed([0, 1, 2])} {dropout_seed([7])}\n"}
