"""The NumPyro + ArviZ workflow on probinfer's output: ``az.loo``, ``az.waic`` and
``az.compare`` read the ``log_likelihood`` group and give the numbers NumPyro's own
workflow (``numpyro.infer.util.log_likelihood`` on the same draws, as ``az.from_numpyro``
stores it) gives."""

import warnings

import arviz as az
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from _stats import assert_checks, check_expectation
from arviz.data.io_numpyro import infer_dims
from numpyro.infer.util import log_likelihood

import probinfer as pi
from probinfer.diagnostics import SamplingWarning
from probinfer.zoo import eight_schools_noncentered, linear_regression

RUN = {"chains": 2, "warmup": 200, "draws": 200, "seed": 0, "progress": False}


def no_intercept(x, sigma, y=None):
    """The zoo regression without its intercept: a worse model of the same data."""
    w = numpyro.sample("w", dist.Normal(0.0, 1.0).expand([x.shape[1]]).to_event(1))
    with numpyro.plate("data", x.shape[0]):
        numpyro.sample("y", dist.Normal(jnp.matmul(x, w), sigma), obs=y)


def numpyro_workflow(model, idata, args, kwargs):
    """What a NumPyro user gets: the same posterior draws, NumPyro's pointwise likelihood."""
    posterior = {name: idata.posterior[name].values for name in idata.posterior.data_vars}
    pointwise = log_likelihood(model, posterior, *args, batch_ndims=2, **kwargs)
    return az.from_dict(
        posterior=posterior, log_likelihood={k: np.asarray(v) for k, v in pointwise.items()}
    )


@pytest.fixture(scope="module")
def runs():
    (x, sigma, y), _ = linear_regression.data()
    args, kwargs = eight_schools_noncentered.data()
    models = {
        "regression": (linear_regression.model, (x, sigma, y), {}),
        "no_intercept": (no_intercept, (x, sigma, y), {}),
        "eight_schools": (eight_schools_noncentered.model, args, kwargs),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SamplingWarning)  # 2 x 200 draws: R-hat ~1.01
        idatas = {
            "regression": pi.sample(linear_regression.model, x, sigma, y, **RUN),
            "no_intercept": pi.sample(no_intercept, x, sigma, y, **RUN),
            "eight_schools": pi.sample(eight_schools_noncentered.model, *args, **kwargs, **RUN),
        }
    return models, idatas


def test_plate_names_name_the_dims_as_numpyros_workflow_does(runs):
    """Eight schools (``theta`` and ``y`` in the plate "schools"): every group names the
    plate's axis as ``az.from_numpyro`` would (ArviZ's own ``infer_dims`` on the model),
    and the posterior predictive keeps the names."""
    models, idatas = runs
    model, args, kwargs = models["eight_schools"]
    expected = infer_dims(model, args, kwargs)
    assert expected, "the model has plates"
    idata = pi.predictive(model, idatas["eight_schools"], *args, **kwargs)
    groups = ("posterior", "log_likelihood", "observed_data", "posterior_predictive")
    named = 0
    for group in groups:
        for name, dims in expected.items():
            if name in idata[group].data_vars:
                assert list(idata[group][name].dims[-len(dims) :]) == dims, (group, name)
                named += 1
    assert named >= 4, named  # theta, y in the posterior-side groups
    prior = pi.sample_prior(model, *args, draws=10, **kwargs)
    assert prior.prior_predictive["y"].dims[-1] == "schools"


def test_array_arguments_that_are_not_observed_are_constant_data(runs):
    """The regression ``model(x, sigma, y)``: ``x`` and ``sigma`` are constant data, ``y``
    (observed) is not; eight schools ``model(sigma, y=y)`` likewise gives ``sigma``."""
    models, idatas = runs
    _, (x, _sigma, _y), _ = models["regression"]
    constant = idatas["regression"].constant_data
    assert set(constant.data_vars) == {"x", "sigma"}
    np.testing.assert_allclose(constant["x"].values, np.asarray(x), rtol=1e-6)  # float32
    assert set(idatas["eight_schools"].constant_data.data_vars) == {"sigma"}
    assert "y" in idatas["eight_schools"].observed_data


