"""The driver: chunking, stop conditions, status, resume, and population sharding.

- Records do not depend on the chunk size (bitwise), and a population loop stops when
  ``is_done_fn`` says so (status COMPLETED) or at ``max_steps`` (status STEP_LIMIT).
- An interrupted drive resumes from its checkpoint to exactly the uninterrupted result.
- On 4 (fake) devices, a population step with a population-wide reduction (the ESS of
  normalised weights, as SMC computes it) gives the unsharded values, and MCMC chains split
  over the devices give the single-device draws (bitwise for ``sequential`` chains).
"""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

import probinfer as pi
from probinfer.driver import DriveStatus, drive

# Deliberately short runs: what these tests check is bookkeeping, not the quality of the
# draws, so the run diagnostics (R-hat, ESS, divergences) are expected and silenced.
pytestmark = pytest.mark.filterwarnings("ignore::probinfer.diagnostics.SamplingWarning")

POPULATION = 8


def reweight_step(key, state, step_index, shared):
    """Move every particle, reweight it, and record the normalised-weight ESS."""
    positions, log_weights = state
    positions = positions + shared * jax.random.normal(key, positions.shape)
    log_weights = log_weights - 0.5 * positions**2
    log_total = jax.nn.logsumexp(log_weights)
    ess = jnp.exp(2 * log_total - jax.nn.logsumexp(2 * log_weights))
    return (positions, log_weights - log_total), {"ess": ess, "index": step_index}


def initial_population():
    return jnp.linspace(-1.0, 1.0, POPULATION), jnp.zeros(POPULATION)


def run_population(**settings):
    options = {"shared": jnp.asarray(0.3), "num_steps": 25, "chunk_size": 10, **settings}
    return drive(reweight_step, initial_population(), jax.random.key(0), **options)


def test_records_do_not_depend_on_the_chunk_size():
    one_chunk = run_population(chunk_size=25)
    small_chunks = run_population(chunk_size=7)
    np.testing.assert_array_equal(one_chunk.records["ess"], small_chunks.records["ess"])
    np.testing.assert_array_equal(small_chunks.records["index"], np.arange(25))
    np.testing.assert_array_equal(one_chunk.state[0], small_chunks.state[0])
    assert small_chunks.num_steps == 25 and small_chunks.status is DriveStatus.COMPLETED


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


@pytest.mark.parametrize(
    ("settings", "match"),
    [
        ({"num_steps": 3, "is_done_fn": lambda s: True, "max_steps": 3}, "not both"),
        ({"num_steps": None, "is_done_fn": lambda s: True}, "max_steps"),
        ({"chunk_size": 0}, "chunk_size"),
        ({"member_map": "diagonal"}, "member_map"),
    ],
    ids=["both-stops", "no-max-steps", "chunk-size", "member-map"],
)
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


@pytest.mark.four_devices
def test_mcmc_draws_are_the_same_on_one_and_four_devices():
    """Chains split over 4 devices (per-device ``lax.map``) run the per-chain computation of
    one device: the draws are bitwise identical. (Vectorized chains round differently in a
    vmap of 4 than in 4 of 1; tests/test_contracts.py compares those to float32 rounding.)"""
    settings = {"chains": 4, "warmup": 30, "draws": 30, "progress": False, "seed": 3}
    one = pi.sample(model, Y, chain_method="sequential", **settings)
    four = pi.sample(model, Y, chain_method="parallel-sequential", **settings)
    for name in ("mu", "sigma"):
        np.testing.assert_array_equal(four.posterior[name].values, one.posterior[name].values)
