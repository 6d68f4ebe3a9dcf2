"""The one place rsitr imports open_clip from.

PyPI's x86_64 torchvision wheels are linked against the CUDA build of torch. Installed beside the
CPU build (``torch==2.13.0`` here), torchvision's compiled ``_C`` extension cannot load and
``import torchvision`` dies registering fake kernels for ``torchvision::nms``. open_clip only needs
torchvision's pure-Python transforms, so on exactly that failure we skip the meta registrations
and import again. With a matching torchvision nothing is changed.
"""

from __future__ import annotations

import sys
import types


def _import_torchvision() -> None:
    try:
        import torchvision  # noqa: F401
    except RuntimeError as err:
        if "torchvision::" not in str(err):
            raise
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        sys.modules["torchvision._meta_registrations"] = types.ModuleType("torchvision._meta_registrations")
        import torchvision  # noqa: F401


_import_torchvision()

import open_clip  # noqa: E402

__all__ = ["open_clip"]
