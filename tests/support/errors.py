"""User-error assertions: one ``rsitr <command>: error:`` line, exit code 2, no traceback."""

import json
import subprocess
import sys

from support import REPO


def assert_user_error(code: int, err: str, command: str, *fragments: str) -> None:
    """One error line, after at most some one-line warnings."""
    assert code == 2, err
    lines = err.strip().splitlines()
    assert lines[-1].startswith(f"rsitr {command}: error: "), err
    assert all(line.startswith(f"rsitr {command}: warning: ") for line in lines[:-1]), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, f"{fragment!r} not in {err!r}"

def assert_refused_without_torch(cases: list[tuple[list[str], str]]) -> None:
    """Each ``(argv, fragment)`` run as ``rsitr`` in a fresh interpreter ends as one user-error line holding
    ``fragment`` (exit 2) without importing torch."""
    script = ("import json, sys; from rsitr.cli import main; code = main(json.loads(sys.argv[1])); "
              "print(json.dumps([code, 'torch' in sys.modules]))")
    for argv, fragment in cases:
        done = subprocess.run([sys.executable, "-c", script, json.dumps(argv)], cwd=REPO, capture_output=True,
                              text=True, timeout=120)
        code, torch_imported = json.loads(done.stdout)
        assert_user_error(code, done.stderr, argv[0], fragment)
        assert not torch_imported, argv
