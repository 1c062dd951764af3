"""Box-aware transforms: a rectangle drawn into an image must land on the transformed box."""
import numpy as np
import pytest

from infocam_jax.data import transforms as T


def drawn(h, w, box, channels=3):
    """uint8 [h, w, C] black image with the inclusive box (x0, y0, x1, y1) filled white."""
    img = np.zeros((h, w, channels), np.uint8)
    x0, y0, x1, y1 = box
    img[y0:y1 + 1, x0:x1 + 1] = 255
    return img, np.array([box], np.float32)


def tight_box(img, thresh=127):
    """Inclusive bounding box of the pixels brighter than thresh, or None."""
    ys, xs = np.nonzero(img.max(-1) > thresh)
    if ys.size == 0:
        return None
    return np.array([xs.min(), ys.min(), xs.max(), ys.max()])


def int_box(boxes, img):
    b, visible = T.clip_boxes(boxes, *img.shape[:2])
    assert visible[0]
    return b[0]


@pytest.mark.parametrize("hw,box,size", [
    ((300, 400), (50, 40, 220, 180), 256),
    ((375, 500), (0, 0, 499, 374), 256),       # whole image
    ((160, 200), (10, 30, 120, 150), 256),     # upscaling (1.28x, 1.6x)
    ((224, 224), (100, 3, 150, 90), (64, 48)),
    ((256, 256), (20, 20, 200, 230), 224),
])
@pytest.mark.parametrize("channels", [1, 3])
def test_resize_box_lands_on_drawn_box(hw, box, size, channels):
    img, boxes = drawn(*hw, box, channels)
    out, new = T.resize(img, boxes, size)
    oh, ow = (size, size) if isinstance(size, int) else size
    assert out.shape == (oh, ow, channels) and out.dtype == np.uint8
    np.testing.assert_allclose(new[0], np.array(box) * np.array([ow / hw[1], oh / hw[0]] * 2), rtol=1e-6)
    np.testing.assert_allclose(int_box(new, out), tight_box(out), atol=1)


@pytest.mark.parametrize("box", [(50, 40, 120, 100), (0, 0, 20, 20), (10, 90, 140, 119)])
def test_crops_are_exact(box):
    img, boxes = drawn(120, 150, box)
    rng = np.random.default_rng(0)
    for _ in range(5):
        out, new = T.random_crop(img, boxes, (96, 100), rng)
        assert out.shape == (96, 100, 3)
        want = tight_box(out)
        b, visible = T.clip_boxes(new, 96, 100)
        if want is None:
            assert not visible[0]
        else:
            np.testing.assert_array_equal(b[0], want)
    out, new = T.center_crop(img, boxes, 100)
    assert out.shape == (100, 100, 3)
    b, visible = T.clip_boxes(new, 100, 100)
    if tight_box(out) is None:
        assert not visible[0]
    else:
        np.testing.assert_array_equal(b[0], tight_box(out))
    # torchvision's offset: round((H - h) / 2)
    np.testing.assert_allclose(new[0], np.array(box) - [25, 10, 25, 10])


def test_center_crop_offset_256_to_224():
    img, boxes = drawn(256, 256, (16, 16, 239, 239))
    out, new = T.center_crop(img, boxes, 224)
    np.testing.assert_allclose(new, [[0, 0, 223, 223]])
    assert out.min() == 255


def test_random_crop_offsets_cover_range():
    img, boxes = drawn(10, 12, (0, 0, 0, 0))
    rng = np.random.default_rng(1)
    offsets = set()
    for _ in range(300):
        _, new = T.random_crop(img, boxes, (8, 8), rng)
        offsets.add((-int(new[0, 0]), -int(new[0, 1])))
    assert offsets == {(x, y) for x in range(5) for y in range(3)}


@pytest.mark.parametrize("box", [(0, 0, 9, 4), (3, 1, 3, 7), (5, 2, 12, 8)])
def test_horizontal_flip(box):
    img, boxes = drawn(9, 13, box, channels=1)
    img[..., 0] += np.arange(13, dtype=np.uint8)[None, :] * (img[..., 0] == 0)  # asymmetric
    out, new = T.horizontal_flip(img, boxes)
    np.testing.assert_array_equal(out, img[:, ::-1])
    np.testing.assert_array_equal(new[0], [12 - box[2], box[1], 12 - box[0], box[3]])
    np.testing.assert_array_equal(int_box(new, out), tight_box(out, thresh=200))
    _, back = T.horizontal_flip(out, new)
    np.testing.assert_array_equal(back, boxes)


