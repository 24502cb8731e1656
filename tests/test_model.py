"""The NumPyro front end: log densities, the prior/likelihood split, postprocessing, prior draws.

The model has the three kinds of constrained latent sites that need a bijection: a positive
scale (HalfCauchy, log), a unit-interval probability (Beta, logit) and a simplex
(Dirichlet, stick-breaking: 3 weights, 2 unconstrained coordinates), plus a deterministic
site and two observed sites (one discrete).
"""

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
import scipy.special
import scipy.stats
from _stats import check_expectation, failures
from numpyro.distributions.transforms import biject_to
from numpyro.infer.util import potential_energy

import probinfer as pi

ALPHA = np.array([1.0, 2.0, 3.0])
BETA_A, BETA_B = 2.0, 3.0
Y = jnp.array([0.2, 0.9, 0.4, 0.6])
LABELS = jnp.array([0, 2, 2, 1])


def model(y, labels):
    scale = numpyro.sample("scale", dist.HalfCauchy(1.0))
    p = numpyro.sample("p", dist.Beta(BETA_A, BETA_B))
    weights = numpyro.sample("weights", dist.Dirichlet(jnp.asarray(ALPHA)))
    numpyro.deterministic("ratio", p / scale)
    with numpyro.plate("data", y.shape[0]):
        numpyro.sample("y", dist.Normal(p, scale), obs=y)
        numpyro.sample("label", dist.Categorical(weights), obs=labels)


@functools.cache
def density():
    return pi.from_numpyro(model, Y, LABELS)


def random_positions(num, seed=0):
    """``num`` unconstrained positions, uniform(-2, 2), stacked along a leading axis."""
    keys = jax.random.split(jax.random.key(seed), 3)
    return {
        "scale": jax.random.uniform(keys[0], (num,), minval=-2, maxval=2),
        "p": jax.random.uniform(keys[1], (num,), minval=-2, maxval=2),
        "weights": jax.random.uniform(keys[2], (num, 2), minval=-2, maxval=2),
    }


@functools.cache
def batched(name):
    """A ``ModelDensity`` method (or NumPyro's potential energy), vmapped and jitted."""
    if name == "potential_energy":
        return jax.jit(jax.vmap(lambda p: potential_energy(model, (Y, LABELS), {}, p)))
    return jax.jit(jax.vmap(getattr(density(), name)))


def test_site_names_and_unconstrained_shapes():
    target = density()
    assert set(target.site_names) == {"scale", "p", "weights"}
    draw = jax.jit(target.sample_prior)(jax.random.key(0))
    assert {k: v.shape for k, v in draw.items()} == {"scale": (), "p": (), "weights": (2,)}


def test_logdensity_equals_numpyro_potential_energy():
    positions = random_positions(8)
    np.testing.assert_allclose(
        batched("logdensity_fn")(positions),
        -batched("potential_energy")(positions),
        rtol=1e-5,
        atol=1e-4,
    )


def test_prior_plus_likelihood_is_the_log_density():
    positions = random_positions(8, seed=1)
    total = batched("logprior_fn")(positions) + batched("loglikelihood_fn")(positions)
    np.testing.assert_allclose(total, batched("logdensity_fn")(positions), rtol=1e-6, atol=1e-5)


def test_loglikelihood_is_the_observed_sites():
    """Computed independently with scipy from the constrained values."""
    positions = jax.tree.map(np.asarray, random_positions(8, seed=2))
    scale = np.exp(positions["scale"])
    p = scipy.special.expit(positions["p"])
    weights = np.asarray(jax.vmap(biject_to(dist.constraints.simplex))(positions["weights"]))
    expected = scipy.stats.norm.logpdf(np.asarray(Y)[None], p[:, None], scale[:, None]).sum(1)
    expected += np.log(weights[:, np.asarray(LABELS)]).sum(1)
    np.testing.assert_allclose(batched("loglikelihood_fn")(positions), expected, rtol=1e-5)


