r"""``infocam-scoremaps``: evaluates saved score maps like the reference WSOL evaluation
(clovaai/wsolevaluation), fast.

A drop-in for the reference's ``python evaluation.py``: the same flags, inputs and numbers
(MaxBoxAcc, MaxBoxAccV2 or PxAP), from one ``.npy`` map per image and the reference's metadata
files; batched and jit-compiled instead of a per-image loop over thresholds.

  infocam-scoremaps --scoremap_root=train_log/scoremaps/ \
      --metadata_root=metadata/ --mask_root=dataset/ --dataset_name=CUB --split=val \
      --cam_curve_interval=0.001 --multi_contour_eval --multi_iou_eval --output=cub_val.json

Flags take the reference's forms too: ``--multi_iou_eval true``, ``--iou_threshold_list 30 50
70`` (or ``30,50,70``). The JSON file holds percentages: ``performance`` (what the reference's
``evaluate_wsol`` returns), ``max_box_acc`` and ``best_threshold`` per IoU threshold,
``per_class_max_box_acc`` (at each IoU's best threshold), or ``pxap`` for masks.
"""
import argparse
import os
import sys

# JAX-free at import: the host engine never imports JAX (tests/test_scoremap_files.py).
from infocam_jax.evaluation.scoremaps import score

_TRUE = ("yes", "true", "t", "y", "1")
_FALSE = ("no", "false", "f", "n", "0")


def _bool(value: str) -> bool:
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean ({'/'.join(_TRUE + _FALSE)}), "
                                     f"got {value!r}")


def _ints(values) -> list:
    out = []
    for value in values:
        for part in str(value).split(","):
            if part.strip():
                try:
                    out.append(int(part))
                except ValueError:
                    raise SystemExit(f"--iou_threshold_list: expected integers (percent), "
                                     f"got {part!r}") from None
    return out


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scoremap_root", default="train_log/scoremaps/",
                   help="Folder of <image_id>.npy maps: 2-D floats in [0, 1].")
    p.add_argument("--metadata_root", default="metadata/",
                   help="Holds <dataset_name>/<split>/{image_ids,class_labels,image_sizes,"
                        "localization}.txt.")
    p.add_argument("--mask_root", default="dataset/",
                   help="Holds OpenImages/<mask paths> (mask datasets).")
    p.add_argument("--dataset_name", required=True,
                   help="CUB or ILSVRC (boxes), OpenImages (masks); other names: boxes.")
    p.add_argument("--split", required=True, help="val (train-fullsup) or test.")
    p.add_argument("--cam_curve_interval", type=float, default=0.01,
                   help="Score thresholds np.arange(0, 1, interval).")
    p.add_argument("--multi_contour_eval", type=_bool, nargs="?", const=True, default=False,
                   help="Boxes of every contour (MaxBoxAccV2) instead of the largest.")
    p.add_argument("--multi_iou_eval", type=_bool, nargs="?", const=True, default=False,
                   help="Performance = mean MaxBoxAcc over the IoU thresholds (else IoU 50).")
    p.add_argument("--iou_threshold_list", nargs="+", default=["30", "50", "70"],
                   help="IoU thresholds in percent: '30 50 70' or '30,50,70'.")
    p.add_argument("--output", default="",
                   help="JSON file for the results (percentages); none when empty.")
    p.add_argument("--batch_size", type=int, default=64, help="Maps per jitted call.")
    p.add_argument("--num_threads", type=int, default=0,
                   help="Map/mask reader threads (0: the CPU count, at most 16).")
    p.add_argument("--engine", default="auto", choices=("auto", "host", "jax"),
                   help="Box datasets: host = NumPy + the compiled kernel (JAX never "
                        "imported), jax = jitted steps, auto = host when the kernel loads.")
    p.add_argument("--quiet", action="store_true", help="No progress line.")
    args = p.parse_args(argv)
    args.iou_threshold_list = _ints(args.iou_threshold_list)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        report = score.evaluate_scoremaps(
            scoremap_root=args.scoremap_root, metadata_root=args.metadata_root,
            mask_root=args.mask_root, dataset_name=args.dataset_name, split=args.split,
            cam_curve_interval=args.cam_curve_interval,
            multi_contour_eval=args.multi_contour_eval, multi_iou_eval=args.multi_iou_eval,
            iou_threshold_list=args.iou_threshold_list, batch_size=args.batch_size,
            num_threads=args.num_threads or None, progress=not args.quiet,
            engine=args.engine)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(score.format_table(report), end="")
    if args.output:
        score.write_report(report, args.output)
        print(f"wrote {os.path.abspath(args.output)}")
    return 0
