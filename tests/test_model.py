"""Oracle tests of the stacked MLP against torch.nn, member by member."""

import math

import pytest
import torch

from mlplab.config import RunConfig
from mlplab.model import ACTIVATIONS, StackedMLP, init_member
from mlplab.summary import param_counts


def cfgs_for(**kw):
    base = dict(architecture="784-16-12-10", seed=0)
    base.update(kw)
    # BN momentum/epsilon are shared by a group (group key); the rest differs per member
    return [RunConfig(**{**base, "seed": s, "bn_momentum": 0.8, "bn_epsilon": 1e-2, "init": i})
            for s, i in ((0, "he_normal"), (1, "glorot_uniform"), (2, "lecun_normal"))]


def test_keras_parameter_counts():
    assert param_counts(RunConfig(architecture="784-512-256-10", batch_norm=True)) == (
        538_890, 537_354, 1_536)
    assert param_counts(RunConfig(architecture="784-1024-512-256-128-64-10", batch_norm=True,
                                  dropout=0.5)) == (1_509_706, 1_505_738, 3_968)
    assert param_counts(RunConfig(architecture="784-512-256-10")) == (535_818, 535_818, 0)


@pytest.mark.parametrize("activation", ["relu", "sigmoid", "tanh", "gelu", "selu"])
@pytest.mark.parametrize("bn", [None, "before", "after"])
def test_forward_and_gradients_match_torch_nn(activation, bn):
    torch.manual_seed(0)
    kw = dict(activation=activation, batch_norm=bn is not None, bn_position=bn or "after")
    cfgs = cfgs_for(**kw)
    stacked = StackedMLP(cfgs).double()  # float64 on both sides: differences are real, not rounding
    # perturb BN affine params so they are not the identity
    with torch.no_grad():
        for name, p in stacked.named_parameters():
            if name.startswith(("gamma", "beta", "b")):
                p.add_(torch.randn_like(p) * 0.1)
    refs = [stacked.member(k).double() for k in range(3)]
    x = torch.randn(3, 32, 784, dtype=torch.float64)
    for mode in ("train", "eval"):
        stacked.train(mode == "train")
        for r in refs:
            r.train(mode == "train")
        out = stacked(x)
        (out ** 2).sum().backward()
        for k, ref in enumerate(refs):
            ref_out = ref(x[k])
            torch.testing.assert_close(out[k], ref_out, rtol=1e-9, atol=1e-9)
            (ref_out ** 2).sum().backward()
            linears = [m for m in ref if isinstance(m, torch.nn.Linear)]
            for i, lin in enumerate(linears):
                torch.testing.assert_close(stacked.get_parameter(f"w{i}").grad[k], lin.weight.grad.T,
                                           rtol=1e-9, atol=1e-9)
                torch.testing.assert_close(stacked.get_parameter(f"b{i}").grad[k, 0], lin.bias.grad,
                                           rtol=1e-9, atol=1e-9)
            bns = [m for m in ref if isinstance(m, torch.nn.BatchNorm1d)]
            for i, b in enumerate(bns):
                torch.testing.assert_close(stacked.get_parameter(f"gamma{i}").grad[k, 0],
                                           b.weight.grad, rtol=1e-9, atol=1e-9)
                # running statistics follow torch's update (Keras momentum m = 1 - torch momentum)
                torch.testing.assert_close(stacked.get_buffer(f"mean{i}")[k, 0], b.running_mean)
                torch.testing.assert_close(stacked.get_buffer(f"var{i}")[k, 0], b.running_var)
        stacked.zero_grad()
        for r in refs:
            r.zero_grad()


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
@pytest.mark.parametrize("bn", [None, "before", "after"])
@pytest.mark.parametrize("dropout", [(0.0, 0.0, 0.0), (0.3, 0.3, 0.3), (0.0, 0.3, 0.5)])
def test_explicit_backward_matches_autograd(activation, bn, dropout):
    """Training runs forward(x, tape) + backward(...) without autograd: every gradient must be
    autograd's (float64, same dropout masks from the same generator state)."""
    cfgs = [c.model_copy(update={"dropout": p})
            for c, p in zip(cfgs_for(activation=activation, batch_norm=bn is not None,
                                     bn_position=bn or "after"), dropout, strict=True)]
    model = StackedMLP(cfgs).double().train()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith(("gamma", "beta", "b")):
                p.add_(torch.randn_like(p) * 0.1)
    x = torch.randn(3, 32, 784, dtype=torch.float64)
    g = torch.randn(3, 32, 10, dtype=torch.float64)
    grads = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    torch.manual_seed(1)
    with torch.no_grad():
        tape: list = []
        z = model(x, tape)
        model.backward(tape, g, grads)
    torch.manual_seed(1)
    z_ref = model(x)
    (z_ref * g).sum().backward()
    torch.testing.assert_close(z, z_ref, rtol=0, atol=0)
    for name, p in model.named_parameters():
        torch.testing.assert_close(grads[name], p.grad, rtol=1e-10, atol=1e-12, msg=name)


