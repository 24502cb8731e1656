"""Suite-wide configuration.

- Four fake host devices for the sharding tests: ``XLA_FLAGS`` must be set before JAX
  creates its CPU backend, so it is set here, at import, before anything imports JAX.
  ``PROBINFER_TEST_DEVICES=1`` runs the suite on one device instead, as users run (the
  four-device tests skip): XLA:CPU's scheduling differs with one device, and a deadlock
  of MALA's (fixed; see test_kernels.py) showed up only there.
- Rank promotion raises (``jax_numpy_rank_promotion="raise"``) for the whole session, so
  an implicit broadcast between arrays of different ranks in probinfer is an error. Tests
  that run third-party code which relies on rank promotion opt out with
  ``@pytest.mark.allow_rank_promotion``. ``PROBINFER_TEST_RANK_PROMOTION=allow`` turns the
  check off for a whole run (to look past a rank-promotion failure at other failures).
- Compiled programs are dropped after every test module (``jax.clear_caches`` and the
  driver's cache): each XLA:CPU executable holds memory mappings, and a whole suite's worth
  of them passed Linux's default ``vm.max_map_count`` (65,530) and crashed XLA inside a
  compile (test_nuts, after ~440 tests: 13,800 mappings after test_ns.py alone). Programs
  are still shared between the tests of a module (module and session fixtures keep their
  results, not their programs).
- Statistical helpers live in ``tests/_stats.py`` (one place).
"""

import os

NUM_DEVICES = int(os.environ.get("PROBINFER_TEST_DEVICES", "4"))
_FLAG = "--xla_force_host_platform_device_count=4"
if NUM_DEVICES == 4 and _FLAG not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_FLAG}".strip()

import jax  # noqa: E402
import pytest  # noqa: E402


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "allow_rank_promotion: run this test with jax_numpy_rank_promotion='allow' "
        "(third-party code that broadcasts arrays of different ranks)",
    )
    config.addinivalue_line(
        "markers", "four_devices: needs the four fake host devices (skipped on one device)"
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


@pytest.fixture(autouse=True, scope="module")
def _drop_compiled_programs():
    """Free every compiled program once a module is done (see the module docstring)."""
    yield
    import gc

    from probinfer.driver import clear_cache

    clear_cache()
    jax.clear_caches()
    gc.collect()


@pytest.fixture(autouse=True)
def _rank_promotion_opt_out(request: pytest.FixtureRequest):
    if request.node.get_closest_marker("allow_rank_promotion") is None:
        yield
        return
    with jax.numpy_rank_promotion("allow"):
        yield


@pytest.fixture
def count_compilations():
    """Count XLA backend compilations (any program, ours or JAX's) while the test runs."""
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
