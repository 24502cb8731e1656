"""Scale-mixture NNGP classification: both samplers against references, and end to end.

The default sampler is NUTS on the joint whitened posterior (through ``pi.sample``); the
alternative is Gibbs sweeps of elliptical slice on the whitened latents (validated in
``test_elliptical_slice.py``) and univariate slice steps on ``log s``. The slice step is
checked here against an exact 1-d target; both samplers' ``log s`` posterior against a
quadrature-and-Monte-Carlo reference; NUTS's convergence at the defaults on a
near-separable problem where the Gibbs sweeps do not mix; and the whole classifier end to
end (a sanity check on accuracy, not a statistical reference).
"""

import re
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special
import scipy.stats
from _stats import check_expectation

from probinfer import nngp
from probinfer.nngp._classification import SLICE_WIDTH, _slice_step


def test_slice_step_leaves_a_gamma_log_density_invariant():
    """Target: log of a Gamma(3, 1) variable. False-failure rate: 0/100 seeds."""

    def logdensity(t):
        return 3.0 * t - jnp.exp(t)

    def body(t, key):
        t, evals = _slice_step(key, t, logdensity, SLICE_WIDTH)
        return t, (t, evals)

    def chain(key):
        return jax.lax.scan(body, jnp.asarray(1.0), jax.random.split(key, 3000))[1]

    draws, evals = jax.vmap(chain)(jax.random.split(jax.random.key(1), 4))
    draws = np.asarray(draws, np.float64)
    samples = scipy.stats.gamma(3.0).rvs(400_000, random_state=0)
    exact_mean = float(scipy.special.digamma(3.0))
    exact_var = float(scipy.special.polygamma(1, 3.0))
    assert abs(np.log(samples).mean() - exact_mean) < 0.01
    for check in (
        check_expectation(draws, exact_mean, name="E[log s]"),
        check_expectation((draws - exact_mean) ** 2, exact_var, name="Var[log s]"),
    ):
        assert check.ok, check
    assert not check_expectation(draws, exact_mean + 0.3 * np.sqrt(exact_var), name="shift").ok
    assert np.asarray(evals).mean() < 10


@pytest.fixture(scope="module")
def two_moons():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(160, 2))
    labels = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(int)
    return x[:80], labels[:80], x[80:], labels[80:]


@pytest.mark.filterwarnings("ignore::probinfer.diagnostics.SamplingWarning")  # short runs
@pytest.mark.parametrize(
    "prior, method",
    [(None, "nuts"), (nngp.inverse_gamma(2.0, 2.0), "nuts"), (nngp.burr_xii(2.0, 1.0), "gibbs"),
     (None, "gibbs")],
)  # fmt: skip
def test_binary_classifier_end_to_end(two_moons, prior, method):
    x, labels, x_test, labels_test = two_moons
    posterior = nngp.sample_classifier(
        jax.random.key(0), nngp.mlp(1, bias_variance=0.5), x, labels, scale_prior=prior,
        num_chains=2, num_warmup=100, num_draws=100, thin=2, method=method, progress=False,
    )  # fmt: skip
    assert posterior.log_scales.shape == (2, 50)
    probs = posterior.predict_proba(x_test, key=jax.random.key(1))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    accuracy = float(jnp.mean(probs.argmax(axis=1) == labels_test))
    assert accuracy > 0.9  # a linear boundary: any working classifier gets ~0.97
    if prior is None:
        assert np.all(np.asarray(posterior.log_scales) == 0.0)
    idata = posterior.idata
    assert idata.posterior["log_scale"].shape == (2, 50)
    # Every latent: f at the training points (one latent function for two classes) and
    # its whitened coordinates; f reproduces the classifier's own map from them.
    assert idata.posterior["f"].dims == ("chain", "draw", "point", "latent")
    assert idata.posterior["f"].shape == (2, 50, x.shape[0], 1)
    z, log_s = posterior.whitened_latents[1, 7], posterior.log_scales[1, 7]
    f = np.exp(0.5 * log_s) * (
        posterior.eigenvectors @ (np.sqrt(posterior.eigenvalues)[:, None] * z)
    )
    np.testing.assert_allclose(idata.posterior["f"].values[1, 7], f, rtol=1e-4, atol=1e-5)


