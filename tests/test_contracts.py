"""Contracts every kernel and ``pi.sample`` keep (STYLE section 9, DESIGN section 2).

Kernels: jit and no-jit agree; ``vmap`` over chains equals a Python loop; dict and tuple
positions give the same chain as the flat array; the same key gives identical results.
``pi.sample``: the same seed gives identical draws; a second call with a new seed and new
data values of the same shapes does not recompile; the output layout; ``LogDensity``
naming; "vectorized" and "sequential" chains agree.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

import probinfer as pi
from probinfer import mcmc
from probinfer.driver import TRACE_COUNTS

ALGORITHMS = ("rwm", "mala", "hmc", "nuts")
STEP_SIZES = {"rwm": 0.8, "mala": 0.6, "hmc": 0.3, "nuts": 0.5}
NUM_STEPS = 3
SCALES = jnp.array([1.0, 2.0, 0.5])


@pytest.mark.four_devices
def test_four_host_devices():
    """conftest's XLA flag took effect (the sharding tests rely on it)."""
    assert jax.device_count() == 4, jax.devices()


# ---------------------------------------------------------------------------------------
# Kernels on a tiny 3-d target, as a flat array, a dict and a tuple

STRUCTURES = {
    "flat": (lambda x: x, lambda p: p),
    "dict": (lambda x: {"a": x[:2], "b": x[2]}, lambda p: jnp.concatenate([p["a"], p["b"][None]])),
    "tuple": (lambda x: (x[:2], x[2]), lambda p: jnp.concatenate([p[0], p[1][None]])),
}


def logdensity_flat(x):
    return -0.5 * jnp.sum((x / SCALES) ** 2)


@functools.cache
def run_steps(name, structure="flat"):
    """``(key, flat start) -> (flat positions (NUM_STEPS, 3), infos)``, unjitted."""
    to_position, to_flat = STRUCTURES[structure]
    kernel = mcmc.ALGORITHMS[name](
        lambda p: logdensity_flat(to_flat(p)), STEP_SIZES[name], jnp.ones(3)
    )

    def run(key, x):
        def step(state, key):
            state, info = kernel.step(key, state)
            assert jax.tree.structure(state.position) == jax.tree.structure(to_position(x))
            return state, (to_flat(state.position), info)

        state = kernel.init(to_position(x))
        return jax.lax.scan(step, state, jax.random.split(key, NUM_STEPS))[1]

    return run


@functools.cache
def jitted(name, structure="flat"):
    return jax.jit(run_steps(name, structure))


START = jnp.array([0.3, -1.0, 0.2])


def assert_trees_close(a, b, rtol=1e-5, atol=1e-6):
    jax.tree.map(
        lambda x, y: np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol, atol), a, b
    )


def assert_trees_equal(a, b):
    jax.tree.map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), np.asarray(y)), a, b)


@pytest.mark.parametrize("name", ALGORITHMS)
def test_jit_and_no_jit_agree(name):
    key = jax.random.key(1)
    compiled = jitted(name)(key, START)
    with jax.disable_jit():
        eager = run_steps(name)(key, START)
    assert_trees_close(compiled, eager)
    assert np.any(np.asarray(compiled[0]) != np.asarray(START))  # the chain moved


@pytest.mark.parametrize("name", ALGORITHMS)
def test_same_key_gives_identical_results(name):
    key = jax.random.key(2)
    assert_trees_equal(jitted(name)(key, START), jitted(name)(key, START))
    other = jitted(name)(jax.random.key(3), START)
    assert not np.array_equal(np.asarray(other[0]), np.asarray(jitted(name)(key, START)[0]))


@pytest.mark.parametrize("name", ALGORITHMS)
def test_vmap_over_chains_matches_loop(name):
    keys = jax.random.split(jax.random.key(4), 4)
    starts = START[None] + jnp.arange(4.0)[:, None] * 0.25
    batched = jax.jit(jax.vmap(run_steps(name)))(keys, starts)
    looped = [jitted(name)(k, x) for k, x in zip(keys, starts, strict=True)]
    for chain, single in enumerate(looped):
        assert_trees_close(jax.tree.map(lambda leaf, c=chain: leaf[c], batched), single)


