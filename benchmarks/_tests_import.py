"""Import a module of the test suite (``tests/``) into a benchmark, shared rather than copied."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

TESTS = Path(__file__).resolve().parents[1] / "tests"


def load_test_module(name: str) -> ModuleType:
    """``tests/<name>.py`` as a module, with ``tests/`` on the path for its own imports
    (``_stats``, ``_sbc``)."""
    if str(TESTS) not in sys.path:
        sys.path.insert(0, str(TESTS))
    spec = importlib.util.spec_from_file_location(name, TESTS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
