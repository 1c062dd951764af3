"""CUB-200-2011 / Tiny-ImageNet builders on tiny fake directories in the official layouts, and the
paper's validation/test split."""
import pathlib
import sys

import numpy as np
import pytest
from PIL import Image

tfds = pytest.importorskip("tensorflow_datasets")

from infocam_jax.data import builder_utils, cub, splits, tiny_imagenet  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def _quiet_tfds():
    tfds.display_progress_bar(False)


def _jpeg(path, h, w, seed, mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)
    Image.fromarray(arr).convert(mode).save(path, format="JPEG")


def write_cub(parent, n_train=4, n_test=7, classes=(1, 2, 200)):
    """A fake CUB_200_2011/ with small JPEGs; returns (root, {id: (rel, label, train, box)})."""
    root = pathlib.Path(parent) / "CUB_200_2011"
    (root / "images").mkdir(parents=True)
    files = {"images.txt": [], "image_class_labels.txt": [], "train_test_split.txt": [],
             "bounding_boxes.txt": []}
    table = {}
    i = 0
    for is_train, n in ((1, n_train), (0, n_test)):
        for j in range(n):
            i += 1
            c = classes[j % len(classes)]
            rel = f"{c:03d}.Bird_{c}/Bird_{i:04d}.jpg"
            h, w = 30 + i, 40 + 2 * i
            _jpeg(root / "images" / rel, h, w, i, mode="L" if i == 2 else "RGB")
            box = (2.0 + j, 3.0, 15.0, 11.0)  # x, y, w, h
            files["images.txt"].append(f"{i} {rel}")
            files["image_class_labels.txt"].append(f"{i} {c}")
            files["train_test_split.txt"].append(f"{i} {is_train}")
            files["bounding_boxes.txt"].append(f"{i} " + " ".join(map(str, box)))
            table[i] = (rel, c - 1, is_train, box, (h, w))
    for name, lines in files.items():
        (root / name).write_text("\n".join(lines) + "\n")
    return root, table


def write_tiny(parent, wnids=("n0300", "n0100", "n0200"), n_train=3, n_val=5):
    """A fake tiny-imagenet-200/; returns (root, {val file: (wnid, box)})."""
    root = pathlib.Path(parent) / "tiny-imagenet-200"
    (root / "val" / "images").mkdir(parents=True)
    (root / "wnids.txt").write_text("\n".join(wnids) + "\n")
    (root / "words.txt").write_text("".join(f"{w}\tthing {w}, other\n" for w in wnids)
                                    + "n9999\tunused\n")
    val = {}
    lines = []
    for k, w in enumerate(wnids):
        box_lines = []
        for j in range(n_train):
            _jpeg(root / "train" / w / "images" / f"{w}_{j}.JPEG", 64, 64, 100 * k + j)
            box_lines.append(f"{w}_{j}.JPEG\t{j}\t{2 * j}\t{30 + j}\t{40 + j}")
        (root / "train" / w / f"{w}_boxes.txt").write_text("\n".join(box_lines) + "\n")
        for j in range(n_val):
            name = f"val_{k * n_val + j}.JPEG"
            _jpeg(root / "val" / "images" / name, 64, 64, 1000 + k * n_val + j,
                  mode="L" if j == 0 else "RGB")
            box = (1, 2, 50 + k, 60)
            lines.append(f"{name}\t{w}\t" + "\t".join(map(str, box)))
            val[name] = (w, box)
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return root, val


def _records(builder, split):
    src = builder.as_data_source(split)
    return [src[i] for i in range(len(src))]


# ----------------------------------------------------------------------------- split

@pytest.mark.parametrize("counts", [[4, 4, 4], [5, 3, 1, 7], [1], [50] * 6])
def test_stratified_halves_disjoint_covering_balanced(counts):
    labels = np.repeat(np.arange(len(counts)), counts)
    labels = labels[np.random.default_rng(3).permutation(labels.size)]
    val, test = splits.stratified_halves(labels, seed=7)
    assert np.intersect1d(val, test).size == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([val, test])), np.arange(labels.size))
    assert abs(val.size - test.size) <= 1
    for c, n in enumerate(counts):
        nv, nt = np.sum(labels[val] == c), np.sum(labels[test] == c)
        assert nv + nt == n and abs(nv - nt) <= 1
    val2, test2 = splits.stratified_halves(labels, seed=7)
    np.testing.assert_array_equal(val, val2)
    np.testing.assert_array_equal(test, test2)


def test_stratified_halves_depends_on_seed_and_not_on_key_order():
    labels = np.repeat(np.arange(4), 20)
    a, _ = splits.stratified_halves(labels, seed=0)
    b, _ = splits.stratified_halves(labels, seed=1)
    assert not np.array_equal(a, b)
    keys = [f"img_{i:03d}" for i in range(labels.size)]
    perm = np.random.default_rng(0).permutation(labels.size)
    v1, t1 = splits.split_keys(keys, labels)
    v2, t2 = splits.split_keys([keys[i] for i in perm], labels[perm])
    assert v1 == v2 and t1 == t2
    assert set(v1).isdisjoint(t1) and set(v1) | set(t1) == set(keys)


