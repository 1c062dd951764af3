"""Tests of the digit datasets: MNIST IDX reader, canvas composers, tfds digit builders."""

import gzip
import pathlib
import sys

import chex
import numpy as np
import pytest
from PIL import Image

from infocam_jax.data import composers, digit_builders, mnist_idx

# --------------------------------------------------------------------------- helpers


def _idx_bytes(array: np.ndarray, magic: int | None = None) -> bytes:
    array = np.asarray(array, np.uint8)
    magic = (0x0800 | array.ndim) if magic is None else magic
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.tobytes()


def _fake_mnist(rng, n):
    """n random 'digits' (a filled rectangle of random size and place) with labels cycling 0..9."""
    images = np.zeros((n, 28, 28), np.uint8)
    for i in range(n):
        x0, y0 = rng.integers(2, 12, 2)
        w, h = rng.integers(4, 14, 2)
        images[i, y0 : y0 + h, x0 : x0 + w] = rng.integers(1, 256, (h, w))
    return images, (np.arange(n) % 10).astype(np.uint8)


def _write_mnist(directory: pathlib.Path, data, compress=True, overrides=None):
    directory.mkdir(parents=True, exist_ok=True)
    overrides = overrides or {}
    for split, (images, labels) in data.items():
        for name, array in zip(mnist_idx.MNIST_FILES[split], (images, labels)):
            raw = overrides.get(name, _idx_bytes(array))
            if compress:
                (directory / f"{name}.gz").write_bytes(gzip.compress(raw))
            else:
                (directory / name).write_bytes(raw)
    return directory


@pytest.fixture(scope="module")
def fake_mnist():
    rng = np.random.default_rng(0)
    return {"train": _fake_mnist(rng, 120), "test": _fake_mnist(rng, 50)}


@pytest.fixture(scope="module")
def sk_digits():
    return composers.load_sklearn_digits()


def _ref_ink_box(image):
    ys, xs = np.nonzero(image)
    return [xs.min(), ys.min(), xs.max(), ys.max()] if xs.size else [-1, -1, -1, -1]


# --------------------------------------------------------------------------- IDX reader


