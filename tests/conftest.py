"""Shared fixtures: a small generated caption corpus (60 images, 5 captions each, 48/6/6 split) and the real
data beside the project (../shared/data), skipped when absent."""

import sys
from pathlib import Path

import pytest

from rsitr.data import CaptionCorpus, load_corpus, make_synthetic_dataset

# Test modules sit in one folder per layer (tests/data, tests/models, tests/index, ...); the helpers they share are
# the package tests/support, imported as ``support``.
sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture(scope="session", autouse=True)
def own_cache_folder(tmp_path_factory: pytest.TempPathFactory):
    """The session's feature caches and ONNX exports in a folder of its own (``RSITR_CACHE_DIR``, inherited by the
    commands tests start as subprocesses): a test run writes nothing into the user's ``~/.cache/rsitr``, and no cache
    left by an earlier run can hide a change. A test that sets its own folder still does."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RSITR_CACHE_DIR", str(tmp_path_factory.mktemp("rsitr-cache")))
        yield


@pytest.fixture(scope="session")
def synthetic_caption_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Karpathy-style caption file of the generated corpus; its images lie in ``<parent>/images``."""
    return make_synthetic_dataset(tmp_path_factory.mktemp("synthetic"))


@pytest.fixture
def synthetic_corpus(synthetic_caption_file: Path) -> CaptionCorpus:
    """A fresh :class:`CaptionCorpus` of the generated data (loading is cheap; files are written once)."""
    return load_corpus(synthetic_caption_file, synthetic_caption_file.parent / "images")


CLASS_FOLDERS = ("airport", "bare_land", "BaseballField", "beach", "dense-residential", "forest", "river")


@pytest.fixture(scope="session")
def class_folders(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A UC Merced-style folder: 7 class sub-folders of 3 noisy 32 px images each, one colour per class."""
    import numpy as np
    from PIL import Image

    root = tmp_path_factory.mktemp("class_folders")
    rng = np.random.default_rng(0)
    for number, name in enumerate(CLASS_FOLDERS):
        folder = root / name
        folder.mkdir()
        colour = np.array([(number * 97) % 256, (number * 53 + 80) % 256, (number * 151 + 30) % 256])
        for index in range(3):
            pixels = np.clip(colour + rng.normal(0, 40, (32, 32, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{name}_{index:02d}.png")
    return root


@pytest.fixture(scope="session")
def tiny_model():
    """The random-init tiny OpenCLIP model (eval mode); session-wide, so tests must not change its weights."""
    from rsitr.models import TINY_MODEL, create_model

    return create_model(TINY_MODEL, seed=0).model.eval()


from support import SHARED_DATA  # noqa: E402 - after the path is set


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (real RSICD and UCM-Captions, read-only); tests using it skip when it is absent."""
    if not (SHARED_DATA / "rsicd" / "dataset_rsicd.json").is_file() or not (SHARED_DATA / "ucm").is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA} (the project's ../shared/data); these tests need it")
    return SHARED_DATA
