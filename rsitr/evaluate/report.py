"""Paper-style result tables (printed, JSON, CSV)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Mapping

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
