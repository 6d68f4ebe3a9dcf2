"""The package's face (issue 43): what a library user calls is importable from ``rsitr`` itself, lazily."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import rsitr
from support import REPO

PUBLIC = {"create_model": "rsitr.models.factory", "list_pretrained": "rsitr.models.registry",
          "ArchiveIndex": "rsitr.index.archive_index", "UserError": "rsitr.errors", "RsitrWarning": "rsitr.errors",
          "open_clip": "rsitr._compat"}


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_each_public_name_is_its_home_modules_object(name: str) -> None:
    import importlib

    assert getattr(rsitr, name) is getattr(importlib.import_module(PUBLIC[name]), name)


def test_the_face_lists_its_names() -> None:
    assert sorted(rsitr.__all__) == sorted([*PUBLIC, "__version__"])
    assert set(rsitr.__all__) <= set(dir(rsitr))
    with pytest.raises(AttributeError, match="no attribute 'create_modle'"):
        rsitr.create_modle  # noqa: B018


def test_import_rsitr_imports_no_torch_until_a_model_name_is_used() -> None:
    script = ("import json, sys, rsitr; light = [m for m in ('torch', 'faiss', 'open_clip') if m in sys.modules]; "
              "rsitr.UserError; rsitr.list_pretrained(); still = 'torch' in sys.modules; "
              "print(json.dumps([light, still]))")
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    light, still = json.loads(done.stdout.splitlines()[-1])
    assert light == [] and still is False