@pytest.mark.filterwarnings("ignore::UserWarning")  # ArviZ: Pareto k warnings at 400 draws
@pytest.mark.parametrize("name", ["regression", "eight_schools"])
def test_loo_and_waic_match_numpyros_workflow(runs, name):
    models, idatas = runs
    model, args, kwargs = models[name]
    ours, theirs = idatas[name], numpyro_workflow(model, idatas[name], args, kwargs)
    assert set(ours.log_likelihood.data_vars) == set(theirs.log_likelihood.data_vars)
    for site in ours.log_likelihood.data_vars:
        np.testing.assert_allclose(
            ours.log_likelihood[site].values,
            theirs.log_likelihood[site].values,
            rtol=1e-5,
            atol=1e-5,
        )
    for criterion in (az.loo, az.waic):
        ours_value, theirs_value = criterion(ours), criterion(theirs)
        np.testing.assert_allclose(ours_value.iloc[0], theirs_value.iloc[0], rtol=1e-5)
    observed = ours.observed_data
    np.testing.assert_array_equal(
        observed["y"].values, np.asarray(args[2] if name == "regression" else observed["y"].values)
    )


# The intercept-free variant is misspecified on purpose, so some observations are
# influential and ArviZ's PSIS-LOO may flag a Pareto shape above 0.7 (draw-dependent).
@pytest.mark.filterwarnings("ignore:Estimated shape parameter of Pareto:UserWarning")
def test_compare_ranks_the_regression_above_its_intercept_free_variant(runs):
    models, idatas = runs
    ours = az.compare({"full": idatas["regression"], "no intercept": idatas["no_intercept"]})
    theirs = az.compare(
        {
            name: numpyro_workflow(*models[key][:1], idatas[key], *models[key][1:])
            for name, key in (("full", "regression"), ("no intercept", "no_intercept"))
        }
    )
    assert list(ours.index) == ["full", "no intercept"] == list(theirs.index)
    np.testing.assert_allclose(ours["elpd_loo"].values, theirs["elpd_loo"].values, rtol=1e-5)


@pytest.mark.filterwarnings("ignore::probinfer.diagnostics.SamplingWarning")  # 2 x 50-200 draws
def test_log_likelihood_can_be_left_out_and_log_densities_have_none():
    (x, sigma, y), _ = linear_regression.data()
    idata = pi.sample(linear_regression.model, x, sigma, y, log_likelihood=False, **RUN)
    assert "log_likelihood" not in idata.groups()
    target = pi.LogDensity(lambda z: -0.5 * jnp.sum(z**2), jnp.zeros(2))
    idata = pi.sample(target, **{**RUN, "warmup": 50, "draws": 50})
    assert "log_likelihood" not in idata.groups() and "observed_data" not in idata.groups()


def test_posterior_predictive_matches_the_exact_regression_predictive(runs):
    """Posterior predictive draws of the zoo regression against the conjugate closed form:
    y_rep_i ~ N(x_i m, sigma^2 + x_i S x_i^T) with (m, S) the exact posterior; the mean and
    variance of four points' draws within 4 MCSE (ESS from the draws). False failures:
    0 of 30 (10 sampling seeds x 3 predictive seeds)."""
    (x, sigma, y), _ = linear_regression.data()
    idata = pi.predictive(linear_regression.model, runs[1]["regression"], x, sigma, y, seed=1)
    y_rep = idata.posterior_predictive["y"].values  # (chain, draw, 100)
    assert y_rep.shape == (2, 200, y.size)
    design = np.concatenate([x, np.ones((x.shape[0], 1))], axis=1)
    precision = np.eye(design.shape[1]) + design.T @ design / sigma**2
    cov = np.linalg.inv(precision)
    mean = cov @ design.T @ y / sigma**2
    checks = []
    for i in (0, 17, 42, 99):
        exact_mean = design[i] @ mean
        exact_var = sigma**2 + design[i] @ cov @ design[i]
        checks.append(check_expectation(y_rep[..., i], exact_mean, name=f"mean[{i}]", min_ess=300))
        checks.append(
            check_expectation(
                (y_rep[..., i] - exact_mean) ** 2, exact_var, name=f"var[{i}]", min_ess=300
            )
        )
    assert_checks(checks)
    # Can fail: predictive draws without the noise term miss the variance.
    assert not check_expectation(
        (y_rep[..., 0] - design[0] @ mean) ** 2, design[0] @ cov @ design[0], name="no noise"
    ).ok
    np.testing.assert_allclose(idata.observed_data["y"].values, y, rtol=1e-6)
    assert "posterior" in idata.groups() and "posterior" in runs[1]["regression"].groups()
    assert "posterior_predictive" not in runs[1]["regression"].groups()  # a copy


