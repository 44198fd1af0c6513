"""One preprocessing for every input to predict: a file, a PIL image, a (read-only) array and a
list of them give the same answer; MNIST rows are kept as they are; the opt-out; bad inputs."""

import json
import warnings

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

import mlplab
from mlplab import predict as pr
from mlplab.errors import UserError
from mlplab.evaluate import logits
from mlplab.suite import parse_suite
from mlplab.sweep import run_suite


@pytest.fixture(scope="module")
def run(tmp_path_factory, mnist):
    out = tmp_path_factory.mktemp("inputs") / "out"
    suite = parse_suite({"seeds": 1, "defaults": {"train_size": 4000, "epochs": 2,
                                                  "architecture": "784-64-10"},
                         "experiment": [{"name": "tiny"}]}, "inp")
    run_suite(suite, out, device="cpu")
    return mlplab.load(out).best()


def seven(mode="RGB"):
    """A thick 7, dark on white (or on transparent), off-centre on a 200×160 canvas."""
    im = Image.new(mode, (200, 160), (255, 255, 255, 0) if mode == "RGBA" else "white")
    d = ImageDraw.Draw(im)
    ink = (20, 20, 20, 255) if mode == "RGBA" else (20, 20, 20)
    d.line([(20, 15), (80, 15), (45, 115)], fill=ink, width=12)
    return im


