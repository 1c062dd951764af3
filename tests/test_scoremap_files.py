"""evaluation.scoremap_files / scoremap_io / scoremap_export and launch/evaluate_scoremaps.py
on small trees built here.

Expected numbers come from a NumPy + OpenCV statement of the reference WSOL evaluation
(clovaai/wsolevaluation, ``evaluation.py``): per-image OpenCV contours at every threshold,
inclusive IoU in float64, ``np.histogram`` pixel histograms for PxAP.
"""
import json
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from infocam_jax.cli import scoremaps as scoremaps_cli
from infocam_jax.data import masks, wsol_metadata
from infocam_jax.evaluation.scoremaps import write as scoremap_write
from infocam_jax.evaluation.scoremaps import score as sf
from infocam_jax.evaluation.scoremaps import read

cv2 = pytest.importorskip("cv2")
REPO = pathlib.Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------ NumPy / OpenCV statement
def np_boxes(scoremap, threshold, multi_contour):
    height, width = scoremap.shape
    q = (np.asarray(scoremap, np.float64) * 255).astype(np.uint8)
    _, binary = cv2.threshold(q, int(threshold * q.max()), 255, cv2.THRESH_BINARY)
    contours = cv2.findContours(binary, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[0]
    if not contours:
        return np.zeros((1, 4), np.int64)
    if not multi_contour:
        contours = [max(contours, key=cv2.contourArea)]
    out = []
    for c in contours:
        x, y, w, h = cv2.boundingRect(c)
        out.append([x, y, min(x + w, width - 1), min(y + h, height - 1)])
    return np.asarray(out)


def np_iou(a, b):
    a, b = np.asarray(a, np.float64)[:, None], np.asarray(b, np.float64)[None]
    iw = np.maximum(0, np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]) + 1)
    ih = np.maximum(0, np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]) + 1)
    area = lambda x: (x[..., 2] - x[..., 0] + 1) * (x[..., 3] - x[..., 1] + 1)  # noqa: E731
    return iw * ih / (area(a) + area(b) - iw * ih)


def np_max_box_acc(maps, gt, thresholds, ious, multi_contour):
    """[I] percentages: max over thresholds of 100 * (#images with IoU >= δ/100) / N."""
    correct = np.zeros((len(ious), len(thresholds)))
    for m, g in zip(maps, gt):
        best = np.array([np_iou(np_boxes(m, t, multi_contour), g).max() for t in thresholds])
        for i, d in enumerate(ious):
            correct[i] += best >= d / 100
    acc = correct * 100. / len(maps)
    return acc.max(1), acc.argmax(1)


def np_pxap(maps, fgs, ignores, thresholds):
    edges = np.append(thresholds, [1.0, 2.0, 3.0])
    pos = sum(np.histogram(m[f], edges)[0] for m, f in zip(maps, fgs)).astype(np.float64)
    neg = sum(np.histogram(m[~f & ~i], edges)[0]
              for m, f, i in zip(maps, fgs, ignores)).astype(np.float64)
    tp, fp = np.cumsum(pos[::-1]), np.cumsum(neg[::-1])
    with np.errstate(invalid="ignore"):
        precision = tp / (tp + fp)
    recall = tp / pos.sum()
    return 100 * (precision[1:] * np.diff(recall))[(tp + fp)[1:] != 0].sum()


# ------------------------------------------------------------------ trees
def noisy_map(rng, size, centres, noise=0.3):
    yy, xx = np.mgrid[:size, :size]
    m = noise * rng.random((size, size))
    for cx, cy in centres:
        s = rng.uniform(0.1, 0.25) * size
        m += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
    return (m - m.min()) / (m.max() - m.min())


def write(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(",".join(map(str, r)) + "\n" for r in rows))


