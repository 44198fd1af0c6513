"""Every layout, built here from the same slice of real MNIST, loads to byte-identical uint8
arrays (and the same labels), so the same suite trains to the same numbers on any of them."""

import gzip
import io
import json

import numpy as np
import pytest
from PIL import Image

from mlplab import config, data, datacache, datasets, readers, tables
from mlplab.errors import UserError
from mlplab.idx import idx_bytes

N_TRAIN, N_TEST = 400, 150


@pytest.fixture(scope="module")
def arrays(mnist):
    """(x_train, y_train, x_test, y_test): uint8 [N, 784] / int64 slices of real MNIST."""
    return (mnist.x_train[:N_TRAIN].numpy(), mnist.y_train[:N_TRAIN].numpy(),
            mnist.x_test[:N_TEST].numpy(), mnist.y_test[:N_TEST].numpy())


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """A parse cache of this test's own (the registered MNIST files stay in the shared one)."""
    monkeypatch.setattr(datacache, "folder", lambda: tmp_path / "parsed")


def same(ds, arrays, order=None):
    xtr, ytr, xte, yte = arrays
    assert ds.x_train.dtype == data.torch.uint8 and ds.shape == (28, 28)
    assert np.array_equal(ds.x_train.numpy(), xtr) and np.array_equal(ds.y_train.numpy(), ytr)
    assert np.array_equal(ds.x_test.numpy(), xte) and np.array_equal(ds.y_test.numpy(), yte)


def write_csv(path, x, y=None, header="pixel0", gz=False):
    cols = {"pixel0": [f"pixel{i}" for i in range(784)], "pixel1": [f"pixel{i + 1}" for i in range(784)],
            "grid": [f"{r}x{c}" for r in range(1, 29) for c in range(1, 29)], None: None}[header]
    body = x if y is None else np.concatenate([y[:, None], x], 1)
    text = "" if cols is None else ",".join((["label"] if y is not None else []) + cols) + "\n"
    text += "\n".join(",".join(map(str, row)) for row in body.tolist()) + "\n"
    path.write_bytes(gzip.compress(text.encode(), 1) if gz else text.encode())
    return path


@pytest.mark.parametrize("header, gz", [("pixel0", False), ("pixel1", True), ("grid", False),
                                        (None, True)])
def test_csv_train_and_test_files(tmp_path, arrays, header, gz):
    xtr, ytr, xte, yte = arrays
    suffix = ".csv.gz" if gz else ".csv"
    write_csv(tmp_path / f"train{suffix}", xtr, ytr, header, gz)
    write_csv(tmp_path / f"test{suffix}", xte, yte, header, gz)
    ds = data.load(str(tmp_path))
    assert ds.layout == "csv" and ds.notes == ()
    same(ds, arrays)


def test_csv_columns_in_any_order_and_floats_in_0_1(tmp_path, arrays):
    xtr, ytr, _, _ = arrays
    rng = np.random.default_rng(0)
    perm = rng.permutation(784)
    names = ["label"] + [f"{r + 1}x{c + 1}" for r, c in zip(*np.divmod(perm, 28), strict=True)]
    rows = np.concatenate([ytr[:, None], xtr[:, perm]], 1)
    text = ",".join(names) + "\n" + "\n".join(",".join(map(str, r)) for r in rows.tolist())
    (tmp_path / "shuffled.csv").write_text(text)
    part = tables.read_csv(tmp_path / "shuffled.csv")
    assert np.array_equal(part.x, xtr) and np.array_equal(part.y, ytr)
    floats = "label," + ",".join(f"pixel{i}" for i in range(784)) + "\n" + "\n".join(
        f"{y}," + ",".join(f"{v / 255:.6f}" for v in x) for x, y in zip(xtr[:50], ytr[:50], strict=True))
    (tmp_path / "floats.csv").write_text(floats)
    assert np.array_equal(tables.read_csv(tmp_path / "floats.csv").x, xtr[:50])  # round(x*255)


def test_kaggle_train_csv_alone_holds_out_a_stratified_test_split(tmp_path, arrays):
    xtr, ytr, xte, yte = arrays
    x, y = np.concatenate([xtr, xte]), np.concatenate([ytr, yte])
    path = write_csv(tmp_path / "train.csv", x, y)
    write_csv(tmp_path / "test.csv", xte)  # Kaggle's: no label column
    logs = []
    ds = data.load(str(tmp_path), log=logs.append)
    n = len(y)
    assert len(ds.x_test) == pytest.approx(n / 7, abs=10) and len(ds.x_train) + len(ds.x_test) == n
    assert any("test.csv has no labels" in line for line in logs)
    assert any(f"held out {len(ds.x_test):,} of {n:,}" in line for line in logs)
    counts, held = np.bincount(y, minlength=10), np.bincount(ds.y_test.numpy(), minlength=10)
    assert np.abs(held - counts / 7).max() <= 1  # stratified: each class's seventh
    # the two parts are the data, each in its original order, the same every time
    tr, te = data.hold_out(y)
    assert np.array_equal(ds.x_train.numpy(), x[tr]) and np.array_equal(ds.x_test.numpy(), x[te])
    assert np.array_equal(data.load(str(path)).y_test.numpy(), y[te])