def test_stratified_halves_rejects_bad_labels():
    with pytest.raises(ValueError, match="non-negative"):
        splits.stratified_halves([0, -1, 2])
    with pytest.raises(ValueError, match="1-D"):
        splits.stratified_halves(np.zeros((2, 2), int))


# ----------------------------------------------------------------------------- CUB

@pytest.fixture(scope="module")
def cub_built(tmp_path_factory):
    base = tmp_path_factory.mktemp("cub")
    root, table = write_cub(base / "manual")
    builder = cub.prepare(data_dir=base / "tfds", manual_dir=base / "manual")
    return builder, table, base


def test_cub_splits_and_records(cub_built):
    builder, table, _ = cub_built
    recs = {s: _records(builder, s) for s in ("train", "validation", "test")}
    train_ids = {t[0] for t in table.values() if t[2] == 1}
    test_ids = {t[0] for t in table.values() if t[2] == 0}
    got = {s: [r["image_id"].decode() for r in rs] for s, rs in recs.items()}
    assert set(got["train"]) == train_ids
    # paper split: the official test images, each exactly once, in validation or test
    assert sorted(got["validation"] + got["test"]) == sorted(test_ids)
    assert len(got["validation"]) == 4 and len(got["test"]) == 3
    by_rel = {t[0]: t for t in table.values()}
    for rs in recs.values():
        for r in rs:
            rel, label, _, (x, y, w, h), (ih, iw) = by_rel[r["image_id"].decode()]
            assert r["image"].dtype == np.uint8 and r["image"].shape == (ih, iw, 3)
            assert r["label"] == label
            np.testing.assert_array_equal(r["boxes"], np.array([[x, y, x + w, y + h]], np.float32))
            assert r["boxes"].dtype == np.float32
            np.testing.assert_array_equal(r["box_labels"], [label])
    counts = builder.info.metadata["train_label_counts"]
    assert len(counts) == 200 and sum(counts) == 4 and counts[0] == 2 and counts[199] == 1
    assert "tensorflow" not in sys.modules


def test_cub_image_pixels_match_file(cub_built):
    builder, table, base = cub_built
    r = _records(builder, "train")[0]
    rel = r["image_id"].decode()
    want = np.asarray(Image.open(base / "manual" / "CUB_200_2011" / "images" / rel).convert("RGB"))
    np.testing.assert_array_equal(r["image"], want)


def test_cub_reuses_prepared_data_without_manual_dir(cub_built):
    _, _, base = cub_built
    again = cub.prepare(data_dir=base / "tfds", manual_dir="")
    assert again.info.splits["train"].num_examples == 4