@pytest.mark.parametrize("structure", ["dict", "tuple"])
@pytest.mark.parametrize("name", ALGORITHMS)
def test_pytree_positions_give_the_flat_chain(name, structure):
    """Kernels ravel positions internally: a dict or tuple gives the same chain as the
    flat array with the same key (the leaves ravel in the flat order)."""
    key = jax.random.key(5)
    assert_trees_close(jitted(name, structure)(key, START), jitted(name)(key, START))


# ---------------------------------------------------------------------------------------
# pi.sample

Y = jnp.array([0.3, -0.4, 1.1, 0.8, 0.1])
Y_NEW = Y - 0.5  # new values, same shape (computed here, not inside a compile count)
Y_LONGER = jnp.concatenate([Y, Y])


def model(y):
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0).expand([2]).to_event(1))
    sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
    numpyro.deterministic("mu_sum", mu.sum())
    with numpyro.plate("data", y.shape[0]):
        numpyro.sample("y", dist.Normal(mu[0], sigma), obs=y)


SETTINGS = {"chains": 2, "warmup": 50, "draws": 30, "progress": False}


@pytest.fixture(scope="module")
def idata():
    return pi.sample(model, Y, seed=1, **SETTINGS)


@pytest.mark.filterwarnings("ignore::probinfer.diagnostics.SamplingWarning")  # 2 x 30 draws
def test_sample_output_layout(idata):
    posterior = idata.posterior
    assert set(posterior.data_vars) == {"mu", "sigma", "mu_sum"}
    assert posterior["mu"].shape == (2, 30, 2)
    assert posterior["sigma"].shape == (2, 30)
    assert posterior["mu_sum"].shape == (2, 30)
    assert np.all(posterior["sigma"].values > 0)  # constrained space
    np.testing.assert_allclose(
        posterior["mu_sum"].values, posterior["mu"].values.sum(-1), rtol=1e-5, atol=1e-5
    )
    required = {"lp", "diverging", "acceptance_rate", "step_size", "n_steps"}
    assert required <= set(idata.sample_stats.data_vars)
    for stat in required:
        assert idata.sample_stats[stat].shape == (2, 30), stat
    assert idata.sample_stats["diverging"].dtype == bool
    assert np.all(idata.sample_stats["n_steps"].values >= 1)
    attrs = {"method", "seed", "compile_seconds", "warmup_seconds", "sampling_seconds"}
    assert attrs <= set(idata.attrs)
    assert idata.attrs["method"] == "nuts" and idata.attrs["seed"] == 1


@pytest.mark.filterwarnings("ignore::probinfer.diagnostics.SamplingWarning")  # 2 x 30 draws
def test_same_seed_gives_identical_draws(idata):
    again = pi.sample(model, Y, seed=1, **SETTINGS)
    for name in idata.posterior.data_vars:
        np.testing.assert_array_equal(again.posterior[name].values, idata.posterior[name].values)
    np.testing.assert_array_equal(again.sample_stats["lp"].values, idata.sample_stats["lp"].values)


@pytest.mark.filterwarnings("ignore::probinfer.diagnostics.SamplingWarning")  # 2 x 30 draws
def test_new_seed_and_new_data_do_not_recompile(idata):
    pi.sample(model, Y, seed=1, **SETTINGS)  # retraces only if the programs were dropped
    traces_before = dict(TRACE_COUNTS)
    second = pi.sample(model, Y_NEW, seed=2, **SETTINGS)
    assert TRACE_COUNTS == traces_before
    assert second.attrs["compile_seconds"] == 0.0
    assert not np.array_equal(second.posterior["mu"].values, idata.posterior["mu"].values)
    # The trace counter does see a new program: data of another shape recompiles.
    pi.sample(model, Y_LONGER, seed=2, **SETTINGS)
    assert TRACE_COUNTS != traces_before


