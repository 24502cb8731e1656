"""Sparse variational scale-mixture classification: the bounds, their estimators, the fit.

The fit is likelihood-generic, so its machinery (whitening, inducing projections, the KL
term, the optimiser, the quadrature over ``log s``) is checked exactly with a Gaussian
likelihood, where every node's optimum is known in closed form: Titsias' (2009) collapsed
bound, which is the exact log marginal likelihood when the inducing points are the data.
Then the scale posterior and the evidence must match quadrature of the exact marginal
likelihood. The classification ELBO's Gauss-Hermite expectation is checked against a plain
Monte Carlo estimate, and the minibatch estimator against the full-data value.
"""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.integrate
import scipy.linalg
import scipy.stats

from probinfer import nngp
from probinfer.nngp import _variational as variational

NOISE = 0.1
KERNEL = nngp.rbf(0.7, 1.0)


def _regression_data(n: int = 12, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = np.sort(rng.uniform(-2, 2, size=(n, 1)), axis=0)
    y = 2.0 * np.sin(2 * x[:, 0]) + np.sqrt(NOISE) * rng.normal(size=n)
    return x, y


def _fit_gaussian(x, y, inducing, scale_prior=None, grid=None, num_steps=3, step_size=1.0):
    return variational._fit(
        jax.random.key(0), KERNEL, x, y, (variational.gaussian_expected_log_likelihood(NOISE),) * 2,
        1, scale_prior, grid, num_inducing=len(inducing), inducing_points=inducing,
        num_steps=num_steps, batch_size=None, step_size=step_size, jitter=1e-10,
        progress=False, num_classes=2,
    )  # fmt: skip


def _log_marginal(x, y, inducing, scale=1.0):
    """Titsias' bound at scale ``s`` (the exact log marginal likelihood if inducing = x)."""
    k_nn = scale * np.asarray(KERNEL(x), np.float64)
    k_nm = scale * np.asarray(KERNEL(x, inducing), np.float64)
    k_mm = scale * (np.asarray(KERNEL(inducing), np.float64) + 1e-10 * np.eye(len(inducing)))
    q_nn = k_nm @ np.linalg.solve(k_mm, k_nm.T)
    normal = scipy.stats.multivariate_normal(np.zeros(len(y)), q_nn + NOISE * np.eye(len(y)))
    return normal.logpdf(y) - np.trace(k_nn - q_nn) / (2 * NOISE)


@pytest.mark.parametrize("num_inducing", [5, 12])
def test_gaussian_fit_reaches_the_collapsed_bound(num_inducing):
    """With m = n the bound is the exact log marginal likelihood; m < n is Titsias' bound."""
    with jax.enable_x64(True):
        x, y = _regression_data()
        inducing = x[:: len(x) // num_inducing][:num_inducing]
        value = float(_fit_gaussian(x, y, inducing).log_evidence)
        bound = _log_marginal(x, y, inducing)
        # The optimum is the bound, reached by a natural-gradient step of size 1.
        assert value <= bound + 1e-8
        assert bound - value < 1e-6, (value, bound)
        # Twin: two short steps stop measurably below the optimum.
        early = float(_fit_gaussian(x, y, inducing, num_steps=2, step_size=0.3).log_evidence)
        assert bound - early > 1e-2


@pytest.fixture(scope="module")
def gaussian_grid_fit():
    prior = nngp.gamma(2.0, 2.0)
    grid = np.linspace(-5.0, 5.0, 41)
    with jax.enable_x64(True):
        x, y = _regression_data()
        model = _fit_gaussian(x, y, x, scale_prior=prior, grid=grid)
        exact = np.array([_log_marginal(x, y, x, np.exp(t)) for t in grid])
    return model, prior, grid, exact, (x, y)


def test_gaussian_scale_posterior_matches_quadrature(gaussian_grid_fit):
    """Node bounds are exact here, so weights and evidence are those of exact quadrature."""
    model, prior, grid, exact, _ = gaussian_grid_fit
    np.testing.assert_allclose(np.asarray(model.elbos), exact, atol=1e-6)
    log_prior = np.asarray(prior.log_prob(jnp.exp(grid))) + grid
    log_masses = log_prior + np.log(np.gradient(grid)) + exact
    # np.gradient's end widths are full gaps; trapezoid ends are half gaps.
    log_masses[[0, -1]] -= np.log(2.0)
    exact_weights = np.exp(log_masses - scipy.special.logsumexp(log_masses))
    np.testing.assert_allclose(np.exp(np.asarray(model.log_weights)), exact_weights, atol=1e-6)
    # The grid (spacing 0.25) integrates the evidence to 1e-4 nats of adaptive quadrature.
    offset = exact.max()
    x, y = gaussian_grid_fit[4]

    def integrand(t):
        log_prior = float(prior.log_prob(np.exp(t))) + t
        return np.exp(_log_marginal(x, y, x, np.exp(t)) + log_prior - offset)

    evidence, error = scipy.integrate.quad(integrand, -8.0, 8.0, limit=200)
    assert error < 1e-8 * evidence
    assert abs(float(model.log_evidence) - (np.log(evidence) + offset)) < 1e-3
    # Twin: ignoring the prior's mass (uniform weights over the ELBOs) is far off.
    flat = exact - scipy.special.logsumexp(exact)
    assert np.abs(np.exp(flat) - exact_weights).max() > 1e-2
    # Reweighting to another prior equals refitting under it (the node fits are shared).
    other = nngp.inverse_gamma(3.0, 1.0)
    with jax.enable_x64(True):
        refit = _fit_gaussian(x, y, x, scale_prior=other, grid=grid)
        reweighted = np.asarray(model.reweighted(other).log_weights)
    np.testing.assert_allclose(reweighted, np.asarray(refit.log_weights), atol=1e-8)


def test_grid_edge_warns(gaussian_grid_fit):
    _, prior, grid, _, (x, y) = gaussian_grid_fit
    with jax.enable_x64(True), pytest.warns(UserWarning, match="end of `log_scale_grid`"):
        _fit_gaussian(x, y, x[::3], scale_prior=prior, grid=[-6.0, -5.5, -5.0])
    # Twin: a grid that covers the posterior does not warn.
    with jax.enable_x64(True), warnings.catch_warnings():
        warnings.simplefilter("error")
        _fit_gaussian(x, y, x[::3], scale_prior=prior, grid=grid)


def _node(model, k):
    return jax.tree.map(lambda a: a[k], model.params)


def _mc_elbo(model, k, x, labels, key, log_scale=None, num_draws=20_000):
    """Plain Monte Carlo ELBO of node ``k`` of a binary model: draws of v and f from q."""
    params = _node(model, k)
    log_scale = model.log_scales[k] if log_scale is None else log_scale
    x = jnp.asarray(x)
    projection, residual = variational._projection(
        model.kernel(model.inducing_points, x), model.kernel.diagonal(x), model.inducing_cholesky
    )
    key_v, key_f = jax.random.split(key)
    # q(v) = N(mu, (P P^T)^{-1}): v = mu + P^{-T} eps.
    precision_chol = np.asarray(params.precision_cholesky[0], np.float64)
    eps = np.asarray(jax.random.normal(key_v, (num_draws, precision_chol.shape[0])), np.float64)
    v64 = (
        np.asarray(params.mean[0], np.float64)[None, :]
        + scipy.linalg.solve_triangular(precision_chol.T, eps.T, lower=False).T
    )
    v = jnp.asarray(v64, params.mean.dtype)
    f_noise = jax.random.normal(key_f, (num_draws, x.shape[0]))
    f = jnp.exp(0.5 * log_scale) * (v @ projection.T + jnp.sqrt(residual)[None, :] * f_noise)
    sign = 2 * jnp.asarray(labels) - 1
    log_lik = np.asarray(jnp.sum(jax.nn.log_sigmoid(sign[None, :] * f), axis=1), np.float64)
    mean = np.asarray(params.mean[0], np.float64)
    cov = np.linalg.inv(precision_chol @ precision_chol.T)
    log_q = scipy.stats.multivariate_normal(mean, cov).logpdf(v64)
    log_p = scipy.stats.norm.logpdf(v64).sum(axis=1)
    terms = log_lik + log_p - log_q
    return terms.mean(), terms.std(ddof=1) / np.sqrt(num_draws)


@pytest.fixture(scope="module")
def binary_problem():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(200, 2))
    labels = (x[:, 0] * x[:, 1] > 0).astype(int)
    return x[:120], labels[:120], x[120:], labels[120:]


@pytest.fixture(scope="module")
def binary_fit(binary_problem):
    x, labels, *_ = binary_problem
    kernel = nngp.mlp(depth=2, weight_variance=1.5, bias_variance=0.1)
    return nngp.fit_variational_classifier(
        jax.random.key(0), kernel, x, labels, scale_prior=nngp.inverse_gamma(2.0, 2.0),
        log_scale_grid=np.linspace(-3.0, 9.0, 13), num_inducing=30, num_steps=100,
        step_size=0.5,
    )  # fmt: skip


def test_classification_elbo_matches_monte_carlo(binary_problem, binary_fit):
    """Every node's quadrature ELBO against a plain Monte Carlo estimate: within 4 s.e.

    The nodes span s = e^-3..e^9, so this covers latent standard deviations from below 1
    (Gauss-Hermite) to the hundreds (closed forms plus the fine transition grid).
    """
    x, labels, *_ = binary_problem
    model = binary_fit
    for k in range(model.log_scales.shape[0]):
        estimate, se = _mc_elbo(model, k, x, labels, jax.random.key(5 + k))
        assert abs(float(model.elbos[k]) - estimate) < 4 * se, (k, model.elbos[k], estimate, se)
    # Twin: the same q at another scale is not within 4 s.e. of this node's ELBO.
    k = int(np.argmax(np.asarray(model.log_weights)))
    estimate, se = _mc_elbo(model, k, x, labels, jax.random.key(5))
    shifted, _ = _mc_elbo(model, k, x, labels, jax.random.key(5), model.log_scales[k] + 0.5)
    assert abs(float(model.elbos[k]) - shifted) > 4 * se


def test_expected_log_likelihood_gradients():
    """Price's-theorem gradients against independent references.

    Bernoulli: the value against SciPy quadrature and the gradients against autodiff of
    the value, from narrow (Gauss-Hermite) to very wide (closed form + grid) Gaussians. Two-
    class softmax: ``log softmax(f)[0] = log sigmoid(f0 - f1)``, so its Monte Carlo value
    and gradients must match the Bernoulli ones for ``d = f0 - f1`` within 4 s.e.
    """
    with jax.enable_x64(True):
        means = jnp.array([[0.3], [2.0], [-5.0], [40.0], [0.1], [3.0]])
        variances = jnp.array([[0.2], [0.9], [1.2], [1e4], [3e3], [25.0]])
        labels = jnp.array([1, 0, 1, 1, 0, 1])
        bernoulli = variational.bernoulli_expected_log_likelihood
        value, grad_means, grad_variances = bernoulli(means, variances, labels, None)

        def exact(mean, variance, label):
            sign, std = 2 * label - 1, np.sqrt(variance)

            def integrand(u):
                return scipy.special.log_expit(sign * u) * scipy.stats.norm.pdf(u, mean, std)

            lo, hi = mean - 12 * std, mean + 12 * std
            return scipy.integrate.quad(integrand, lo, hi, points=[0.0], limit=500)[0]

        triples = zip(means[:, 0], variances[:, 0], labels, strict=True)
        reference = [exact(float(m), float(v), int(y)) for m, v, y in triples]
        assert abs(float(value) - sum(reference)) < 1e-4
        auto = jax.grad(lambda m, v: bernoulli(m, v, labels, None)[0], argnums=(0, 1))
        auto_means, auto_variances = auto(means, variances)
        np.testing.assert_allclose(np.asarray(grad_means), np.asarray(auto_means), atol=1e-5)
        np.testing.assert_allclose(
            np.asarray(grad_variances), np.asarray(auto_variances), atol=1e-6
        )

        softmax = variational.softmax_expected_log_likelihood(4000)
        pair_means = jnp.array([[0.5, -0.3], [1.0, 2.0], [0.0, 6.0]])
        pair_variances = jnp.array([[0.4, 0.8], [30.0, 5.0], [2.0, 2.0]])
        zeros = jnp.zeros(3, int)
        draws = [softmax(pair_means, pair_variances, zeros, k)
                 for k in jax.random.split(jax.random.key(0), 40)]  # fmt: skip
        diff_means = pair_means[:, :1] - pair_means[:, 1:]
        diff_variances = pair_variances.sum(axis=1, keepdims=True)
        ones = jnp.ones(3, int)
        ref_value, ref_mean, ref_variance = bernoulli(diff_means, diff_variances, ones, None)
        references = (
            float(ref_value),
            np.concatenate([ref_mean, -ref_mean], axis=1),
            np.concatenate([ref_variance, ref_variance], axis=1),
        )
        for index, reference in enumerate(references):
            estimates = np.stack([np.asarray(d[index]) for d in draws])
            se = estimates.std(axis=0, ddof=1) / np.sqrt(len(draws))
            assert np.all(np.abs(estimates.mean(axis=0) - reference) < 4 * se + 1e-12), index
        # Twin: a factor-2 error in the variance gradient is caught.
        estimates = np.stack([np.asarray(d[2]) for d in draws])
        se = estimates.std(axis=0, ddof=1) / np.sqrt(len(draws))
        assert np.any(np.abs(estimates.mean(axis=0) - 2 * references[2]) > 4 * se)


def test_minibatch_elbo_is_unbiased(binary_problem, binary_fit):
    """The mean of minibatch ELBOs (likelihood scaled by n / b) is the full-data ELBO."""
    x, labels, *_ = binary_problem
    model = binary_fit
    k = int(np.argmax(np.asarray(model.log_weights)))
    params, log_scale = _node(model, k), model.log_scales[k]
    x = jnp.asarray(x)
    projection, residual = variational._projection(
        model.kernel(model.inducing_points, x), model.kernel.diagonal(x), model.inducing_cholesky
    )
    targets = jnp.asarray(labels)
    expected = variational.bernoulli_expected_log_likelihood

    @jax.jit
    def minibatch(key, num_data):
        rows = jax.random.choice(key, x.shape[0], (16,), replace=False)
        return variational._elbo(
            params, log_scale, key, projection[rows], residual[rows], targets[rows], num_data,
            expected,
        )  # fmt: skip

    keys = jax.random.split(jax.random.key(7), 4000)
    values = np.asarray(jax.vmap(lambda k: minibatch(k, x.shape[0]))(keys))
    se = values.std(ddof=1) / np.sqrt(values.size)
    full = float(model.elbos[k])
    assert abs(values.mean() - full) < 4 * se, (values.mean(), full, se)
    # Twin: without the n / b scaling the mean is far off.
    unscaled = np.asarray(jax.vmap(lambda k: minibatch(k, 16))(keys))
    assert abs(unscaled.mean() - full) > 4 * se


def test_binary_classifier_predicts(binary_problem, binary_fit):
    """End to end on an XOR problem a linear model cannot fit: accuracy, probabilities."""
    _, _, x_test, labels_test = binary_problem
    model = binary_fit
    probs = np.asarray(model.predict_proba(x_test, key=jax.random.key(0)))
    assert probs.shape == (len(labels_test), 2)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert (probs.argmax(axis=1) == labels_test).mean() > 0.85
    np.testing.assert_allclose(float(jnp.exp(model.log_weights).sum()), 1.0, rtol=1e-5)
    assert float(model.log_scale_std) > 0
    assert model.elbo_trace.shape == (100, 13)
    # Converged: the last 20 steps change the best node's ELBO by < 1e-3 nats.
    best = np.asarray(model.elbo_trace)[:, int(np.argmax(np.asarray(model.log_weights)))]
    assert np.ptp(best[-20:]) < 1e-3


def test_softmax_classifier_with_minibatches():
    rng = np.random.default_rng(4)
    centres = np.array([[2.0, 0.0], [-1.0, 1.7], [-1.0, -1.7]])
    labels = rng.integers(0, 3, size=150)
    x = centres[labels] + 0.6 * rng.normal(size=(150, 2))
    model = nngp.fit_variational_classifier(
        jax.random.key(1), nngp.mlp(depth=1), x[:100], labels[:100],
        scale_prior=nngp.gamma(2.0, 1.0), log_scale_grid=np.linspace(-3.0, 7.0, 6),
        num_inducing=20, num_steps=300, batch_size=32, step_size=0.2,
    )  # fmt: skip
    probs = np.asarray(model.predict_proba(x[100:], key=jax.random.key(0)))
    assert probs.shape == (50, 3)
    assert (probs.argmax(axis=1) == labels[100:]).mean() > 0.9
    # Every node converged to a finite ELBO above its first (minibatch) estimate.
    trace = np.asarray(model.elbo_trace)
    assert np.all(np.isfinite(model.elbos))
    assert np.all(np.asarray(model.elbos) > trace[0])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batch_size": 0}, "batch_size"),
        ({"num_steps": 0}, "num_steps"),
        ({"step_size": 1.5}, "step_size"),
        ({"inducing_points": np.zeros((3, 5))}, "inducing_points"),
        ({"labels": np.array([0, 1, 2])}, "labels"),
        ({"scale_prior": nngp.gamma(2.0, 1.0), "log_scale_grid": [1.0, 0.0]}, "increasing"),
        ({"log_scale_grid": [0.0, 1.0]}, "needs a `scale_prior`"),
        ({"num_samples": 0}, "num_samples"),
        ({"jitter": -1.0}, "jitter"),
    ],
)
def test_bad_input_is_named(kwargs, message):
    x = np.random.default_rng(0).normal(size=(10, 2))
    arguments = {"labels": np.arange(10) % 2, **kwargs}
    labels = arguments.pop("labels")
    with pytest.raises(ValueError, match=message):
        nngp.fit_variational_classifier(jax.random.key(0), nngp.mlp(1), x, labels, **arguments)
