"""predict / export / reproduce on a run trained here on real MNIST, and each bad-input path."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from mlplab import predict as pr
from mlplab.errors import UserError
from mlplab.suite import parse_suite
from mlplab.sweep import run_suite


@pytest.fixture(scope="module")
def trained(tmp_path_factory, mnist):
    out = tmp_path_factory.mktemp("pred") / "out"
    suite = parse_suite({"seeds": 2, "defaults": {"train_size": 6000, "epochs": 3,
                                                  "architecture": "784-128-10",
                                                  "batch_norm": True, "bn_momentum": 0.9},
                         "experiment": [{"name": "bn"}, {"name": "bn-drop", "dropout": 0.2}]}, "p")
    rows = run_suite(suite, out, device="cpu")
    return out, rows


def mlplab(*args):
    return subprocess.run([sys.executable, "-m", "mlplab", *args], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "200"}, timeout=600)


def _png(path, arr):
    Image.fromarray(arr).save(path)
    return path


def test_predict_pngs_of_real_digits_any_polarity_and_size(trained, mnist, tmp_path):
    out, rows = trained
    folder = pr.find_run(rows[0]["run_id"], out)
    _, model = pr.load_model(folder)
    digits, labels = mnist.x_test[:40].numpy(), mnist.y_test[:40].numpy()
    direct = np.array([p[0][0] for p in pr.predict(model, digits)])
    assert (direct == labels).mean() > 0.85
    rng = np.random.default_rng(0)
    for variant in ("plain", "inverted", "large", "rgb-inverted-offcenter"):
        files = []
        for i, d in enumerate(digits.reshape(-1, 28, 28)):
            img = d
            if variant == "inverted":
                img = 255 - d
            elif variant == "large":  # 3x larger, on a bigger dark canvas
                big = np.kron(d, np.ones((3, 3), np.uint8))
                img = np.zeros((130, 110), np.uint8)
                img[20:104, 10:94] = big
            elif variant == "rgb-inverted-offcenter":
                canvas = np.full((60, 80), 250, np.uint8)
                y, x = rng.integers(0, 30), rng.integers(0, 50)
                canvas[y:y + 28, x:x + 28] = 255 - d
                img = np.stack([canvas] * 3, -1)
            files.append(str(_png(tmp_path / f"{variant}-{i}.png", img)))
        names, x = pr.load_inputs(files)
        assert x.shape == (40, 784) and x.dtype == np.uint8 and names[0].endswith(".png")
        pred = np.array([p[0][0] for p in pr.predict(model, x)])
        assert (pred == labels).mean() > 0.8, variant
        assert (pred == direct).mean() > 0.85, variant


def test_mnist_form_keeps_an_mnist_digit_nearly_unchanged(mnist):
    d = mnist.x_test[:20].numpy().astype(float)
    again = np.stack([pr.mnist_form(x.reshape(28, 28)) for x in mnist.x_test[:20].numpy()])
    cos = (d * again).sum(1) / (np.linalg.norm(d, axis=1) * np.linalg.norm(again, axis=1))
    assert cos.mean() > 0.9
    with pytest.raises(UserError, match="blank"):
        pr.mnist_form(np.full((28, 28), 255, np.uint8))


def test_npy_batches(trained, mnist, tmp_path):
    out, rows = trained
    _, model = pr.load_model(pr.find_run(rows[0]["run_id"], out))
    x = mnist.x_test[:16].numpy()
    np.save(tmp_path / "u8.npy", x.reshape(16, 28, 28))
    np.save(tmp_path / "f.npy", x.astype(np.float32) / 255)
    a = pr.predict(model, pr.load_inputs([str(tmp_path / "u8.npy")])[1])
    b = pr.predict(model, pr.load_inputs([str(tmp_path / "f.npy")])[1])
    assert [p[0][0] for p in a] == [p[0][0] for p in b]
    assert all(abs(sum(q for _, q in p) - 1) < 1e-4 or len(p) < 10 for p in a)
    np.save(tmp_path / "bad.npy", np.zeros(5))
    with pytest.raises(UserError, match=r"shape \[5\]; expected an image \[H, W\]"):
        pr.load_inputs([str(tmp_path / "bad.npy")])
    np.save(tmp_path / "blank.npy", np.zeros((3, 5)))  # one 3×5 image, nothing drawn
    with pytest.raises(UserError, match="blank.npy: the image is blank"):
        pr.load_inputs([str(tmp_path / "blank.npy")])
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(UserError, match="pickled"):
        pr.load_inputs([str(tmp_path / "obj.npy")])


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_matches_mlplab_on_real_test_images(trained, mnist, fmt):
    out, rows = trained
    folder = pr.find_run(rows[1]["run_id"], out)
    path = pr.export(folder, fmt)
    x = mnist.x_test[:256]
    _, model = pr.load_model(folder)
    from mlplab.evaluate import logits

    want = logits(model, x)[0].numpy()
    pixels = x.float().numpy() / 255
    if fmt == "onnx":
        ort = pytest.importorskip("onnxruntime")
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = sess.run(["logits"], {"pixels": pixels})[0]
    else:
        with pytest.warns(DeprecationWarning):  # torch.jit is marked legacy; it still works
            got = torch.jit.load(str(path))(torch.from_numpy(pixels)).detach().numpy()
    assert got.shape == (256, 10)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    assert (got.argmax(1) == want.argmax(1)).all()


def test_reproduce_is_identical_on_the_same_device(trained):
    out, rows = trained
    dropout_run = next(r for r in rows if r["experiment"] == "bn-drop")
    result = pr.reproduce(pr.find_run(dropout_run["run_id"], out), out, "cpu")
    assert result["how"] == "in its group of 4"  # all four share shapes: one group
    assert result["identical"] and result["within_tolerance"]
    assert all(v == 0 for v in result["diff"].values())


def test_bad_inputs_exit_2_with_one_line(trained, tmp_path, cli_here):
    out, rows = trained
    src = pr.find_run(rows[0]["run_id"], out)

    def run_copy(name):
        dst = tmp_path / name
        shutil.copytree(src, dst)
        return dst

    tampered = run_copy("tampered")
    raw = bytearray((tampered / "weights.safetensors").read_bytes())
    raw[8:40] = b"#" * 32  # break the header
    (tampered / "weights.safetensors").write_bytes(bytes(raw))
    truncated = run_copy("truncated")
    data = (truncated / "weights.safetensors").read_bytes()
    (truncated / "weights.safetensors").write_bytes(data[: len(data) // 2])
    mismatched = run_copy("mismatched")
    cfg = json.loads((mismatched / "config.json").read_text())
    cfg["architecture"] = "784-64-10"
    (mismatched / "config.json").write_text(json.dumps(cfg))
    garbage = tmp_path / "digit.png"
    garbage.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 50)
    good_png = _png(tmp_path / "ok.png", np.eye(28, dtype=np.uint8) * 255)
    cases = [
        (("predict", str(tampered), str(good_png)), "corrupt"),
        (("predict", str(truncated), str(good_png)), "corrupt"),
        (("predict", str(mismatched), str(good_png)), "does not match its config.json"),
        (("predict", str(src), str(garbage)), "cannot decode"),
        (("predict", "ffffffffffff", str(good_png), "--out", str(out)), "no finished run"),
        (("export", str(truncated), "--format", "onnx"), "corrupt"),
    ]
    for args, message in cases:
        proc = cli_here(*args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert message in proc.stderr and proc.stderr.strip().count("\n") == 0, proc.stderr
    ok = cli_here("predict", rows[0]["run_id"][:8], str(good_png), "--out", str(out), "--json")
    assert ok.returncode == 0, ok.stderr
    top = json.loads(ok.stdout)[0]["top"]
    assert len(top) == 3 and top[0]["p"] >= top[1]["p"] >= top[2]["p"]


def test_json_output_is_strict_json():
    from mlplab.predict import to_json

    def strict(text):
        return json.loads(text, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))

    text = to_json([{"input": "a.png", "top": [{"p": float("nan")}, {"p": 0.5}],
                     "x": (1.0, float("inf"))}])
    assert strict(text) == [{"input": "a.png", "top": [{"p": None}, {"p": 0.5}], "x": [1.0, None]}]


def test_one_pixel_convention_and_the_models_width(trained, mnist, tmp_path):
    x = mnist.x_test[:8].numpy()
    assert np.array_equal(pr.as_pixels(x.astype(np.int64)), x)  # any integer type 0-255
    assert np.array_equal(pr.as_pixels(x / 255.0), x)  # floats in [0, 1]: round(x * 255)
    for bad, message in ((x.astype(np.float32), r"float pixels must lie in \[0, 1\].*divide by 255"),
                         (np.full((2, 784), np.nan), "NaN"), (x.astype(np.int64) + 1, "0–255"),
                         (np.full((2, 784), "a"), "pixels are <U1"), (np.zeros((0, 784)), "N at least 1"),
                         (x[:, :400], r"shape \[8, 400\]; expected \[N, 784\] or \[N, 28, 28\]")):
        with pytest.raises(UserError, match=message):
            pr.as_pixels(bad)
    out, rows = trained
    _, model = pr.load_model(pr.find_run(rows[0]["run_id"], out))
    with pytest.raises(UserError, match="images of 240 pixels; this model takes 784"):
        pr.predict(model, np.zeros((1, 240), np.uint8))
    # a model of another width takes images of exactly its size, as they are (grayscale by luma)
    rgb = np.random.default_rng(0).integers(0, 256, (12, 20, 3), dtype=np.uint8)
    _png(tmp_path / "rgb.png", rgb)
    got = pr.read_image(tmp_path / "rgb.png", width=240)
    assert np.array_equal(got, np.asarray(Image.fromarray(rgb).convert("L")).reshape(240))
    with pytest.raises(UserError, match="the model takes images of 100 pixels"):
        pr.read_image(tmp_path / "rgb.png", width=100)
