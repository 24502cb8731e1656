"""Suite-wide configuration.

- Four fake host devices for the sharding tests: ``XLA_FLAGS`` must be set before JAX
  creates its CPU backend, so it is set here, at import, before anything imports JAX.
  ``PROBINFER_TEST_DEVICES=1`` runs the suite on one device instead, as users run (the
  four-device tests skip): XLA:CPU's scheduling differs with one device, and a deadlock
  of MALA's (fixed; see test_kernels.py) showed up only there.
- XLA:CPU's scheduler is its default, as users run it: GP importance sampling (the
  distribution transformer's reference) deadlocked under it until its triangular solves
  left LAPACK (``probinfer/_linalg.py``), and ``test_dt_gp.py`` runs that program.
- Rank promotion raises (``jax_numpy_rank_promotion="raise"``) for the whole session, so
  an implicit broadcast between arrays of different ranks in probinfer is an error. Tests
  that run third-party code which relies on rank promotion opt out with
  ``@pytest.mark.allow_rank_promotion``. ``PROBINFER_TEST_RANK_PROMOTION=allow`` turns the
  check off for a whole run (to look past a rank-promotion failure at other failures).
- Compiled programs are dropped after a test module (``jax.clear_caches`` and the driver's
  cache) once the process holds more than 20,000 memory mappings or 1.2 GB resident, and
  after any test once it holds 1.4 GB: each XLA:CPU executable holds mappings, and a whole
  suite's worth of them passed Linux's default ``vm.max_map_count`` (65,530) and crashed
  XLA inside a compile (test_nuts, after ~440 tests: 13,800 mappings after test_ns.py
  alone); and the fast suite is to stay under 2 GB per process (test_ns alone grows by 1.2
  GB). After dropping them, ``malloc_trim`` hands the freed heap back to the OS: without
  it the resident size never fell (2.3 GB before and after, measured), with it test_ns ends
  at 0.7 GB. Below the bounds, programs (JAX's op-by-op ones above all: every eager
  operation on a new shape compiles one) are shared between modules too. Where ``/proc`` is
  missing, programs are dropped after every module.
- XLA compiles with most optimizations off (``jax_disable_most_optimizations``): compiling
  dominates the suite, and the light compile cut a two-module sample from 241 to 187 s.
  Modules whose tests spend their time running rather than compiling (long chains, particle
  filters) carry ``pytestmark = pytest.mark.optimized`` and compile fully optimized (measured
  per module: test_particle_filter 50 -> 28 s, test_adaptation 59 -> 43 s); so does a test
  marked ``@pytest.mark.optimized``, and a module fixture inside ``with fully_optimized():``.
  XLA:CPU also uses its legacy loop emitters (``--xla_cpu_use_fusion_emitters=false``,
  where the installed jaxlib knows the flag): they compile in about half the time and
  their programs ran as fast or faster here (eight schools, 4,000 steps, optimized:
  6.9 -> 4.6 s). ``PROBINFER_TEST_OPTIMIZE=1`` optimizes everything and keeps XLA's
  default emitters, as users compile. The level is not
  part of JAX's cache key: a program reused from another module keeps the level it was
  compiled at (which changes its speed, not what the test checks).
- Compiled programs are also kept on disk for the run (JAX's persistent compilation cache,
  in a temporary folder the first pytest process makes and removes at exit, its entries
  written atomically): the two xdist workers and modules after a drop load a program the
  other has compiled instead of compiling it again (full suite: 1,419 -> 1,302 s of test
  time, 12:17 -> 11:17 wall, measured back to back). A program loaded from disk counts as
  a compilation in ``count_compilations``, so a test that a program is not rebuilt can
  still fail (checked). ``PROBINFER_TEST_DISK_CACHE=0`` turns it off; a caller's own
  ``JAX_COMPILATION_CACHE_DIR`` is used as JAX uses it.
- ``make test`` runs the modules on two pytest-xdist workers (``--dist loadfile``: a module's
  tests share one worker, so its module fixtures and programs are built once).
- Statistical helpers live in ``tests/_stats.py`` (one place).
"""