def box_tree(root, num=6, max_boxes=1, size=32, seed=0, dtype=np.float32, dataset="CUB"):
    """Maps of ``size``; image sizes 224x224, so the GT boxes keep their pixel values."""
    rng = np.random.default_rng(seed)
    meta = root / "metadata" / dataset / "val"
    ids, maps, gt, loc = [], [], [], []
    for n in range(num):
        image_id = f"c{n % 2}/img{n}.jpg"
        g = []
        for _ in range(int(rng.integers(1, max_boxes + 1))):
            x0, y0 = rng.integers(0, size // 2, 2)
            x1, y1 = x0 + rng.integers(4, size // 2), y0 + rng.integers(4, size // 2)
            g.append((int(x0), int(y0), int(x1), int(y1)))
            loc.append((image_id, *g[-1]))
        m = noisy_map(rng, size, [((b[0] + b[2]) / 2, (b[1] + b[3]) / 2) for b in g])
        path = root / "maps" / (image_id + ".npy")
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, m.astype(dtype))
        ids.append(image_id)
        maps.append(np.load(path).astype(np.float64))
        gt.append(np.asarray(g))
    write(meta / "image_ids.txt", [(i,) for i in ids])
    write(meta / "class_labels.txt", [(i, n % 2) for n, i in enumerate(ids)])
    write(meta / "image_sizes.txt", [(i, 224, 224) for i in ids])  # GT kept as is
    write(meta / "localization.txt", loc)
    return maps, gt


def mask_tree(root, num=4, seed=0):
    rng = np.random.default_rng(seed)
    meta = root / "metadata" / "OpenImages" / "val"
    ids, loc, maps, fgs, ignores = [], [], [], [], []
    for n in range(num):
        image_id = f"val/c{n}/im{n}.jpg"
        h, w = (int(v) for v in rng.integers(100, 400, 2))
        stem = f"val/c{n}/im{n}"
        folder = root / "masks" / "OpenImages" / "val" / f"c{n}"
        folder.mkdir(parents=True, exist_ok=True)
        fg = np.zeros((224, 224), bool)
        for k in range(2):
            inst = np.zeros((h, w), np.uint8)
            y0, x0 = rng.integers(0, h // 2), rng.integers(0, w // 2)
            inst[y0:y0 + h // 3, x0:x0 + w // 4] = 255
            Image.fromarray(inst).save(folder / f"im{n}_m{k}.png")
            fg |= cv2.resize(inst.astype(np.float32), (224, 224),
                             interpolation=cv2.INTER_NEAREST) > 0.5
            loc.append((image_id, f"{stem}_m{k}.png", f"{stem}_ignore.png" if k == 0 else ""))
        ig = np.zeros((h, w), np.uint8)
        ig[h // 4:h // 2 + h // 4, w // 4:] = 255
        Image.fromarray(ig).save(folder / f"im{n}_ignore.png")
        ignore = (cv2.resize(ig.astype(np.float32), (224, 224),
                             interpolation=cv2.INTER_NEAREST) > 0.5) & ~fg
        m = np.clip(0.6 * fg + 0.5 * rng.random((224, 224)), 0, 1)
        (root / "maps" / "val" / f"c{n}").mkdir(parents=True, exist_ok=True)
        np.save(root / "maps" / (image_id + ".npy"), m)
        ids.append(image_id)
        maps.append(m)
        fgs.append(fg)
        ignores.append(ignore)
    write(meta / "image_ids.txt", [(i,) for i in ids])
    write(meta / "class_labels.txt", [(i, 0) for i in ids])
    write(meta / "image_sizes.txt", [])
    write(meta / "localization.txt", loc)
    return maps, fgs, ignores


def evaluate(root, dataset="CUB", **kwargs):
    return sf.evaluate_scoremaps(str(root / "maps"), str(root / "metadata"), dataset, "val",
                                 mask_root=str(root / "masks"), progress=False, **kwargs)


# ------------------------------------------------------------------ tests
class TestResizeBoxes:
    def test_equals_python_truncation(self):
        rng = np.random.default_rng(0)
        for _ in range(200):
            w, h = (int(v) for v in rng.integers(1, 2000, 2))
            box = [int(rng.integers(0, w)), int(rng.integers(0, h)), int(rng.integers(0, w)),
                   int(rng.integers(0, h))]
            expected = [int(float(v) * 224.0 / float(d)) for v, d in zip(box, (w, h, w, h))]
            assert read.resize_boxes(box, (w, h)).tolist() == expected

    def test_hand_value(self):
        assert read.resize_boxes([1, 2, 4, 3], (10, 20)).tolist() == [22, 22, 89, 33]


class TestBoxEvaluation:
    @pytest.mark.parametrize("engine", ["host", "jax"])
    @pytest.mark.parametrize("multi_contour", [False, True])
    @pytest.mark.parametrize("dtype", [np.float32, np.float64])
    def test_single_box_equals_statement(self, tmp_path, multi_contour, dtype, engine):
        maps, gt = box_tree(tmp_path, dtype=dtype, seed=1)
        thresholds = np.arange(0, 1, 0.05)
        report = evaluate(tmp_path, cam_curve_interval=0.05, multi_contour_eval=multi_contour,
                          multi_iou_eval=True, batch_size=4, engine=engine)
        assert report["engine"] == engine
        acc, best = np_max_box_acc(maps, gt, thresholds, (30, 50, 70), multi_contour)
        assert [report["max_box_acc"][k] for k in ("30", "50", "70")] == acc.tolist()
        assert [report["best_threshold"][k] for k in ("30", "50", "70")] == \
            thresholds[best].tolist()
        assert report["performance"] == np.average(acc.tolist())
        assert report["metric"] == ("MaxBoxAccV2" if multi_contour else "MaxBoxAcc")

    def test_several_boxes_and_iou50_performance(self, tmp_path):
        maps, gt = box_tree(tmp_path, num=5, max_boxes=3, seed=2, dataset="ILSVRC")
        thresholds = np.arange(0, 1, 0.1)
        report = evaluate(tmp_path, "ILSVRC", cam_curve_interval=0.1, multi_contour_eval=True)
        acc, _ = np_max_box_acc(maps, gt, thresholds, (30, 50, 70), True)
        assert report["performance"] == acc[1]
        assert report["num_images"] == 5

    @pytest.mark.parametrize("multi_contour", [False, True])
    def test_engines_agree_on_several_boxes(self, tmp_path, multi_contour):
        box_tree(tmp_path, num=7, max_boxes=3, seed=5, dataset="ILSVRC")
        reports = [evaluate(tmp_path, "ILSVRC", cam_curve_interval=0.01, batch_size=3,
                            multi_contour_eval=multi_contour, multi_iou_eval=True, engine=e)
                   for e in ("host", "jax")]
        for key in ("performance", "max_box_acc", "best_threshold", "per_class_max_box_acc"):
            assert reports[0][key] == reports[1][key], key

    def test_host_engine_never_imports_jax_and_reports_timings(self, tmp_path):
        box_tree(tmp_path, num=3)
        code = (f"import sys; from infocam_jax.evaluation.scoremaps import score as sf; "
                f"r = sf.evaluate_scoremaps({str(tmp_path / 'maps')!r}, "
                f"{str(tmp_path / 'metadata')!r}, 'CUB', 'val', progress=False, engine='host'); "
                f"print(r['engine'], 'jax' in sys.modules, sorted(r['timings_s']))")
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              env=dict(os.environ, PYTHONPATH=str(REPO)), check=False)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert proc.stdout.split("\n")[0] == "host False ['counted', 'first_map_read']"

    def test_unknown_engine(self, tmp_path):
        box_tree(tmp_path, num=2)
        with pytest.raises(ValueError, match="engine must be one of"):
            evaluate(tmp_path, engine="opencv")

    def test_per_class_at_best_threshold(self, tmp_path):
        maps, gt = box_tree(tmp_path, num=6, seed=3)
        thresholds = np.arange(0, 1, 0.1)
        report = evaluate(tmp_path, cam_curve_interval=0.1)
        _, best = np_max_box_acc(maps, gt, thresholds, (50,), False)
        t = thresholds[best[0]]
        for c in (0, 1):
            hits = [np_iou(np_boxes(maps[n], t, False), gt[n]).max() >= 0.5
                    for n in range(c, 6, 2)]
            assert report["per_class_max_box_acc"]["50"][str(c)] == 100. * sum(hits) / 3
        assert report["per_class_num_images"] == {"0": 3, "1": 3}

    def test_protocol_quantisation_of_float32_maps(self):
        # float32 values just below k/255: float32 and float64 products floor differently.
        k = np.arange(1, 256)
        v = np.nextafter((k / 255).astype(np.float32), np.float32(0))
        v = np.concatenate([v, (k / 255).astype(np.float32), np.float32([0, 1])])
        encoded = sf._protocol_scoremap(v[None])[0]
        q32 = np.floor(encoded * np.float32(255)).astype(np.int64)
        np.testing.assert_array_equal(q32, (v.astype(np.float64) * 255).astype(np.uint8))


class TestMaskEvaluation:
    def test_pxap_equals_statement(self, tmp_path):
        maps, fgs, ignores = mask_tree(tmp_path)
        report = evaluate(tmp_path, "OpenImages", cam_curve_interval=0.01, batch_size=3)
        expected = np_pxap(maps, fgs, ignores, np.arange(0, 1, 0.01))
        assert report["pxap"] == pytest.approx(expected, abs=1e-9)
        assert report["performance"] == report["pxap"]

    @pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "P"])
    def test_mask_decoding_equals_opencv(self, tmp_path, mode):
        rng = np.random.default_rng(0)
        arr = (rng.integers(0, 4, (37, 91, 4)) * rng.integers(0, 2, (37, 91, 1))).astype(np.uint8)
        arr = arr if mode == "RGBA" else arr[..., :3]
        image = Image.fromarray(arr[..., 0] if mode == "L" else arr)
        image = image.convert("P") if mode == "P" else image
        path = tmp_path / "m.png"
        image.save(path)
        fg, _ = masks.load_mask(str(tmp_path), ["m.png"], "")
        ref = cv2.resize(np.float32(cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)), (224, 224),
                         interpolation=cv2.INTER_NEAREST) > 0.5
        np.testing.assert_array_equal(fg, ref)


