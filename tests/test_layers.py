"""One oracle test over the registry of layers: for every registered kind, forward and the
explicit backward equal autograd in float64, the exported torch.nn modules equal the stacked
member, and selecting members keeps their state. A kind added to LAYERS is covered here without
a new test. Plus the new architecture options end to end: norm, norm_position, residual."""

import pytest
import torch
from procs import heavy_after
from torch import nn

from mlplab import kernels
from mlplab.config import RunConfig
from mlplab.group import GroupSettings
from mlplab.layers import LAYERS
from mlplab.layers.base import walk_back
from mlplab.model import StackedMLP
from mlplab.summary import param_counts, summary_rows

W = 6  # every example layer maps [K, B, 6] -> [K, B, 6]


def _cfgs(**kw):
    # members differ in seed, initializer and dropout rate; they share the group settings
    return [RunConfig(architecture=f"{W}-{W}-{W}-{W}", bn_momentum=0.8, bn_epsilon=1e-2, seed=s,
                      init=i, dropout=p, **kw)
            for s, i, p in ((0, "he_normal", 0.0), (1, "glorot_uniform", 0.3), (2, "lecun_normal", 0.5))]


def _make(kind, cfgs, stacked=None):
    """A layer of `kind` (its registry example) for these members, float64, with its own
    tensors drawn per member, or `stacked` ones (per leaf in order: attribute -> [K, ...])."""
    cls = LAYERS[kind]
    layer = cls(cls.example(W), GroupSettings.of(cfgs[0]), cfgs, torch.device("cpu"))
    for i, leaf in enumerate(layer.leaves()):
        if stacked is None:
            gens = [torch.Generator().manual_seed(100 + c.seed) for c in cfgs]
            members = [leaf.init_member(c, g) for c, g in zip(cfgs, gens, strict=True)]
            tensors = {a: torch.stack([m[a] for m in members]) for a in members[0]} if members[0] else {}
        else:
            tensors = stacked[i]
        leaf.adopt(tensors)
    layer.double()
    return layer


def _tensors(layer):
    return [(leaf, a) for leaf in layer.leaves() for a in (*leaf.params, *leaf.state)]


@pytest.mark.parametrize("kind", sorted(LAYERS))
@pytest.mark.parametrize("private", [True, False], ids=["private-kernels", "public-ops"])
def test_every_layer_matches_autograd_exports_and_selects(kind, private):
    torch.manual_seed(0)
    cfgs = _cfgs()
    layer = _make(kind, cfgs).train()
    with torch.no_grad():  # no identity gammas or zero biases: every term of the backward counts
        for leaf, a in _tensors(layer):
            t = getattr(leaf, a)
            t.add_(torch.randn_like(t) * 0.1) if a not in ("var", "in_std") else t.uniform_(0.5, 2)
    x = torch.randn(3, 8, W, dtype=torch.float64)
    g = torch.randn(3, 8, W, dtype=torch.float64)
    params = [(leaf.stored(a), getattr(leaf, a)) for leaf in layer.leaves() for a in leaf.params]
    grads = {n: torch.zeros_like(p) for n, p in params}
    finished: list = []
    with kernels.use_private(private):
        torch.manual_seed(1)  # the same dropout masks on both sides
        with torch.no_grad():
            tape: list = []
            y = layer(x, tape)
            gx = walk_back(tape, g, grads, finished.append)
        torch.manual_seed(1)
        xr = x.clone().requires_grad_(True)
        yr = layer(xr)
        (yr * g).sum().backward()
    torch.testing.assert_close(y, yr, rtol=0, atol=0)
    if gx is not None:  # None: a layer whose input is data by definition (standardize)
        torch.testing.assert_close(gx, xr.grad, rtol=1e-10, atol=1e-12)
    for name, p in params:
        torch.testing.assert_close(grads[name], p.grad, rtol=1e-10, atol=1e-12, msg=name)
    assert sorted(n for names in finished for n in names) == sorted(n for n, _ in params)

    # export: member k as plain torch.nn equals the stacked member (eval mode: deterministic)
    layer.eval()
    with torch.no_grad():
        y = layer(x)
        for k in range(3):
            ref = nn.Sequential(*layer.export(k)).double().eval()
            torch.testing.assert_close(ref(x[k]), y[k], rtol=1e-12, atol=1e-12)

    # selecting members 2 and 0 keeps their state: the same outputs as before
    idx = torch.tensor([2, 0])
    stacked = [{a: getattr(leaf, a).detach().index_select(0, idx) for a in (*leaf.params, *leaf.state)}
               for leaf in layer.leaves()]
    picked = _make(kind, [cfgs[2], cfgs[0]], stacked)
    for leaf, tensors in zip(picked.leaves(), stacked, strict=True):
        for a, t in tensors.items():
            assert torch.equal(getattr(leaf, a), t.double())
    with torch.no_grad():
        torch.testing.assert_close(picked.eval()(x[[2, 0]]), y[[2, 0]], rtol=1e-12, atol=1e-12)


def test_the_registry_examples_cover_every_kind():
    for kind, cls in LAYERS.items():
        assert cls.kind == kind and cls.example(W).kind == kind


