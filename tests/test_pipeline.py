"""Input pipeline: batch dict shapes/dtypes, eval padding, determinism, per-process sharding."""
import pathlib
import sys

import ml_collections
import numpy as np
import pytest
from PIL import Image

from infocam_jax import data
from infocam_jax.data import pipeline, sources, synthetic, transforms


def make_config(**overrides):
    c = ml_collections.ConfigDict(dict(
        dataset="synthetic", data_dir="", manual_dir="", num_train_examples=37,
        num_test_examples=23, data_seed=3, image_size=(24, 20), resize_size=0,
        eval_protocol="center_crop", max_boxes=3, model="vgg16_gap", num_classes=5,
        multi_label=False, data_threads=2))
    c.update(overrides)
    return c


def collect(it):
    return [b for b in it]


def test_public_api_exported():
    for name in ("get_info", "make_iterator", "steps_per_epoch", "DatasetInfo"):
        assert hasattr(data, name)


@pytest.mark.parametrize("multi_label,model,channels", [(False, "vgg16_gap", 3),
                                                         (True, "digits_cnn", 1)])
@pytest.mark.parametrize("training", [True, False])
def test_batch_shapes_and_dtypes(multi_label, model, channels, training):
    config = make_config(multi_label=multi_label, model=model, resize_size=32)
    it = data.make_iterator(config, "train" if training else "test", training=training,
                            batch_size=4)
    batches = collect(it)
    assert len(batches) == len(it) == (37 // 4 if training else 3)
    b = batches[0]
    expected = {"image": ((4, 24, 20, channels), np.float32), "label": ((4,), np.int32),
                "boxes": ((4, 3, 4), np.int32), "box_labels": ((4, 3), np.int32),
                "box_valid": ((4, 3), np.bool_), "valid": ((4,), np.bool_)}
    if multi_label:
        expected["labels"] = ((4, 5), np.float32)
    assert set(b) == set(expected)
    for k, (shape, dtype) in expected.items():
        assert b[k].shape == shape and b[k].dtype == dtype, k
    for b in batches:
        assert (b["boxes"][..., 0] <= b["boxes"][..., 2]).all()
        assert (b["boxes"][..., [0, 2]] <= 19).all() and (b["boxes"][..., [1, 3]] <= 23).all()
        assert not b["box_valid"][:, 2].any()  # synthetic: at most 2 boxes, slot 3 is padding
        if multi_label:
            labels = b["labels"][b["valid"]]
            first = b["label"][b["valid"]]
            assert (labels[np.arange(first.size), first] == 1).all()
    assert "tensorflow" not in sys.modules


def test_eval_batches_match_records_and_pad_once():
    config = make_config(resize_size=32, eval_protocol="center_crop")
    src = synthetic.SyntheticSource("test", num_examples=12, image_size=(24, 20), channels=3,
                                    num_classes=5, multi_label=False, max_boxes=3, seed=3)
    batches = collect(data.make_iterator(config, "test", training=False, batch_size=5))
    assert len(batches) == 3
    valid = np.concatenate([b["valid"] for b in batches])
    np.testing.assert_array_equal(valid, np.arange(15) < 12)
    images = np.concatenate([b["image"] for b in batches])
    boxes = np.concatenate([b["boxes"] for b in batches])
    box_valid = np.concatenate([b["box_valid"] for b in batches])
    labels = np.concatenate([b["label"] for b in batches])
    for i in range(12):
        r = src[i]
        img, bx, vis = transforms.preprocess(r["image"], r["boxes"], training=False,
                                             image_size=(24, 20), resize_size=32)
        np.testing.assert_allclose(images[i], transforms.normalize(img), atol=1e-6)
        g = bx.shape[0]
        np.testing.assert_array_equal(boxes[i, :g], bx)
        np.testing.assert_array_equal(box_valid[i], np.arange(3) < g)
        assert labels[i] == r["label"]
    assert not box_valid[12:].any()
    np.testing.assert_allclose(images[12:], np.broadcast_to(
        transforms.normalize(np.zeros((24, 20, 3), np.uint8)), (3, 24, 20, 3)))


@pytest.mark.parametrize("n,b,p", [(12, 5, 1), (23, 4, 3), (7, 8, 2), (9, 3, 3)])
def test_eval_indices_cover_each_example_once(n, b, p):
    shards = [pipeline.example_indices(n, training=False, batch_size=b, process_index=i,
                                       process_count=p) for i in range(p)]
    assert len({s.size for s in shards}) == 1 and shards[0].size % b == 0
    real = np.concatenate([s[s >= 0] for s in shards])
    np.testing.assert_array_equal(np.sort(real), np.arange(n))
    assert all((s[:np.sum(s >= 0)] >= 0).all() for s in shards)  # padding only at the end


def test_eval_sharded_iterators_count_each_once():
    config = make_config()
    counts, lens = 0, []
    for pi in range(3):
        it = data.make_iterator(config, "validation", training=False, batch_size=2,
                                process_index=pi, process_count=3)
        lens.append(len(it))
        counts += sum(int(b["valid"].sum()) for b in it)
    assert counts == data.get_info(config).num_examples["validation"] == 11
    assert len(set(lens)) == 1
    assert data.eval_steps(config, "validation", 2, process_count=3) == lens[0]


@pytest.mark.parametrize("n,b,p", [(37, 4, 1), (37, 4, 3), (100, 8, 4)])
def test_train_indices_disjoint_equal_and_seeded(n, b, p):
    shards = [pipeline.example_indices(n, training=True, batch_size=b, epoch=2, seed=5,
                                       process_index=i, process_count=p) for i in range(p)]
    steps = n // (b * p)
    assert all(s.size == steps * b for s in shards)
    allidx = np.concatenate(shards)
    assert np.unique(allidx).size == allidx.size  # disjoint, no repeats
    perm = np.random.default_rng([5, 2]).permutation(n)[:steps * b * p]
    np.testing.assert_array_equal(np.sort(allidx), np.sort(perm))
    again = pipeline.example_indices(n, training=True, batch_size=b, epoch=2, seed=5,
                                     process_index=0, process_count=p)
    np.testing.assert_array_equal(again, shards[0])
    other = pipeline.example_indices(n, training=True, batch_size=b, epoch=3, seed=5,
                                     process_index=0, process_count=p)
    assert not np.array_equal(other, shards[0])


def test_train_iterator_deterministic_given_seed_epoch_and_threads():
    config = make_config(resize_size=32)
    run = lambda epoch, threads=2: collect(data.make_iterator(
        make_config(resize_size=32, data_threads=threads), "train", training=True,
        batch_size=8, epoch=epoch, seed=1))
    a, b, c, d = run(4), run(4), run(5), run(4, threads=0)
    assert len(a) == data.steps_per_epoch(config, 8) == 4
    for x, y, z in zip(a, b, d):
        for k in x:
            np.testing.assert_array_equal(x[k], y[k])
            np.testing.assert_array_equal(x[k], z[k])
    assert not np.array_equal(a[0]["image"], c[0]["image"])
    assert all(x["valid"].all() for x in a)


def test_train_steps_match_across_processes():
    config = make_config()
    global_batch, p = 6, 2
    steps = data.steps_per_epoch(config, global_batch)
    for pi in range(p):
        it = data.make_iterator(config, "train", training=True, batch_size=global_batch // p,
                                process_index=pi, process_count=p)
        assert len(it) == steps == 37 // 6


def test_get_info_synthetic():
    config = make_config(multi_label=True)
    info = data.get_info(config)
    assert info.num_examples == {"train": 37, "validation": 11, "test": 12}
    assert info.image_shape == (24, 20, 3) and info.num_classes == 5 and info.multi_label
    src = synthetic.SyntheticSource("train", num_examples=37, image_size=(24, 20), channels=3,
                                    num_classes=5, multi_label=True, max_boxes=3, seed=3)
    want = np.mean([src[i]["labels"] for i in range(37)], axis=0)
    assert info.label_prior.dtype == np.float64
    np.testing.assert_allclose(info.label_prior, want)
    single = data.get_info(make_config()).label_prior
    assert single.shape == (5,) and np.isclose(single.sum(), 1.0)
    # file-based configs leave the sizes at 0: synthetic falls back to 64 / 32
    sizes = data.get_info(make_config(num_train_examples=0, num_test_examples=0)).num_examples
    assert sizes == {"train": 64, "validation": 16, "test": 16}


def test_errors():
    with pytest.raises(ValueError, match="split"):
        data.make_iterator(make_config(), "val", training=False, batch_size=2)
    with pytest.raises(ValueError, match="config.dataset"):
        data.get_info(make_config(dataset="imagenet"))
    with pytest.raises(ValueError, match="cannot fill one batch"):
        data.make_iterator(make_config(), "train", training=True, batch_size=64)
    config = make_config(max_boxes=1)
    opened = pipeline.open_dataset(config)
    record = {"image": np.zeros((24, 20, 3), np.uint8), "label": 0,
              "boxes": np.zeros((2, 4), np.float32), "box_labels": np.zeros(2, np.int32)}
    load = pipeline._example_fn(config, opened, [record], training=False, epoch=0, seed=0)
    with pytest.raises(ValueError, match="max_boxes"):
        load(0)
    record.update(boxes=np.zeros((1, 4), np.float32), box_labels=np.zeros(1, np.int32), label=7)
    with pytest.raises(ValueError, match="label 7"):
        load(0)


# ----------------------------------------------------------------------------- real builders

def write_mini_cub(parent):
    root = pathlib.Path(parent) / "CUB_200_2011"
    rows = []
    for i, (c, train) in enumerate([(1, 1), (2, 1), (2, 1), (1, 0), (2, 0), (1, 0)], 1):
        rel = f"{c:03d}.B/{i}.jpg"
        (root / "images" / rel).parent.mkdir(parents=True, exist_ok=True)
        img = np.zeros((80 + 10 * i, 100, 3), np.uint8)
        img[20:61, 30:71] = 255  # the "bird": box x=30, y=20, w=h=40 (reference convention)
        Image.fromarray(img).save(root / "images" / rel, quality=98)
        rows.append((i, rel, c, train))
    (root / "images.txt").write_text("".join(f"{i} {rel}\n" for i, rel, _, _ in rows))
    (root / "image_class_labels.txt").write_text("".join(f"{i} {c}\n" for i, _, c, _ in rows))
    (root / "train_test_split.txt").write_text("".join(f"{i} {t}\n" for i, _, _, t in rows))
    (root / "bounding_boxes.txt").write_text("".join(f"{i} 30 20 40 40\n" for i, *_ in rows))


@pytest.fixture(scope="module")
def cub_config(tmp_path_factory):
    tfds = pytest.importorskip("tensorflow_datasets")
    tfds.display_progress_bar(False)
    base = tmp_path_factory.mktemp("cub_pipe")
    write_mini_cub(base / "manual")
    return make_config(dataset="cub", data_dir=str(base / "tfds"), manual_dir=str(base / "manual"),
                       num_classes=200, image_size=(56, 56), resize_size=64, max_boxes=1)


def test_cub_pipeline(cub_config):
    info = data.get_info(cub_config)
    assert info.num_examples == {"train": 3, "validation": 2, "test": 1}
    assert info.image_shape == (56, 56, 3) and info.class_names is not None
    want = np.zeros(200)
    want[[0, 1]] = [1 / 3, 2 / 3]
    np.testing.assert_allclose(info.label_prior, want)
    for protocol in ("center_crop", "resize"):
        config = make_config(**{**cub_config.to_dict(), "eval_protocol": protocol})
        batches = collect(data.make_iterator(config, "validation", training=False, batch_size=4))
        assert len(batches) == 1
        b = batches[0]
        np.testing.assert_array_equal(b["valid"], [True, True, False, False])
        for j in range(2):
            # the white square in the de-normalised image sits on the box (+-1 px)
            img = b["image"][j] * transforms.IMAGENET_STD + transforms.IMAGENET_MEAN
            ys, xs = np.nonzero(img.mean(-1) > 0.5)
            np.testing.assert_allclose(b["boxes"][j, 0], [xs.min(), ys.min(), xs.max(), ys.max()],
                                       atol=1)
            assert b["box_valid"][j, 0] and b["box_labels"][j, 0] == b["label"][j]
    train = collect(data.make_iterator(cub_config, "train", training=True, batch_size=3))
    assert len(train) == 1 and train[0]["image"].shape == (3, 56, 56, 3)
    assert "tensorflow" not in sys.modules


def test_cub_num_classes_mismatch(cub_config):
    bad = make_config(**{**cub_config.to_dict(), "num_classes": 10})
    with pytest.raises(ValueError, match="num_classes"):
        data.get_info(bad)
    bad = make_config(**{**cub_config.to_dict(), "multi_label": True})
    with pytest.raises(ValueError, match="multi_label"):
        data.get_info(bad)


def test_digits_pipeline(tmp_path):
    pytest.importorskip("tensorflow_datasets")
    pytest.importorskip("sklearn")
    from infocam_jax.data import digit_builders  # noqa: F401
    config = make_config(dataset="digits", data_dir=str(tmp_path), num_train_examples=20,
                         num_test_examples=10, num_classes=10, multi_label=True, max_boxes=2,
                         model="digits_cnn", image_size=(28, 56), resize_size=0)
    info = data.get_info(config)
    assert info.image_shape == (28, 56, 1) and info.num_examples["train"] == 20
    assert info.label_prior.shape == (10,) and (info.label_prior <= 1).all()
    b = next(data.make_iterator(config, "train", training=True, batch_size=4))
    assert b["image"].shape == (4, 28, 56, 1) and b["labels"].shape == (4, 10)
    assert 0.0 <= b["image"].min() and b["image"].max() <= 1.0


@pytest.mark.parametrize("dataset,needle", [("cub", "CUB_200_2011"),
                                            ("tiny_imagenet", "tiny-imagenet-200")])
def test_missing_manual_dir_error_through_pipeline(tmp_path, dataset, needle):
    pytest.importorskip("tensorflow_datasets")
    from infocam_jax.data import cub
    if cub.tensorflow_available():
        pytest.skip("TensorFlow installed: CUB would fall back to the catalog download")
    config = make_config(dataset=dataset, data_dir=str(tmp_path / "tfds"),
                         manual_dir=str(tmp_path / "absent"), num_classes=200, max_boxes=1)
    with pytest.raises(FileNotFoundError, match=needle):
        data.get_info(config)


def test_flip_policy():
    for name in ("digits", "multi_mnist", "cluttered_mnist"):
        assert not sources.random_flip(make_config(dataset=name))
    for name in ("cub", "tiny_imagenet", "synthetic"):
        assert sources.random_flip(make_config(dataset=name))
    assert not sources.random_flip(make_config(dataset="cub", random_flip=False))


def _assert_same_batches(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert set(x) == set(y)
        for k in x:
            np.testing.assert_array_equal(x[k], y[k], err_msg=k)


@pytest.mark.parametrize("training", [True, False])
def test_worker_processes_yield_the_threaded_batches(training):
    """data_workers=2 (grain processes) gives exactly the batches of the threaded path, in
    order: training (shuffled, augmented) and eval (padded last batch)."""
    split = "train" if training else "test"
    run = lambda workers: collect(data.make_iterator(
        make_config(resize_size=32, data_workers=workers), split, training=training,
        batch_size=4, epoch=2, seed=5))
    threaded, workers = run(0), run(2)
    assert len(threaded) == (37 // 4 if training else 3)  # test split: 12 examples
    _assert_same_batches(threaded, workers)


def test_worker_processes_on_a_tfds_set(cub_config):
    """The same on the array_record data source of a small tfds build (pickled into workers)."""
    run = lambda workers: collect(data.make_iterator(
        make_config(**{**cub_config.to_dict(), "data_workers": workers}), "validation",
        training=False, batch_size=1))
    _assert_same_batches(run(0), run(2))


def test_data_workers_rejects_negative():
    with pytest.raises(ValueError, match="data_workers"):
        data.make_iterator(make_config(data_workers=-1), "train", training=True, batch_size=4)
