"""The one readings table re-renders the published summaries byte for byte, and its flat keys
are those of ``thresholds.evaluate_readings`` output.

``docs/results_data/*_readings.json`` hold the aggregates of ``saved_runs.read_runs``; rendering
them again must give the published ``.md`` exactly (the seeds were printed as the strings of
the launcher's flag).
"""
import json
import math
import pathlib

import numpy as np
import pytest

from infocam_jax.experiments import readings_table, seed_tables
from infocam_jax.evaluation import run_tables, thresholds
from infocam_jax.evaluation.settings import EvalSettings

DATA = pathlib.Path(__file__).resolve().parents[1] / "docs" / "results_data"
SINGLE = ("cam", "infocam", "infocam_plus", "infocam_plus_region")
MULTI = ("cam", "infocam")

# (file stem, heads in launch order, seeds as printed, multi-label, kinds)
PUBLISHED = [
    ("cluttered_v3_readings", ("softmax",), ["0", "1", "2"], False, SINGLE),
    ("multi_mnist_v3_readings", ("sigmoid", "pc_sigmoid"), ["0", "1", "2"], True, MULTI),
    ("multi_mnist_long_readings", ("sigmoid", "pc_sigmoid"), ["0"], True, MULTI),
]


@pytest.mark.parametrize("stem, heads, seeds, multi, kinds", PUBLISHED,
                         ids=[p[0] for p in PUBLISHED])
def test_published_summary_renders_byte_for_byte(stem, heads, seeds, multi, kinds):
    published = (DATA / f"{stem}.md").read_text()
    aggregate = json.loads((DATA / f"{stem}.json").read_text())["aggregate"]
    aggs = {h: {k: {**v, "mean": math.nan if v["mean"] is None else v["mean"],
                    "std": math.nan if v["std"] is None else v["std"]}
                for k, v in aggregate[h].items()} for h in heads}
    settings = EvalSettings(image_size=(64, 64), multi_label=multi, map_kinds=kinds,
                            num_box_thresholds=20, region_size=3)
    # The JSON keeps no wall-clock time: the last line's number is taken from the file.
    wall = float(published.rsplit("Wall-clock: ", 1)[1].split(" s.")[0])
    assert readings_table.render(aggs, settings, seeds, wall_seconds=wall) == published


def _fake_readings(rng, kinds, metrics, num_thresholds=5):
    grid = np.arange(0, 1, 1 / num_thresholds)
    out = {}
    for mode in ("minmax", "max"):
        test = {f"{k}/{m}": float(rng.random()) for k in kinds for m in metrics}
        test["top1_cls"] = float(rng.random())
        sel = {k: {m: {"thresholds": grid, "validation_curve": rng.random(num_thresholds),
                       "test_curve": rng.random(num_thresholds)} for m in metrics}
               for k in kinds}
        for k in kinds:
            for m in metrics:
                s = sel[k][m]
                s.update(thresholds.select(grid, s["validation_curve"], s["test_curve"]))
        out[mode] = {"test": test, "selection": sel}
    return out


def test_flat_keys_and_values():
    rng = np.random.default_rng(0)
    readings = _fake_readings(rng, MULTI, ("gt_known_loc", "top1_loc"))
    flat = readings_table.flat(readings)
    for mode in ("minmax", "max"):
        r = readings[mode]
        assert flat[f"{mode}/test/top1_cls"] == r["test"]["top1_cls"]
        s = r["selection"]["infocam"]["top1_loc"]
        i = int(np.argmax(s["validation_curve"]))
        assert flat[f"{mode}/infocam/top1_loc/valsel"] == s["test_curve"][i]
        assert flat[f"{mode}/infocam/top1_loc/valsel_threshold"] == s["thresholds"][i]
        assert flat[f"{mode}/infocam/top1_loc/best_test"] == np.max(s["test_curve"])


def test_flat_reads_the_json_form_with_nulls_as_nan():
    readings = _fake_readings(np.random.default_rng(1), MULTI, ("loc_acc",))
    readings["max"]["test"]["cam/loc_acc"] = None
    assert math.isnan(readings_table.flat(readings)["max/test/cam/loc_acc"])


