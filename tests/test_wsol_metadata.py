"""data/wsol_metadata.py and config.dataset = "wsol_metadata" on small trees built here."""
import ml_collections
import numpy as np
import pytest
from PIL import Image

from infocam_jax import data
from infocam_jax.data import transforms, wsol_metadata

SPLIT_DIRS = {"train": "train", "validation": "val", "test": "test"}


def write(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(",".join(map(str, r)) + "\n" for r in rows))


def make_tree(root, kind="boxes", sizes=None, seed=0):
    """Images + reference metadata; train has no localisation files (as ILSVRC's need not)."""
    rng = np.random.default_rng(seed)
    sizes = sizes or {"train": 6, "val": 3, "test": 4}
    expected = {}
    for split, n in sizes.items():
        ids, labels, dims, loc = [], [], [], []
        for i in range(n):
            image_id = f"{split}/c{i % 3}/im{i}.jpg"
            w, h = int(rng.integers(40, 90)), int(rng.integers(40, 90))
            path = root / "images" / image_id
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)
            boxes = []
            for k in range(1 + i % 2):
                x0, y0 = int(rng.integers(0, w // 2)), int(rng.integers(0, h // 2))
                x1, y1 = int(rng.integers(x0 + 2, w)), int(rng.integers(y0 + 2, h))
                boxes.append((x0, y0, x1, y1))
                if kind == "boxes":
                    loc.append((image_id, x0, y0, x1, y1))
                else:
                    mask = np.zeros((h, w), np.uint8)
                    mask[y0:y1 + 1, x0:x1 + 1] = 255
                    mpath = f"{split}/c{i % 3}/im{i}_m{k}.png"
                    (root / "masks" / mpath).parent.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(mask).save(root / "masks" / mpath)
                    loc.append((image_id, mpath, f"{split}/c{i % 3}/im{i}_ignore.png"
                                if k == 0 else ""))
            ids.append(image_id)
            labels.append((image_id, i % 3))
            dims.append((image_id, w, h))
            expected[image_id] = (i % 3, boxes, (h, w))
        meta = root / "metadata" / split
        write(meta / "image_ids.txt", [(i,) for i in ids])
        write(meta / "class_labels.txt", labels)
        if split != "train":
            write(meta / "image_sizes.txt", dims if kind == "boxes" else [])
            write(meta / "localization.txt", loc)
    return expected


def make_config(root, **overrides):
    c = ml_collections.ConfigDict(dict(
        dataset="wsol_metadata", data_dir="", manual_dir=str(root / "images"),
        wsol_metadata_root=str(root / "metadata"), wsol_mask_root=str(root / "masks"),
        image_size=(32, 32), resize_size=40, eval_protocol="resize", max_boxes=2,
        model="resnet50", num_classes=3, multi_label=False, data_threads=1))
    c.update(overrides)
    return c


class TestSource:
    @pytest.mark.parametrize("kind", ["boxes", "masks"])
    def test_records_match_the_tree(self, tmp_path, kind):
        expected = make_tree(tmp_path, kind)
        src = wsol_metadata.WsolMetadataSource(str(tmp_path / "images"),
                                               str(tmp_path / "metadata" / "test"),
                                               str(tmp_path / "masks"))
        assert len(src) == 4
        for i in range(len(src)):
            r = src[i]
            label, boxes, hw = expected[r["image_id"]]
            assert r["label"] == label and r["image"].shape == hw + (3,)
            np.testing.assert_array_equal(r["boxes"], np.asarray(boxes, np.float32))
            np.testing.assert_array_equal(r["box_labels"], [label] * len(boxes))

    def test_training_split_needs_no_localisation(self, tmp_path):
        make_tree(tmp_path)
        src = wsol_metadata.open_sources(str(tmp_path / "images"), str(tmp_path / "metadata"))
        assert src["train"][0]["boxes"].shape == (0, 4)
        np.testing.assert_array_equal(src["train"].labels, [0, 1, 2, 0, 1, 2])

    def test_missing_image_names_the_file(self, tmp_path):
        make_tree(tmp_path)
        (tmp_path / "images" / "val" / "c1" / "im1.jpg").unlink()
        src = wsol_metadata.WsolMetadataSource(str(tmp_path / "images"),
                                               str(tmp_path / "metadata" / "val"))
        with pytest.raises(ValueError, match="im1.jpg"):
            src[1]

    def test_missing_class_labels(self, tmp_path):
        make_tree(tmp_path)
        (tmp_path / "metadata" / "val" / "class_labels.txt").unlink()
        with pytest.raises(ValueError, match="class_labels.txt"):
            wsol_metadata.WsolMetadataSource(str(tmp_path / "images"),
                                             str(tmp_path / "metadata" / "val"))


class TestPipeline:
    def test_info_and_label_prior(self, tmp_path):
        make_tree(tmp_path)
        info = data.get_info(make_config(tmp_path))
        assert info.num_examples == {"train": 6, "validation": 3, "test": 4}
        np.testing.assert_allclose(info.label_prior, [1 / 3] * 3)

    def test_eval_batches_resize_like_the_reference_protocol(self, tmp_path):
        expected = make_tree(tmp_path, sizes={"train": 3, "val": 2, "test": 3})
        config = make_config(tmp_path)
        batches = list(data.make_iterator(config, "test", training=False, batch_size=2))
        assert [b["valid"].tolist() for b in batches] == [[True, True], [True, False]]
        ids = [f"test/c{i}/im{i}.jpg" for i in range(3)]
        for n, image_id in enumerate(ids):
            b = batches[n // 2]
            label, boxes, hw = expected[image_id]
            image = np.asarray(Image.open(tmp_path / "images" / image_id).convert("RGB"))
            _, want, visible = transforms.preprocess(
                image, np.asarray(boxes, np.float32), training=False, image_size=(32, 32),
                resize_size=40, eval_protocol="resize")
            g = want.shape[0]
            np.testing.assert_array_equal(b["boxes"][n % 2, :g], want)
            np.testing.assert_array_equal(b["box_valid"][n % 2, :g], visible)
            assert not b["box_valid"][n % 2, g:].any() and b["label"][n % 2] == label

    def test_training_batches(self, tmp_path):
        make_tree(tmp_path)
        batches = list(data.make_iterator(make_config(tmp_path), "train", training=True,
                                          batch_size=3))
        assert len(batches) == 2 and batches[0]["image"].shape == (3, 32, 32, 3)


class TestAgreement:
    """read_metadata cross-checks the files (the score-map tool's cases are in
    test_scoremap_files.TestFailFast): the message names the file and the line."""

    def test_duplicate_id_on_a_training_split(self, tmp_path):
        make_tree(tmp_path)
        path = tmp_path / "metadata" / "train" / "image_ids.txt"
        path.write_text(path.read_text() + "train/c0/im0.jpg\n")
        with pytest.raises(ValueError, match=f"{path}:7: duplicate image id .* line 1"):
            wsol_metadata.read_metadata(str(path.parent), localization=False)

    def test_class_label_of_an_unlisted_id(self, tmp_path):
        make_tree(tmp_path)
        path = tmp_path / "metadata" / "train" / "class_labels.txt"
        path.write_text("other/x.jpg,0\n" + path.read_text())
        with pytest.raises(ValueError, match=f"{path}:1: image id 'other/x.jpg' is not listed"):
            wsol_metadata.read_metadata(str(path.parent), localization=False)

    def test_mask_line_of_an_unlisted_id(self, tmp_path):
        make_tree(tmp_path, kind="masks")
        path = tmp_path / "metadata" / "val" / "localization.txt"
        path.write_text(path.read_text() + "other/x.jpg,a.png,\n")
        lines = len(path.read_text().splitlines())
        with pytest.raises(ValueError, match=f"{path}:{lines}: image id 'other/x.jpg'"):
            wsol_metadata.read_metadata(str(path.parent), "masks")

    def test_box_outside_its_image(self, tmp_path):
        expected = make_tree(tmp_path)
        path = tmp_path / "metadata" / "val" / "localization.txt"
        image_id = "val/c0/im0.jpg"
        h, w = expected[image_id][2]
        path.write_text(f"{image_id},0,0,{w - 1},{h + 1}\n" + path.read_text())
        with pytest.raises(ValueError, match=f"{path}:1: box .* outside its {w}x{h} image"):
            wsol_metadata.read_metadata(str(path.parent))

    def test_id_lines(self, tmp_path):
        make_tree(tmp_path)
        md = wsol_metadata.read_metadata(str(tmp_path / "metadata" / "val"))
        assert md.id_lines == {i: n + 1 for n, i in enumerate(md.image_ids)}