def test_postprocess_gives_constrained_and_deterministic_sites():
    positions = random_positions(8, seed=3)
    out = jax.tree.map(np.asarray, batched("postprocess_fn")(positions))
    assert set(out) == {"scale", "p", "weights", "ratio"}
    assert out["weights"].shape == (8, 3) and out["ratio"].shape == (8,)
    np.testing.assert_allclose(out["scale"], np.exp(positions["scale"]), rtol=1e-6)
    np.testing.assert_allclose(out["p"], scipy.special.expit(positions["p"]), rtol=1e-5)
    assert np.all(out["weights"] > 0)
    np.testing.assert_allclose(out["weights"].sum(-1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(out["ratio"], out["p"] / out["scale"], rtol=1e-6)


NUM_PRIOR_DRAWS = 4000


@functools.cache
def prior_sampler():
    target = density()

    def draw(key):
        unconstrained = target.sample_prior(key)
        return unconstrained, target.postprocess_fn(unconstrained)

    return jax.jit(jax.vmap(draw))


def prior_checks(seed=0, shift=0.0):
    """MCSE checks (iid draws) of prior moments; ``shift`` moves every mean (power check)."""
    unconstrained, constrained = jax.tree.map(
        np.asarray, prior_sampler()(jax.random.split(jax.random.key(seed), NUM_PRIOR_DRAWS))
    )
    log_scale, p, weights = unconstrained["scale"], constrained["p"], constrained["weights"]
    beta_var = BETA_A * BETA_B / ((BETA_A + BETA_B) ** 2 * (BETA_A + BETA_B + 1))
    total = ALPHA.sum()
    cases = [
        # log|Cauchy| is symmetric about log(scale) = 0 with variance pi^2 / 4.
        ("E[log scale]", log_scale, 0.0, np.pi / 2),
        ("Var[log scale]", (log_scale - log_scale.mean()) ** 2, np.pi**2 / 4, None),
        ("E[p]", p, BETA_A / (BETA_A + BETA_B), np.sqrt(beta_var)),
        ("Var[p]", (p - p.mean()) ** 2, beta_var, None),
    ]
    for i in range(3):
        var = ALPHA[i] * (total - ALPHA[i]) / (total**2 * (total + 1))
        w = weights[:, i]
        cases.append((f"E[weights[{i}]]", w, ALPHA[i] / total, np.sqrt(var)))
        cases.append((f"Var[weights[{i}]]", (w - w.mean()) ** 2, var, None))
    return [
        check_expectation(values, truth + shift * (sd or 0.0), name=name, iid=True)
        for name, values, truth, sd in cases
    ]


def test_sample_prior_has_prior_moments():
    """10 MCSE checks on 4000 iid prior draws (z = 4).

    False-failure rate measured over 1000 seeds: 1/1000 (one variance at |err|/mcse 4.01),
    in line with the nominal 10 x 6.3e-5 = 6e-4 of ten checks at z = 4.
    """
    checks = prior_checks()
    assert not failures(checks), "\n".join(str(c) for c in checks)


def test_prior_check_fails_against_shifted_means():
    """Means shifted by 0.3 prior sd fail. Power over 1000 seeds: 1000/1000."""
    checks = [c for c in prior_checks(shift=0.3) if c.name.startswith("E[")]
    assert all(not c.ok for c in checks), "\n".join(str(c) for c in checks)


def test_from_numpyro_accepts_keyword_data():
    def keyword_model(*, y):
        mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
        numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)

    target = pi.from_numpyro(keyword_model, y=jnp.array([1.0, 2.0]))
    position = {"mu": jnp.array(0.5)}
    expected = -potential_energy(keyword_model, (), {"y": jnp.array([1.0, 2.0])}, position)
    np.testing.assert_allclose(target.logdensity_fn(position), expected, rtol=1e-6)


@pytest.mark.parametrize("num_chains", [1, 3])
def test_initial_positions_are_uniform_in_unconstrained_space(num_chains):
    spec, _ = pi.model.prepare(model, (Y, LABELS), {})
    positions = spec.initial_positions(jax.random.key(0), num_chains)
    assert positions["weights"].shape == (num_chains, 2)
    for leaf in jax.tree.leaves(positions):
        assert np.all(np.abs(np.asarray(leaf)) <= 2.0)


def test_masked_nan_observations_are_accepted():
    def model(y, observed):
        mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
        with numpyro.handlers.mask(mask=observed):
            numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)

    y = jnp.array([0.5, jnp.nan, 1.5])
    density = pi.from_numpyro(model, y, jnp.array([True, False, True]))
    value, grad = jax.value_and_grad(density.logdensity_fn)({"mu": jnp.array(0.2)})
    assert np.isfinite(value) and np.isfinite(grad["mu"])


@pytest.mark.filterwarnings("ignore::probinfer.diagnostics.SamplingWarning")  # a 10-draw run
def test_numpy_integer_argument_is_a_static_size():
    def model(n, y):
        mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
        with numpyro.plate("data", n):
            numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)

    idata = pi.sample(model, np.int64(3), jnp.ones(3), warmup=20, draws=10, progress=False)
    assert idata.posterior["mu"].shape == (4, 10)


def test_improper_prior_samples_but_cannot_be_drawn_from():
    def model(y):
        mu = numpyro.sample("mu", dist.ImproperUniform(dist.constraints.real, (), ()))
        numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)

    density = pi.from_numpyro(model, jnp.array([1.0, 2.0]))
    assert np.isfinite(density.logdensity_fn({"mu": jnp.array(0.0)}))
    with pytest.raises(ValueError, match=r"(?s)'?mu'?.*improper"):
        density.sample_prior(jax.random.key(0))


