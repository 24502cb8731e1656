"""The target seam: one trace per evaluation, split log densities, data arguments, fingerprints.

- ``Target`` views (posterior, tempered, constrained) agree with their definitions.
- A NumPyro model's ``target`` runs the model once per evaluation of both terms.
- ``LogDensity`` given as prior and likelihood with data arguments samples the right
  posterior (conjugate Gaussian, exact), and new data of the same shapes does not recompile.
- Checkpoint fingerprints see closed-over and passed data by content.
- The compiled-program cache is bounded.
"""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from _stats import check_expectation

import probinfer as pi
from probinfer.checkpoint import _differing_parts, describe_callable, fingerprint
from probinfer.driver import _compile

# ---------------------------------------------------------------------------------------
# Target views


def test_target_views_follow_their_definitions():
    target = pi.Target.from_parts(
        lambda x: -0.5 * jnp.sum(x**2), lambda x: -jnp.sum(jnp.abs(x - 1.0))
    )
    x = jnp.array([0.5, -1.0])
    logprior, loglikelihood = -0.5 * 1.25, -(0.5 + 2.0)
    np.testing.assert_allclose(target.logdensity_fn(x), logprior + loglikelihood)
    np.testing.assert_allclose(target.tempered_fn(0.25)(x), logprior + 0.25 * loglikelihood)
    np.testing.assert_allclose(target.constrained_fn(-3.0)(x), logprior)
    assert target.constrained_fn(-2.0)(x) == -jnp.inf


def test_tempering_at_zero_ignores_an_infinite_likelihood():
    """0 * -inf is NaN: at beta = 0 the tempered density must be the prior exactly."""
    target = pi.Target.from_parts(lambda x: -0.5 * x**2, lambda x: jnp.where(x > 0, 0.0, -jnp.inf))
    assert float(target.tempered_fn(0.0)(jnp.asarray(-1.0))) == -0.5
    assert float(target.tempered_fn(0.5)(jnp.asarray(-1.0))) == -jnp.inf


# ---------------------------------------------------------------------------------------
# NumPyro: one trace per evaluation

CALLS = {"model": 0}


def counted_model(y):
    CALLS["model"] += 1
    mu = numpyro.sample("mu", dist.Normal(0.0, 2.0))
    sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
    numpyro.sample("y", dist.Normal(mu, sigma), obs=y)


def test_numpyro_target_traces_the_model_once_per_evaluation():
    density = pi.from_numpyro(counted_model, jnp.array([0.1, 0.7]))
    position = {"mu": jnp.asarray(0.3), "sigma": jnp.asarray(-0.2)}
    CALLS["model"] = 0
    jax.make_jaxpr(jax.grad(lambda p: density.target.tempered_fn(0.3)(p)))(position)
    assert CALLS["model"] == 1
    logprior, loglikelihood = density.target.log_terms_fn(position)
    np.testing.assert_allclose(logprior, density.logprior_fn(position), rtol=1e-6)
    np.testing.assert_allclose(loglikelihood, density.loglikelihood_fn(position), rtol=1e-6)


# ---------------------------------------------------------------------------------------
# LogDensity with a prior/likelihood split and data arguments

PRIOR_SD, NOISE_SD = 2.0, 0.5


def gaussian_logprior(mu, y):
    return -0.5 * jnp.sum(mu**2) / PRIOR_SD**2


def gaussian_loglikelihood(mu, y):
    return -0.5 * jnp.sum((y - mu) ** 2) / NOISE_SD**2


SPLIT = pi.LogDensity(
    init=jnp.zeros(()), logprior_fn=gaussian_logprior, loglikelihood_fn=gaussian_loglikelihood
)
QUICK = {"method": "nuts", "chains": 2, "warmup": 300, "draws": 1000, "progress": False}


def exact_posterior(y):
    precision = 1 / PRIOR_SD**2 + y.size / NOISE_SD**2
    return float(np.sum(y) / NOISE_SD**2 / precision), float(1 / np.sqrt(precision))


@pytest.fixture(scope="module")
def split_idata():
    return pi.sample(SPLIT, jnp.array([0.4, 1.1, 0.9]), seed=0, **QUICK)


def test_split_log_density_samples_the_conjugate_posterior(split_idata):
    """Exact conjugate Gaussian posterior; MCSE check (z = 4, ESS >= 400)."""
    mean, sd = exact_posterior(np.array([0.4, 1.1, 0.9]))
    check = check_expectation(split_idata.posterior["x"].values, mean, name="mean")
    assert check.ok, check
    shifted = check_expectation(split_idata.posterior["x"].values, mean + 0.3 * sd, name="shift")
    assert not shifted.ok, shifted  # the check can fail


def test_new_data_for_a_log_density_does_not_recompile(split_idata, count_compilations):
    second = pi.sample(SPLIT, jnp.array([-1.0, 0.2, 0.3]), seed=1, **QUICK)
    assert count_compilations == [], f"{len(count_compilations)} XLA compilations"
    assert second.attrs["compile_seconds"] == 0.0
    mean, _ = exact_posterior(np.array([-1.0, 0.2, 0.3]))
    check = check_expectation(second.posterior["x"].values, mean, name="mean, new data")
    assert check.ok, check


