"""Load a benchmark script as a module (the benchmarks are scripts, not a package on the
path), for the tests of its functions (``test_records.py``, ``test_pfn_benchmark.py``)."""

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BENCHMARKS = Path(__file__).parents[1] / "benchmarks"


def load_benchmark(name: str) -> ModuleType:
    """``benchmarks/<name>.py`` as the module ``benchmark_<name>``; the script's imports of
    its neighbours (``from records import ...``) resolve as when it runs, and leave no
    top-level module behind for other tests."""
    before = set(sys.modules)
    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec = importlib.util.spec_from_file_location(
            f"benchmark_{name}", BENCHMARKS / f"{name}.py"
        )
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCHMARKS))
        for neighbour in {path.stem for path in BENCHMARKS.glob("*.py")} - before:
            sys.modules.pop(neighbour, None)
    return module
