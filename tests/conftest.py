"""Shared fixtures: a small generated caption corpus (60 images, 5 captions each, 48/6/6 split) and the real
data beside the project (../shared/data), skipped when absent."""

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


SHARED_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (real RSICD and UCM-Captions, read-only); tests using it skip when it is absent."""
    if not (SHARED_DATA / "rsicd" / "dataset_rsicd.json").is_file() or not (SHARED_DATA / "ucm").is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA} (the project's ../shared/data); these tests need it")
    return SHARED_DATA
