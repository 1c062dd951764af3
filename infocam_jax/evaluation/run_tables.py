"""Tables of one evaluation: the paper's Table 1 / Table 2 in percent, ``results.{json,md}``.

Every table can carry the reading that produced it (normalisation, threshold, IoU): pass the
``EvalSettings`` and a caption line is added.
"""
from __future__ import annotations

import math
import os
from collections.abc import Mapping

from infocam_jax.evaluation import json_files
from infocam_jax.evaluation.settings import DISPLAY_NAMES, EvalSettings


def pct(value: float | None, digits: int = 2) -> str:
    """``value`` (a fraction) in percent; "-" for None / NaN."""
    return "-" if value is None or math.isnan(value) else f"{100.0 * value:.{digits}f}"


def _kinds_in(results: Mapping[str, float], suffix: str) -> list[str]:
    kinds = []
    for key in results:
        kind, _, rest = key.partition("/")
        if rest == suffix and kind not in kinds:
            kinds.append(kind)
    return kinds


def caption(settings: EvalSettings) -> str:
    """One line stating how the maps became boxes (normalisation, threshold, IoU)."""
    return f"Reading: {settings.reading}."


def classification_table(results: Mapping[str, float]) -> str:
    """The classification part of :func:`format_table`, which does not depend on how the maps
    are read. Multi-label: the per-digit accuracy table and the exact-match line (the lines
    :func:`format_table` starts with); single-label: one line of Top-1 and Top-5 Cls."""
    def get(key):
        return results.get(key, float("nan"))

    classes = sorted(int(k.split("/")[1]) for k in results if k.startswith("digit_acc/"))
    if not classes:
        return f"Top-1 Cls {pct(get('top1_cls'))} %, Top-5 Cls {pct(get('top5_cls'))} %.\n"
    lines = ["Classification accuracy (%) per digit", "",
             "| Type | " + " | ".join(str(c) for c in classes) + " | Mean |",
             "|---|" + "---:|" * (len(classes) + 1),
             "| accuracy | " + " | ".join(pct(get(f"digit_acc/{c}")) for c in classes)
             + f" | {pct(get('cls_acc'))} |", "",
             f"Exact-match accuracy: {pct(get('exact_match'))} %"]
    return "\n".join(lines) + "\n"


def format_table(results: Mapping[str, float], settings: EvalSettings | None = None) -> str:
    """Markdown tables of ``results`` in percent ("-" for missing or NaN values).

    Single-label: the paper's Table 1 (rows CAM / infoCAM / infoCAM+; columns GT-known Loc,
    Top-1 Loc, Top-1 Cls, Top-5 Cls, MaxBoxAccV2). Multi-label: the paper's Table 2 (per-digit
    classification accuracy) and CAM vs infoCAM localisation accuracy, overall and per digit.
    With ``settings``, a last line states the reading (:func:`caption`).
    """
    def get(key):
        return results.get(key, float("nan"))

    tail = f"\n{caption(settings)}\n" if settings is not None else ""
    classes = sorted(int(k.split("/")[1]) for k in results if k.startswith("digit_acc/"))
    if not classes:
        lines = ["| Map | GT-known Loc | Top-1 Loc | Top-1 Cls | Top-5 Cls | MaxBoxAccV2 |",
                 "|---|---:|---:|---:|---:|---:|"]
        for kind in _kinds_in(results, "gt_known_loc"):
            cells = [get(f"{kind}/gt_known_loc"), get(f"{kind}/top1_loc"), get("top1_cls"),
                     get("top5_cls"), get(f"{kind}/max_box_acc_v2")]
            lines.append(f"| {DISPLAY_NAMES.get(kind, kind)} | "
                         + " | ".join(pct(c) for c in cells) + " |")
        return "\n".join(lines) + "\n" + tail
    header = "| " + " | ".join(str(c) for c in classes) + " |"
    rule = "|---|" + "---:|" * (len(classes) + 1)
    lines = [classification_table(results), "Localisation accuracy (%) per present digit", "",
             "| Map " + header + " All |", rule]
    for kind in _kinds_in(results, "loc_acc"):
        lines.append(f"| {DISPLAY_NAMES.get(kind, kind)} | "
                     + " | ".join(pct(get(f"{kind}/loc_acc/{c}")) for c in classes)
                     + f" | {pct(get(f'{kind}/loc_acc'))} |")
    return "\n".join(lines) + "\n" + tail


def write_results(results: Mapping[str, float], workdir: str | os.PathLike,
                  *, title: str | None = None, settings: EvalSettings | None = None,
                  extra_markdown: str = "") -> tuple[str, str]:
    """Writes ``results.json`` (fractions; NaN as null) and ``results.md`` (percent tables).

    Args:
      results: flat results dict.
      workdir: output directory (created).
      title: Markdown title.
      settings: when given, the tables state the reading (:func:`caption`).
      extra_markdown: appended to ``results.md`` (e.g. a threshold-selection table).

    Returns:
      the paths of the two files.
    """
    os.makedirs(workdir, exist_ok=True)
    json_path = json_files.write_json(dict(results), os.path.join(workdir, "results.json"))
    md_path = os.path.join(workdir, "results.md")
    with open(md_path, "w") as f:
        if title:
            f.write(f"# {title}\n\n")
        f.write(format_table(results, settings))
        if extra_markdown:
            f.write("\n" + extra_markdown)
    return json_path, md_path