def test_parquet_with_png_bytes_and_hugging_face_class_names(tmp_path, arrays):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    meta = {"info": {"features": {"image": {"_type": "Image"},
                                  "label": {"names": names, "_type": "ClassLabel"}}}}
    (tmp_path / "mnist").mkdir()
    for split, x, y in (("train", arrays[0], arrays[1]), ("test", arrays[2], arrays[3])):
        pngs = []
        for img in x.reshape(-1, 28, 28):
            buf = io.BytesIO()
            Image.fromarray(img).save(buf, format="PNG")
            pngs.append({"bytes": buf.getvalue(), "path": None})
        table = pa.table({"image": pngs, "label": y}).replace_schema_metadata(
            {"huggingface": json.dumps(meta)})
        pq.write_table(table, tmp_path / "mnist" / f"{split}-00000-of-00001.parquet")
    ds = data.load(str(tmp_path))
    assert ds.layout == "parquet" and ds.classes == tuple(names)
    same(ds, arrays)


def test_image_folders_one_rgb_with_class_names(tmp_path, arrays):
    xtr, ytr, xte, yte = arrays
    names = [f"digit-{i}" for i in range(10)]
    for split, x, y in (("train", xtr, ytr), ("test", xte, yte)):
        for i, (img, label) in enumerate(zip(x.reshape(-1, 28, 28), y, strict=True)):
            folder = tmp_path / split / names[label]
            folder.mkdir(parents=True, exist_ok=True)
            im = Image.fromarray(img)
            (im.convert("RGB") if i == 3 else im).save(folder / f"{i:05d}.png")  # one RGB
    ds = data.load(f"imagefolder:{tmp_path}")
    assert ds.layout == "imagefolder" and ds.classes == tuple(names)
    same(ds, arrays)
    assert data.load(str(tmp_path)).layout == "imagefolder"  # detected too


def test_kmnist_npz_pairs_and_keras_npz(tmp_path, arrays):
    for part, arr in zip(("train-imgs", "train-labels", "test-imgs", "test-labels"), arrays, strict=True):
        stored = arr.reshape(-1, 28, 28) if arr.ndim == 2 else arr
        np.savez_compressed(tmp_path / f"kmnist-{part}.npz", stored)
    same(data.load(str(tmp_path / "kmnist")), arrays)  # a prefix picks the set
    keras = tmp_path / "keras.npz"
    np.savez(keras, x_train=arrays[0].reshape(-1, 28, 28), y_train=arrays[1], x_test=arrays[2],
             y_test=arrays[3].reshape(-1, 1), classes=np.array(list("abcdefghij")))
    ds = data.load(str(keras))
    same(ds, arrays)  # a [N, 1] label column is squeezed
    assert ds.classes == tuple("abcdefghij")
    floats = tmp_path / "floats.npz"  # Keras users' x / 255: scaled back, not rounded to 0/1
    np.savez(floats, x_train=arrays[0].astype(np.float32) / 255, y_train=arrays[1],
             x_test=arrays[2] / 255.0, y_test=arrays[3].astype(np.float64))
    same(data.load(str(floats)), arrays)