class TestErrors:
    @pytest.mark.parametrize("case,match", [
        ("missing", "score map not found"), ("rank", "must be 2-D"), ("dtype", "floating"),
        ("nan", "NaN"), ("range", r"\[0, 1\]"), ("shape", "expected"),
    ])
    def test_bad_maps_name_the_file(self, tmp_path, case, match):
        box_tree(tmp_path, num=3)
        path = tmp_path / "maps" / "c1" / "img1.jpg.npy"
        bad = {"missing": None, "rank": np.zeros((2, 32, 32)), "dtype": np.zeros((32, 32), int),
               "nan": np.full((32, 32), np.nan), "range": np.full((32, 32), 1.5),
               "shape": np.zeros((31, 32))}[case]
        path.unlink()
        if bad is not None:
            np.save(path, bad)
        with pytest.raises(ValueError, match=match) as err:
            evaluate(tmp_path)
        assert str(path) in str(err.value)

    @pytest.mark.parametrize("file,content,match", [
        ("localization.txt", "c0/img0.jpg,1,2,3\n", "5 comma-separated"),
        ("localization.txt", "c0/img0.jpg,1,2,x,4\n", "integers"),
        ("localization.txt", "c0/img0.jpg,5,2,3,4\n", "x0 <= x1"),
        ("image_sizes.txt", "c0/img0.jpg,32\n", "3 comma-separated"),
        ("class_labels.txt", "c0/img0.jpg,a\n", "integers"),
    ])
    def test_bad_metadata_lines_name_the_file(self, tmp_path, file, content, match):
        box_tree(tmp_path, num=2)
        path = tmp_path / "metadata" / "CUB" / "val" / file
        path.write_text(content + path.read_text())
        with pytest.raises(ValueError, match=match) as err:
            evaluate(tmp_path)
        assert f"{path}:1" in str(err.value)

    @pytest.mark.parametrize("file", ["localization.txt", "image_sizes.txt"])
    def test_ids_without_boxes_or_sizes(self, tmp_path, file):
        box_tree(tmp_path, num=2)
        path = tmp_path / "metadata" / "CUB" / "val" / file
        path.write_text(path.read_text().splitlines(keepends=True)[0])
        with pytest.raises(ValueError, match="c1/img1.jpg") as err:
            evaluate(tmp_path)
        assert str(path) in str(err.value)

    def test_missing_and_corrupt_masks(self, tmp_path):
        mask_tree(tmp_path, num=2)
        path = tmp_path / "masks" / "OpenImages" / "val" / "c1" / "im1_m1.png"
        path.write_bytes(b"not a png")
        with pytest.raises(ValueError, match="could not be read") as err:
            evaluate(tmp_path, "OpenImages")
        assert str(path) in str(err.value)
        path.unlink()
        with pytest.raises(ValueError, match="mask not found"):
            evaluate(tmp_path, "OpenImages")

    def test_ids_without_masks(self, tmp_path):
        mask_tree(tmp_path, num=2)
        path = tmp_path / "metadata" / "OpenImages" / "val" / "localization.txt"
        path.write_text("".join(path.read_text().splitlines(keepends=True)[:2]))
        with pytest.raises(ValueError, match="no mask for 1 image"):
            evaluate(tmp_path, "OpenImages")