@pytest.mark.filterwarnings("ignore::probinfer.diagnostics.SamplingWarning")  # short runs
@pytest.mark.parametrize(
    "method",
    [pytest.param("nuts", marks=pytest.mark.slow), "gibbs"],  # NUTS: 33 s, `make test-slow`
)
def test_multiclass_classifier(two_moons, method):
    x, _, x_test, _ = two_moons
    labels = np.digitize(x[:, 0], [-0.5, 0.5])
    labels_test = np.digitize(x_test[:, 0], [-0.5, 0.5])
    posterior = nngp.sample_classifier(
        jax.random.key(0), nngp.mlp(1, bias_variance=0.5), x, labels,
        scale_prior=nngp.inverse_gamma(2.0, 2.0), num_chains=2, num_warmup=150, num_draws=100,
        method=method, progress=False,
    )  # fmt: skip
    probs = posterior.predict_proba(x_test, key=jax.random.key(1))
    assert probs.shape == (80, 3)
    assert float(jnp.mean(probs.argmax(axis=1) == labels_test)) > 0.8


@pytest.mark.parametrize(
    "labels, match",
    [(np.zeros(5, int), "at least two classes"), (np.array([0, 1, 2, 0, 1.0]), "integers"),
     (np.array([0, 1, -1, 0, 1]), "0..1"), (np.array([0, 1]), r"shape \(5,\)")],
)  # fmt: skip
def test_bad_labels(labels, match):
    with pytest.raises(ValueError, match=match):
        nngp.sample_classifier(jax.random.key(0), nngp.mlp(1), np.ones((5, 2)), labels)


def _scale_posterior_reference(x, labels, kernel, a, b):
    """Posterior of log s for a tiny binary problem: p(y | s) = E_u[prod sigmoid] by MC."""
    cov = np.asarray(kernel(x), np.float64) + 1e-6 * np.eye(len(x))
    chol = np.linalg.cholesky(cov)
    u = np.random.default_rng(0).normal(size=(400_000, len(x))) @ chol.T
    signs = 2.0 * labels - 1.0
    grid = np.linspace(-5.0, 7.0, 481)
    log_lik = np.array(
        [np.log(np.mean(np.prod(1 / (1 + np.exp(-signs * np.exp(0.5 * t) * u)), axis=1)))
         for t in grid]
    )  # fmt: skip
    log_prior = scipy.stats.invgamma(a, scale=b).logpdf(np.exp(grid)) + grid
    log_post = log_prior + log_lik
    weights = np.exp(log_post - log_post.max())
    weights /= weights.sum()
    mean = float(np.sum(weights * grid))
    return mean, float(np.sum(weights * (grid - mean) ** 2))


@pytest.mark.slow  # a long statistical check (10-20 s): `make test-slow`
@pytest.mark.parametrize("method", ["nuts", "gibbs"])
def test_classifier_scale_posterior_matches_reference(method):
    """E[log s] and Var[log s] vs a quadrature-and-Monte-Carlo reference on an 8-point
    problem where the data move s (posterior mean 0.5 prior sd above the prior's).
    False-failure rate (Gibbs): 0/10 seeds; NUTS: not measured over seeds."""
    x = np.linspace(-1.5, 1.5, 8)[:, None]
    labels = (x[:, 0] > 0).astype(int)
    kernel = nngp.mlp(1, bias_variance=0.1)
    a, b = 2.0, 0.5
    mean, var = _scale_posterior_reference(x, labels, kernel, a, b)
    posterior = nngp.sample_classifier(
        jax.random.key(0), kernel, x, labels, scale_prior=nngp.inverse_gamma(a, b),
        num_chains=4, num_warmup=500, num_draws=4000, method=method, progress=False,
    )  # fmt: skip
    log_s = np.asarray(posterior.log_scales, np.float64)
    checks = [
        check_expectation(log_s, mean, name="E[log s]"),
        check_expectation((log_s - mean) ** 2, var, name="Var[log s]"),
    ]
    assert all(c.ok for c in checks), [str(c) for c in checks]
    assert not check_expectation(log_s, mean + 0.3 * np.sqrt(var), name="shifted").ok
    prior_mean = np.log(b) - scipy.special.digamma(a)  # a sampler ignoring the labels
    assert not check_expectation(log_s, prior_mean, name="prior").ok


def test_thin_larger_than_draws_is_an_error():
    with pytest.raises(ValueError, match="thin"):
        nngp.sample_classifier(
            jax.random.key(0), nngp.mlp(1), np.ones((4, 2)), np.array([0, 1, 0, 1]),
            num_draws=3, thin=5,
        )  # fmt: skip