def test_qmnist_2d_int32_labels_and_emnist_transposed_idx(tmp_path, arrays):
    xtr, ytr, xte, yte = arrays
    q = tmp_path / "q"
    q.mkdir()
    for split, x, y in (("train", xtr, ytr), ("test", xte, yte)):
        extra = np.stack([y] + [np.arange(len(y)) * k for k in range(1, 8)], 1)  # class first
        (q / f"qmnist-{split}-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(x), 1))
        (q / f"qmnist-{split}-labels-idx2-int.gz").write_bytes(gzip.compress(idx_bytes(extra, ">i4"), 1))
    ds = data.load(str(q))
    same(ds, arrays)
    assert any("first" in n for n in ds.notes)
    e = tmp_path / "e"
    e.mkdir()
    for split, x, y in (("train", xtr, ytr), ("test", xte, yte)):
        stored = x.reshape(-1, 28, 28).transpose(0, 2, 1)  # how EMNIST stores its images
        (e / f"emnist-digits-{split}-images-idx3-ubyte").write_bytes(idx_bytes(stored))
        (e / f"emnist-digits-{split}-labels-idx1-ubyte").write_bytes(idx_bytes(y))
    ds = data.load(str(e))
    assert ds.layout == "emnist"
    same(ds, arrays)
    with pytest.raises(AssertionError):  # read as plain IDX, they are transposed
        same(data.load(f"idx:{e}"), arrays)


def test_any_fixed_size_and_rgb_by_luma(tmp_path):
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (30, 12, 20, 3), dtype=np.uint8)
    for i, img in enumerate(rgb):
        folder = tmp_path / f"c{i % 3}"
        folder.mkdir(exist_ok=True)
        Image.fromarray(img).save(folder / f"{i}.png")
    ds = data.load(str(tmp_path))
    assert ds.shape == (12, 20) and ds.x_train.shape[1] == 240
    luma = (rgb.astype(np.int64) * [19595, 38470, 7471]).sum(-1) + 0x8000 >> 16  # Pillow's "L"
    both = np.concatenate([ds.x_train.numpy(), ds.x_test.numpy()])
    assert sorted(map(bytes, both)) == sorted(map(bytes, luma.astype(np.uint8).reshape(30, -1)))
    with pytest.raises(UserError, match="takes 784 inputs.*240-pixel images"):
        data.check_fits(ds, (784, 10), "e")
    # augmentation works on square images of any side; a flat non-square row is refused
    from mlplab.augment import augment
    from mlplab.group import Augmentation

    x = data.torch.rand(5, 16 * 16)
    data.torch.testing.assert_close(augment(x, Augmentation()), x, rtol=0, atol=1e-5)
    assert not data.torch.allclose(augment(x, Augmentation(shift=3.0)), x)
    with pytest.raises(UserError, match="augmentation needs square images"):
        augment(ds.x_train.float(), Augmentation(shift=1.0))


def test_second_load_reads_the_cache_not_the_csv(tmp_path, arrays, monkeypatch):
    path = write_csv(tmp_path / "train.csv", arrays[0], arrays[1])
    first = data.load(str(path))
    assert len(list((tmp_path / "parsed").glob("*.npz"))) == 1

    def no_parsing(*a, **k):
        raise AssertionError("parsed again")

    monkeypatch.setattr(tables, "read_csv", no_parsing)
    again = data.load(str(path))
    assert np.array_equal(again.x_train.numpy(), first.x_train.numpy())
    write_csv(path, arrays[0][:300], arrays[1][:300])  # another file: another key
    with pytest.raises(AssertionError, match="parsed again"):
        data.load(str(path))


def test_unwritable_cache_costs_only_the_cache(tmp_path, arrays, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setattr(datacache, "folder", lambda: blocker / "parsed")
    logs = []
    ds = data.load(str(write_csv(tmp_path / "train.csv", arrays[0], arrays[1])), log=logs.append)
    assert len(ds.x_train) + len(ds.x_test) == N_TRAIN
    assert any("not cached" in line for line in logs)


def test_public_load_and_inspect(tmp_path, arrays):
    write_csv(tmp_path / "train.csv", *arrays[:2])
    write_csv(tmp_path / "test.csv", *arrays[2:])
    x_train, y_train, x_test, y_test, classes = datasets.load(str(tmp_path))
    assert x_train.shape == (N_TRAIN, 28, 28) and x_train.dtype == np.uint8
    assert np.array_equal(x_test.reshape(N_TEST, -1), arrays[2]) and classes == tuple("0123456789")
    found = datasets.inspect(str(tmp_path), per_class=2)
    text = str(found)
    assert "layout    csv" in text and f"train {N_TRAIN:,}, test {N_TEST:,}" in text
    assert f"{np.bincount(arrays[1])[1]:>7,}" in text and "values 0…255" in text
    png = found._repr_png_()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and Image.open(io.BytesIO(png)).size[0] > 200
    assert "<img" in found._repr_html_()


def test_detection_and_explicit_layouts(tmp_path, arrays):
    assert set(readers.READERS) == set(config.LAYOUT_NAMES)  # a reader for every name config accepts
    write_csv(tmp_path / "train.csv", *arrays[:2])
    np.savez(tmp_path / "d.npz", x_train=arrays[0], y_train=arrays[1])
    with pytest.raises(UserError, match=r"more than one layout \(npz, csv\).*npz:"):
        data.load(str(tmp_path))
    assert data.load(f"csv:{tmp_path}").layout == "csv"
    assert config.check_dataset_name(f"csv:{tmp_path / 'train.csv'}")
    with pytest.raises(ValueError, match="LAYOUT:PATH"):
        config.check_dataset_name("nothing-here.txt")