def test_real_mnist(shared_mnist_dir):
    data = mnist_idx.load_mnist(shared_mnist_dir)
    chex.assert_shape(data["train"][0], (60000, 28, 28))
    chex.assert_shape(data["test"][0], (10000, 28, 28))
    assert data["train"][0].dtype == np.uint8 and data["train"][1].dtype == np.uint8
    # class counts published with the files (shared/data/mnist/SOURCE.md)
    np.testing.assert_array_equal(
        np.bincount(data["train"][1]), [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    )
    np.testing.assert_array_equal(
        np.bincount(data["test"][1]), [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    )
    assert data["train"][0].max() == 255 and data["train"][0].min() == 0


@pytest.mark.parametrize("compress", [True, False])
def test_idx_roundtrip(tmp_path, fake_mnist, compress):
    directory = _write_mnist(tmp_path / "m", fake_mnist, compress=compress)
    data = mnist_idx.load_mnist(directory)
    for split in ("train", "test"):
        np.testing.assert_array_equal(data[split][0], fake_mnist[split][0])
        np.testing.assert_array_equal(data[split][1], fake_mnist[split][1])


def _bad_files(fake):
    images, labels = fake["train"]
    good = _idx_bytes(images)
    return {
        "wrong magic": ("train-images-idx3-ubyte", _idx_bytes(images, magic=2049), "magic"),
        "truncated data": ("train-images-idx3-ubyte", good[:-5], "truncated"),
        "truncated header": ("train-labels-idx1-ubyte", b"\x00\x00\x08\x01\x00", "truncated"),
        "trailing bytes": (
            "train-labels-idx1-ubyte",
            _idx_bytes(labels) + b"\x00",
            "unexpected bytes",
        ),
        "count mismatch": ("train-labels-idx1-ubyte", _idx_bytes(labels[:-1]), "mismatch"),
        "wrong dims": ("train-images-idx3-ubyte", _idx_bytes(images[:, :27, :]), "dims"),
        "label range": ("train-labels-idx1-ubyte", _idx_bytes(labels + 1), "outside 0..9"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "wrong magic",
        "truncated data",
        "truncated header",
        "trailing bytes",
        "count mismatch",
        "wrong dims",
        "label range",
    ],
)
def test_idx_errors(tmp_path, fake_mnist, case):
    name, raw, phrase = _bad_files(fake_mnist)[case]
    directory = _write_mnist(tmp_path / "m", fake_mnist, overrides={name: raw})
    with pytest.raises(ValueError, match=phrase) as err:
        mnist_idx.load_mnist(directory)
    assert "yann.lecun.com" in str(err.value)
    if case != "count mismatch":
        assert name in str(err.value)


def test_idx_corrupt_gzip(tmp_path, fake_mnist):
    directory = _write_mnist(tmp_path / "m", fake_mnist)
    path = directory / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(ValueError, match="t10k-images-idx3-ubyte.gz"):
        mnist_idx.load_mnist(directory)


def test_idx_missing(tmp_path, fake_mnist):
    directory = _write_mnist(tmp_path / "m", fake_mnist)
    (directory / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte") as err:
        mnist_idx.load_mnist(directory)
    for expected in (
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz",
        "yann.lecun.com",
        "tfds",
    ):
        assert expected in str(err.value)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        mnist_idx.load_mnist(tmp_path / "nowhere")


def test_tfds_mnist_not_prepared(tmp_path):
    with pytest.raises(FileNotFoundError, match="never downloads"):
        mnist_idx.load_mnist_tfds(tmp_path)


# --------------------------------------------------------------------------- helpers of composers


def test_ink_boxes_against_loop():
    rng = np.random.default_rng(1)
    images = (rng.random((40, 9, 13)) > 0.93).astype(np.uint8) * rng.integers(
        1, 9, (40, 9, 13)
    ).astype(np.uint8)
    images[3] = 0  # blank
    images[5] = 0
    images[5, 4, 7] = 2  # a single pixel
    got = composers.ink_boxes(images)
    want = np.array([_ref_ink_box(im) for im in images])
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(got[5], [7, 4, 7, 4])
    np.testing.assert_array_equal(got[3], [-1, -1, -1, -1])


@pytest.mark.parametrize(
    "src,dst",
    [((8, 8), (20, 20)), ((28, 28), (22, 22)), ((28, 28), (45, 45)), ((28, 28), (13, 37))],
)
def test_resize_matches_pil_bilinear(src, dst):
    x = np.random.default_rng(2).random(src).astype(np.float32) * 255
    pil = np.asarray(Image.fromarray(x, mode="F").resize(dst[::-1], Image.BILINEAR))
    ours = composers.resize_images(x[None], *dst)[0]
    chex.assert_shape(ours, dst)
    np.testing.assert_allclose(ours, pil, atol=1e-3)
    np.testing.assert_allclose(composers.bilinear_resize_matrix(src[0], dst[0]).sum(axis=1), 1.0)


# --------------------------------------------------------------------------- sklearn digits


def test_sklearn_digits(sk_digits):
    from sklearn.datasets import load_digits

    train, test = sk_digits["train"], sk_digits["test"]
    chex.assert_shape(train[0], (1198, 28, 28))
    chex.assert_shape(test[0], (599, 28, 28))
    assert train[0].dtype == np.uint8 and train[1].dtype == np.uint8
    assert train[0].max() == 255 and test[0].min() == 0
    # ink only in the centred 20x20 box, like MNIST's size normalisation
    both = np.concatenate([train[0], test[0]])
    assert (
        not both[:, :4].any()
        and not both[:, 24:].any()
        and not both[:, :, :4].any()
        and not both[:, :, 24:].any()
    )
    # stratified 2/3 split: per class round(2/3 * count) train digits
    bunch = load_digits()
    counts = np.bincount(bunch.target)
    np.testing.assert_array_equal(np.bincount(train[1], minlength=10), np.rint(counts * 2 / 3))
    np.testing.assert_array_equal(np.bincount(train[1]) + np.bincount(test[1]), counts)
    # train + test is exactly the upsampled sklearn set (a partition: multisets of (image, label))
    up = np.clip(np.rint(composers.resize_images(bunch.images * 255 / 16, 20, 20)), 0, 255).astype(
        np.uint8
    )
    full = sorted(
        np.pad(up, ((0, 0), (4, 4), (4, 4))).tobytes()[i * 784 : (i + 1) * 784] + bytes([t])
        for i, t in enumerate(bunch.target)
    )
    ours = sorted(
        np.concatenate([train[0], test[0]]).tobytes()[i * 784 : (i + 1) * 784] + bytes([t])
        for i, t in enumerate(np.concatenate([train[1], test[1]]))
    )
    assert ours == full
    # fixed split: independent of anything but split_seed
    again = composers.load_sklearn_digits()
    np.testing.assert_array_equal(again["test"][0], test[0])


# --------------------------------------------------------------------------- double digit


@pytest.fixture(scope="module")
def double(sk_digits):
    return composers.compose_double_digit(*sk_digits["train"], 20000, 3)


def test_double_digit_statistics(double):
    n = 20000
    valid = double["box_valid"]
    assert valid.any(axis=1).all(), "empty canvas kept"
    p = 0.7 / 0.91
    tol = 4 * np.sqrt(p * (1 - p) / n)
    np.testing.assert_allclose(valid.mean(axis=0), [p, p], atol=tol)
    p_both = 0.49 / 0.91
    assert abs(valid.all(axis=1).mean() - p_both) < 4 * np.sqrt(p_both * (1 - p_both) / n)
    # digits uniform over classes: each class ~ 1/10 of the placed digits
    placed = double["box_labels"][valid]
    freq = np.bincount(placed, minlength=10) / placed.size
    np.testing.assert_allclose(freq, 0.1, atol=4 * np.sqrt(0.09 / placed.size))


def test_double_digit_labels_and_boxes(double, sk_digits):
    images, labels = sk_digits["train"]
    chex.assert_shape(double["image"], (20000, 28, 56, 1))
    chex.assert_shape(double["boxes"], (20000, 2, 4))
    assert double["image"].dtype == np.uint8 and double["boxes"].dtype == np.float32
    valid = double["box_valid"]
    # multi-hot = set of valid box labels; label = smallest present digit; -1 for absent boxes
    want = np.zeros((20000, 10), np.float32)
    for g in range(2):
        want[np.flatnonzero(valid[:, g]), double["box_labels"][valid[:, g], g]] = 1
    np.testing.assert_array_equal(double["labels"], want)
    np.testing.assert_array_equal(double["label"], np.argmax(want, axis=1))
    assert (double["box_labels"][~valid] == -1).all() and (double["boxes"][~valid] == 0).all()
    np.testing.assert_array_equal(
        double["box_labels"][valid], labels[double["source_index"][valid]]
    )
    # boxes inside their slot and exactly tight on the ink of the canvas slot (first 300 canvases)
    boxes = double["boxes"]
    assert (boxes[valid][:, [0, 1]] <= boxes[valid][:, [2, 3]]).all()
    assert (boxes[:, 0, 2][valid[:, 0]] <= 27).all() and (boxes[:, 1, 0][valid[:, 1]] >= 28).all()
    assert (boxes[..., 3] <= 27).all() and (boxes[..., 2] <= 55).all() and (boxes >= 0).all()
    for i in range(300):
        for side in range(2):
            slot = double["image"][i, :, 28 * side : 28 * (side + 1), 0]
            if valid[i, side]:
                np.testing.assert_array_equal(slot, images[double["source_index"][i, side]])
                box = np.array(_ref_ink_box(slot)) + [28 * side, 0, 28 * side, 0]
                np.testing.assert_array_equal(boxes[i, side], box)
            else:
                assert not slot.any()


def test_double_digit_determinism(sk_digits):
    a = composers.compose_double_digit(*sk_digits["test"], 50, 7)
    b = composers.compose_double_digit(*sk_digits["test"], 50, 7)
    c = composers.compose_double_digit(*sk_digits["test"], 50, 8)
    chex.assert_trees_all_equal(a, b)
    assert not np.array_equal(a["image"], c["image"])


def test_composer_bad_input(sk_digits):
    images, labels = sk_digits["train"]
    with pytest.raises(ValueError, match="images must be uint8"):
        composers.compose_double_digit(images.astype(np.float32), labels, 5, 0)
    with pytest.raises(ValueError, match="missing classes"):
        composers.compose_double_digit(images[labels < 9], labels[labels < 9], 5, 0)
    blank = images.copy()
    blank[3] = 0
    with pytest.raises(ValueError, match="without ink"):
        composers.compose_double_digit(blank, labels, 5, 0)
    with pytest.raises(ValueError, match="presence_prob"):
        composers.compose_double_digit(images, labels, 5, 0, presence_prob=0.0)
    with pytest.raises(ValueError, match="canvas_size=54 too small"):
        composers.compose_cluttered(images, labels, 5, 0, canvas_size=54)


# --------------------------------------------------------------------------- cluttered


@pytest.mark.parametrize("canvas_size,num_clutter", [(64, 4), (80, 8)])
def test_cluttered_canvas(sk_digits, canvas_size, num_clutter):
    images, labels = sk_digits["test"]
    n = 200
    out = composers.compose_cluttered(
        images, labels, n, 5, canvas_size=canvas_size, num_clutter=num_clutter
    )
    chex.assert_shape(out["image"], (n, canvas_size, canvas_size, 1))
    chex.assert_shape(out["boxes"], (n, 1, 4))
    assert out["image"].dtype == np.uint8
    src = out["source_index"][:, 0]
    np.testing.assert_array_equal(out["label"], labels[src])
    np.testing.assert_array_equal(out["box_labels"][:, 0], out["label"])
    np.testing.assert_array_equal(out["labels"], np.eye(10, dtype=np.float32)[out["label"]])
    assert out["box_valid"].all()
    sizes = out["target_size"]
    assert sizes.min() >= 22 and sizes.max() <= 45 and np.unique(sizes).size > 10
    cluttered = 0
    for i in range(n):
        s, (x, y) = int(sizes[i]), out["target_offset"][i]
        # resize_images equals PIL's float bilinear to 3e-5 (tested above); reusing it makes .5
        # ties round alike
        frame = np.clip(
            np.rint(composers.resize_images(images[src[i]][None], s, s)[0]), 0, 255
        ).astype(np.uint8)
        target = np.zeros((canvas_size, canvas_size), np.uint8)
        target[y : y + s, x : x + s] = frame
        canvas = out["image"][i, :, :, 0]
        x0, y0, x1, y1 = out["boxes"][i, 0].astype(int)
        np.testing.assert_array_equal(
            [x0, y0, x1, y1], _ref_ink_box(target)
        )  # tight on the target's ink
        gy0, gx0 = max(y0 - 2, 0), max(x0 - 2, 0)  # no clutter in the box grown by clutter_gap=2
        np.testing.assert_array_equal(
            canvas[gy0 : y1 + 3, gx0 : x1 + 3], target[gy0 : y1 + 3, gx0 : x1 + 3]
        )
        assert (canvas >= target).all()
        cluttered += bool((canvas > target).any())
    assert cluttered >= 0.95 * n  # clutter is really there (fragments may rarely be blank)


def test_cluttered_determinism(sk_digits):
    a = composers.compose_cluttered(*sk_digits["test"], 30, 11)
    b = composers.compose_cluttered(*sk_digits["test"], 30, 11)
    chex.assert_trees_all_equal(a, b)


def test_cluttered_real_mnist(shared_mnist_dir):
    images, labels = mnist_idx.load_mnist_split(shared_mnist_dir, "test")
    out = composers.compose_cluttered(images, labels, 100, 0)
    np.testing.assert_array_equal(out["label"], labels[out["source_index"][:, 0]])
    box = out["boxes"][:, 0].astype(int)
    # edges of every box touch ink (tightness, on the real digits)
    for i in range(100):
        c = out["image"][i, :, :, 0]
        x0, y0, x1, y1 = box[i]
        assert (
            c[y0, x0 : x1 + 1].any()
            and c[y1, x0 : x1 + 1].any()
            and c[y0 : y1 + 1, x0].any()
            and c[y0 : y1 + 1, x1].any()
        )


# --------------------------------------------------------------------------- tfds builders


def _records(builder, split):
    source = builder.as_data_source(split)
    return [source[i] for i in range(len(source))]


@pytest.fixture(scope="module")
def digits_builder(tmp_path_factory):
    return digit_builders.prepare_digit_dataset(
        "digits", data_dir=tmp_path_factory.mktemp("tfds"), num_train=40, num_test=31, seed=2
    )


def test_digits_builder_records(digits_builder, sk_digits):
    assert "tensorflow" not in sys.modules
    assert digits_builder.builder_config.name == "train40_test31_seed2_28x56"
    train = _records(digits_builder, "train")
    want = composers.compose_double_digit(*sk_digits["train"], 40, (2, 0))
    assert len(train) == 40
    for i, rec in enumerate(train):
        assert rec["canvas_id"] == i
        chex.assert_shape(rec["image"], (28, 56, 1))
        np.testing.assert_array_equal(rec["image"], want["image"][i])
        valid = want["box_valid"][i]
        np.testing.assert_array_equal(rec["boxes"], want["boxes"][i][valid])
        np.testing.assert_array_equal(rec["box_labels"], want["box_labels"][i][valid])
        np.testing.assert_array_equal(rec["labels"], want["labels"][i])
        assert rec["label"] == want["label"][i]
    meta = digits_builder.info.metadata
    np.testing.assert_array_equal(
        meta["train_label_counts"], np.bincount(want["label"], minlength=10)
    )
    np.testing.assert_allclose(meta["train_labels_mean"], want["labels"].mean(axis=0), rtol=1e-6)
    assert meta["class_names"] == [str(c) for c in range(10)] and meta["max_boxes"] == 2
    assert "tensorflow" not in sys.modules


def test_digits_builder_split_halves(digits_builder, sk_digits):
    val, test = _records(digits_builder, "validation"), _records(digits_builder, "test")
    val_ids, test_ids = [r["canvas_id"] for r in val], [r["canvas_id"] for r in test]
    assert not set(val_ids) & set(test_ids)
    assert sorted(val_ids + test_ids) == list(range(31))  # every test canvas exactly once
    assert abs(len(val_ids) - len(test_ids)) <= 1
    want = composers.compose_double_digit(*sk_digits["test"], 31, (2, 1))  # from the *test* digits
    for rec in val + test:
        np.testing.assert_array_equal(rec["image"], want["image"][rec["canvas_id"]])
    # a second call reuses the prepared files
    again = digit_builders.prepare_digit_dataset(
        "digits", data_dir=digits_builder.data_dir_root, num_train=40, num_test=31, seed=2
    )
    assert again.data_dir == digits_builder.data_dir
    assert (
        again.info.metadata["train_label_counts"]
        == digits_builder.info.metadata["train_label_counts"]
    )
    assert "tensorflow" not in sys.modules


def test_cluttered_builder_from_manual_dir(tmp_path, fake_mnist):
    manual = _write_mnist(tmp_path / "mnist", fake_mnist)
    builder = digit_builders.prepare_digit_dataset(
        "cluttered_mnist",
        data_dir=tmp_path / "tfds",
        manual_dir=manual,
        num_train=20,
        num_test=10,
        seed=0,
        canvas_size=56,
    )
    assert builder.builder_config.name == "train20_test10_seed0_56x56"
    want = composers.compose_cluttered(*fake_mnist["test"], 10, (0, 1), canvas_size=56)
    test = _records(builder, "test") + _records(builder, "validation")
    assert sorted(r["canvas_id"] for r in test) == list(range(10))
    for rec in test:
        i = rec["canvas_id"]
        chex.assert_shape(rec["image"], (56, 56, 1))
        np.testing.assert_array_equal(rec["image"], want["image"][i])
        np.testing.assert_array_equal(rec["boxes"], want["boxes"][i])
        assert rec["label"] == want["label"][i] == rec["box_labels"][0]
    assert "tensorflow" not in sys.modules


def test_multi_mnist_builder_real(tmp_path, shared_mnist_dir):
    builder = digit_builders.prepare_digit_dataset(
        "multi_mnist",
        data_dir=tmp_path,
        manual_dir=shared_mnist_dir,
        num_train=30,
        num_test=20,
        seed=0,
    )
    images, labels = mnist_idx.load_mnist_split(shared_mnist_dir, "train")
    want = composers.compose_double_digit(images, labels, 30, (0, 0))
    train = _records(builder, "train")
    for i, rec in enumerate(train):
        np.testing.assert_array_equal(rec["image"], want["image"][i])
    assert (
        builder.info.splits["validation"].num_examples + builder.info.splits["test"].num_examples
        == 20
    )
    assert "tensorflow" not in sys.modules


def test_builder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte.gz") as err:
        digit_builders.prepare_digit_dataset(
            "multi_mnist",
            data_dir=tmp_path,
            manual_dir=tmp_path / "none",
            num_train=5,
            num_test=4,
            seed=0,
        )
    assert "yann.lecun.com" in str(err.value)
    with pytest.raises(FileNotFoundError, match="manual_dir"):
        digit_builders.prepare_digit_dataset(
            "cluttered_mnist", data_dir=tmp_path, manual_dir=None, num_train=5, num_test=4, seed=0
        )
    with pytest.raises(ValueError, match="name must be one of"):
        digit_builders.prepare_digit_dataset(
            "mnist", data_dir=tmp_path, num_train=5, num_test=4, seed=0
        )
    with pytest.raises(ValueError, match="canvas_size"):
        digit_builders.prepare_digit_dataset(
            "digits", data_dir=tmp_path, num_train=5, num_test=4, seed=0, canvas_size=64
        )
    with pytest.raises(ValueError, match="num_test"):
        digit_builders.prepare_digit_dataset(
            "digits", data_dir=tmp_path, num_train=5, num_test=1, seed=0
        )


def test_dataset_spec():
    assert digit_builders.dataset_spec("digits") == {
        "num_classes": 10,
        "multi_label": True,
        "max_boxes": 2,
        "channels": 1,
        "default_canvas_size": (28, 56),
    }
    assert digit_builders.dataset_spec("cluttered_mnist")["max_boxes"] == 1
    assert not digit_builders.dataset_spec("cluttered_mnist")["multi_label"]