@pytest.mark.filterwarnings("ignore::probinfer.diagnostics.SamplingWarning")  # a 5-draw run
def test_warmup_free_run_uses_the_given_step_size():
    def model(y):
        mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
        numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)

    idata = pi.sample(model, jnp.ones(2), warmup=0, draws=5, step_size=0.01, progress=False)
    np.testing.assert_allclose(idata.sample_stats["step_size"].values, 0.01, rtol=1e-6)


def test_window_adaptation_run_without_steps_keeps_the_initial_step_size():
    adaptation = pi.mcmc.window_adaptation(pi.mcmc.nuts, lambda x: -0.5 * jnp.sum(x**2))
    _, parameters, _ = adaptation.run(jax.random.key(0), jnp.zeros(2), 0)
    state = adaptation.init(jnp.zeros(2), jax.random.split(jax.random.key(0))[0])
    np.testing.assert_allclose(parameters["step_size"], state.step_size)


def parameter_bounded_model(y):
    theta = numpyro.sample("theta", dist.Exponential(1.0))
    with numpyro.plate("data", y.shape[0]):
        numpyro.sample("y", dist.Uniform(0.0, theta), obs=y)


@pytest.mark.filterwarnings(
    "ignore::probinfer.diagnostics.SamplingWarning"
)  # the edge: NaN proposals too
def test_support_that_depends_on_a_parameter_is_sampled():
    """``y ~ Uniform(0, theta)``: data outside one prior draw's support are not an error.

    The posterior is ``exp(-theta) theta^-2`` on ``theta > max(y) = 5``, with mean
    ``E1(5) / (exp(-5) / 5 - E1(5)) = 5.7618``. Only ~10% of uniform(-2, 2) starting
    points are inside it, so the start needs the retries. The hard edge makes NUTS
    diverge there (expected, silenced here). A truth off by 0.2 (a quarter of the
    posterior sd) fails the same check.
    """
    y = jnp.array([3.0, 5.0])
    idata = pi.sample(parameter_bounded_model, y, draws=3000, progress=False, seed=0)
    theta = idata.posterior["theta"].values
    assert theta.min() > 5.0
    truth = scipy.special.exp1(5.0) / (np.exp(-5.0) / 5.0 - scipy.special.exp1(5.0))
    check = check_expectation(theta, truth, name="theta")
    assert check.ok, check
    assert not check_expectation(theta, truth + 0.2, name="shifted").ok


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="LAPACK calls are XLA:CPU's")
def test_the_start_check_makes_no_batched_lapack_call():
    """`pi.sample` checks the chains' starting points one chain after another: vmapped over
    chains, a model with two Gaussian-process terms makes two independent batched LAPACK
    calls, which XLA:CPU deadlocks on with jaxlib 0.10.0-0.11.0 (a benchmark's 100-point
    NUTS reference hung, by every sign there, with both pool threads in
    `lapack_dpotrf_ffi`'s ParallelBatchMap). The requirements exclude those versions; this
    guards environments that install them anyway. Unbatched, a LAPACK call never goes to
    the thread pool."""
    from probinfer.model import prepare
    from probinfer.run import _finite_start

    x = np.linspace(-1.0, 1.0, 12)

    def model(y1, y2):
        lengthscale = numpyro.sample("lengthscale", dist.LogNormal(0.0, 0.3))
        k = jnp.exp(-0.5 * (x[:, None] - x[None, :]) ** 2 / lengthscale**2) + 0.1 * jnp.eye(12)
        numpyro.sample("y1", dist.MultivariateNormal(jnp.zeros(12), k), obs=y1)
        numpyro.sample("y2", dist.MultivariateNormal(jnp.zeros(12), 2.0 * k), obs=y2)

    spec, data = prepare(model, tuple(np.random.default_rng(0).normal(size=(2, 12))), {})
    positions = spec.initial_positions(jax.random.key(0), 4)
    check = jax.jit(functools.partial(_finite_start, spec, None))
    lapack = [line for line in check.lower(data, positions).as_text().splitlines()
              if "lapack_" in line]  # fmt: skip
    assert lapack  # it does factorise: otherwise this test would say nothing
    batched = re.compile(r"tensor<\d+x\d+x\d+x")  # an operand of rank 3 or more
    assert not any(batched.search(line) for line in lapack), lapack
    assert np.asarray(check(data, positions)).all()