def test_ppc_plot_and_unobserved_predictions(runs):
    import matplotlib

    matplotlib.use("Agg")
    (x, sigma, y), _ = linear_regression.data()
    idata = pi.predictive(linear_regression.model, runs[1]["regression"], x, sigma, y)
    az.plot_ppc(idata, num_pp_samples=20)
    # NumPyro's semantics with y=None: the site is sampled as the model samples it.
    forecast = pi.predictive(linear_regression.model, runs[1]["regression"], x[:5], sigma)
    assert forecast.posterior_predictive["y"].shape == (2, 200, 5)


def test_prior_and_prior_predictive_draws():
    """mu ~ N(0, 1), y | mu ~ N(mu, 1): prior mean 0 and variance 1 for mu, variance 2 for
    each y (exact draws, so iid MCSE); observed values go to observed_data."""

    def model(y):
        mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
        with numpyro.plate("data", y.shape[0]):
            numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)

    observed = jnp.array([0.3, -0.1, 0.8])
    prior = pi.sample_prior(model, observed, draws=4000, seed=3)
    mu, y_rep = prior.prior["mu"].values, prior.prior_predictive["y"].values
    assert mu.shape == (1, 4000) and y_rep.shape == (1, 4000, 3)
    checks = [
        check_expectation(mu, 0.0, name="mu mean", iid=True),
        check_expectation(mu**2, 1.0, name="mu var", iid=True),
        check_expectation(y_rep[..., 1] ** 2, 2.0, name="y var", iid=True),
    ]
    assert_checks(checks)
    assert not check_expectation(y_rep[..., 1] ** 2, 1.0, name="no prior spread", iid=True).ok
    np.testing.assert_allclose(prior.observed_data["y"].values, observed)


def test_predictions_that_overflow_are_reported_not_returned_silently():
    """``y ~ Normal(mu, max / 3.4)`` (1e38 in float32) overflows the computing dtype whenever
    the standard normal exceeds about 3.4 in size (p = 6.7e-4 per value, so among 4 x 500
    draws of 3 values a few): ``pi.predictive`` and ``pi.sample_prior`` warn with the site,
    the count, the dtype and the first draw; the same model with scale 1 gives no warning."""

    def model(y, scale):
        mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
        with numpyro.plate("data", y.shape[0]):
            numpyro.sample("y", dist.Normal(mu, scale), obs=y)

    y = jnp.array([0.3, -0.1, 0.8])
    posterior = az.from_dict(posterior={"mu": np.zeros((4, 500), np.float32)})
    dtype = np.dtype(jnp.result_type(float))  # float64 under jax_enable_x64
    scale = float(np.finfo(dtype).max) / 3.4
    reported = r"`posterior_predictive` has NaN or infinite values: [1-9]\d* of 6000 in 'y' "
    with pytest.warns(SamplingWarning, match=reported + rf"\({dtype.name}; first at chain \d"):
        overflowed = pi.predictive(model, posterior, y, scale, seed=1)
    bad = ~np.isfinite(overflowed.posterior_predictive["y"].values).all(axis=-1)
    assert 0 < bad.sum() < 20
    with pytest.warns(SamplingWarning, match=r"`prior_predictive` has NaN or infinite values"):
        pi.sample_prior(model, y, scale, draws=4000, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SamplingWarning)
        pi.predictive(model, posterior, y, 1.0, seed=1)
        pi.sample_prior(model, y, 1.0, draws=4000, seed=1)


def test_smc_and_nested_sampling_draws_carry_the_log_likelihood():
    """One result protocol: the population methods' idata has the groups MCMC's has, so
    ``az.loo`` runs on them too."""
    y = np.array([0.3, -1.2, 0.8])

    def model(y):
        mu = numpyro.sample("mu", dist.Normal(0.0, 2.0))
        with numpyro.plate("points", y.size):
            numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)

    for method, settings in (
        ("smc", {"particles": 200, "replicas": 2}),
        ("ns", {"live_points": 100}),
    ):
        idata = pi.sample(model, y, method=method, progress=False, **settings)
        assert idata.log_likelihood["y"].shape[-1] == y.size
        np.testing.assert_allclose(idata.observed_data["y"].values, y, rtol=1e-6)
