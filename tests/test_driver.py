"""The driver: chunking, stop conditions, status, resume, population sharding, and staged
steps.

- Records do not depend on the chunk size (bitwise), and a population loop stops when
  ``is_done_fn`` says so (status COMPLETED) or at ``max_steps`` (status STEP_LIMIT).
- An interrupted drive resumes from its checkpoint to exactly the uninterrupted result.
- On 4 (fake) devices, a population step with a population-wide reduction (the ESS of
  normalised weights, as SMC computes it) gives the unsharded values, and MCMC chains split
  over the devices give the single-device draws (bitwise for ``sequential`` chains).
- A :class:`StagedStep` gives the same records run whole or interleaved, for every member
  map; interleaved, vectorized members take ``max over members of their total work``
  loop iterations per chunk instead of ``the sum over steps of the slowest member's work``
  (lock step), counted exactly. MCMC warm-up and draws of interleaved vectorized NUTS
  chains equal the lock-step ones to float64 rounding.
"""

import dataclasses
import threading

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from _steps import reweight_step

import probinfer as pi
import probinfer.run
from probinfer.driver import TRACE_COUNTS, DriveStatus, ProgressReporter, StagedStep, _drive, drive

POPULATION = 8


def initial_population():
    return jnp.linspace(-1.0, 1.0, POPULATION), jnp.zeros(POPULATION)


def run_population(state=None, **settings):
    options = {"shared": jnp.asarray(0.3), "num_steps": 25, "chunk_size": 10, **settings}
    state = initial_population() if state is None else state
    return drive(reweight_step, state, jax.random.key(0), **options)


def test_records_do_not_depend_on_the_chunk_size():
    one_chunk = run_population(chunk_size=25)
    small_chunks = run_population(chunk_size=7)
    np.testing.assert_array_equal(one_chunk.records["ess"], small_chunks.records["ess"])
    np.testing.assert_array_equal(small_chunks.records["index"], np.arange(25))
    np.testing.assert_array_equal(one_chunk.state[0], small_chunks.state[0])
    assert small_chunks.num_steps == 25 and small_chunks.status is DriveStatus.COMPLETED


def test_chunk_size_is_a_runtime_value_below_the_buffer_rows(count_compilations):
    """Chunks of 7 and of 25 steps in a 32-row buffer: one program, the same records (a
    host hook between chunks, so that the chunks are really of those sizes; the records
    hook gets each chunk's own records)."""
    ends, chunk_indices = [], []
    seven = run_population(
        chunk_size=7,
        chunk_rows=32,
        after_chunk_fn=lambda state, end: ends.append(end),
        chunk_records_fn=lambda records: chunk_indices.append(records["index"]),
    )
    assert ends == [7, 14, 21, 25]
    assert [len(index) for index in chunk_indices] == [7, 7, 7, 4]
    np.testing.assert_array_equal(np.concatenate(chunk_indices), np.arange(25))
    before = len(count_compilations)
    whole = run_population(chunk_size=25, chunk_rows=32, after_chunk_fn=lambda *_: None)
    assert len(count_compilations) == before, "another chunk size recompiled"
    np.testing.assert_array_equal(seven.records["ess"], whole.records["ess"])
    np.testing.assert_array_equal(seven.records["index"], np.arange(25))
    with pytest.raises(ValueError, match="chunk_rows"):
        run_population(chunk_size=10, chunk_rows=5)


@pytest.mark.parametrize(
    ("member_map", "x64"), [(None, False), ("vectorized", False), (None, True)],
    ids=["whole", "vectorized", "x64"],
)  # fmt: skip
def test_a_weakly_typed_state_compiles_one_chunk_program(member_map, x64):
    """A state of Python numbers (weakly typed) comes back from a chunk strongly typed; the
    driver casts it first, so that the second chunk reuses the first one's program (before,
    it traced and compiled a second one). Under x64 the cast also changes the dtype (a
    weak float64 that a float32 step turns into float32). A leaf the step keeps weak stays
    weak."""

    def step(key, state, index, shared):
        moved, kept = state
        moved = moved + shared * jax.random.normal(key, jnp.shape(moved), jnp.float32)
        return (moved, kept), moved

    with jax.enable_x64(x64):
        start = (0.0, 1.0)
        if member_map is not None:  # three members, weakly typed as Python numbers broadcast
            start = tuple(jnp.broadcast_to(jnp.asarray(value), (3,)) for value in start)
        assert all(jnp.asarray(leaf).weak_type for leaf in start)
        before = TRACE_COUNTS.get("chunk", 0)
        result = drive(
            step, start, jax.random.key(0), shared=jnp.asarray(0.5, jnp.float32),
            num_steps=30, chunk_size=10, member_map=member_map,
            after_chunk_fn=lambda *_: None,
        )  # fmt: skip
    assert TRACE_COUNTS["chunk"] - before == 1
    assert result.state[0].dtype == jnp.float32 and not result.state[0].weak_type
    assert result.state[1].weak_type
    assert result.records.shape == ((30,) if member_map is None else (3, 30))