@pytest.mark.parametrize("norm", ["none", "batch", "layer"])
@pytest.mark.parametrize("position", ["before", "after"])
@pytest.mark.parametrize("residual", [False, True])
def test_architecture_options_match_their_exported_torch_nn_model(norm, position, residual):
    """The whole stacked model for every norm, position and skip: forward (train and eval) and the
    explicit backward equal the exported torch.nn members' autograd, member by member."""
    cfgs = [RunConfig(architecture="784-16-16-16-10", norm=norm, norm_position=position,
                      residual=residual, seed=s, bn_epsilon=1e-2) for s in range(3)]
    model = StackedMLP(cfgs).double().train()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not name.startswith("w"):
                p.add_(torch.randn_like(p) * 0.1)
    refs = [model.member(k).double().train() for k in range(3)]
    assert sum(isinstance(m, nn.Module) and type(m).__name__ == "ResidualBlock"
               for m in refs[0]) == (2 if residual else 0)
    x = torch.randn(3, 32, 784, dtype=torch.float64)
    g = torch.randn(3, 32, 10, dtype=torch.float64)
    grads = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    with torch.no_grad():
        tape: list = []
        z = model(x, tape)
        model.backward(tape, g, grads)
    for k, ref in enumerate(refs):
        zr = ref(x[k])
        torch.testing.assert_close(z[k], zr, rtol=1e-9, atol=1e-9)
        (zr * g[k]).sum().backward()
        lin = [m for m in ref.modules() if isinstance(m, nn.Linear)]
        for i, m in enumerate(lin):
            torch.testing.assert_close(grads[f"w{i}"][k], m.weight.grad.T, rtol=1e-9, atol=1e-9)
    model.eval()
    with torch.no_grad():
        for k, ref in enumerate(refs):
            torch.testing.assert_close(model(x)[k], ref.eval()(x[k]), rtol=1e-9, atol=1e-9)


def test_keras_style_counts_for_the_new_options():
    ln = RunConfig(architecture="784-512-512-512-512-10", norm="layer")
    bn = RunConfig(architecture="784-512-512-512-512-10", norm="batch")
    plain = RunConfig(architecture="784-512-512-512-512-10")
    # Keras: Dense in*out+out; LayerNormalization 2H (trainable); BatchNormalization 4H (2H not)
    dense = 784 * 512 + 512 + 3 * (512 * 512 + 512) + 512 * 10 + 10
    assert param_counts(plain) == (dense, dense, 0)
    assert param_counts(ln) == (dense + 4 * 1024, dense + 4 * 1024, 0)
    assert param_counts(bn) == (dense + 4 * 2048, dense + 4 * 1024, 4 * 1024)
    res = RunConfig(architecture="784-512-512-512-512-10", norm="layer", residual=True)
    assert param_counts(res) == param_counts(ln)  # a skip has no parameters
    names = [r[0] for r in summary_rows(res)]
    assert names.count("add (Add: skip)") + sum(n.startswith("add_") for n in names) == 3
    assert "layer_normalization_3 (LayerNormalization)" in names
    # synonyms: the old keys mean the same and keep their run ids
    assert RunConfig(batch_norm=True).run_id == RunConfig(norm="batch").run_id
    assert RunConfig(bn_position="before", batch_norm=True).run_id == \
        RunConfig(norm="batch", norm_position="before").run_id
    assert RunConfig(norm="none").run_id == RunConfig().run_id
    assert RunConfig(norm="layer").run_id != RunConfig().run_id


@pytest.mark.parametrize("bad, what", [
    (dict(batch_norm=True, norm="layer"), "contradicts norm"),
    (dict(norm="group"), "norm"),
    (dict(residual=True, architecture="784-512-256-10"), "residual = true needs a hidden layer"),
    (dict(residual="yes"), "residual"),
    (dict(bn_position="before", norm_position="after"), "contradicts norm_position"),
])
def test_bad_architecture_options_name_the_field(bad, what):
    from mlplab.config import validate_run
    from mlplab.errors import UserError

    with pytest.raises(UserError, match=what):
        validate_run(bad, "experiment 'x'")


def test_config_validation_never_imports_torch():
    code = ("import mlplab\n"
            "s = mlplab.Suite(name='x', seeds=2, experiments=[{'name': 'a', 'architecture': "
            "'512-512', 'norm': 'layer', 'residual': True}], grid={'lr': [0.1, 0.01]})\n"
            "assert len(s.cells()) == 4 and s.runs()[0].run_id\n")
    assert "torch" not in heavy_after(code), "torch was imported"


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_a_residual_layer_norm_member_exports(tmp_path, fmt, mnist_slice):
    """member(k) of the new options (with input standardisation first) as TorchScript and ONNX
    gives the stacked model's logits on real digits."""
    from mlplab.evaluate import as_input
    from mlplab.predict import EXPORTERS
    from mlplab.train import train_group

    cfg = RunConfig(architecture="784-64-64-10", norm="layer", norm_position="before", residual=True,
                    input_norm="standardize", dropout=0.2, epochs=1, batch_size=100)
    res = train_group([cfg], mnist_slice)[0]
    model = StackedMLP([cfg])
    model.load_member_state(0, res.state)
    model.eval()
    x = as_input(mnist_slice.x_test[:64])
    with torch.no_grad():
        want = model(x.unsqueeze(0))[0]
    path = tmp_path / f"m.{EXPORTERS[fmt][0]}"
    EXPORTERS[fmt][1](model.member(0).eval(), 784, path)
    if fmt == "torchscript":
        got = torch.jit.load(str(path))(x)
    else:
        ort = pytest.importorskip("onnxruntime")
        got = torch.from_numpy(ort.InferenceSession(str(path)).run(None, {"pixels": x.numpy()})[0])
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