def test_clip_boxes():
    boxes = np.array([[-5.5, 2.7, 40.9, 8.2],      # partly outside
                      [50.0, 1.0, 60.0, 3.0],      # entirely right of the image
                      [3.0, -9.0, 4.0, -1.0],      # entirely above
                      [0.0, 0.0, 31.0, 19.0]], np.float32)
    b, visible = T.clip_boxes(boxes, 20, 32)
    assert b.dtype == np.int32
    np.testing.assert_array_equal(b[0], [0, 2, 31, 8])
    np.testing.assert_array_equal(b[3], [0, 0, 31, 19])
    np.testing.assert_array_equal(visible, [True, False, False, True])
    assert (b[:, [0, 2]] <= 31).all() and (b[:, [1, 3]] <= 19).all() and (b >= 0).all()


def test_normalize_matches_formula():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (2, 4, 5, 3), dtype=np.uint8)
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    got = T.normalize(rgb)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, (rgb / 255.0 - mean) / std, rtol=1e-5, atol=1e-6)
    gray = rng.integers(0, 256, (4, 5, 1), dtype=np.uint8)
    np.testing.assert_allclose(T.normalize(gray), gray / 255.0, rtol=1e-6)
    with pytest.raises(ValueError, match="1 or 3 channels"):
        T.normalize(np.zeros((4, 5, 2), np.uint8))


@pytest.mark.parametrize("training,protocol", [(True, "center_crop"), (False, "center_crop"),
                                               (False, "resize")])
def test_preprocess_chain_keeps_box_on_object(training, protocol):
    rng = np.random.default_rng(5)
    for trial in range(4):
        h, w = int(rng.integers(230, 400)), int(rng.integers(230, 400))
        x0, y0 = int(rng.integers(40, 90)), int(rng.integers(40, 90))
        box = (x0, y0, x0 + int(rng.integers(60, 120)), y0 + int(rng.integers(60, 120)))
        img, boxes = drawn(h, w, box)
        out, b, visible = T.preprocess(img, boxes, training=training, image_size=(224, 224),
                                       resize_size=256, eval_protocol=protocol,
                                       rng=np.random.default_rng(trial))
        assert out.shape == (224, 224, 3) and b.dtype == np.int32 and visible[0]
        np.testing.assert_allclose(b[0], tight_box(out), atol=1)


def test_preprocess_train_flips_half_the_time_and_not_when_disabled():
    img, boxes = drawn(64, 64, (2, 10, 20, 30))
    flips = []
    for seed in range(40):
        _, b, _ = T.preprocess(img, boxes, training=True, image_size=(64, 64),
                               rng=np.random.default_rng(seed))
        flips.append(b[0, 0] != 2)
        _, b2, _ = T.preprocess(img, boxes, training=True, image_size=(64, 64), flip=False,
                                rng=np.random.default_rng(seed))
        np.testing.assert_array_equal(b2[0], [2, 10, 20, 30])
    assert 10 < sum(flips) < 30
    # resize_size == 0 and eval: identity
    out, b, _ = T.preprocess(img, boxes, training=False, image_size=(64, 64))
    np.testing.assert_array_equal(out, img)
    np.testing.assert_array_equal(b[0], [2, 10, 20, 30])


def test_bad_inputs():
    img, boxes = drawn(20, 20, (1, 1, 5, 5))
    with pytest.raises(ValueError, match="uint8"):
        T.resize(img.astype(np.float32), boxes, 10)
    with pytest.raises(ValueError, match=r"\[G, 4\]"):
        T.resize(img, np.zeros((4,)), 10)
    with pytest.raises(ValueError, match="exceeds"):
        T.center_crop(img, boxes, 30)
    with pytest.raises(ValueError, match="eval_protocol"):
        T.preprocess(img, boxes, training=False, image_size=(8, 8), eval_protocol="bogus")
    with pytest.raises(ValueError, match="rng"):
        T.preprocess(img, boxes, training=True, image_size=(8, 8))
    with pytest.raises(ValueError, match="smaller"):
        T.preprocess(img, boxes, training=False, image_size=(32, 32), resize_size=16)
