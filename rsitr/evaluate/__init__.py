"""Evaluation: recall metrics, paper-style reports, and the encode-then-score runner."""

from rsitr.evaluate.metrics import METRIC_NAMES, recall_metrics

__all__ = ["METRIC_NAMES", "recall_metrics"]