def no_warnings(fn, *args, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return fn(*args, **kw)


def test_file_pil_array_and_list_give_the_same_answer(run, tmp_path):
    png = tmp_path / "seven.png"
    seven().save(png)
    pil = Image.open(png)
    arr = np.asarray(pil)
    assert arr.shape == (160, 200, 3) and not arr.flags.writeable
    want = no_warnings(run.predict_proba, png)
    assert want.shape == (1, 10)
    forms = {"str": str(png), "pil": pil, "read-only array": arr, "floats": arr / 255.0,
             "tensor": torch.from_numpy(arr.copy()), "gray array": np.asarray(pil.convert("L")),
             "transparent RGBA": np.asarray(seven("RGBA")), "one-item list": [arr]}
    for name, images in forms.items():
        got = no_warnings(run.predict_proba, images)
        assert np.array_equal(got, want), name
    mixed = [png, pil, arr, str(png)]
    assert np.array_equal(pr.prepare(mixed)[1], np.repeat(pr.prepare(png)[1], 4, 0))
    # the same pixels; a batch of 4 may differ from a batch of 1 in the last float bit
    np.testing.assert_allclose(no_warnings(run.predict_proba, mixed), np.repeat(want, 4, 0),
                               rtol=0, atol=1e-6)
    # a 28×28 array made by hand from the same drawing (dark on white) is brought to MNIST form
    small = np.asarray(pil.convert("L").resize((28, 28), Image.Resampling.LANCZOS))
    assert no_warnings(run.predict, small)[0] == want.argmax()
    assert no_warnings(run.predict, png)[0] == 7


def test_mnist_rows_are_kept_and_predicted_as_before(run, mnist):
    x = mnist.x_test[:500].numpy()
    x.flags.writeable = False
    names, got = no_warnings(pr.prepare, x)
    assert np.array_equal(got, x) and got.flags.writeable and len(names) == 500
    assert np.array_equal(pr.prepare(x.reshape(-1, 28, 28) / 255.0)[1], x)
    direct = torch.softmax(logits(run._stacked(), torch.from_numpy(x.copy()))[0], -1).numpy()
    assert np.array_equal(no_warnings(run.predict_proba, x), direct)
    three = torch.softmax(logits(run._stacked(), torch.from_numpy(x[:3].copy()))[0], -1).numpy()
    assert np.array_equal(run.predict_proba(list(x[:3].reshape(3, 28, 28))), three)
    assert np.array_equal(run.predict_proba(x, preprocess=False), direct)
    assert (direct.argmax(1) == mnist.y_test[:500].numpy()).mean() > 0.8
    forced = pr.prepare(x[:50], preprocess=True)[1]  # re-made, not the same pixels
    assert not np.array_equal(forced, x[:50])
    assert (run.predict(forced) == direct[:50].argmax(1)).mean() > 0.8


def test_the_opt_out_and_the_default_rule(run, mnist, tmp_path, cli_here):
    png = tmp_path / "seven.png"
    seven().save(png)
    with pytest.raises(UserError, match=r"200×160 pixels; the model takes images of 784 pixels; "
                                        r"leave preprocessing on"):
        run.predict_proba(png, preprocess=False)
    # light on dark, exactly 28×28: MNIST-form data by the default rule, kept as it is
    off = np.zeros((28, 28), np.uint8)
    off[2:16, 3:10] = mnist.x_test[0].numpy().reshape(28, 28)[6:20, 10:17]
    assert np.array_equal(pr.prepare(off)[1][0], off.reshape(784))
    assert np.array_equal(pr.prepare(off, preprocess=True)[1][0], pr.mnist_form(off))
    # dark on light, 28×28: brought to MNIST form unless told not to
    inv = 255 - mnist.x_test[:1].numpy().reshape(1, 28, 28)
    assert np.array_equal(pr.prepare(inv)[1][0], pr.mnist_form(inv[0]))
    assert np.array_equal(pr.prepare(inv, preprocess=False)[1], inv.reshape(1, 784))
    # the CLI: --no-preprocess takes a 28×28 PNG as it is, refuses another size in one line
    Image.fromarray(inv[0]).save(tmp_path / "inv.png")

    def cli(*args):
        return cli_here("predict", run.folder, *args, "--json", "--top", "10")

    probs = {}
    for flag in ("--preprocess", "--no-preprocess"):
        proc = cli(str(tmp_path / "inv.png"), flag)
        assert proc.returncode == 0, proc.stderr
        probs[flag] = {t["index"]: t["p"] for t in json.loads(proc.stdout)[0]["top"]}
    want = {f: run.predict_proba(inv, preprocess=f == "--preprocess")[0] for f in probs}
    for flag, p in probs.items():
        assert np.allclose([p[i] for i in range(10)], want[flag], atol=1e-6), flag
    bad = cli(str(png), "--no-preprocess")
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0
    assert "leave preprocessing on" in bad.stderr


def test_other_widths_keep_their_size():
    rgb = np.random.default_rng(0).integers(0, 256, (12, 20, 3), dtype=np.uint8)
    luma = np.asarray(Image.fromarray(rgb).convert("L")).reshape(240)
    assert np.array_equal(pr.prepare(rgb, width=240)[1][0], luma)
    assert np.array_equal(pr.prepare(rgb[None], width=240)[1][0], luma)
    with pytest.raises(UserError, match="this model takes 240 pixels"):
        pr.prepare(rgb, width=240, preprocess=True)
    with pytest.raises(UserError, match="the model takes images of 100 pixels"):
        pr.prepare(rgb, width=100)


@pytest.mark.parametrize("images, message", [
    ([], "empty list"),
    (np.zeros((0, 28, 28), np.uint8), "no images"),
    (np.zeros((2, 2, 3, 5, 6)), r"shape \[2, 2, 3, 5, 6\]; expected an image"),
    (np.zeros(100), r"shape \[100\]"),
    (np.full((28, 28), 200.0), r"float pixels must lie in \[0, 1\].*divide by 255"),
    (np.full((28, 28), np.nan), "NaN"),
    (np.full((28, 28), "a"), "pixels are <U1"),
    (np.full((40, 40), 255, np.uint8), "blank"),
    (Image.new("F", (30, 30)), "image mode F"),
])
def test_bad_inputs_are_one_line(images, message):
    with pytest.raises(UserError, match=message) as e:
        pr.prepare(images)
    assert "\n" not in str(e.value)


def test_preprocess_must_be_a_choice():
    with pytest.raises(UserError, match="preprocess='yes'; expected True, False or None"):
        pr.prepare(np.zeros((28, 28), np.uint8), preprocess="yes")