import atexit
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

NUM_DEVICES = int(os.environ.get("PROBINFER_TEST_DEVICES", "4"))
_OPTIMIZE_ALL = os.environ.get("PROBINFER_TEST_OPTIMIZE", "0") == "1"
_DEVICES_FLAG = "--xla_force_host_platform_device_count=4"
_EMITTERS_FLAG = "--xla_cpu_use_fusion_emitters=false"


def _add_xla_flag(flag: str) -> None:
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {flag}".strip()


def _xla_accepts(flag: str) -> bool:
    """Whether this jaxlib knows ``flag`` (XLA aborts the process on an unknown flag)."""
    env = {**os.environ, "XLA_FLAGS": flag, "JAX_PLATFORMS": "cpu"}
    probe = [sys.executable, "-c", "import jax; jax.devices()"]
    try:
        return subprocess.run(probe, env=env, capture_output=True, timeout=300).returncode == 0
    except subprocess.TimeoutExpired:
        return False


if NUM_DEVICES == 4 and _DEVICES_FLAG not in os.environ.get("XLA_FLAGS", ""):
    _add_xla_flag(_DEVICES_FLAG)
# The legacy loop emitters (see the module docstring; eight schools' first `pi.sample`:
# 8.7 -> 4.7 s of compiling). The flag and the probe's verdict go into the environment, so
# the xdist workers inherit both and do not probe again.
_EMITTERS_VERDICT = "PROBINFER_TEST_LEGACY_EMITTERS"
if not _OPTIMIZE_ALL and "xla_cpu_use_fusion_emitters" not in os.environ.get("XLA_FLAGS", ""):
    if _EMITTERS_VERDICT not in os.environ:
        os.environ[_EMITTERS_VERDICT] = "1" if _xla_accepts(_EMITTERS_FLAG) else "0"
    if os.environ[_EMITTERS_VERDICT] == "1":
        _add_xla_flag(_EMITTERS_FLAG)
# The on-disk program cache (see the module docstring). The folder is passed to the xdist
# workers in a variable of ours, not JAX's: test subprocesses (CLI, docs) would inherit
# JAX's and write without the atomic writes below.
_PROGRAM_CACHE = "PROBINFER_TEST_PROGRAM_CACHE"
_USE_PROGRAM_CACHE = os.environ.get("PROBINFER_TEST_DISK_CACHE", "1") == "1" and (
    "JAX_COMPILATION_CACHE_DIR" not in os.environ  # the caller's own cache, as JAX uses it
)

import jax  # noqa: E402
import pytest  # noqa: E402


def _write_cache_entries_atomically() -> bool:
    """Make JAX's disk-cache writes atomic (a temporary file, then a rename), so that one
    worker never reads an entry another is still writing (JAX writes in place when the
    cache has no size bound, and a half-written entry is a warning that tests turning
    warnings into errors would fail on). False where JAX's cache is not the class known
    here (then there is no disk cache)."""
    try:
        from jax._src import lru_cache
    except ImportError:
        return False
    cache_class = getattr(lru_cache, "LRUCache", None)
    suffix = getattr(lru_cache, "_CACHE_SUFFIX", None)
    if cache_class is None or not isinstance(suffix, str) or not hasattr(cache_class, "put"):
        return False
    write_in_place = cache_class.put

    def put(self, key: str, value: bytes) -> None:
        if getattr(self, "eviction_enabled", True):  # bounded: JAX locks the files itself
            return write_in_place(self, key, value)
        path = self.path / f"{key}{suffix}"
        if not key or path.exists():
            return write_in_place(self, key, value)  # JAX's own answer (an error, or nothing)
        # Threads of one process may write the same entry: a name per thread.
        temporary = self.path / f".{key}.{os.getpid()}.{threading.get_ident()}.tmp"
        try:
            temporary.write_bytes(value)
            os.replace(temporary, path)
        finally:
            temporary.unlink(missing_ok=True)

    # A round trip through the patched class, so that a JAX whose cache reads entries
    # differently turns the disk cache off instead of breaking it.
    probe_dir = tempfile.mkdtemp(prefix="probinfer-test-cache-probe-")
    try:
        cache_class.put = put
        cache = cache_class(probe_dir, max_size=-1)
        cache.put("probe", b"entry")
        works = cache.get("probe") == b"entry"
    except Exception:  # any change in JAX's private cache: no disk cache
        works = False
    finally:
        shutil.rmtree(probe_dir, ignore_errors=True)
    if not works:
        cache_class.put = write_in_place
    return works