def test_records_stay_on_the_device_until_the_end_unless_the_host_reads_them(monkeypatch):
    """With nothing shown or saved between chunks, the records of all chunks come back in
    one transfer (no wait per chunk), or in several once those held pass the byte bound;
    the records are those fetched chunk by chunk."""
    fetched_per_chunk = run_population(after_chunk_fn=lambda state, step: None)
    transfers = []
    original = jax.device_get

    def counting_device_get(tree):
        transfers.append(1)
        return original(tree)

    monkeypatch.setattr(jax, "device_get", counting_device_get)
    kept = run_population()
    assert len(transfers) == 1  # 25 steps in 3 chunks, fetched once
    transfers.clear()
    monkeypatch.setattr(_drive, "DEVICE_RECORDS_BYTES", 1)
    bounded = run_population()
    assert len(transfers) == 3  # the bound passed after every chunk
    for result in (kept, bounded):
        np.testing.assert_array_equal(result.records["ess"], fetched_per_chunk.records["ess"])
        np.testing.assert_array_equal(result.records["index"], np.arange(25))
        np.testing.assert_array_equal(result.state[0], fetched_per_chunk.state[0])


def test_a_drive_from_a_later_first_step_continues_the_run(tmp_path, interrupt_after):
    """Given the state after 5 steps and ``first_step=5``, a drive returns the records of
    steps 5-24 of the whole run, whether its records stay on the device, come back chunk
    by chunk, or are reloaded after an interruption."""
    full = run_population()
    after_five = run_population(num_steps=5).state
    options = {"first_step": 5, "run_fingerprint": "later-start"}
    kept = run_population(state=after_five, **options)
    hooked = run_population(state=after_five, after_chunk_fn=lambda *_: None, **options)
    with interrupt_after(1):
        run_population(state=after_five, checkpoint=tmp_path, **options)
    resumed = run_population(state=after_five, checkpoint=tmp_path, **options)
    for result in (kept, hooked, resumed):
        np.testing.assert_array_equal(result.records["index"], np.arange(5, 25))
        np.testing.assert_array_equal(result.records["ess"], full.records["ess"][5:])
        np.testing.assert_array_equal(result.state[1], full.state[1])


def counter_step(key, state, step_index, shared):
    return state + 1, state


def test_stop_condition_and_step_limit():
    stopped = drive(
        counter_step, jnp.asarray(0), jax.random.key(0), is_done_fn=lambda s: s >= 13,
        max_steps=100, chunk_size=5,
    )  # fmt: skip
    assert (int(stopped.state), stopped.num_steps) == (13, 13)
    np.testing.assert_array_equal(stopped.records, np.arange(13))
    assert stopped.status is DriveStatus.COMPLETED
    limited = drive(
        counter_step, jnp.asarray(0), jax.random.key(0), is_done_fn=lambda s: s >= 13,
        max_steps=9, chunk_size=5,
    )  # fmt: skip
    assert limited.num_steps == 9 and limited.status is DriveStatus.STEP_LIMIT
    assert "max_steps" in limited.status.message


def test_interrupted_drive_resumes_exactly(tmp_path, interrupt_after):
    full = run_population()
    with interrupt_after(2):
        run_population(checkpoint=tmp_path, run_fingerprint="test")
    resumed = run_population(checkpoint=tmp_path, run_fingerprint="test")
    np.testing.assert_array_equal(resumed.records["ess"], full.records["ess"])
    np.testing.assert_array_equal(resumed.state[1], full.state[1])
    with pytest.raises(ValueError, match="different run"):
        run_population(checkpoint=tmp_path, run_fingerprint="another")


def sum_indices(group, record):
    """A thinned group's record: the newest ESS, the sum of the group's step indices."""
    return {"ess": record["ess"], "index": group["index"] + record["index"]}