class TestFailFast:
    """The command checks every map's .npy header and the metadata's agreement before it
    evaluates any map: exit 2, the file and line named, nothing written."""
    NUM = 5

    @staticmethod
    def no_read(*_args, **_kwargs):
        raise AssertionError("a map or mask was read before the pre-pass finished")

    def run_cli(self, root, capsys, monkeypatch):
        monkeypatch.setattr(sf, "load_scoremap", self.no_read)
        out = root / "out" / "r.json"
        code = scoremaps_cli.main([f"--scoremap_root={root / 'maps'}",
                                   f"--metadata_root={root / 'metadata'}", "--dataset_name=CUB",
                                   "--split=val", f"--output={out}", "--quiet"])
        captured = capsys.readouterr()
        assert code == 2 and captured.out == "", captured
        assert not (root / "out").exists()
        return captured.err

    def last_map(self, root):
        n = self.NUM - 1
        return root / "maps" / f"c{n % 2}" / f"img{n}.jpg.npy"

    @pytest.mark.parametrize("case,match", [
        ("missing", "score map not found"), ("header", "could not be read as .npy"),
        ("magic", "could not be read as .npy"), ("data", "is truncated"),
        ("shape", r"has shape \(31, 32\), expected \(32, 32\)"), ("dtype", "floating"),
        ("rank", "must be 2-D"),
    ])
    def test_bad_last_map(self, tmp_path, capsys, monkeypatch, case, match):
        box_tree(tmp_path, num=self.NUM)
        path = self.last_map(tmp_path)
        blob = path.read_bytes()
        path.unlink()
        if case in ("header", "magic", "data"):
            path.write_bytes({"header": blob[:40], "magic": b"not a npy file" + blob[14:],
                              "data": blob[:-4]}[case])
        elif case != "missing":
            np.save(path, {"shape": np.zeros((31, 32), np.float32),
                           "dtype": np.zeros((32, 32), np.uint8),
                           "rank": np.zeros((1, 32, 32), np.float32)}[case])
        err = self.run_cli(tmp_path, capsys, monkeypatch)
        assert re.search(match, err), err
        ids = tmp_path / "metadata" / "CUB" / "val" / "image_ids.txt"
        assert str(path) in err and f"{ids}:{self.NUM}" in err

    @pytest.mark.parametrize("file,edit,match,line", [
        # an id of image_ids.txt without a class label: its image_ids.txt line is named
        ("class_labels.txt", lambda rows: rows[:-1], "no class label for 1 image id",
         "image_ids.txt:5"),
        ("image_ids.txt", lambda rows: rows + rows[1:2], "duplicate image id 'c1/img1.jpg' "
         r"\(first on line 2\)", "image_ids.txt:6"),
        ("class_labels.txt", lambda rows: rows[:3] + rows[2:], "duplicate image id",
         "class_labels.txt:4"),
        ("image_sizes.txt", lambda rows: rows[:-1], "no image size for 1 image id",
         "image_ids.txt:5"),
        ("image_sizes.txt", lambda rows: rows + ["c9/img9.jpg,224,224\n"],
         "'c9/img9.jpg' is not listed in", "image_sizes.txt:6"),
        ("localization.txt", lambda rows: rows[:1] + ["c1/img1.jpg,10,10,230,20\n"] + rows[1:],
         r"lies outside its 224x224 image \(.*image_sizes.txt:2\)", "localization.txt:2"),
        ("localization.txt", lambda rows: ["c9/img9.jpg,1,1,2,2\n"] + rows,
         "not listed in", "localization.txt:1"),
    ])
    def test_metadata_disagreement(self, tmp_path, capsys, monkeypatch, file, edit, match,
                                   line):
        box_tree(tmp_path, num=self.NUM)
        path = tmp_path / "metadata" / "CUB" / "val" / file
        path.write_text("".join(edit(path.read_text().splitlines(keepends=True))))
        err = self.run_cli(tmp_path, capsys, monkeypatch)
        assert re.search(match, err), err
        assert str(path) in err and str(path.parent / line) in err

    def test_missing_last_mask(self, tmp_path, monkeypatch):
        mask_tree(tmp_path, num=3)
        path = tmp_path / "masks" / "OpenImages" / "val" / "c2" / "im2_ignore.png"
        path.unlink()
        monkeypatch.setattr(sf, "load_mask", self.no_read)
        with pytest.raises(ValueError, match="mask not found") as err:
            evaluate(tmp_path, "OpenImages")
        ids = tmp_path / "metadata" / "OpenImages" / "val" / "image_ids.txt"
        assert str(path) in str(err.value) and f"{ids}:3" in str(err.value)

    def test_box_on_the_exclusive_edge_passes(self, tmp_path):
        """x1 = width (the exclusive edge some annotations use) is inside the image."""
        box_tree(tmp_path, num=2)
        path = tmp_path / "metadata" / "CUB" / "val" / "localization.txt"
        path.write_text(path.read_text() + "c1/img1.jpg,100,100,224,224\n")
        assert evaluate(tmp_path)["num_images"] == 2

    def test_launcher_exit_code(self, tmp_path):
        box_tree(tmp_path, num=self.NUM)
        path = self.last_map(tmp_path)
        path.write_bytes(path.read_bytes()[:40])
        out = tmp_path / "out.json"
        proc = TestLauncher().run(f"--scoremap_root={tmp_path / 'maps'}",
                                  f"--metadata_root={tmp_path / 'metadata'}",
                                  "--dataset_name=CUB", "--split=val", f"--output={out}")
        assert proc.returncode == 2 and str(path) in proc.stderr, proc.stderr
        assert "image_ids.txt:5" in proc.stderr and not out.exists()
        assert "evaluating score maps" not in proc.stderr


