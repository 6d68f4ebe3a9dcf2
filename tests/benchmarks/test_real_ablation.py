"""benchmarks/real_ablation.py's bookkeeping: mean and sample std over seeds, its docs/RESULTS.md table, and the test
results it keeps beside each checkpoint (the training and evaluation themselves are measured, not tested)."""

from __future__ import annotations

import importlib.util
import os
import sys

import pytest
from support import REPO

BENCHMARKS = REPO / "benchmarks"


@pytest.fixture(scope="module")
def real_ablation():
    sys.path.insert(0, str(BENCHMARKS))  # for its `_measure` import
    try:
        spec = importlib.util.spec_from_file_location("real_ablation", BENCHMARKS / "real_ablation.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCHMARKS))
    return module


def run(module, row: str, seed: int, value: float, seconds: float) -> dict:
    return {"row": row, "seed": seed, "seconds": seconds,
            "results": {"rsicd": {"as trained": {metric: value for metric in module.METRIC_NAMES}}}}


def test_seeds_give_mean_and_sample_std_and_one_markdown_line(real_ablation):
    runs = [run(real_ablation, "baseline", 0, 8.0, 600), run(real_ablation, "baseline", 1, 9.0, 660),
            run(real_ablation, "baseline", 2, 10.0, 720), run(real_ablation, "ker", 0, 7.5, 1200)]
    table = real_ablation.summarize(runs)
    baseline, ker = table
    assert (baseline["row"], baseline["seeds"], baseline["mR"], baseline["train_minutes"]) == ("baseline", 3, 9.0, 11.0)
    assert baseline["mR_std"] == pytest.approx(1.0)  # sample std of 8, 9, 10
    assert (ker["seeds"], ker["mR"], ker["mR_std"]) == (1, 7.5, None)
    lines = real_ablation.format_markdown(table).splitlines()
    assert lines[2] == "| baseline | as trained | 9.00 / 9.00 / 9.00 | 9.00 / 9.00 / 9.00 | 9.00 +- 1.00 |  | 3 | 11 |"
    assert lines[3] == "| ker | as trained | 7.50 / 7.50 / 7.50 | 7.50 / 7.50 / 7.50 | 7.50 |  | 1 | 20 |"


def test_test_results_are_reused_until_the_checkpoint_changes(real_ablation, tmp_path, monkeypatch):
    checkpoint = tmp_path / "checkpoints" / "latest.pt"
    checkpoint.parent.mkdir()
    checkpoint.write_bytes(b"weights")
    calls = []
    monkeypatch.setattr(real_ablation, "evaluate", lambda path: calls.append(path) or {"rsicd": {"n": len(calls)}})
    first = real_ablation.evaluated(checkpoint)
    assert real_ablation.evaluated(checkpoint) == first == {"rsicd": {"n": 1}} and len(calls) == 1
    stat = checkpoint.stat()
    os.utime(checkpoint, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # a resumed run saved again
    assert real_ablation.evaluated(checkpoint) == {"rsicd": {"n": 2}}


def test_trained_only_reports_finished_runs_and_trains_nothing(real_ablation, tmp_path, monkeypatch):
    import json

    finished = tmp_path / "runs" / "baseline-seed0"
    (finished / "checkpoints").mkdir(parents=True)
    (finished / "checkpoints" / "latest.pt").write_bytes(b"weights")
    (finished / "train_seconds.json").write_text(json.dumps({"seconds": 600.0, "load_average": 1.0}))
    monkeypatch.setattr(real_ablation, "train", lambda *a: pytest.fail("--trained-only must not train"))
    monkeypatch.setattr(real_ablation, "evaluated", lambda path: run(real_ablation, "baseline", 0, 8.0, 600)["results"])
    out = tmp_path / "table.json"
    monkeypatch.setattr(sys, "argv", ["real_ablation.py", "--rows", "baseline", "ker", "--seeds", "0", "1",
                                      "--out", str(tmp_path / "runs"), "--json", str(out), "--trained-only"])
    real_ablation.main()
    written = json.loads(out.read_text())
    assert [(r["row"], r["seed"]) for r in written["runs"]] == [("baseline", 0)]
    assert written["not_trained"] == [{"row": "baseline", "seed": 1}, {"row": "ker", "seed": 0}]
