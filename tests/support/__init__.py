"""Helpers shared by tests of several layers (no tests here): archive builders, user-error assertions, tiny trainers."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
"""The repository root (configs/, benchmarks/, docs/ live there)."""
CONFIGS = REPO / "configs"
SHARED_DATA = REPO.parent / "shared" / "data"
"""The real RSICD and UCM-Captions beside the project (``../shared/data``); tests that need it skip without it."""