def _rewarm(count_compilations: list[float]) -> None:
    """Repeat the fixture's call, then forget what it compiled: the suite's memory bound may
    have dropped every compiled program after an earlier test of this worker (conftest)."""
    pi.sample(model, Y, seed=1, **SETTINGS)
    count_compilations.clear()


@pytest.mark.filterwarnings("ignore::probinfer.diagnostics.SamplingWarning")  # 2 x 30 draws
def test_new_seed_and_new_data_trigger_no_xla_compilation(idata, count_compilations):
    """Stronger than the trace counter: nothing at all is compiled on a repeat call
    (helpers such as the initial-point check included)."""
    _rewarm(count_compilations)
    pi.sample(model, Y_NEW, seed=3, **SETTINGS)
    assert count_compilations == [], f"{len(count_compilations)} XLA compilations"


@pytest.mark.filterwarnings("ignore::probinfer.diagnostics.SamplingWarning")  # 2 x 30 draws
def test_other_budgets_and_keyword_data_compile_nothing(idata, count_compilations):
    """The warm-up length is a runtime value (its windows are a few integers) and so is the
    chunk size (the records buffer has a fixed number of rows), so any warm-up and draw
    counts reuse the program (chunks of 16 to 50 steps here); data by keyword is the same
    call as by position."""
    _rewarm(count_compilations)
    for warmup, draws in ((10, 30), (40, 30), (500, 30), (600, 30), (1000, 30), (10, 700)):
        pi.sample(model, Y, seed=1, **{**SETTINGS, "warmup": warmup, "draws": draws})
    pi.sample(model, y=Y_NEW, seed=1, **SETTINGS)
    assert count_compilations == [], f"{len(count_compilations)} XLA compilations"
    pi.sample(model, Y, seed=1, **{**SETTINGS, "chains": 3})  # another shape: compiles
    assert count_compilations


@pytest.mark.filterwarnings("ignore::probinfer.diagnostics.SamplingWarning")  # 1 warm-up step
def test_vectorized_and_sequential_chains_give_the_same_draws():
    """Per-chain keys are identical, so the two chain methods run the same computation.

    They agree only up to float32 rounding: the two programs round differently (~1e-7) and
    adaptive warm-up amplifies that chaotically (with 50 warm-up steps NUTS draws differ by
    O(1)), so the comparison uses 1 warm-up step and 20 draws.
    """
    settings = {"chains": 2, "warmup": 1, "draws": 20, "progress": False, "seed": 1}
    sequential = pi.sample(model, Y, chain_method="sequential", **settings)
    vectorized = pi.sample(model, Y, chain_method="vectorized", **settings)
    for name in sequential.posterior.data_vars:
        np.testing.assert_allclose(
            vectorized.posterior[name].values,
            sequential.posterior[name].values,
            rtol=1e-4,
            atol=1e-5,
        )
    assert pi.sample(model, Y, **settings).attrs["chain_method"] == "sequential"  # CPU default


@pytest.mark.filterwarnings("ignore::probinfer.diagnostics.SamplingWarning")  # 2 x 10 draws
def test_log_density_dict_position_names_variables_by_keys():
    target = pi.LogDensity(
        lambda p: -0.5 * (jnp.sum(p["alpha"] ** 2) + p["beta"] ** 2),
        {"alpha": jnp.zeros(2), "beta": jnp.zeros(())},
    )
    idata = pi.sample(target, method="rwm", chains=2, warmup=20, draws=10, progress=False)
    assert set(idata.posterior.data_vars) == {"alpha", "beta"}
    assert idata.posterior["alpha"].shape == (2, 10, 2)
    assert idata.posterior["beta"].shape == (2, 10)


@pytest.mark.filterwarnings("ignore::probinfer.diagnostics.SamplingWarning")  # 2 x 10 draws
def test_log_density_bare_array_is_named_x():
    target = pi.LogDensity(lambda x: -0.5 * jnp.sum(x**2), jnp.zeros(3))
    idata = pi.sample(target, method="rwm", chains=2, warmup=20, draws=10, progress=False)
    assert set(idata.posterior.data_vars) == {"x"}
    assert idata.posterior["x"].shape == (2, 10, 3)