class TestHeader:
    def test_header_equals_np_load(self, tmp_path):
        for k, a in enumerate([np.zeros((3, 4), ">f8"), np.zeros((5, 2), np.float16),
                               np.asfortranarray(np.ones((6, 7), np.float32))]):
            path = tmp_path / f"{k}.npy"
            np.save(path, a)
            assert read.npy_header(str(path)) == (np.load(path).shape, np.load(path).dtype)

    def test_format_2_0(self, tmp_path):
        path = tmp_path / "v2.npy"
        with open(path, "wb") as f:
            np.lib.format.write_array(f, np.zeros((4, 4), np.float32), version=(2, 0))
        assert read.npy_header(str(path)) == ((4, 4), np.dtype(np.float32))

    def test_check_returns_the_shape(self, tmp_path):
        box_tree(tmp_path, num=3)
        paths = sorted(str(p) for p in (tmp_path / "maps").rglob("*.npy"))
        assert read.check_scoremap_files(paths) == (32, 32)


class TestSaveScoremaps:
    def test_round_trip_through_the_reference_layout(self, tmp_path):
        rng = np.random.default_rng(4)
        maps = np.stack([noisy_map(rng, 32, [(10, 12)]) for _ in range(3)]).astype(np.float32)
        ids = ["a/x.jpg", "a/y.jpg", "b/z.jpg"]
        gt = np.array([[[4, 5, 15, 18], [0, 0, 0, 0]], [[8, 8, 20, 20], [1, 1, 30, 30]],
                       [[2, 3, 9, 9], [0, 0, 0, 0]]])
        valid = np.array([[True, False], [True, True], [True, False]])
        scoremap_write.save_scoremaps(str(tmp_path / "maps"), ids, maps)
        scoremap_write.write_metadata(str(tmp_path / "metadata" / "ILSVRC" / "val"), ids, [0, 1, 0],
                          [(224, 224)] * 3, boxes=(gt, valid))
        report = evaluate(tmp_path, "ILSVRC", cam_curve_interval=0.1)
        acc, _ = np_max_box_acc(maps, [g[v] for g, v in zip(gt, valid)],
                                np.arange(0, 1, 0.1), (50,), False)
        assert report["max_box_acc"]["50"] == acc[0]