def test_dropout_is_independent_per_member_and_has_the_right_rate():
    cfgs = [RunConfig(architecture="784-784-10", dropout=p, seed=s)
            for s, p in ((0, 0.0), (1, 0.5), (2, 0.2))]
    m = StackedMLP(cfgs)
    with torch.no_grad():
        m.w0.copy_(torch.eye(784).expand(3, -1, -1))
    x = torch.ones(3, 128, 784)
    torch.manual_seed(0)
    # capture the hidden activations after dropout through a hook on the last matmul input
    seen = {}
    orig = torch.baddbmm

    def spy(b, h, w):
        if w.shape[-1] == 10:
            seen["h"] = h.detach().clone()
        return orig(b, h, w)

    torch.baddbmm = spy
    try:
        m.train()
        m(x)
    finally:
        torch.baddbmm = orig
    h = seen["h"]
    assert torch.equal(h[0], torch.ones_like(h[0]))  # rate 0: exactly the identity
    zero_frac = [(h[k] == 0).float().mean().item() for k in (1, 2)]
    assert abs(zero_frac[0] - 0.5) < 0.01 and abs(zero_frac[1] - 0.2) < 0.01
    assert torch.allclose(h[1][h[1] != 0], torch.tensor(2.0))  # inverted dropout scaling
    m.eval()
    assert torch.equal(m(x), m(x))  # no dropout at evaluation


@pytest.mark.parametrize("name, fan_std", [
    ("he_normal", lambda fi, fo: math.sqrt(2 / fi)),
    ("glorot_normal", lambda fi, fo: math.sqrt(2 / (fi + fo))),
    ("lecun_normal", lambda fi, fo: math.sqrt(1 / fi)),
    ("he_uniform", lambda fi, fo: math.sqrt(2 / fi)),
    ("glorot_uniform", lambda fi, fo: math.sqrt(2 / (fi + fo))),
    ("random_normal", lambda fi, fo: 0.039),
])
def test_initializers_have_keras_statistics(name, fan_std):
    cfg = RunConfig(architecture="784-512-10", init=name, init_stddev=0.039)
    w = init_member(cfg)["w0"]
    assert w.shape == (784, 512)
    assert abs(w.std().item() / fan_std(784, 512) - 1) < 0.02
    assert abs(w.mean().item()) < 0.002
    assert torch.count_nonzero(init_member(cfg)["b0"]) == 0


def test_initial_weights_depend_only_on_the_member_seed():
    a = RunConfig(architecture="30-20-10", seed=7)
    group = StackedMLP([RunConfig(architecture="30-20-10", seed=1), a])
    solo = StackedMLP([a])
    for name, p in solo.named_parameters():
        assert torch.equal(p[0], group.get_parameter(name)[1])
    assert not torch.equal(group.w0[0], group.w0[1])


def test_member_state_roundtrip():
    m = StackedMLP(cfgs_for(batch_norm=True))
    state = m.member_state(2)
    assert set(state) >= {"w0", "b0", "gamma0", "beta0", "mean0", "var0"}
    # same config, another seed: other weights until loaded
    other = StackedMLP([cfgs_for(batch_norm=True)[2].model_copy(update={"seed": 99})])
    x = torch.randn(1, 8, 784)
    m.eval()
    other.eval()
    assert not torch.allclose(other(x)[0], m(x.expand(3, -1, -1))[2])
    other.load_member_state(0, state)
    torch.testing.assert_close(other(x)[0], m(x.expand(3, -1, -1))[2])


def test_output_layer_follows_its_own_initializer():
    """The notebook's model: RandomNormal(0.039 / 0.55) hidden layers and a softmax output layer
    with Keras' default glorot_uniform. A wide last hidden layer gives 40,960 output weights."""
    cfg = RunConfig(architecture="784-64-4096-10", init="random_normal", init_stddev=[0.039, 0.55])
    state = init_member(cfg)
    assert abs(state["w0"].std().item() / 0.039 - 1) < 0.02
    assert abs(state["w1"].std().item() / 0.55 - 1) < 0.02
    w = state["w2"].flatten()
    limit = math.sqrt(6 / (4096 + 10))  # glorot_uniform: U(-limit, limit)
    assert w.abs().max().item() <= limit and w.abs().max().item() > 0.999 * limit
    assert abs(w.std().item() / (limit / math.sqrt(3)) - 1) < 0.02
    # uniform, not normal: each quarter of [-limit, limit] holds a quarter of the weights
    counts = torch.histc(w, bins=4, min=-limit, max=limit) / w.numel()
    assert torch.allclose(counts, torch.full((4,), 0.25), atol=0.01)
    # a scaled output initializer reads init_stddev's entry for the last layer
    cfg = cfg.model_copy(update={"output_init": "random_normal", "init_stddev": [0.039, 0.55, 0.1]})
    state = init_member(cfg)
    assert abs(state["w2"].std().item() / 0.1 - 1) < 0.02
    assert abs(state["w1"].std().item() / 0.55 - 1) < 0.02


def test_seed_suite_output_layer_is_the_notebooks():
    from mlplab.suite import load_suite

    for cfg in load_suite("seed").runs():
        inits = cfg.layer_inits()
        assert inits[0] == ("random_normal", 0.039)
        assert all(i == ("random_normal", 0.55) for i in inits[1:-1])
        assert inits[-1] == ("glorot_uniform", None)
