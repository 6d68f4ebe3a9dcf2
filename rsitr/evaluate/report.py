"""Paper-style result tables (printed, JSON, CSV) and the confusion-matrix figure of zero-shot classification."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Mapping, Sequence

from rsitr.evaluate.metrics import METRIC_NAMES


def format_table(rows: Mapping[str, Mapping[str, float]], title: str = "") -> str:
    """A fixed-width table: one row per method, R@1/5/10 per direction and mR, as in the papers."""
    width = max([len("Method")] + [len(name) for name in rows]) + 2
    head1 = f"{'':<{width}}| {'Image->Text':^20} | {'Text->Image':^20} |"
    head2 = f"{'Method':<{width}}| {'R@1':>6}{'R@5':>7}{'R@10':>7} | {'R@1':>6}{'R@5':>7}{'R@10':>7} | {'mR':>6}"
    rule = "-" * len(head2)
    lines = [title] if title else []
    lines += [head1, head2, rule]
    for name, m in rows.items():
        values = [m[k] for k in METRIC_NAMES]
        lines.append(f"{name:<{width}}| {values[0]:6.2f}{values[1]:7.2f}{values[2]:7.2f} | "
                     f"{values[3]:6.2f}{values[4]:7.2f}{values[5]:7.2f} | {values[6]:6.2f}")
    return "\n".join(lines)


def write_reports(rows: Mapping[str, Mapping[str, float]], out_dir: str | Path, extra: Mapping | None = None,
                  stem: str = "results") -> tuple[Path, Path]:
    """Write ``<stem>.json`` (metrics plus ``extra``, e.g. timings) and ``<stem>.csv`` (one row per method)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, csv_path = out_dir / f"{stem}.json", out_dir / f"{stem}.csv"
    json_path.write_text(json.dumps({"results": rows, **(extra or {})}, indent=2))
    with csv_path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["method", *METRIC_NAMES])
        for name, m in rows.items():
            writer.writerow([name, *(f"{m[k]:.4f}" for k in METRIC_NAMES)])
    return json_path, csv_path


def plot_confusion(confusion: Sequence[Sequence[int]], class_names: Sequence[str], path: str | Path,
                   title: str = "") -> Path:
    """Draw a confusion matrix (rows: true class, columns: predicted) with class names to an image file.

    Each row is shown as fractions of its class's images, so classes of different sizes compare; the counts
    are written in the cells when there are few classes.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    counts = np.asarray(confusion, dtype=float)
    rows = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    size = max(4.0, 0.35 * len(class_names) + 2)
    figure, axes = plt.subplots(figsize=(size + 1, size))
    shown = axes.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    axes.set_xticks(range(len(class_names)), class_names, rotation=90, fontsize=8)
    axes.set_yticks(range(len(class_names)), class_names, fontsize=8)
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    if len(class_names) <= 12:
        for (row, column), count in np.ndenumerate(counts):
            if count:
                axes.text(column, row, int(count), ha="center", va="center", fontsize=7,
                          color="white" if rows[row, column] > 0.5 else "black")
    figure.colorbar(shown, ax=axes, fraction=0.046, pad=0.04, label="fraction of the true class")
    if title:
        axes.set_title(title)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