def test_split_target_terms_and_unsplit_refusal():
    bound = SPLIT.bind((jnp.array([1.0, 2.0]),))
    logprior, loglikelihood = bound.target.log_terms_fn(jnp.asarray(1.0))
    np.testing.assert_allclose([logprior, loglikelihood], [-0.125, -2.0])
    np.testing.assert_allclose(bound.logdensity_fn(jnp.asarray(1.0)), -2.125)
    unsplit = pi.LogDensity(lambda x: -0.5 * x**2, jnp.zeros(()))
    with pytest.raises(ValueError, match="logprior_fn=.*loglikelihood_fn="):
        _ = unsplit.bind(()).target


@pytest.mark.parametrize(
    ("arguments", "match"),
    [
        ({"init": jnp.zeros(2)}, "needs `logdensity_fn`"),
        ({"init": jnp.zeros(2), "logprior_fn": gaussian_logprior}, "`loglikelihood_fn` is missing"),
        (
            {
                "logdensity_fn": gaussian_logprior,
                "init": jnp.zeros(2),
                "logprior_fn": gaussian_logprior,
                "loglikelihood_fn": gaussian_loglikelihood,
            },
            "not both",
        ),
        ({"logdensity_fn": gaussian_logprior}, "`init` is missing"),
    ],
    ids=["nothing", "half-split", "both-ways", "no-init"],
)
def test_log_density_construction_errors(arguments, match):
    with pytest.raises(TypeError, match=match):
        pi.LogDensity(**arguments)


def test_log_density_data_errors_name_the_function():
    with pytest.raises(TypeError, match=r"loglikelihood_fn.*shape \(3,\)"):
        pi.sample(
            pi.LogDensity(
                init=jnp.zeros(()),
                logprior_fn=gaussian_logprior,
                loglikelihood_fn=lambda mu, y: -0.5 * (y - mu) ** 2,
            ),
            jnp.ones(3),
            **QUICK,
        )
    with pytest.raises(TypeError, match="positionally"):
        pi.model.prepare(SPLIT, (), {"y": jnp.ones(3)})


# ---------------------------------------------------------------------------------------
# Fingerprints and the compile cache


def test_fingerprint_sees_one_changed_element_of_closed_over_data():
    """``repr`` elides large arrays: descriptions must hash the content instead."""
    data = np.linspace(0.0, 1.0, 5000)
    changed = data.copy()
    changed[2500] += 1e-3

    def closure_over(values):
        return lambda x: -0.5 * jnp.sum((values - x) ** 2)

    assert describe_callable(closure_over(data)) == describe_callable(closure_over(data.copy()))
    assert describe_callable(closure_over(data)) != describe_callable(closure_over(changed))
    target = pi.LogDensity(closure_over(data), jnp.zeros(()))
    other = pi.LogDensity(closure_over(changed), jnp.zeros(()))
    assert fingerprint(model=target.describe()) != fingerprint(model=other.describe())
    # Passed as data arguments, they are hashed by value too.
    assert fingerprint(model=SPLIT.describe(), data=(data,)) != fingerprint(
        model=SPLIT.describe(), data=(changed,)
    )
    # ... and a part that differs is named.
    assert _differing_parts(
        fingerprint(model=SPLIT.describe(), data=(data,)),
        fingerprint(model=SPLIT.describe(), data=(changed,)),
    ) == ["data"]


def test_compiled_program_cache_is_bounded(monkeypatch):
    monkeypatch.setattr(_compile, "MAX_COMPILED_PROGRAMS", 3)
    for scale in (1.0, 2.0):  # two closures: two new specs, three programs each
        target = pi.LogDensity(lambda x, s=scale: -0.5 * jnp.sum(x**2) / s, jnp.zeros(2))
        pi.sample(target, method="rwm", chains=1, warmup=0, draws=2, progress=False)
        assert len(_compile._COMPILED) <= 3


@pytest.mark.parametrize("name", ["rwm", "mala", "hmc", "nuts", "slice"])
def test_kernels_carry_the_log_likelihood_of_a_tempered_target(name):
    """Every kernel keeps the aux (log likelihood) of its current point, accepted or not."""
    target = pi.Target.from_parts(
        lambda x: -0.5 * jnp.sum(x**2), lambda x: -jnp.sum(jnp.abs(x - 1.0))
    )
    algorithm = {**pi.mcmc.ALGORITHMS, "slice": pi.mcmc.slice_sampler}[name]
    kernel = algorithm(target.tempered_fn(0.4), 0.5, jnp.ones(3))

    def run(key):
        state = kernel.init(jnp.zeros(3))
        state, _ = jax.lax.scan(
            lambda s, k: (kernel.step(k, s)[0], None), state, jax.random.split(key, 5)
        )
        return state.position, state.aux

    positions, aux = jax.jit(jax.vmap(run))(jax.random.split(jax.random.key(0), 16))
    np.testing.assert_allclose(aux, jax.vmap(target.loglikelihood_fn)(positions), rtol=1e-6)
    assert np.ptp(np.asarray(aux)) > 0  # the chains moved