def _near_separable(num_points=150, seed=3):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(num_points, 4))
    labels = (np.sin(2 * x[:, 0]) + x[:, 1] - 0.5 * x[:, 2] > 0).astype(int)
    return x, labels


_DIVERGED = re.compile(r"(\d+) of \d+ transitions after warm-up diverged")


@pytest.mark.slow  # a statistical check over 8 seeds (8 x 8,000 NUTS transitions, 35 s)
@pytest.mark.optimized  # time goes to running, not compiling
def test_nuts_defaults_converge_on_near_separable_data():
    """The issue's complaint: R-hat 1.30-1.42 for log s at the old defaults (Gibbs, 500 + 500).

    Near-separable data push s up and pin F down, so Gibbs sweeps crawl: at today's
    defaults (1,000 + 1,000) they gave R-hat 1.14-1.21 and bulk ESS 15-23 for log s (seeds
    0-2, measured once; not run here). Joint NUTS at its defaults, measured over seeds 0-23
    (default XLA flags): max R-hat over log s and the 150 f 1.002-1.011 (above 1.01 in 1 of
    24 seeds: the maximum over 151 components at ESS ~600 is that noisy; target acceptance
    0.99 gave the same, 1 of 24, for twice the gradients), min bulk ESS 483-749, and one
    divergent transition in all 96,000 (seed 0). So each seed's draws must pass the hard
    bars (R-hat < 1.02, ESS >= 400, at most 2 divergent transitions), and at most 2 of the
    8 seeds may be flagged (R-hat above 1.01, or any warning: divergences, mixing). Seeds
    0-7 are deterministic on one platform (seed 0 is flagged here), but other XLA builds
    round differently and may flag other seeds.
    """
    from probinfer.diagnostics import SamplingWarning, convergence

    x, labels = _near_separable()
    kernel = nngp.mlp(2, weight_variance=2.0, bias_variance=0.1)
    prior = nngp.inverse_gamma(2.0, 2.0)
    flagged = []
    for seed in range(8):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", SamplingWarning)
            posterior = nngp.sample_classifier(
                jax.random.key(seed), kernel, x, labels, scale_prior=prior, progress=False
            )
        messages = [str(w.message) for w in caught if issubclass(w.category, SamplingWarning)]
        f = posterior.idata.posterior["f"].values
        diagnostics = convergence({"log_scale": np.asarray(posterior.log_scales), "f": f})
        rhat, ess = float(diagnostics.rhat.max()), float(diagnostics.ess_bulk.min())
        divergent = [int(m.group(1)) for m in map(_DIVERGED.match, messages) if m]
        # A reworded divergence warning would leave `divergent` empty: catch that here.
        assert len(divergent) == sum("diverged" in m for m in messages), messages
        assert rhat < 1.02 and ess >= 400 and sum(divergent) <= 2, (seed, rhat, ess, messages)
        if rhat > 1.01 or messages:
            flagged.append((seed, rhat, messages))
    assert len(flagged) <= 2, flagged


@pytest.mark.filterwarnings("ignore::probinfer.diagnostics.SamplingWarning")  # short runs
@pytest.mark.parametrize("method", ["nuts", "gibbs"])
def test_new_labels_and_an_equal_prior_do_not_recompile(count_compilations, method):
    """A second fit with other labels and a freshly built equal prior reuses every compiled
    program (NUTS once compiled its chunk again each call: 2 s of 4 s on 8 points)."""
    x = np.linspace(-1.0, 1.0, 8)[:, None]
    settings = dict(num_chains=1, num_warmup=20, num_draws=20, progress=False, num_classes=2,
                    method=method)  # fmt: skip
    labels = np.array([0, 1, 0, 1, 1, 0, 1, 0])
    prior = nngp.log_normal(0.0, 1.0)
    nngp.sample_classifier(jax.random.key(0), nngp.mlp(1), x, labels, scale_prior=prior,
                           **settings)  # fmt: skip
    count_compilations.clear()
    nngp.sample_classifier(jax.random.key(1), nngp.mlp(1), x, 1 - labels,
                           scale_prior=nngp.log_normal(0.0, 1.0), **settings)  # fmt: skip
    assert count_compilations == []
    # Another prior is another program (its parameters are compiled in).
    nngp.sample_classifier(jax.random.key(1), nngp.mlp(1), x, 1 - labels,
                           scale_prior=nngp.log_normal(0.0, 3.0), **settings)  # fmt: skip
    assert count_compilations != []
