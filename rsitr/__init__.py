"""rsitr: remote sensing image-text retrieval with CLIP (EBAKER / iEBAKER, CMER, FTF) and a search product.

The public face: what a library user calls, importable from ``rsitr`` itself::

    import rsitr
    rsitr.list_pretrained()                  # the shipped tags
    loaded = rsitr.create_model()            # the default tag, with its scoring recipe
    index = rsitr.ArchiveIndex.open("my-index")

The names are imported on first use (PEP 562), so ``import rsitr`` (and the command line, which imports it first)
imports no torch, FAISS or model; each is the same object as in its home module.
"""

from __future__ import annotations

from rsitr._lazy import lazy_exports

__version__ = "0.1.0"

_HOMES = {
    "rsitr._compat": ("open_clip",),  # open_clip, importable beside PyPI's CUDA-built torchvision (docs/USAGE.md)
    "rsitr.errors": ("RsitrWarning", "UserError"),
    "rsitr.index.archive_index": ("ArchiveIndex",),
    "rsitr.models.factory": ("create_model",),
    "rsitr.models.registry": ("list_pretrained",),
}
_LAZY, __getattr__ = lazy_exports(__name__, _HOMES)
__all__ = ["__version__", *_LAZY]


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