@pytest.mark.filterwarnings("ignore::probinfer.diagnostics.SamplingWarning")  # the edge
def test_no_finite_starting_point_is_an_error_naming_the_site_and_the_fix():
    """``y = 100`` under ``Uniform(0, theta)``: the posterior (``theta > 100``) is proper,
    but no uniform(-2, 2) point in unconstrained space (``theta < e^2``) reaches it, so
    every retry fails and the error names the tries, the site and what to pass."""
    from probinfer.model import MAX_INIT_TRIES

    with pytest.raises(
        ValueError,
        match=rf"no finite initial point for chain 0 after {MAX_INIT_TRIES} tries.*: y "
        r"\(observed value outside the support of Uniform\)\); pass finite `init_positions`",
    ):
        pi.sample(parameter_bounded_model, jnp.array([100.0]), draws=10, warmup=10,
                  chains=1, progress=False)  # fmt: skip
    # A finite starting point (unconstrained: log theta) is all the run needs.
    idata = pi.sample(
        parameter_bounded_model, jnp.array([100.0]), draws=200, warmup=200, chains=1,
        progress=False, init_positions={"theta": jnp.log(jnp.array([120.0]))},
    )  # fmt: skip
    assert idata.posterior["theta"].values.min() > 100.0


@pytest.mark.filterwarnings("ignore::probinfer.diagnostics.SamplingWarning")  # 2 x 10 draws
def test_a_log_density_init_far_out_is_named_as_what_to_change():
    """A ``LogDensity`` whose ``init`` is finite but whose log density overflows there
    (``1e30`` squared in float32): every draw is jittered around ``init``, so the error says
    so and asks for another ``init``, not only for ``init_positions``."""
    from probinfer.model import MAX_INIT_TRIES

    target = pi.LogDensity(lambda x: -0.5 * jnp.sum(x**2), jnp.full(3, 1e30))
    with pytest.raises(
        ValueError,
        match=rf"after {MAX_INIT_TRIES} tries of `init` plus uniform\(-2, 2\) jitter "
        r"\(log density -inf.*\); pass an `init` where the log density and its gradient are "
        r"finite \(the draws are jittered around it\) or finite `init_positions`, or fix",
    ):
        pi.sample(target, chains=2, warmup=10, draws=10, progress=False)
    idata = pi.sample(target, chains=2, warmup=10, draws=10, progress=False,
                      init_positions=jnp.zeros((2, 3)))  # fmt: skip
    assert np.isfinite(idata.posterior["x"].values).all()


def test_diagnose_names_observed_values_outside_a_moving_support_unless_masked():
    def model(y, mask):
        theta = numpyro.sample("theta", dist.Exponential(1.0))
        with numpyro.plate("data", y.shape[0]):
            numpyro.sample("y", dist.Uniform(0.0, theta).mask(mask), obs=y)

    y, at_three = jnp.array([1.0, 100.0]), {"theta": jnp.log(jnp.array(3.0))}
    named = pi.from_numpyro(model, y, jnp.array([True, True])).diagnose(at_three)
    assert "y (observed value outside the support of Uniform)" in named
    masked = pi.from_numpyro(model, y, jnp.array([True, False])).diagnose(at_three)
    assert "outside the support" not in masked


def test_data_outside_a_fixed_support_is_still_refused_at_once():
    def model(y):
        scale = numpyro.sample("scale", dist.HalfNormal(1.0))
        numpyro.sample("x", dist.Normal(0.0, scale), obs=1.0)
        numpyro.sample("y", dist.Uniform(0.0, 10.0), obs=y)

    with pytest.raises(ValueError, match=r"(?s)'y'.*outside the support"):
        pi.from_numpyro(model, jnp.array([3.0, 12.0]))


def test_moving_support_under_an_improper_prior_is_not_refused():
    """The improper prior's prototype differs between the two inspection traces, so the
    support ``(0, theta)`` is seen to move and y = 5 is left to the starting-point search."""

    def model(y):
        theta = numpyro.sample("theta", dist.ImproperUniform(dist.constraints.positive, (), ()))
        numpyro.sample("y", dist.Uniform(0.0, theta), obs=y)

    density = pi.from_numpyro(model, jnp.array([5.0]))
    assert np.isfinite(density.logdensity_fn({"theta": jnp.log(jnp.array(6.0))}))


def test_diagnose_honours_a_mask_under_another_wrapper():
    """A mask wrapped by an expansion counts as the site's own (one helper walks the
    wrappers for the data check and here; the top-level mask alone was read before)."""

    def model(y, mask):
        theta = numpyro.sample("theta", dist.Exponential(1.0))
        numpyro.sample("y", dist.Uniform(0.0, theta).expand([2]).mask(mask).expand([1, 2]),
                       obs=y)  # fmt: skip

    y, at_three = jnp.array([[1.0, 100.0]]), {"theta": jnp.log(jnp.array(3.0))}
    named = pi.from_numpyro(model, y, jnp.array([True, True])).diagnose(at_three)
    assert "y (observed value outside the support of Uniform)" in named
    masked = pi.from_numpyro(model, y, jnp.array([True, False])).diagnose(at_three)
    assert "outside the support" not in masked