def test_cub_missing_manual_dir_names_files(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        cub.prepare(data_dir=tmp_path / "tfds", manual_dir=tmp_path / "nowhere")
    msg = str(e.value)
    assert "images.txt" in msg and "bounding_boxes.txt" in msg
    assert "caltech.edu" in msg and "CUB_200_2011" in msg


def test_cub_missing_annotation_file(tmp_path):
    root, _ = write_cub(tmp_path / "m")
    (root / "bounding_boxes.txt").unlink()
    with pytest.raises(FileNotFoundError, match="bounding_boxes.txt"):
        cub.prepare(data_dir=tmp_path / "tfds", manual_dir=root)  # the root itself also works


def test_cub_missing_image_file(tmp_path):
    root, table = write_cub(tmp_path / "m")
    (root / "images" / table[3][0]).unlink()
    with pytest.raises(FileNotFoundError, match="Bird_0003.jpg"):
        cub.prepare(data_dir=tmp_path / "tfds", manual_dir=tmp_path / "m")


def test_cub_corrupt_image_names_file(tmp_path):
    root, table = write_cub(tmp_path / "m")
    path = root / "images" / table[5][0]
    path.write_bytes(path.read_bytes()[:60])
    with pytest.raises(ValueError, match="Bird_0005.jpg"):
        cub.prepare(data_dir=tmp_path / "tfds", manual_dir=tmp_path / "m")


@pytest.mark.parametrize("name,edit,match", [
    ("bounding_boxes.txt", lambda ls: ls[:-1], "no entry for image ids"),
    ("image_class_labels.txt", lambda ls: ls[:-1] + [ls[-1].split()[0] + " 201"], "outside 1..200"),
    ("image_class_labels.txt", lambda ls: ls[:-1] + [ls[-1].split()[0] + " 0"], "outside 1..200"),
    ("train_test_split.txt", lambda ls: ls[:-1] + [ls[-1].split()[0] + " 2"], "split flag"),
    ("bounding_boxes.txt", lambda ls: ls + ["99 1 1 5 5"], "not in"),
    ("bounding_boxes.txt", lambda ls: ls[:-1] + [ls[-1].split()[0] + " 1 1 0 5"], "non-positive"),
    ("bounding_boxes.txt", lambda ls: ls[:-1] + [ls[-1].split()[0] + " 1 1 5"], "fields"),
    ("bounding_boxes.txt", lambda ls: ls[:-1] + [ls[-1].split()[0] + " 500 1 5 5"], "outside"),
    ("images.txt", lambda ls: ls + [ls[0]], "twice"),
])
def test_cub_inconsistent_annotations_raise(tmp_path, name, edit, match):
    root, _ = write_cub(tmp_path / "m")
    lines = (root / name).read_text().splitlines()
    (root / name).write_text("\n".join(edit(lines)) + "\n")
    with pytest.raises(ValueError, match=match):
        cub.prepare(data_dir=tmp_path / "tfds", manual_dir=tmp_path / "m")


def test_cub_catalog_needs_tensorflow():
    if cub.tensorflow_available():
        pytest.skip("TensorFlow installed: the catalog path would download")
    with pytest.raises(ImportError, match="caltech_birds2011"):
        cub.catalog_sources(data_dir="/nonexistent")


# ----------------------------------------------------------------------------- Tiny-ImageNet

@pytest.fixture(scope="module")
def tiny_built(tmp_path_factory):
    base = tmp_path_factory.mktemp("tiny")
    root, val = write_tiny(base / "manual")
    builder = tiny_imagenet.prepare(data_dir=base / "tfds", manual_dir=base / "manual")
    return builder, val


def test_tiny_splits_and_records(tiny_built):
    builder, val = tiny_built
    wnids = sorted(["n0300", "n0100", "n0200"])
    assert builder.info.metadata["wnids"] == wnids
    assert builder.info.metadata["class_names"][0] == "thing n0100, other"
    train = _records(builder, "train")
    assert len(train) == 9
    for r in train:
        wnid, name = r["image_id"].decode().split("/")[1:]
        j = int(name.split("_")[1].split(".")[0])
        assert r["label"] == wnids.index(wnid)
        np.testing.assert_array_equal(r["boxes"], [[j, 2 * j, 30 + j, 40 + j]])
        assert r["image"].shape == (64, 64, 3)
    v, t = _records(builder, "validation"), _records(builder, "test")
    names = [r["image_id"].decode()[len("val/"):] for r in v + t]
    assert sorted(names) == sorted(val)  # disjoint and covering the official val set
    for r in v + t:
        wnid, box = val[r["image_id"].decode()[len("val/"):]]
        assert r["label"] == wnids.index(wnid)
        np.testing.assert_array_equal(r["boxes"], [box])
        assert r["image"].shape == (64, 64, 3)  # grayscale files come out RGB
    # 5 per class, stratified: 3/2 or 2/3 per class
    for c in range(3):
        nv = sum(r["label"] == c for r in v)
        assert nv in (2, 3)
    assert "tensorflow" not in sys.modules


def test_tiny_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        tiny_imagenet.prepare(data_dir=tmp_path / "tfds", manual_dir=tmp_path)
    assert "wnids.txt" in str(e.value) and "tiny-imagenet-200.zip" in str(e.value)
    root, _ = write_tiny(tmp_path / "m")
    (root / "train" / "n0200" / "n0200_boxes.txt").unlink()
    with pytest.raises(FileNotFoundError, match="n0200_boxes.txt"):
        tiny_imagenet.prepare(data_dir=tmp_path / "tfds", manual_dir=tmp_path / "m")


def _edit(path, fn):
    path.write_text("\n".join(fn(path.read_text().splitlines())) + "\n")


@pytest.mark.parametrize("case,match", [
    ("unknown_wnid", "unknown wnid"),
    ("image_without_box", "no box for images"),
    ("box_without_image", "missing from"),
    ("val_without_annotation", "no annotation"),
    ("no_words", "words.txt"),
])
def test_tiny_inconsistent_annotations_raise(tmp_path, case, match):
    root, _ = write_tiny(tmp_path / "m")
    if case == "unknown_wnid":
        _edit(root / "val" / "val_annotations.txt",
              lambda ls: ls[:-1] + [ls[-1].replace("n0200", "n7777")])
    elif case == "image_without_box":
        _edit(root / "train" / "n0100" / "n0100_boxes.txt", lambda ls: ls[:-1])
    elif case == "box_without_image":
        (root / "train" / "n0100" / "images" / "n0100_1.JPEG").unlink()
    elif case == "val_without_annotation":
        _edit(root / "val" / "val_annotations.txt", lambda ls: ls[1:])
    elif case == "no_words":
        _edit(root / "words.txt", lambda ls: ls[1:])
    with pytest.raises(builder_utils.AnnotationError, match=match):
        tiny_imagenet.prepare(data_dir=tmp_path / "tfds", manual_dir=tmp_path / "m")


def test_tiny_corrupt_image_names_file(tmp_path):
    root, _ = write_tiny(tmp_path / "m")
    (root / "val" / "images" / "val_3.JPEG").write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match="val_3.JPEG"):
        tiny_imagenet.prepare(data_dir=tmp_path / "tfds", manual_dir=tmp_path / "m")
