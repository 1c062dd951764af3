r"""Input-pipeline throughput: images/s per core of the CUB transforms, and of the pipeline with
grain worker processes.

    python benchmarks/input_pipeline.py                        # ~1-2 minutes
    python benchmarks/input_pipeline.py --images=256 --workers=0,1,2,4 --batch=32

1. **Per core**: one thread in one process runs, per image, what a pipeline worker runs:
   JPEG decode (PIL) of a CUB-sized photo (``--photo`` = 500x375, CUB's typical size), then
   ``transforms.preprocess`` + ``normalize``: train = resize 256 -> random crop 224 -> random
   flip; eval = resize 256 -> centre crop 224 (``infocam_jax/data/transforms.py``).
2. **Pipeline**: a CUB-format directory of ``--images`` such photos is written to a temporary
   directory and built with the library's tfds builder; ``data.make_iterator`` then reads the
   train split (shuffled, augmented, batched) with ``data_workers`` = each of ``--workers``
   (0 = threaded, in this process) and ``data_threads`` = ``--threads``. Worker start-up (a few
   seconds per iterator, i.e. per epoch) is reported apart from the steady rate.

Cores needed to feed an accelerator training at R images/s: ``R / (per-core train img/s)``
(decode and augmentation are the pipeline's cost; the batch stacking adds a few percent).
Results go to stdout; the machine's load changes them, so say whether it was idle.
"""
from __future__ import annotations

import argparse
import io
import os
import pathlib
import sys
import tempfile
import time

import numpy as np
from PIL import Image

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # run from a checkout

from infocam_jax.data import transforms  # noqa: E402  pylint: disable=wrong-import-position


def photo(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """A photo-like image (smooth gradients + noise: JPEG sizes close to real photos')."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([xx / width, yy / height, (xx + yy) / (width + height)], -1) * 200
    noise = rng.normal(0, 20, (height, width, 3))
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))


def jpeg_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def per_core(blobs: list[bytes], training: bool, seconds: float) -> float:
    """Images/s of decode + transforms + normalisation on one thread."""
    n, start = 0, time.perf_counter()
    rng = np.random.default_rng(0)
    box = np.array([[50.0, 40.0, 300.0, 260.0]], np.float32)
    while time.perf_counter() - start < seconds:
        image = np.asarray(Image.open(io.BytesIO(blobs[n % len(blobs)])).convert("RGB"))
        out, _, _ = transforms.preprocess(image, box, training=training, image_size=(224, 224),
                                          resize_size=256, eval_protocol="center_crop",
                                          rng=rng)
        transforms.normalize(out)
        n += 1
    return n / (time.perf_counter() - start)


def write_cub(root: pathlib.Path, num_images: int, size: tuple[int, int]) -> None:
    """A CUB_200_2011 directory (the files the builder reads) of synthetic photos, 2 classes."""
    rng = np.random.default_rng(0)
    cub = root / "CUB_200_2011"
    lines = {"images": [], "labels": [], "split": [], "boxes": []}
    for i in range(1, num_images + 1):
        c = 1 + i % 2
        rel = f"{c:03d}.Bird/{i}.jpg"
        (cub / "images" / rel).parent.mkdir(parents=True, exist_ok=True)
        photo(rng, *size).save(cub / "images" / rel, quality=90)
        lines["images"].append(f"{i} {rel}")
        lines["labels"].append(f"{i} {c}")
        lines["split"].append(f"{i} {0 if i % 8 == 0 else 1}")
        lines["boxes"].append(f"{i} 50 40 250 220")
    for name, key in (("images.txt", "images"), ("image_class_labels.txt", "labels"),
                      ("train_test_split.txt", "split"), ("bounding_boxes.txt", "boxes")):
        (cub / name).write_text("\n".join(lines[key]) + "\n")


def pipeline_rate(config, workers: int, batch: int) -> tuple[float, float, int]:
    """(steady images/s after the first batch, seconds to the first batch, images)."""
    from infocam_jax import data  # pylint: disable=import-outside-toplevel
    config.data_workers = workers
    start = time.perf_counter()
    it = data.make_iterator(config, "train", training=True, batch_size=batch, epoch=0, seed=0)
    next(it)
    first = time.perf_counter() - start
    n, start = 0, time.perf_counter()
    for b in it:
        n += len(b["label"])
    it.close()
    return n / max(time.perf_counter() - start, 1e-9), first, n


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--photo", default="500,375", help="width,height of the JPEG photos")
    p.add_argument("--seconds", type=float, default=8.0, help="per-core timing per transform")
    p.add_argument("--images", type=int, default=192, help="photos in the pipeline's dataset")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--workers", default="0,1,2", help="data_workers values to time")
    p.add_argument("--threads", type=int, default=1, help="data_threads (per process)")
    p.add_argument("--gpu_images_per_s", type=float, default=0.0,
                   help="a measured training speed to turn into cores (0: print the formula)")
    args = p.parse_args(argv)
    size = tuple(int(v) for v in args.photo.split(","))
    rng = np.random.default_rng(1)
    blobs = [jpeg_bytes(photo(rng, *size)) for _ in range(8)]
    print(f"{os.cpu_count()} CPUs; photos {size[0]}x{size[1]} JPEG "
          f"~{np.mean([len(b) for b in blobs]) / 1024:.0f} KiB; load average "
          f"{os.getloadavg()[0]:.1f}")
    train = per_core(blobs, True, args.seconds)
    evaluation = per_core(blobs, False, args.seconds)
    print(f"per core: train transform {train:.1f} img/s, eval transform {evaluation:.1f} img/s "
          "(JPEG decode + resize 256 + crop 224 [+ flip] + normalise, one thread)")
    if args.gpu_images_per_s > 0:
        print(f"cores to feed {args.gpu_images_per_s:.0f} img/s of training: "
              f"{args.gpu_images_per_s / train:.1f}")
    else:
        print(f"cores to feed R img/s of training = R / {train:.1f}")

    import ml_collections  # pylint: disable=import-outside-toplevel
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        write_cub(tmp / "manual", args.images, size)
        config = ml_collections.ConfigDict(dict(
            dataset="cub", data_dir=str(tmp / "tfds"), manual_dir=str(tmp / "manual"),
            num_classes=200, multi_label=False, image_size=(224, 224), resize_size=256,
            eval_protocol="center_crop", max_boxes=1, data_threads=args.threads,
            data_workers=0, num_train_examples=0, num_test_examples=0, data_seed=0,
            model="resnet50"))
        start = time.perf_counter()
        import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

        from infocam_jax import data  # pylint: disable=import-outside-toplevel
        tfds.display_progress_bar(False)
        data.get_info(config)
        print(f"built a {args.images}-photo CUB-format tfds set in "
              f"{time.perf_counter() - start:.0f} s")
        for workers in [int(w) for w in args.workers.split(",")]:
            rate, first, n = pipeline_rate(config, workers, args.batch)
            print(f"pipeline data_workers={workers} data_threads={args.threads}: "
                  f"{rate:6.1f} img/s steady over {n} images (first batch after {first:.1f} s)",
                  flush=True)


if __name__ == "__main__":
    main()
