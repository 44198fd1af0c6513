"""Bad data in every layout: one line naming what is wrong and what is allowed (a UserError from
Python, exit code 2 from the CLI), and nothing written."""

import sys

import numpy as np
import pytest
from PIL import Image

from mlplab import data, datacache
from mlplab.errors import UserError

HEADER = "label," + ",".join(f"pixel{i}" for i in range(784)) + "\n"


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(datacache, "folder", lambda: tmp_path / "parsed")


def row(label=3, fill=0, n=784):
    return ",".join([str(label)] + [str(fill)] * n) + "\n"


def csv_file(tmp_path, text, name="train.csv"):
    (tmp_path / name).write_text(text)
    return tmp_path / name


def npz_file(tmp_path, x=None, y=None):
    x = np.zeros((20, 784), np.uint8) if x is None else x
    y = np.arange(20) % 10 if y is None else y
    np.savez(tmp_path / "d.npz", x_train=x, y_train=y)
    return tmp_path / "d.npz"


def folders(tmp_path, sizes=((28, 28),) * 4, empty=False, mode="L"):
    for i, (h, w) in enumerate(sizes):
        d = tmp_path / "imgs" / f"c{i % 2}"
        d.mkdir(parents=True, exist_ok=True)
        Image.new(mode, (w, h)).save(d / f"{i}.png")
    if empty:
        (tmp_path / "imgs" / "c9").mkdir()
    return tmp_path / "imgs"


CASES = {
    "missing label column": (lambda t: csv_file(t, ",".join(f"pixel{i}" for i in range(784)) + "\n"
                                                + "0," * 783 + "0\n"), "no label column"),
    "non-numeric pixel": (lambda t: csv_file(t, HEADER + row() + row().replace(",0,", ",abc,", 1)),
                          r"line 3, pixel0: 'abc' is not a number"),
    "pixel above 255": (lambda t: csv_file(t, HEADER + row() + row(fill=300)),
                        "line 3: pixel value 300; integer pixels must be 0–255"),
    "negative pixel": (lambda t: csv_file(t, HEADER + row(fill=-1)), "pixel value -1"),
    "one image": (lambda t: csv_file(t, HEADER + row()), "1 images are too few to hold out"),
    "short row": (lambda t: csv_file(t, HEADER + row() + row(n=783)), "line 3 has 784 values, expected 785"),
    "fractions beside 0-255": (lambda t: csv_file(t, HEADER + row(fill=200) + row(fill=0.5)),
                               r"float pixels must lie in \[0, 1\] \(found 0.5…200\)"),
    "float pixels as 0-255": (lambda t: npz_file(t, x=np.full((20, 784), 200.0)),
                              r"float pixels must lie in \[0, 1\].*divide by 255"),
    "too many classes (CSV)": (lambda t: csv_file(t, HEADER + row() + row(label=5000)),
                               "a label of 5000; at most 1000 classes"),
    "label 1e300": (lambda t: npz_file(t, y=np.full(20, 1e300)), "at most 1000 classes"),
    "NaN label": (lambda t: npz_file(t, y=np.where(np.arange(20) == 4, np.nan, 1.0)), "NaN"),
    "string labels": (lambda t: npz_file(t, y=np.array(list("abcdefghij") * 2)), "labels are <U1"),
    "complex labels": (lambda t: npz_file(t, y=np.ones(20, complex)), "labels are complex128"),
    "two label columns": (lambda t: npz_file(t, y=np.ones((20, 2))), "expected one label per image"),
    "zero-length": (lambda t: npz_file(t, x=np.zeros((0, 784), np.uint8), y=np.zeros(0)),
                    "no images"),
    "empty class folder": (lambda t: folders(t, empty=True), "an empty class folder"),
    "mixed sizes": (lambda t: folders(t, sizes=((28, 28), (28, 28), (32, 32))),
                    "is 32×32.*all images of a dataset must have one size"),
    "16-bit image": (lambda t: folders(t, mode="I;16"), "mode I;16"),
    "unreadable image": (lambda t: (folders(t), (t / "imgs/c0/9.png").write_bytes(b"\x89PNG junk"))[0],
                         "9.png: cannot decode as an image"),
    "fewer class names than labels": (
        lambda t: (csv_file(t, HEADER + (row(label=4) + row(label=0)) * 3),
                   (t / "classes.txt").write_text("a\nb\n"))[0],
        "labels go up to 4, but 2 class names"),
}


@pytest.mark.parametrize("case", CASES)
def test_bad_data_is_one_user_error(tmp_path, case):
    make, message = CASES[case]
    path = make(tmp_path)
    with pytest.raises(UserError, match=message) as e:
        data.load(str(path))
    assert "\n" not in str(e.value)
    assert not (tmp_path / "parsed").exists()  # nothing cached from bad data


def test_parquet_without_an_image_column_and_without_pyarrow(tmp_path, monkeypatch):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    pq.write_table(pa.table({"label": [1, 2], "caption": ["a", "b"]}), tmp_path / "train.parquet")
    with pytest.raises(UserError, match="no image column"):
        data.load(str(tmp_path / "train.parquet"))
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)  # as if it were not installed
    with pytest.raises(UserError, match=r"^reading Parquet needs pyarrow: pip install 'mlplab\[parquet\]'$"):
        data.load(str(tmp_path / "train.parquet"))


def test_a_test_class_folder_must_be_a_training_class(tmp_path):
    for split, cls in (("train", "a"), ("train", "b"), ("test", "a"), ("test", "z")):
        (tmp_path / split / cls).mkdir(parents=True)
        Image.new("L", (8, 8)).save(tmp_path / split / cls / "1.png")
    with pytest.raises(UserError, match="class folder 'z' is not among the training classes"):
        data.load(str(tmp_path))


@pytest.fixture
def mlplab(cli_here, monkeypatch):
    """The CLI (in this process) run from a folder: nothing may appear there."""

    def run(*args, cwd):
        monkeypatch.chdir(cwd)
        return cli_here(*args)

    return run


@pytest.mark.parametrize("case", ["non-numeric pixel", "empty class folder", "label 1e300"])
def test_cli_inspect_exit_2_one_line_nothing_written(tmp_path, case, mlplab):
    make, message = CASES[case]
    path = make(tmp_path)
    proc = mlplab("data", "inspect", str(path), cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: "), proc.stderr
    assert not (tmp_path / "samples.png").exists()


def test_cli_run_on_a_csv_without_labels_writes_nothing(tmp_path, mlplab):
    make, message = CASES["missing label column"]
    path = make(tmp_path)
    suite = tmp_path / "s.toml"
    suite.write_text(f'[[experiment]]\nname = "e"\narchitecture = "784-10"\ndataset = "{path}"\n')
    proc = mlplab("run", str(suite), "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert proc.returncode == 2 and message in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    assert not (tmp_path / "out").exists()
