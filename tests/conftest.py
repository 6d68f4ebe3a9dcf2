"""Shared fixtures: a small generated caption corpus (60 images, 5 captions each, 48/6/6 split)."""

from pathlib import Path

import pytest

from rsitr.data import CaptionCorpus, load_corpus, make_synthetic_dataset


@pytest.fixture(scope="session")
def synthetic_caption_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Karpathy-style caption file of the generated corpus; its images lie in ``<parent>/images``."""
    return make_synthetic_dataset(tmp_path_factory.mktemp("synthetic"))


@pytest.fixture
def synthetic_corpus(synthetic_caption_file: Path) -> CaptionCorpus:
    """A fresh :class:`CaptionCorpus` of the generated data (loading is cheap; files are written once)."""
    return load_corpus(synthetic_caption_file, synthetic_caption_file.parent / "images")