_CACHE_PREFIX = "probinfer-test-programs-"


def _remove_killed_runs_caches() -> None:
    """Remove the program caches of test runs that were killed (their exit hook never
    ran): each cache's name carries its run's process id, and a cache whose process is
    gone is removed. POSIX only (elsewhere signal 0 does not test a process); a cache
    named before the names carried the id is left alone."""
    if os.name != "posix":
        return
    for folder in Path(tempfile.gettempdir()).glob(f"{_CACHE_PREFIX}*"):
        pid = folder.name.removeprefix(_CACHE_PREFIX).partition("-")[0]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except OSError:
            pass  # alive, owned by someone else


if _USE_PROGRAM_CACHE and _write_cache_entries_atomically():
    if _PROGRAM_CACHE not in os.environ:  # the first pytest process; workers inherit it
        _remove_killed_runs_caches()
        _cache_dir = tempfile.mkdtemp(prefix=f"{_CACHE_PREFIX}{os.getpid()}-")
        atexit.register(shutil.rmtree, _cache_dir, ignore_errors=True)
        os.environ[_PROGRAM_CACHE] = _cache_dir
    jax.config.update("jax_compilation_cache_dir", os.environ[_PROGRAM_CACHE])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "allow_rank_promotion: run this test with jax_numpy_rank_promotion='allow' "
        "(third-party code that broadcasts arrays of different ranks)",
    )
    config.addinivalue_line(
        "markers", "four_devices: needs the four fake host devices (skipped on one device)"
    )
    config.addinivalue_line(
        "markers",
        "optimized: compile this module's (or this test's) programs with every XLA "
        "optimization (they spend their time running, not compiling)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if NUM_DEVICES == 4:
        return
    skip = pytest.mark.skip(reason="PROBINFER_TEST_DEVICES=1: one device")
    for item in items:
        if item.get_closest_marker("four_devices") is not None:
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def _rank_promotion_raises():
    """Make implicit rank promotion an error everywhere, session fixtures included."""
    with jax.numpy_rank_promotion(os.environ.get("PROBINFER_TEST_RANK_PROMOTION", "raise")):
        yield


MAX_MAPPINGS_KEPT = 20_000  # under a third of Linux's default vm.max_map_count
MAX_RESIDENT_BYTES_KEPT = 1.2e9  # between modules
MAX_RESIDENT_BYTES_IN_MODULE = 1.4e9  # after any test (test_ns alone compiles ~1.2 GB)


def _process_usage() -> tuple[int, int] | None:
    """The process's memory mappings and resident bytes, or None without ``/proc``."""
    try:
        with open("/proc/self/maps") as maps:
            num_mappings = sum(1 for _ in maps)
        with open("/proc/self/statm") as statm:
            resident_pages = int(statm.read().split()[1])
    except OSError:
        return None
    return num_mappings, resident_pages * os.sysconf("SC_PAGE_SIZE")


# The resident size right after the last drop: memory that dropping programs does not free
# (large arrays a module holds) must not make every later test drop and recompile.
_resident_after_drop = [0.0]
DROP_MARGIN_BYTES = 0.3e9


def _drop_programs_if_over(max_resident_bytes: float, *, without_proc: bool) -> None:
    """Free every compiled program if the process holds too many mappings or bytes (or,
    with ``without_proc``, when they cannot be read); the bytes' bound is at least the size
    after the last drop plus ``DROP_MARGIN_BYTES``."""
    usage = _process_usage()
    if usage is None and not without_proc:
        return
    bound = max(max_resident_bytes, _resident_after_drop[0] + DROP_MARGIN_BYTES)
    if usage is not None and usage[0] < MAX_MAPPINGS_KEPT and usage[1] < bound:
        return
    import gc

    from probinfer.driver import clear_cache

    clear_cache()
    jax.clear_caches()
    gc.collect()
    _return_freed_memory()
    after = _process_usage()
    _resident_after_drop[0] = 0.0 if after is None else float(after[1])


@pytest.fixture(autouse=True, scope="module")
def _drop_compiled_programs():
    """Free every compiled program once a module is done, if the process holds too many
    (see the module docstring)."""
    yield
    _drop_programs_if_over(MAX_RESIDENT_BYTES_KEPT, without_proc=True)


@pytest.fixture(autouse=True)
def _bound_memory_within_a_module():
    """The same within a module, at a higher bound: the largest modules would pass 2 GB."""
    yield
    _drop_programs_if_over(MAX_RESIDENT_BYTES_IN_MODULE, without_proc=False)


def _return_freed_memory() -> None:
    """Hand freed heap pages back to the OS (glibc keeps them otherwise, so the resident
    size never falls after the programs are dropped)."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        ctypes.CDLL(name).malloc_trim(0)
    except (OSError, AttributeError, TypeError):  # not glibc: nothing to do
        pass


@contextlib.contextmanager
def _optimization(optimize: bool) -> Iterator[None]:
    previous = jax.config.values["jax_disable_most_optimizations"]
    jax.config.update("jax_disable_most_optimizations", not optimize)
    try:
        yield
    finally:
        jax.config.update("jax_disable_most_optimizations", previous)


@pytest.fixture(scope="session")
def fully_optimized():
    """``with fully_optimized(): ...`` compiles with every XLA optimization: for a module
    fixture whose programs spend their time running (a test can be marked instead)."""
    return lambda: _optimization(True)


@pytest.fixture(autouse=True, scope="module")
def _module_optimization(request: pytest.FixtureRequest):
    """The module's XLA optimization level: full when the module is marked ``optimized``.
    Module-scoped autouse fixtures are set up before the module's other fixtures, so those
    compile at this level too."""
    marked = request.node.get_closest_marker("optimized") is not None
    with _optimization(_OPTIMIZE_ALL or marked):
        yield


@pytest.fixture(autouse=True)
def _optimized_test(request: pytest.FixtureRequest):
    """Full optimization for a test marked ``optimized`` (a marked module already has it)."""
    if request.node.get_closest_marker("optimized") is None:
        yield
        return
    with _optimization(True):
        yield


@pytest.fixture(autouse=True)
def _rank_promotion_opt_out(request: pytest.FixtureRequest):
    if request.node.get_closest_marker("allow_rank_promotion") is None:
        yield
        return
    with jax.numpy_rank_promotion("allow"):
        yield


@pytest.fixture
def count_compilations():
    """Count XLA compilations (any program, ours or JAX's) while the test runs. JAX times a
    program loaded from the on-disk cache under the same event as one it compiles, so a
    program rebuilt from disk counts too."""
    events = []

    def listener(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            events.append(duration)

    jax.monitoring.register_event_duration_secs_listener(listener)
    yield events
    jax.monitoring.unregister_event_duration_listener(listener)


@pytest.fixture
def interrupt_after(monkeypatch):
    """``with interrupt_after(n): ...`` raises KeyboardInterrupt at the driver's chunk n + 1,
    as a kill between chunks would (the checkpoint of chunk n is on disk)."""
    from contextlib import contextmanager

    from probinfer.driver import _drive

    @contextmanager
    def interrupted(num_chunks):
        calls = {"count": 0}
        original = _drive._dispatch

        def flaky(*args):
            calls["count"] += 1
            if calls["count"] > num_chunks:
                raise KeyboardInterrupt
            return original(*args)

        with monkeypatch.context() as patch:
            patch.setattr(_drive, "_dispatch", flaky)
            with pytest.raises(KeyboardInterrupt):
                yield

    return interrupted