def test_one_seed_table_cells():
    readings = _fake_readings(np.random.default_rng(2), MULTI, ("loc_acc",))
    aggs = {"sigmoid": seed_tables.aggregate([readings_table.flat(readings)])}
    text = readings_table.table(aggs, MULTI, "loc_acc", 0.2)
    rows = text.splitlines()
    assert rows[0] == "| head | reading | cam | infocam |"
    v = readings["max"]["test"]["cam/loc_acc"]
    assert rows[2].startswith(f"| sigmoid | max-normalised, t = 0.2 (paper) | "
                              f"{100 * v:.1f} ± 0.0 |")
    s = readings["minmax"]["selection"]["infocam"]["loc_acc"]
    assert rows[5].endswith(f"{100 * s['test']:.1f} ± 0.0 (t {s['threshold']:.2f}) |")
    assert len(rows) == 2 + 6


def test_valsel_table_cells_and_reading():
    readings = _fake_readings(np.random.default_rng(3), MULTI, ("loc_acc",))
    settings = EvalSettings(image_size=(16, 32), multi_label=True, map_kinds=MULTI,
                            num_box_thresholds=5)
    rows = readings_table.valsel_table(readings_table.flat(readings), settings).splitlines()
    assert rows[0] == ("Localisation accuracy (%) per present digit, test split, threshold "
                       "chosen on validation")
    assert rows[2] == "| Map | max-normalised | min-max normalised |"
    s = {m: readings[m]["selection"]["infocam"]["loc_acc"] for m in ("max", "minmax")}
    assert rows[5] == (f"| infoCAM | {100 * s['max']['test']:.2f} (t {s['max']['threshold']:.2f})"
                       f" | {100 * s['minmax']['test']:.2f} (t {s['minmax']['threshold']:.2f}) |")
    assert rows[-1].startswith("Reading: threshold chosen on the validation split (in brackets) "
                               "from np.arange(0, 1, 1/5), bicubic upsampling, IoU >= 0.5.")
    assert "fixed readings are in the summary" in rows[-1]


def test_classification_table_is_the_head_of_the_run_table():
    results = {f"digit_acc/{c}": 0.5 + c / 100 for c in range(3)}
    results.update({"cls_acc": 0.51, "exact_match": 0.4, "cam/loc_acc": 0.2,
                    **{f"cam/loc_acc/{c}": 0.1 for c in range(3)}})
    head = run_tables.classification_table(results)
    assert head.endswith("Exact-match accuracy: 40.00 %\n")
    assert run_tables.format_table(results).startswith(
        head + "\nLocalisation accuracy (%) per present digit\n")


def test_main_job_prints_the_one_table(tmp_path, capsys):
    """A heads run with eval_readings prints per head the table at the threshold chosen on
    validation first (the fixed-threshold one only in the summary), and writes the readings
    table in this module's layout."""
    import tiny
    from infocam_jax.experiments import training
    c = tiny.tiny_config(heads=("pc_sigmoid",), eval_readings=True, num_box_thresholds=10)
    training.train_and_evaluate(c, str(tmp_path))
    printed = capsys.readouterr().out
    first = printed.index("\n## ")
    assert printed[first:].startswith("\n## synthetic / digits_cnn / pc_sigmoid (epoch 1): maps "
                                      "read at the threshold chosen on validation\n")
    assert printed.index("threshold chosen on validation\n\n| Map | max-normalised |") < \
        printed.index("# Summary over heads") < printed.index("t = 0.2 (protocol)")
    assert "fixed threshold 0.2" not in printed  # the protocol's per-digit table is not printed
    text = (tmp_path / "results.md").read_text()
    assert text in printed
    assert text.startswith("## CAM vs infoCAM under every reading\n\nTest split, %, mean ± std "
                           "over seeds [0]; largest box at IoU >= 0.5; R = 3; threshold grid "
                           "np.arange(0, 1, 1/10);")
    assert "| pc_sigmoid | min-max, t chosen on validation |" in text
    stored = json.loads((tmp_path / "readings.json").read_text())["pc_sigmoid"]
    aggs = {"pc_sigmoid": seed_tables.aggregate([readings_table.flat(stored)])}
    settings = EvalSettings(image_size=tuple(c.image_size), multi_label=True, map_kinds=MULTI,
                            num_box_thresholds=10)
    assert text.endswith(readings_table.render(aggs, settings, [0]))
