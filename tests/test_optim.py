"""Each stacked optimizer against torch.optim, member by member, with different
hyperparameters per member."""

import pytest
import torch

from mlplab.config import RunConfig
from mlplab.optim import make_optimizer

HP = [
    dict(lr=0.1, weight_decay=0.0, momentum=0.9, beta1=0.9, beta2=0.999, eps=1e-8, rho=0.9),
    dict(lr=0.01, weight_decay=0.05, momentum=0.5, beta1=0.8, beta2=0.99, eps=1e-6, rho=0.99),
    dict(lr=0.003, weight_decay=0.3, momentum=0.0, beta1=0.5, beta2=0.9, eps=1e-3, rho=0.5),
]

REF = {
    "sgd": lambda p, h: torch.optim.SGD(p, lr=h["lr"], weight_decay=h["weight_decay"]),
    "momentum": lambda p, h: torch.optim.SGD(p, lr=h["lr"], momentum=h["momentum"],
                                             weight_decay=h["weight_decay"]),
    "nesterov": lambda p, h: torch.optim.SGD(p, lr=h["lr"], momentum=h["momentum"],
                                             nesterov=True, weight_decay=h["weight_decay"]),
    "adam": lambda p, h: torch.optim.Adam(p, lr=h["lr"], betas=(h["beta1"], h["beta2"]),
                                          eps=h["eps"], weight_decay=h["weight_decay"]),
    "adamw": lambda p, h: torch.optim.AdamW(p, lr=h["lr"], betas=(h["beta1"], h["beta2"]),
                                            eps=h["eps"], weight_decay=h["weight_decay"]),
    "rmsprop": lambda p, h: torch.optim.RMSprop(p, lr=h["lr"], alpha=h["rho"], eps=h["eps"],
                                                weight_decay=h["weight_decay"]),
}


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("name", sorted(REF))
def test_stacked_optimizer_matches_torch_optim(name, fused, monkeypatch):
    from mlplab.optim import OPTIMIZERS

    if fused and not OPTIMIZERS[name].fused:
        pytest.skip("no fused kernel for this optimizer")
    monkeypatch.setattr(OPTIMIZERS[name], "fused", fused)  # both paths follow torch.optim
    # nesterov needs momentum > 0 in torch: give that member 0.1 instead of 0
    hps = [dict(h, momentum=h["momentum"] or 0.1) for h in HP] if name == "nesterov" else HP
    # members 0 and 1 share settings (one fused bucket), member 2 differs (a second one)
    hps = [hps[0], hps[0], hps[2]] if fused else hps
    cfgs = [RunConfig(optimizer=name, **h) for h in hps]
    gen = torch.Generator().manual_seed(0)
    shapes = [(3, 7, 5), (3, 1, 5)]
    stacked = [torch.randn(s, generator=gen) for s in shapes]
    opt = make_optimizer(stacked, cfgs)
    refs = [[p[k].clone().requires_grad_() for p in stacked] for k in range(3)]
    ref_opts = [REF[name](refs[k], hps[k]) for k in range(3)]
    for _ in range(6):
        grads = [torch.randn(s, generator=gen) for s in shapes]
        opt.step(grads)
        for k in range(3):
            for p, g in zip(refs[k], grads, strict=True):
                p.grad = g[k].clone()
            ref_opts[k].step()
    for k in range(3):
        for p, r in zip(stacked, refs[k], strict=True):
            torch.testing.assert_close(p[k], r.detach(), rtol=1e-5, atol=1e-6)


def test_optimizer_state_lives_on_the_params_device_and_counts_steps():
    p = [torch.zeros(2, 3, 3)]
    opt = make_optimizer(p, [RunConfig(), RunConfig(lr=0.5)])
    opt.step([torch.ones(2, 3, 3)])
    assert opt.t.item() == 1 and opt.hp["lr"].shape == (2, 1, 1)
    assert all(t.device == p[0].device for t in opt.state_tensors())


def test_a_changed_private_kernel_falls_back_to_the_public_formula(monkeypatch, mnist_slice):
    """A private kernel whose signature moved is probed, refused, and the public formula trains
    to the same numbers (to float rounding) as the fused kernel."""
    from mlplab import kernels
    from mlplab.train import train_group

    cfgs = [RunConfig(architecture="784-32-10", batch_norm=True, epochs=2, batch_size=100, seed=s)
            for s in range(2)]
    fused = train_group(cfgs, mnist_slice)
    monkeypatch.setattr(kernels, "_probed", {})
    monkeypatch.setattr(torch, "_fused_adam_", lambda *a, renamed_arg=None: None)  # a new signature
    monkeypatch.setattr(torch.ops.aten, "native_batch_norm_backward", None)  # a removed op
    assert kernels.private("fused_adam") is None and kernels.private("batch_norm_backward") is None
    public = train_group(cfgs, mnist_slice)
    for a, b in zip(fused, public, strict=True):
        for ha, hb in zip(a.history, b.history, strict=True):
            assert ha["val_loss"] == pytest.approx(hb["val_loss"], rel=1e-4)
            assert ha["train_loss"] == pytest.approx(hb["train_loss"], rel=1e-4)