class TestLauncher:
    def run(self, *flags):
        return subprocess.run(
            [sys.executable, str(REPO / "launch" / "evaluate_scoremaps.py"), *flags],
            capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(REPO)))

    def test_reference_flag_forms_and_json(self, tmp_path):
        maps, gt = box_tree(tmp_path, num=3)
        out = tmp_path / "out" / "r.json"
        proc = self.run(f"--scoremap_root={tmp_path / 'maps'}",
                        f"--metadata_root={tmp_path / 'metadata'}", "--dataset_name", "CUB",
                        "--split=val", "--cam_curve_interval=0.1", "--multi_contour_eval",
                        "--multi_iou_eval", "true", "--iou_threshold_list", "30", "50", "70",
                        f"--output={out}", "--quiet")
        assert proc.returncode == 0, proc.stderr
        report = json.loads(out.read_text())
        acc, _ = np_max_box_acc(maps, gt, np.arange(0, 1, 0.1), (30, 50, 70), True)
        assert report["performance"] == np.average(acc.tolist())
        assert report["metric"] == "MaxBoxAccV2" and "MaxBoxAccV2" in proc.stdout

    def test_error_exit_names_the_file(self, tmp_path):
        box_tree(tmp_path, num=2)
        (tmp_path / "maps" / "c0" / "img0.jpg.npy").unlink()
        proc = self.run(f"--scoremap_root={tmp_path / 'maps'}",
                        f"--metadata_root={tmp_path / 'metadata'}", "--dataset_name=CUB",
                        "--split=val", "--multi_iou_eval=false", "--quiet")
        assert proc.returncode == 2
        assert "img0.jpg.npy" in proc.stderr