def test_thinned_records_are_every_kth_step_with_their_group_combined(tmp_path, interrupt_after):
    """``thin=4`` keeps steps 3, 7, ..., 23 of a 24-step run (bitwise those of the whole
    run) with ``combine_fn`` over each group of 4, whether the records stay on the device,
    come back chunk by chunk, or are reloaded after an interruption; the state is the
    whole run's."""
    full = run_population(num_steps=24)
    settings = {"num_steps": 24, "chunk_size": 8, "thin": 4, "combine_fn": sum_indices}
    kept = run_population(**settings)
    hooked = run_population(after_chunk_fn=lambda *_: None, **settings)
    with interrupt_after(1):
        run_population(checkpoint=tmp_path, **settings)
    resumed = run_population(checkpoint=tmp_path, **settings)
    newest_only = run_population(num_steps=24, chunk_size=8, thin=4)
    for result in (kept, hooked, resumed):
        np.testing.assert_array_equal(result.records["ess"], full.records["ess"][3::4])
        np.testing.assert_array_equal(result.records["index"], np.arange(24).reshape(6, 4).sum(1))
        np.testing.assert_array_equal(result.state[1], full.state[1])
    np.testing.assert_array_equal(newest_only.records["index"], np.arange(3, 24, 4))


def test_thinned_staged_members_interleaved_equal_whole_steps():
    """Interleaved members keep the same thinned, combined records as whole steps."""
    settings = {
        "num_steps": STAGED_STEPS, "chunk_size": 10, "member_map": "vectorized", "thin": 5,
        "combine_fn": lambda group, record: jax.tree.map(jnp.add, group, record),
    }  # fmt: skip
    whole = drive(CountdownStep(), jnp.zeros(MEMBERS, jnp.int32), jax.random.key(5), **settings)
    staged = drive(
        CountdownStep(), jnp.zeros(MEMBERS, jnp.int32), jax.random.key(5), interleave=True,
        **settings,
    )  # fmt: skip
    unthinned, _ = run_countdown("vectorized", interleave=False)
    groups = unthinned.records["units"].reshape(MEMBERS, STAGED_STEPS // 5, 5).sum(axis=2)
    for result in (whole, staged):
        np.testing.assert_array_equal(result.records["units"], groups)
        np.testing.assert_array_equal(result.state, unthinned.state)


@pytest.mark.parametrize(
    ("settings", "match"),
    [
        ({"num_steps": 3, "is_done_fn": lambda s: True, "max_steps": 3}, "not both"),
        ({"num_steps": None, "is_done_fn": lambda s: True}, "max_steps"),
        ({"chunk_size": 0}, "chunk_size"),
        ({"member_map": "diagonal"}, "member_map"),
        ({"thin": 4, "num_steps": 25, "chunk_size": 8}, "num_steps=25. is not a multiple"),
        ({"thin": 4, "num_steps": 24, "chunk_size": 10}, "chunk_size=10. is not a multiple"),
        ({"thin": 4, "num_steps": 24, "chunk_size": 8, "chunk_rows": 1}, "chunk_rows"),
        ({"thin": 0}, "thin"),
        (
            {"thin": 2, "num_steps": None, "is_done_fn": lambda s: True, "max_steps": 4},
            "fixed `num_steps`",
        ),
    ],
    ids=[
        "both-stops", "no-max-steps", "chunk-size", "member-map", "thin-steps", "thin-chunk",
        "thin-rows", "thin-zero", "thin-stop-condition",
    ],
)  # fmt: skip
def test_inconsistent_settings_are_refused(settings, match):
    with pytest.raises(ValueError, match=match):
        run_population(**settings)


# ---------------------------------------------------------------------------------------
# Sharding over 4 fake host devices (conftest)


@pytest.mark.four_devices
def test_population_reduction_is_the_same_on_four_devices():
    mesh = jax.sharding.Mesh(np.asarray(jax.devices()), ("population",))
    single = run_population()
    sharded = run_population(mesh=mesh, population_size=POPULATION)
    assert len(sharded.state[0].sharding.device_set) == 4
    assert sharded.state[0].sharding.spec == jax.sharding.PartitionSpec("population")
    np.testing.assert_allclose(sharded.records["ess"], single.records["ess"], rtol=1e-6)
    np.testing.assert_allclose(sharded.state[0], single.state[0], rtol=1e-6)


def test_mesh_needs_a_population_axis():
    mesh = jax.sharding.Mesh(np.asarray(jax.devices()), ("chains",))
    with pytest.raises(ValueError, match="population"):
        run_population(mesh=mesh, population_size=POPULATION)


def model(y):
    mu = numpyro.sample("mu", dist.Normal(0.0, 2.0))
    sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
    numpyro.sample("y", dist.Normal(mu, sigma), obs=y)


Y = jnp.array([0.3, -0.4, 1.2, 0.8])


@pytest.mark.filterwarnings("ignore::probinfer.diagnostics.SamplingWarning")  # 4 x 30 draws
@pytest.mark.four_devices
@pytest.mark.optimized
def test_mcmc_draws_are_the_same_on_one_and_four_devices():
    """Chains split over 4 devices (per-device ``lax.map``) run the per-chain computation of
    one device: the draws are bitwise identical. (Vectorized chains round differently in a
    vmap of 4 than in 4 of 1; tests/test_contracts.py compares those to float32 rounding.)

    Compiled with XLA's optimizations on, as users compile: with most of them off (the
    suite's default), the inverse error function of NUTS's momentum normals rounds one ulp
    apart in the two programs now and then (measured). Checked to hold both with the
    suite's legacy loop emitters and with XLA's default ones (``PROBINFER_TEST_OPTIMIZE=1``,
    exactly users' settings)."""
    settings = {"chains": 4, "warmup": 30, "draws": 30, "progress": False, "seed": 3}
    one = pi.sample(model, Y, chain_method="sequential", **settings)
    four = pi.sample(model, Y, chain_method="parallel-sequential", **settings)
    for name in ("mu", "sigma"):
        np.testing.assert_array_equal(four.posterior[name].values, one.posterior[name].values)


ADVANCE_CALLS = []  # one entry per member per loop iteration of `CountdownStep.advance`


@dataclasses.dataclass(frozen=True)
class CountdownStep(StagedStep):
    """Step ``i`` of a member takes 1..8 units of work (drawn); finishing adds them up."""

    def begin(self, key, state, step_index, shared):
        return {"left": jax.random.randint(key, (), 1, 9), "units": jnp.zeros((), jnp.int32)}

    def advance(self, work, state, shared):
        jax.debug.callback(lambda units: ADVANCE_CALLS.append(1), work["units"])
        return {"left": work["left"] - 1, "units": work["units"] + 1}

    def is_done(self, work):
        return work["left"] == 0

    def finish(self, key, state, work, step_index, shared):
        return state + work["units"], {"units": work["units"], "index": step_index}


MEMBERS, STAGED_STEPS, STAGED_CHUNK = 4, 20, 8


def run_countdown(member_map, interleave):
    ADVANCE_CALLS.clear()
    result = drive(
        CountdownStep(),
        jnp.zeros(MEMBERS, jnp.int32),
        jax.random.key(5),
        num_steps=STAGED_STEPS,
        chunk_size=STAGED_CHUNK,
        member_map=member_map,
        interleave=interleave,
    )
    return result, len(ADVANCE_CALLS) // MEMBERS


def test_staged_steps_interleaved_give_the_same_records_without_lock_step():
    whole, lock_step_iterations = run_countdown("vectorized", interleave=False)
    units = whole.records["units"]  # (members, steps)
    assert units.shape == (MEMBERS, STAGED_STEPS) and units.min() >= 1 and units.max() <= 8
    np.testing.assert_array_equal(whole.records["index"][0], np.arange(STAGED_STEPS))
    np.testing.assert_array_equal(whole.state, units.sum(axis=1))
    for member_map in ("vectorized", "sequential"):
        interleaved, iterations = run_countdown(member_map, interleave=True)
        for name in ("units", "index"):
            np.testing.assert_array_equal(interleaved.records[name], whole.records[name])
        np.testing.assert_array_equal(interleaved.state, whole.state)
    # Lock step: each step costs its slowest member's work. Interleaved (the last run was
    # sequential: run vectorized again): each chunk costs its busiest member's total.
    assert lock_step_iterations == units.max(axis=0).sum()
    _, iterations = run_countdown("vectorized", interleave=True)
    chunks = range(0, STAGED_STEPS, STAGED_CHUNK)
    expected = sum(units[:, c : c + STAGED_CHUNK].sum(axis=1).max() for c in chunks)
    assert iterations == expected < lock_step_iterations


def _while_predicate_shapes(jaxpr) -> list[tuple[int, ...]]:
    """The predicate's shape of every ``while`` in a jaxpr and the jaxprs nested in it."""
    shapes = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "while":
            shapes.append(tuple(eqn.params["cond_jaxpr"].out_avals[0].shape))
        for param in eqn.params.values():
            for sub in param if isinstance(param, (tuple, list)) else (param,):
                if isinstance(sub, jax.extend.core.ClosedJaxpr):
                    shapes += _while_predicate_shapes(sub.jaxpr)
                elif isinstance(sub, jax.extend.core.Jaxpr):
                    shapes += _while_predicate_shapes(sub)
    return shapes


def test_interleaved_vectorized_loop_has_one_predicate_for_all_members():
    """The flat loop's predicate is the same for every member. A per-member predicate
    makes the lowered ``vmap``-ed loop select each member's whole carry, records buffers
    included, on every iteration: a select and a copy of the buffers per leapfrog step,
    which made interleaved NUTS about 3x slower per iteration than lock step on eight schools
    (64 chains, diag metric: 236 against 74 us, 2026-12-05)."""
    rows = 64
    program = _drive._ChunkProgram(CountdownStep(), None, rows, "vectorized", True, None)
    args = (
        jnp.zeros(MEMBERS, jnp.int32), jax.random.split(jax.random.key(0), MEMBERS), None,
        jnp.asarray(0), jnp.asarray(rows), jnp.asarray(rows), jnp.asarray(1),
    )  # fmt: skip
    jaxpr = jax.make_jaxpr(_drive._run_chunk, static_argnums=0)(program, *args).jaxpr
    assert _while_predicate_shapes(jaxpr) == [()]


def test_interleave_needs_a_staged_step():
    with pytest.raises(ValueError, match="StagedStep"):
        drive(counter_step, jnp.zeros(()), jax.random.key(0), num_steps=3, interleave=True)


def noisy_walk_step(key, state, step_index, shared):
    state = state + jnp.sin(state) * shared + jax.random.normal(key, state.shape)
    return state, {"position": state, "index": step_index}


def sum_positions(group, record):
    return {"position": group["position"] + record["position"], "index": record["index"]}


cpu_only = pytest.mark.skipif(
    jax.default_backend() != "cpu", reason="sequential members are grouped on CPU only"
)


@cpu_only
@pytest.mark.parametrize(
    ("member_map", "members", "threads", "groups"),
    [
        ("sequential", 4, 2, 2),
        ("sequential", 3, 2, 3),
        ("sequential", 4, 1, 1),
        ("vectorized", 4, 2, 2),  # with `split_vectorized`
        ("vectorized", 6, 4, 3),
        ("vectorized", 3, 2, 1),  # no group of one vectorized member
    ],
)
def test_members_run_in_thread_groups_with_the_same_results(
    monkeypatch, tmp_path, interrupt_after, member_map, members, threads, groups
):
    """Members split into equal groups, each group's chunk run from a worker thread, give
    bitwise the records and state of one program for all members (vectorized ones here
    too: an elementwise step rounds alike in any batch): records kept on the device,
    reported chunk by chunk, thinned and combined, and a run interrupted under one thread
    count and resumed under another (vectorized members resume in the groups their
    checkpoint records, sequential ones in this thread count's)."""
    from probinfer.driver import _threads

    settings = {
        "shared": jnp.asarray(0.3), "num_steps": 12, "chunk_size": 4, "member_map": member_map,
        "thin": 2, "combine_fn": sum_positions, "split_vectorized": member_map == "vectorized",
    }  # fmt: skip
    state = jnp.linspace(-1.0, 1.0, members * 2).reshape(members, 2)
    key = jax.random.key(11)
    monkeypatch.setenv(_threads.THREADS_VARIABLE, "1")
    alone = drive(noisy_walk_step, state, key, **settings)
    seen = []  # (thread, members) of every group's chunk run
    original = _drive.compiled_program

    def watched_program(function, static, args, watch):
        program = original(function, static, args, watch)

        def run(*run_args):
            size = jax.tree.leaves(run_args[0])[0].shape[0]
            seen.append((threading.current_thread().name, size))
            return program(*run_args)

        return run

    monkeypatch.setattr(_drive, "compiled_program", watched_program)
    monkeypatch.setenv(_threads.THREADS_VARIABLE, str(threads))
    grouped = drive(noisy_walk_step, state, key, **settings)
    ends = []
    hooked = drive(noisy_walk_step, state, key, after_chunk_fn=lambda _, end: ends.append(end),
                   **settings)  # fmt: skip
    with interrupt_after(1):
        drive(noisy_walk_step, state, key, checkpoint=tmp_path, **settings)
    monkeypatch.setenv(_threads.THREADS_VARIABLE, "1")
    resumed = drive(noisy_walk_step, state, key, checkpoint=tmp_path, **settings)
    assert ends == [4, 8, 12]
    for result in (grouped, hooked, resumed):
        for name in ("position", "index"):
            np.testing.assert_array_equal(result.records[name], alone.records[name])
        np.testing.assert_array_equal(result.state, alone.state)
    chunks = 3 + 3 + 1  # kept on the device, hooked, the interrupted run's first chunk
    if member_map == "vectorized":
        chunks += 2  # the resumed run's two, in the checkpoint's groups on one thread
    assert len(seen) == (chunks * groups if groups > 1 else 0)
    assert all(name.startswith("probinfer-members") for name, _ in seen)
    assert all(size == members // groups for _, size in seen)


@pytest.mark.filterwarnings("ignore::probinfer.diagnostics.SamplingWarning")  # 3-4 x 20 draws
@cpu_only
@pytest.mark.optimized
@pytest.mark.parametrize(
    ("method", "chain_method", "chains", "groups"),
    [
        ("nuts", "sequential", 3, 3),  # groups of one chain
        ("nuts", "sequential", 4, 2),
        ("nuts", "vectorized", 4, 2),  # interleaved groups of two
        ("hmc", "vectorized", 4, 2),  # whole transitions
        ("nuts", "vectorized", 3, 1),  # a vectorized group holds two chains or more
    ],
)
def test_chains_grouped_over_threads_give_the_single_thread_draws(
    monkeypatch, method, chain_method, chains, groups
):
    """Bitwise, sequential chains and the vectorized chains of trajectory kernels alike
    (vectorized chains in groups of 2 round as in one program of 4 on this model and, over
    1,000 + 1,000 steps, on 7 of 8 zoo models; on linear regression they did not). Compiled
    optimized, as users compile, for the reason given in
    ``test_mcmc_draws_are_the_same_on_one_and_four_devices``."""
    from probinfer.driver import THREADS_VARIABLE, _threads

    settings = {"chains": chains, "warmup": 30, "draws": 20, "progress": False, "seed": 5}
    grouped_runs = []

    def counted(*args, **kwargs):
        grouped_runs.append(args[2])  # the number of groups
        return _threads.run_in_groups(*args, **kwargs)

    monkeypatch.setattr(_drive, "run_in_groups", counted)
    runs = []
    for threads in ("1", "2"):
        monkeypatch.setenv(THREADS_VARIABLE, threads)
        runs.append(pi.sample(model, Y, method=method, chain_method=chain_method, **settings))
    for name in ("mu", "sigma"):
        np.testing.assert_array_equal(
            runs[1].posterior[name].values, runs[0].posterior[name].values
        )
    np.testing.assert_array_equal(
        runs[1].sample_stats.n_steps.values, runs[0].sample_stats.n_steps.values
    )
    # The two-thread run's chunks (warm-up and sampling: two or more), none of the
    # one-thread run's.
    assert set(grouped_runs) == ({groups} if groups > 1 else set())
    assert (len(grouped_runs) >= 2) == (groups > 1)


def test_thread_count_from_the_environment_is_checked(monkeypatch):
    from probinfer.driver import _threads

    for bad in ("0", "two", "²"):
        monkeypatch.setenv(_threads.THREADS_VARIABLE, bad)
        with pytest.raises(ValueError, match="PROBINFER_CPU_THREADS=.* must be a positive integer"):
            _threads.host_threads()
    monkeypatch.setenv(_threads.THREADS_VARIABLE, "3")
    assert _threads.host_threads() == 3
    # Groups x rounds as small as can be, the fewest groups on a tie.
    assert [_threads.member_groups(m, 2) for m in (1, 2, 4, 5, 8)] == [1, 2, 2, 5, 2]
    assert [_threads.member_groups(m, 3) for m in (8, 6)] == [8, 3]
    assert [_threads.member_groups(m, 4) for m in (6, 12, 3, 10)] == [3, 4, 3, 10]
    assert _threads.member_groups(4, 1) == 1
    # Vectorized groups: at most one per thread, two members or more each.
    assert [_threads.vectorized_groups(m, 2) for m in (1, 2, 3, 4, 5, 128)] == [1, 1, 1, 2, 1, 2]
    assert [_threads.vectorized_groups(m, 4) for m in (6, 8, 12, 4)] == [3, 4, 4, 2]
    assert _threads.vectorized_groups(4, 1) == 1


def test_members_are_not_grouped_under_debug_nans(monkeypatch):
    """JAX checks a program's outputs for NaN only on the thread that asked for it."""
    from probinfer.driver import _threads

    monkeypatch.setenv(_threads.THREADS_VARIABLE, "2")
    state = jnp.zeros((4, 2))
    assert _threads.groups_for("sequential", 4, state) == (
        2 if jax.default_backend() == "cpu" else 1
    )
    with jax.debug_nans(True):
        assert _threads.groups_for("sequential", 4, state) == 1
        assert _threads.groups_for("vectorized", 4, state, split_vectorized=True) == 1
    # Vectorized members only when the drive asks (trajectory kernels).
    assert _threads.groups_for("vectorized", 4, state) == 1
    assert _threads.groups_for("vectorized", 4, state, split_vectorized=True) == (
        2 if jax.default_backend() == "cpu" else 1
    )


@cpu_only
def test_a_resumed_drive_keeps_its_checkpoints_vectorized_groups(monkeypatch):
    """Vectorized members resume in the recorded group count when it splits them into
    groups of two or more (or is one program), whatever the threads; otherwise, and for
    sequential members, the count for this machine."""
    from probinfer.driver import _threads

    state = jnp.zeros((8, 2))

    def groups(member_map, resumed, threads, members=8):
        monkeypatch.setenv(_threads.THREADS_VARIABLE, str(threads))
        return _threads.groups_for(
            member_map, members, state[:members], split_vectorized=True, resumed_groups=resumed
        )

    assert [groups("vectorized", r, 1) for r in (1, 2, 4, None)] == [1, 2, 4, 1]
    assert [groups("vectorized", r, 2) for r in (1, 4, None)] == [1, 4, 2]
    # Not a split into groups of two or more: this machine's count.
    assert [groups("vectorized", r, 2) for r in (3, 8, 0, -2)] == [2, 2, 2, 2]
    assert groups("vectorized", 2, 2, members=5) == 1
    # Sequential members round alike in any grouping.
    assert [groups("sequential", r, 2) for r in (1, 4)] == [2, 2]
    with jax.debug_nans(True):
        assert groups("vectorized", 2, 2) == 1


def test_vectorized_members_are_not_grouped_under_a_blocking_jaxlib(monkeypatch):
    """jaxlib 0.10.0-0.11.0 (excluded by the requirements) hung two vectorized groups."""
    from probinfer.driver import _threads

    monkeypatch.setenv(_threads.THREADS_VARIABLE, "2")
    state = jnp.zeros((4, 2))
    on_cpu = jax.default_backend() == "cpu"
    blocking = {}
    try:
        for version in ("0.9.2", "0.10.0", "0.10.2", "0.11.0", "0.11.1", "0.12.1.dev20260101"):
            monkeypatch.setattr(_threads, "jaxlib_version", version)
            _threads.jaxlib_blocks_batched_lapack.cache_clear()
            blocking[version] = _threads.jaxlib_blocks_batched_lapack()
            grouped = _threads.groups_for("vectorized", 4, state, split_vectorized=True)
            assert grouped == (2 if on_cpu and not blocking[version] else 1)
            assert _threads.groups_for("sequential", 4, state) == (2 if on_cpu else 1)
    finally:
        _threads.jaxlib_blocks_batched_lapack.cache_clear()  # for the installed version
    assert [v for v, b in blocking.items() if b] == ["0.10.0", "0.10.2", "0.11.0"]


@pytest.mark.filterwarnings("ignore::probinfer.diagnostics.SamplingWarning")  # 8 x 50 draws
@pytest.mark.four_devices
def test_interleaved_nuts_chains_equal_lock_step_chains(monkeypatch):
    """Warm-up (windows, step-size restarts) and draws of 8 NUTS chains split over 4
    devices, 2 vectorized chains on each, run as one flat loop per device, equal the same
    chains run in lock step to float64 rounding (measured: identical), with the same
    gradient counts.

    Both runs vectorize 2 chains per device: a batch of another width (8 on one device)
    rounds its float64 dot products differently, and over 150 warm-up steps one flipped
    U-turn decision makes a chain's draws differ by O(1); lock step equals interleaving
    at every width, but the comparison must hold the width fixed."""
    prec = jnp.array([[2.8, -2.4, 0.4], [-2.4, 3.0, -0.5], [0.4, -0.5, 0.6]])
    settings = {"chains": 8, "warmup": 150, "draws": 50, "seed": 1, "progress": False}
    runs, interleave_flags = [], []
    original_drive = probinfer.run.drive

    def spy_drive(*args, **kwargs):  # so that the test fails if nothing was interleaved
        interleave_flags.append(kwargs["interleave"])
        return original_drive(*args, **kwargs)

    monkeypatch.setattr(probinfer.run, "drive", spy_drive)
    with jax.enable_x64(True):
        target = pi.LogDensity(lambda x: -0.5 * x @ prec @ x, jnp.zeros(3, jnp.float64))
        for min_chains in (1, 10**9):
            monkeypatch.setattr(probinfer.run, "INTERLEAVE_MIN_CHAINS", min_chains)
            runs.append(pi.sample(target, chain_method="parallel-vectorized", **settings))
    assert interleave_flags == [True, True, False, False]  # warm-up and sampling per run
    interleaved, lock_step = runs
    np.testing.assert_array_equal(
        interleaved.sample_stats.n_steps.values, lock_step.sample_stats.n_steps.values
    )
    np.testing.assert_allclose(
        interleaved.posterior.x.values, lock_step.posterior.x.values, rtol=0, atol=1e-8
    )


@pytest.mark.filterwarnings("ignore::probinfer.diagnostics.SamplingWarning")  # unadapted: diverges
def test_thinned_mcmc_keeps_every_kth_draw_and_its_groups_warning_signs(monkeypatch):
    """``pi.sample(..., thin=3)`` keeps draws 2, 5, 8, ... of the unthinned run (bitwise),
    with the group's gradient evaluations summed, a divergence anywhere in the group
    flagged and its deepest tree; the divergence warning counts groups. A step size at the
    stability limit of the narrow direction (no warm-up) makes some transitions diverge
    (13% measured), so that "anywhere in the group" differs from "the kept one"."""
    target = pi.LogDensity(
        lambda x: -0.5 * jnp.sum((x / jnp.array([1.0, 0.05])) ** 2), jnp.zeros(2)
    )
    settings = {"chains": 2, "warmup": 0, "step_size": 0.1, "progress": False, "seed": 2}
    every = pi.sample(target, draws=60, **settings)
    with pytest.warns(pi.diagnostics.SamplingWarning, match="of 40 groups of 3 transitions"):
        thinned = pi.sample(target, draws=20, thin=3, **settings)
    assert thinned.attrs["thin"] == 3
    np.testing.assert_array_equal(thinned.posterior.x.values, every.posterior.x.values[:, 2::3])
    groups = {name: every.sample_stats[name].values.reshape(2, 20, 3) for name in
              ("diverging", "n_steps", "tree_depth", "lp")}  # fmt: skip
    stats = thinned.sample_stats
    assert 0 < groups["diverging"].sum() < groups["diverging"].size
    np.testing.assert_array_equal(stats.diverging.values, groups["diverging"].any(axis=2))
    np.testing.assert_array_equal(stats.n_steps.values, groups["n_steps"].sum(axis=2))
    np.testing.assert_array_equal(stats.tree_depth.values, groups["tree_depth"].max(axis=2))
    np.testing.assert_array_equal(stats.lp.values, groups["lp"][:, :, 2])
    # E-BFMI over every transition: the unthinned run's squared energy changes, over the
    # variance of the kept energies (ArviZ's E-BFMI of the kept draws alone is far off).
    energy = every.sample_stats.energy.values.astype(np.float64)
    expected = (np.diff(energy, axis=1) ** 2).mean(axis=1) / energy[:, 2::3].var(axis=1)
    np.testing.assert_allclose(thinned.attrs["e_bfmi"], expected, rtol=1e-5)
    assert not set(stats.data_vars) & {"energy_first", "energy_jumps", "num_nonfinite"}
    # The progress bar says that it counts groups too.
    shown = []
    original_update = ProgressReporter.update

    def spy_update(self, **kwargs):
        shown.extend(kwargs.get("fields") or {})
        return original_update(self, **kwargs)

    monkeypatch.setattr(ProgressReporter, "update", spy_update)
    with pytest.warns(pi.diagnostics.SamplingWarning, match="groups of 3"):
        pi.sample(target, draws=20, thin=3, **{**settings, "progress": True})
    assert set(shown) == {"divergent groups of 3"}
    with pytest.raises(ValueError, match="`thin` is for MCMC"):
        pi.sample(target, method="smc", thin=2)
    with pytest.raises(ValueError, match="thin"):
        pi.sample(target, thin=0)
