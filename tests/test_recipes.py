"""Training recipes (schedules, label smoothing, max-norm, standardisation) and on-device
augmentation, on real MNIST digits."""

import math

import pytest
import torch

from mlplab.augment import augment
from mlplab.config import RunConfig
from mlplab.model import StackedMLP
from mlplab.optim import lr_scale
from mlplab.train import train_group


def small(**kw):
    base = dict(architecture="784-64-10", batch_size=64, epochs=2)
    return RunConfig(**{**base, **kw})


def _com(x):
    imgs = x.reshape(-1, 28, 28)
    ys, xs = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    m = imgs.sum((1, 2))
    return (imgs * ys).sum((1, 2)) / m, (imgs * xs).sum((1, 2)) / m


def test_zero_augmentation_is_the_identity(mnist):
    x = mnist.x_test[:64].float() / 255
    torch.testing.assert_close(augment(x, RunConfig().augmentation), x, rtol=0, atol=1e-5)


def test_shift_statistics_and_mass(mnist):
    torch.manual_seed(0)
    x = mnist.x_test[:2000].float() / 255
    y = augment(x, RunConfig(aug_shift=3.0).augmentation)
    (cy0, cx0), (cy1, cx1) = _com(x), _com(y)
    dx, dy = cx1 - cx0, cy1 - cy0
    # uniform in [-3, 3] pixels per axis: mean 0, std 3 / sqrt(3)
    for d in (dx, dy):
        assert abs(d.mean().item()) < 0.1
        assert d.std().item() == pytest.approx(math.sqrt(3), rel=0.06)
        assert d.abs().max().item() <= 3.05
    assert (y.sum(1) / x.sum(1)).mean().item() == pytest.approx(1.0, abs=0.01)  # mass kept


def test_rotation_scale_shear_and_elastic_change_images_but_keep_digits(mnist):
    torch.manual_seed(1)
    x = mnist.x_test[:500].float() / 255
    for cfg in (RunConfig(aug_rotate=15), RunConfig(aug_scale=0.15), RunConfig(aug_shear=15),
                RunConfig(aug_elastic_alpha=34, aug_elastic_sigma=4)):
        y = augment(x, cfg.augmentation)
        assert y.shape == x.shape and 0 <= y.min() and y.max() <= 1.0001
        cos = (x * y).sum(1) / (x.norm(dim=1) * y.norm(dim=1))
        assert 0.5 < cos.mean().item() < 0.995  # changed, still the same digit
        cy, cx = _com(y)
        assert abs(cy.mean().item() - 14) < 0.5 and abs(cx.mean().item() - 14) < 0.5


def test_training_with_augmentation_keeps_labels_and_learns(mnist_slice):
    (r,) = train_group([small(aug_shift=2, aug_rotate=10, epochs=3)], mnist_slice)
    assert r.status == "finished" and r.history[-1]["val_acc"] > 0.7  # labels still match


def test_schedules():
    c = RunConfig(lr_schedule="cosine", epochs=10, warmup_epochs=2, lr_min_factor=0.1)
    scales = [lr_scale(c, e) for e in range(10)]
    assert scales[:2] == [1 / 3, 2 / 3] and scales[2] == 1.0
    assert all(a > b for a, b in zip(scales[2:], scales[3:], strict=False))
    assert scales[-1] > 0.1
    s = RunConfig(lr_schedule="step", lr_step_epochs=3, lr_gamma=0.5, epochs=9)
    assert [lr_scale(s, e) for e in range(9)] == [1, 1, 1, .5, .5, .5, .25, .25, .25]
    o = RunConfig(lr_schedule="onecycle", epochs=10)
    ones = [lr_scale(o, e) for e in range(10)]
    assert ones[0] == pytest.approx(0.1) and max(ones) == 1.0 and ones[-1] < 0.1


def test_history_follows_the_schedule_per_member(mnist_slice):
    a, b = train_group([small(lr_schedule="step", lr_step_epochs=1, lr_gamma=0.5, epochs=3, lr=0.01),
                        small(seed=1, epochs=3, lr=0.002)], mnist_slice)
    assert [h["lr"] for h in a.history] == pytest.approx([0.01, 0.005, 0.0025])
    assert [h["lr"] for h in b.history] == pytest.approx([0.002] * 3)


def test_max_norm_caps_every_unit(mnist_slice):
    capped, free = train_group([small(max_norm=0.3, lr=0.01), small(seed=1, lr=0.01)], mnist_slice)
    for name, w in capped.state.items():
        if name.startswith("w"):
            assert w.norm(dim=0).max().item() <= 0.3 + 1e-5
    assert free.state["w0"].norm(dim=0).max().item() > 0.3


def test_standardize_and_label_smoothing(mnist_slice):
    (r,) = train_group([small(input_norm="standardize", label_smoothing=0.1)], mnist_slice)
    assert r.history[-1]["val_acc"] > 0.8
    assert r.state["in_mean"].item() == pytest.approx(0.13, abs=0.01)
    assert r.state["in_std"].item() == pytest.approx(0.31, abs=0.01)
    m = StackedMLP([r.cfg])
    m.load_member_state(0, r.state)
    m.eval()
    x = mnist_slice.x_test[:32].float() / 255
    torch.testing.assert_close(m.member(0).eval()(x), m(x[None])[0])  # export keeps the norm


def test_report_shows_augmented_digits(tmp_path, mnist):
    from mlplab import report
    from mlplab.suite import parse_suite
    from mlplab.sweep import run_suite

    suite = parse_suite({"defaults": {"train_size": 1000, "epochs": 1, "architecture": "784-32-10"},
                         "experiment": [{"name": "plain"},
                                        {"name": "aug", "aug_shift": 2, "aug_elastic_alpha": 30}]},
                        "a")
    run_suite(suite, tmp_path, device="cpu")
    html = report.write_report(tmp_path)["html"].read_text()
    assert "Augmentation: what the network saw" in html
    assert len(list(tmp_path.glob("runs/*/augmented.safetensors"))) == 1