class TestExportModelScoremaps:
    def test_maps_and_ground_truth_round_trip(self, tmp_path):
        import flax.linen as nn
        import jax
        import jax.numpy as jnp
        import ml_collections

        from infocam_jax.evaluation import forward, settings

        class PassThrough(nn.Module):
            @nn.compact
            def __call__(self, x, train=False):
                return nn.Dense(3, name="head")(x.mean((1, 2))), x

        config = ml_collections.ConfigDict(dict(
            dataset="synthetic", image_size=(16, 16), upsample="bicubic", region_size=3,
            cam_threshold=0.2, iou_threshold=0.5, num_box_thresholds=10, multi_label=False,
            num_classes=3))
        rng = np.random.default_rng(0)
        model = PassThrough()
        variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 2)))
        batch = {"image": rng.normal(size=(4, 16, 16, 2)).astype(np.float32),
                 "label": np.array([0, 2, 1, 0], np.int32),
                 "boxes": np.array([[[1, 2, 9, 9], [0, 0, 3, 3]]] * 4, np.int32),
                 "box_valid": np.array([[True, False], [True, True], [False, False],
                                        [True, False]]),
                 "valid": np.array([True, True, True, False])}
        out = scoremap_write.export_model_scoremaps(config, model, variables, [batch], str(tmp_path),
                                        split="val")
        assert (out["num_images"], out["num_skipped"]) == (2, 1)
        reading = settings.EvalSettings.from_config(config)
        want = jax.jit(lambda v, x, y: forward.predict_maps(reading, model, v, x, y))(
            variables, batch["image"], batch["label"])  # jitted, as the eval step is
        for n, b in enumerate((0, 1)):
            for kind, root in out["scoremap_roots"].items():
                saved = np.load(os.path.join(root, "val", f"{n:07d}.png.npy"))
                np.testing.assert_array_equal(saved, np.asarray(want["scoremaps"][kind][b]))
        meta = wsol_metadata.read_metadata(str(tmp_path / "metadata" / "synthetic" / "val"))
        assert meta.boxes == {"val/0000000.png": [(1, 2, 9, 9)],
                              "val/0000001.png": [(1, 2, 9, 9), (0, 0, 3, 3)]}
        report = sf.evaluate_scoremaps(out["scoremap_roots"]["cam"], out["metadata_root"],
                                       "synthetic", "val", cam_curve_interval=0.1,
                                       progress=False)
        maps = [np.load(os.path.join(out["scoremap_roots"]["cam"], "val", f"{n:07d}.png.npy"))
                for n in range(2)]
        acc, _ = np_max_box_acc(maps, [np.array(meta.boxes[i]) for i in meta.image_ids],
                                np.arange(0, 1, 0.1), (50,), False)
        assert report["max_box_acc"]["50"] == acc[0]
