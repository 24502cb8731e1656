"""PFNs: the bar distribution, the dataset priors, the network's invariances, training.

The headline comparison against the exact GP predictive lives in ``benchmarks/pfn.py``
(it needs a trained model); here every piece is checked on its own, and a tiny training
run proves the pipeline end to end, including an interrupted and resumed run.
"""

import json
import shutil
import warnings
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _randomise import randomise_weights
from _stats import check_expectation
from scipy import integrate, stats

import probinfer
from probinfer import amortize, nngp
from probinfer.amortize._training import TAIL_KEY
from probinfer.checkpoint import CHECKSUM_MARK

BORDERS = np.array([-2.0, -1.0, -0.3, 0.0, 0.4, 1.0, 2.5])


@pytest.fixture(scope="module")
def bar():
    return amortize.BarDistribution(BORDERS, TAILS[1])


def _logits(seed=0):
    return jax.random.normal(jax.random.key(seed), (len(BORDERS) - 1,)) * 1.5


def _integrate(fn, lower=-1e4, upper=1e4):
    # Breakpoints at the borders and along the tails keep quad from missing mass.
    far = [12.0 * 5**k for k in range(5)]  # out to 7,500: the heavy tails' reach
    candidates = {*BORDERS.tolist(), -6.0, 6.0, *far, *(-x for x in far)}
    points = sorted(b for b in candidates if lower < b < upper)
    pieces = [lower, *points, upper]
    return sum(
        integrate.quad(fn, a, b, epsabs=1e-12, epsrel=1e-10, limit=200)[0]
        for a, b in zip(pieces[:-1], pieces[1:], strict=True)
    )


# The default exponential tails, and heavier generalised Pareto ones (shapes below 1/4, so
# that the second moment's mass beyond the integration range is below 1e-9).
TAILS = [None, (amortize.Tail(0.2, 0.6), amortize.Tail(0.15, 0.3))]


@pytest.mark.parametrize("seed, tails", [(0, TAILS[0]), (1, TAILS[0]), (0, TAILS[1])])
def test_bar_density_normalises_and_matches_cdf_and_moments(seed, tails):
    with jax.enable_x64(True):
        bar = amortize.BarDistribution(BORDERS, tails)  # float64 borders
        logits = jnp.asarray(_logits(seed), jnp.float64)

        jitted = jax.jit(lambda y: jnp.exp(bar.log_prob(logits, y)))

        def density(y):
            return float(jitted(y))

        assert abs(_integrate(density) - 1.0) < 1e-8
        mean = _integrate(lambda y: y * density(y))
        second = _integrate(lambda y: y**2 * density(y))
        np.testing.assert_allclose(bar.mean(logits), mean, atol=1e-7)
        np.testing.assert_allclose(bar.variance(logits), second - mean**2, atol=1e-7)
        for y in (-5.0, -1.5, -0.1, 0.2, 3.0, 7.0, 300.0):
            np.testing.assert_allclose(bar.cdf(logits, y), _integrate(density, upper=y), atol=1e-8)
        for q in (0.001, 0.1, 0.5, 0.93, 0.999):
            np.testing.assert_allclose(bar.cdf(logits, bar.quantile(logits, q)), q, atol=1e-9)
        # The tails carry exactly the outer buckets' mass and reach beyond the borders.
        p = jax.nn.softmax(logits)
        np.testing.assert_allclose(bar.cdf(logits, BORDERS[1]), p[0], atol=1e-12)
        np.testing.assert_allclose(1 - bar.cdf(logits, BORDERS[-2]), p[-1], atol=1e-12)
        assert bar.log_prob(logits, -10.0) > -np.inf and bar.log_prob(logits, 10.0) > -np.inf
        # Each bucket's own mass over intervals: uniform inside, the tail's density outside.
        ends = np.array([-np.inf, -7.0, -1.0, 0.1, 2.0, 9.0, np.inf])
        shares = bar.bucket_shares(ends[:-1], ends[1:])
        np.testing.assert_allclose(shares.sum(axis=0), 1.0, atol=1e-12)
        one_hot = jnp.where(jnp.arange(len(BORDERS) - 1) == 0, 0.0, -jnp.inf)
        np.testing.assert_allclose(shares[0, 0], bar.cdf(one_hot, -7.0), rtol=1e-10)


def test_bar_variance_is_infinite_with_a_heavy_tail():
    heavy = amortize.BarDistribution(BORDERS, (amortize.Tail(0.0, 1.0), amortize.Tail(0.6, 1.0)))
    assert np.isinf(heavy.variance(_logits())) and np.isfinite(heavy.mean(_logits()))
    for bad in (-0.1, 1.0), (0.0, 0.0), (0.0, np.inf):
        with pytest.raises(ValueError, match="shape in"):
            amortize.BarDistribution(BORDERS, (amortize.Tail(*bad),) * 2)


def test_fit_tail_is_the_maximum_likelihood_and_recovers_the_shape():
    from scipy import stats

    rng = np.random.default_rng(0)
    for shape, scale in ((0.0, 2.0), (0.3, 0.5), (0.7, 3.0)):
        excess = stats.genpareto.rvs(shape, scale=scale, size=4_000, random_state=rng)
        fitted = amortize.fit_tail(excess)
        # The shape's standard error is about (1 + shape) / sqrt(n): within 4 of them.
        assert abs(fitted.shape - shape) < 4 * (1 + shape) / np.sqrt(excess.size), fitted
        assert abs(np.log(fitted.scale / scale)) < 0.15, fitted
        # Its likelihood is at least SciPy's maximum (where that keeps the shape >= 0).
        c, _, s = stats.genpareto.fit(excess, floc=0)
        ours = stats.genpareto.logpdf(excess, fitted.shape, scale=fitted.scale).sum()
        if c >= 0:
            assert ours >= stats.genpareto.logpdf(excess, c, scale=s).sum() - 1e-6
    with pytest.raises(ValueError, match="at least 100 finite positive"):
        amortize.fit_tail(np.ones(50))
    # Heavier than a tail may be (shape 3): the shape stops at its bound, with a warning,
    # and the scale still fits the bulk. The capped tail moves mass from the far end into
    # the bulk, so its median is 19-22% above the data's (seeds 0-2); a scale searched
    # around the mean excess (which such data blow up) ends at its bound, off by orders.
    excess = stats.genpareto.rvs(3.0, scale=1.0, size=2_000, random_state=rng)
    with pytest.warns(UserWarning, match="ended at a bound"):
        capped = amortize.fit_tail(excess)
    median = capped.excess_quantile(0.5)
    assert capped.shape == 0.95 and 1.0 < float(median) / np.median(excess) < 1.5, capped


def test_fitted_tails_follow_the_samples_beyond_the_borders():
    """Student-t samples (3 degrees of freedom): tails fitted to one half beat the default
    on the other, and come out heavy (a t tail's shape is 1 / 3 far out)."""
    samples = np.random.default_rng(1).standard_t(3, size=400_000)
    fit, held_out = samples[::2], samples[1::2]
    default = amortize.BarDistribution.from_samples(fit, 50)
    fitted = default.with_fitted_tails(fit)
    np.testing.assert_array_equal(fitted.borders, default.borders)
    assert all(0.15 < tail.shape < 0.5 for tail in fitted.tails), fitted.tails
    logits = jnp.zeros((held_out.size, 50))  # the equal prior mass of every bucket
    gain = np.asarray(fitted.log_prob(logits, held_out) - default.log_prob(logits, held_out))
    beyond = (held_out < float(default.borders[1])) | (held_out > float(default.borders[-2]))
    assert np.all(gain[~beyond] == 0)
    # Per sample beyond the borders, with its standard error (z > 4).
    assert gain[beyond].mean() > 4 * gain[beyond].std() / np.sqrt(beyond.sum()), gain[beyond]
    with pytest.warns(UserWarning, match="only 0 samples lie beyond the left"):
        default.with_fitted_tails(np.abs(fit))


def test_bar_samples_match_mean(bar):
    logits = _logits(2)
    draws = np.asarray(bar.sample(jax.random.key(0), logits, 20_000), np.float64)
    check = check_expectation(draws[None], float(bar.mean(logits)), name="mean", iid=True)
    assert check.ok, check
    assert not check_expectation(draws[None], float(bar.mean(logits)) + 0.1, name="x", iid=True).ok


def test_bar_from_samples_has_equal_mass_buckets():
    samples = np.random.default_rng(0).normal(size=10_000)
    bar = amortize.BarDistribution.from_samples(samples, 10)
    counts = np.histogram(samples, bins=np.asarray(bar.borders))[0]
    assert np.all(np.abs(counts - 1000) <= 1)
    with pytest.raises(ValueError, match="strictly increasing"):
        amortize.BarDistribution([0.0, 1.0, 1.0, 2.0])


def test_fit_tails_sees_the_targets_as_the_model_does():
    """A scale-free model's tails are fitted to standardised targets, so a prior with 100
    times the output scale gives the same tails; a model in the prior's units sees the
    larger targets, and its tails scale with them."""
    small, large = (amortize.GPPrior(nngp.rbf(0.3, v), 0.01 * v, num_features=2)
                    for v in (1.0, 1e4))  # fmt: skip
    narrow = amortize.BarDistribution(np.linspace(-2, 2, 17))  # a few % of targets beyond
    for model in (_random_model(scale_free=True), _random_model()):
        model = eqx.tree_at(lambda m: m.bar, model, narrow)
        fit = [amortize.fit_tails(model, prior, key=jax.random.key(3), max_datasets=1024)
               for prior in (small, large)]  # fmt: skip
        assert all(m.bar.tails != narrow.tails for m in fit)  # fitted, not the default
        for tail, scaled in zip(fit[0].bar.tails, fit[1].bar.tails, strict=True):
            if model.scale_free:  # the same draws, standardised (float32 rounding apart)
                assert abs(tail.shape - scaled.shape) < 1e-3, (tail, scaled)
                assert abs(tail.scale / scaled.scale - 1) < 1e-3, (tail, scaled)
            else:
                assert scaled.scale > 10 * tail.scale, (tail, scaled)


def test_priors_draw_shapes_and_gp_covariance():
    kernel = nngp.rbf(0.4, 1.5)
    prior = amortize.GPPrior(kernel, 0.05, num_features=3)
    x, y = prior.sample(jax.random.key(0), 7, num_active=2)
    assert x.shape == (7, 3) and y.shape == (7,)
    assert np.all(np.asarray(x[:, 2]) == 0) and np.all(np.abs(np.asarray(x)) <= 1)
    # Covariance of y at fixed inputs over many draws: K + noise (z = 4 MCSE per entry).
    x_fixed = x
    keys = jax.random.split(jax.random.key(1), 20_000)
    # Compiled: op by op, a vmap over 20,000 draws dispatches each operation on its own.
    sample = jax.jit(jax.vmap(lambda k: prior.sample_targets(k, x_fixed)))
    ys = np.asarray(sample(keys), np.float64)
    cov = np.asarray(kernel(x_fixed), np.float64) + 0.05 * np.eye(7)
    for i, j in [(0, 0), (0, 1), (2, 5), (6, 6)]:
        check = check_expectation((ys[:, i] * ys[:, j])[None], cov[i, j], name=f"{i}{j}", iid=True)
        assert check.ok, check
    # The exact predictive the benchmarks use describes these draws: `exact_process()`'s
    # marginal likelihood (float64) is the normal density with the draws' covariance,
    # K + noise plus the 1e-6 jitter both add.
    with jax.enable_x64(True):
        x64 = np.asarray(x_fixed, np.float64)
        log_marginal = float(prior.exact_process().log_marginal_likelihood(x64, ys[0]))
        jittered = np.asarray(kernel(x64), np.float64) + (float(prior.noise) + 1e-6) * np.eye(7)
    expected = stats.multivariate_normal(np.zeros(7), jittered).logpdf(ys[0])
    np.testing.assert_allclose(log_marginal, expected, rtol=1e-9)
    for prior in (
        amortize.GPHyperPrior("matern52", num_features=2),
        amortize.BayesianLinearRegressionPrior(num_features=2),
        amortize.BNNPrior(num_features=2),
        amortize.ScaleMixturePrior(
            nngp.ScaleMixtureProcess(nngp.mlp(1), nngp.inverse_gamma(2.0, 2.0), 0.05),
            num_features=2,
        ),
    ):
        xb, yb = eqx.filter_jit(amortize.sample_batch)(jax.random.key(3), prior, 4, 9)
        assert xb.shape == (4, 9, 2) and yb.shape == (4, 9)
        assert np.all(np.isfinite(np.asarray(yb)))


def test_mixed_kernel_prior_draws_each_family_half_the_time():
    """`GPHyperPrior("mixed")` with its hyperparameters all but fixed: each dataset comes
    from the RBF or the Matérn-5/2 GP. On 30 points the likelihood ratio of the two tells
    them apart (the one-family priors are classified right in > 99% of 2,000 datasets), and
    the mixed prior's share of RBF datasets is 1/2 within 5 binomial standard errors."""
    fixed = {"log_lengthscale": (np.log(0.3), 1e-4), "log_variance": (0.0, 1e-4),
             "log_noise": (np.log(1e-3), 1e-4)}  # fmt: skip
    x = np.linspace(-1, 1, 30)[:, None]
    with jax.enable_x64(True):
        covariances = {
            family: np.asarray(amortize.GPHyperPrior(family).kernel(0.3, 1.0)(x))
            + (1e-3 + 1e-6) * np.eye(30)
            for family in ("rbf", "matern52")
        }

    def rbf_share(family):
        prior = amortize.GPHyperPrior(family, **fixed)
        keys = jax.random.split(jax.random.key(7), 2000)
        y = np.asarray(jax.vmap(lambda k: prior.sample_targets(k, jnp.asarray(x)))(keys), float)
        log_ratio = stats.multivariate_normal(np.zeros(30), covariances["rbf"]).logpdf(
            y
        ) - stats.multivariate_normal(np.zeros(30), covariances["matern52"]).logpdf(y)
        return float(np.mean(log_ratio > 0))

    assert rbf_share("rbf") > 0.99 and rbf_share("matern52") < 0.01
    share = rbf_share("mixed")
    assert abs(share - 0.5) < 5 * np.sqrt(0.25 / 2000), share
    assert amortize.prior_from_spec({"type": "gp_hyper", "kernel": "mixed"}).kernel_family == (
        "mixed"
    )
    with pytest.raises(ValueError, match="needs `family`"):
        amortize.GPHyperPrior("mixed").kernel(0.3, 1.0)


def _random_model(num_features=2, max_train=12, scale_free=False):
    bar = amortize.BarDistribution(np.linspace(-3, 3, 17))
    model = amortize.PFN(
        bar, num_features=num_features, max_train=max_train, width=32, num_layers=2,
        num_heads=2, mlp_width=32, key=jax.random.key(0), scale_free=scale_free,
        min_train=2 if scale_free else 1,
    )  # fmt: skip
    return randomise_weights(model)


def test_predictions_ignore_other_test_points_and_train_order():
    model = _random_model()
    rng = np.random.default_rng(0)
    x_train, y_train = rng.uniform(-1, 1, (8, 2)), rng.normal(size=8)
    x_test = rng.uniform(-1, 1, (4, 2))
    base = model(jnp.asarray(x_train), jnp.asarray(y_train), jnp.asarray(x_test))
    changed = x_test.copy()
    changed[3] = [0.9, -0.9]
    other = model(jnp.asarray(x_train), jnp.asarray(y_train), jnp.asarray(changed))
    np.testing.assert_allclose(other[:3], base[:3], rtol=1e-5, atol=1e-5)
    assert np.max(np.abs(np.asarray(other[3] - base[3]))) > 1e-3  # the changed point moves
    order = rng.permutation(8)
    permuted = model(jnp.asarray(x_train[order]), jnp.asarray(y_train[order]), jnp.asarray(x_test))
    np.testing.assert_allclose(permuted, base, rtol=1e-4, atol=1e-4)
    shifted_y = model(jnp.asarray(x_train), jnp.asarray(y_train + 1.0), jnp.asarray(x_test))
    assert np.max(np.abs(np.asarray(shifted_y - base))) > 1e-3  # the train targets matter


def test_scale_free_prediction_is_equivariant_to_the_data_units():
    """A scale-free model's predictive moves with a shift and rescaling of each input feature
    and of the targets exactly (float32 rounding of the standardised values), also for
    targets near 1e8, whose digits a float32 map back would lose; a model that is not
    scale-free does not."""
    model = _random_model(scale_free=True)
    rng = np.random.default_rng(3)
    corners = np.array([[-1.0, -1.0], [1.0, 1.0]])  # the train range is [-1, 1] each way
    x_train = np.concatenate([corners, rng.uniform(-1, 1, (5, 2))])
    y_train = rng.normal(size=7)
    x_test, y_test = rng.uniform(-0.8, 0.8, (3, 2)), rng.normal(size=3)
    base = amortize.predict(model, x_train, y_train, x_test)
    x_shift, x_scale = np.array([5.0, -300.0]), np.array([0.01, 40.0])
    for y_shift, y_scale in [(0.0, 0.01), (0.0, 100.0), (-7.0, 3.0), (1e8, 1.0)]:
        moved = amortize.predict(
            model, x_train * x_scale + x_shift, y_train * y_scale + y_shift,
            x_test * x_scale + x_shift,
        )  # fmt: skip

        def assert_moved(moved_values, base_values, shift=y_shift, scale=y_scale):
            # Compared in the standardised units: a shift of 1e8 would swamp any rtol.
            assert isinstance(moved_values, np.ndarray) and moved_values.dtype == np.float64
            np.testing.assert_allclose((moved_values - shift) / scale, base_values,
                                       rtol=1e-4, atol=1e-4)  # fmt: skip

        assert_moved(moved.mean, base.mean)
        assert_moved(moved.stddev, base.stddev, shift=0.0)
        assert_moved(moved.quantile(0.9), base.quantile(0.9))
        assert_moved(moved.sample(jax.random.key(0), 5), base.sample(jax.random.key(0), 5))
        log_density = moved.log_prob(y_test * y_scale + y_shift)
        cdf = moved.cdf(y_test * y_scale + y_shift)
        assert log_density.dtype == cdf.dtype == np.float64
        np.testing.assert_allclose(log_density, base.log_prob(y_test) - np.log(y_scale), atol=2e-4)
        np.testing.assert_allclose(cdf, base.cdf(y_test), atol=1e-5)
    # The same weights without the map move with the units: the map does the work.
    raw = _random_model()  # the same weights
    raw_base = raw(jnp.asarray(x_train), jnp.asarray(y_train), jnp.asarray(x_test))
    raw_moved = raw(jnp.asarray(x_train), jnp.asarray(y_train * 100), jnp.asarray(x_test))
    assert np.max(np.abs(np.asarray(raw_moved - raw_base))) > 1e-2


def test_standardisation_uses_the_train_rows_only():
    """The map sends the train inputs' range onto [-1, 1] and the train targets to mean 0
    and sd 1 (1/n), leaves zero-padded features at 0, and ignores the test rows: a scale-free
    model's test predictions do not move when the test targets do."""
    rng = np.random.default_rng(6)
    x = np.concatenate([rng.uniform(3, 9, (9, 1)), np.zeros((9, 1))], axis=1)
    y = rng.normal(size=9) * 4 + 2
    scaling = amortize.standardisation(jnp.asarray(x), jnp.asarray(y), 6)
    mapped, targets = np.asarray(scaling.inputs(jnp.asarray(x))), np.asarray(scaling.targets(y))
    np.testing.assert_allclose([mapped[:6, 0].min(), mapped[:6, 0].max()], [-1, 1], atol=1e-6)
    np.testing.assert_array_equal(mapped[:, 1], 0.0)
    np.testing.assert_allclose([targets[:6].mean(), targets[:6].std()], [0, 1], atol=1e-5)
    model = _random_model(scale_free=True)
    logits = model.logits(jnp.asarray(x), jnp.asarray(y), 6)
    changed = y.copy()
    changed[6:] = [100.0, -50.0, 7.0]
    other = model.logits(jnp.asarray(x), jnp.asarray(changed), 6)
    np.testing.assert_allclose(other[6:], logits[6:], atol=1e-6)
    assert np.max(np.abs(np.asarray(other[:6] - logits[:6]))) == 0  # train rows too
    changed[0] += 1.0  # a train target moves the map, and so the predictions
    moved = model.logits(jnp.asarray(x), jnp.asarray(changed), 6)
    assert np.max(np.abs(np.asarray(moved[6:] - logits[6:]))) > 1e-3


def test_scale_free_model_log_prob_is_the_predictive_density():
    """`PFN.log_prob` (the training loss) equals the checked predictive's density in the
    data's units, Jacobian included."""
    model = _random_model(scale_free=True)
    rng = np.random.default_rng(4)
    x, y = rng.uniform(-1, 1, (9, 2)) * 7.0, rng.normal(size=9) * 50.0
    x[:2] = [[-7.0, -7.0], [7.0, 7.0]]  # the test inputs lie within the train range
    training_form = model.log_prob(jnp.asarray(x), jnp.asarray(y), 6)[6:]
    predictive = amortize.predict(model, x[:6], y[:6], x[6:])
    np.testing.assert_allclose(training_form, predictive.log_prob(y[6:]), atol=1e-4)
    with pytest.raises(ValueError, match="min_train >= 2"):
        amortize.TrainingConfig(scale_free=True)
    with pytest.raises(ValueError, match="constant"):
        amortize.predict(model, x[:6], np.full(6, 2.0), x[6:])
    with pytest.raises(ValueError, match="at least 5.*too uncertain"):
        amortize.predict(model, x[:4], y[:4], x[6:])
    with pytest.warns(UserWarning, match="up to 3 half-ranges.*feature 1"):
        far = np.array([[0.0, 0.0]])
        # Feature 1: centre 11, half-range 1.
        train = np.array([[-1.0, 10.0], [1.0, 12.0], [0.0, 11.0], [0.5, 10.5], [-0.5, 11.5]])
        amortize.predict(model, train, np.array([0.0, 1.0, 0.3, -0.2, 0.5]),
                         far + np.array([[0.0, 14.0]]))  # fmt: skip


def test_predictive_is_compiled_once_and_converts_to_idata_and_plots(count_compilations):
    """`predict` and the predictive's methods run as compiled programs: new data of the
    same shapes and other quantile levels compile nothing; draws become InferenceData."""
    import matplotlib

    matplotlib.use("Agg")
    model = _random_model()
    rng = np.random.default_rng(5)
    x_test = np.linspace(-0.9, 0.9, 4)[:, None]

    def use(seed):
        data = np.random.default_rng(seed)
        x_train, y_train = data.uniform(-1, 1, (6, 1)), data.normal(size=6)
        predictive = amortize.predict(model, x_train, y_train, x_test)
        values = [predictive.log_prob(data.normal(size=4)), predictive.mean, predictive.stddev,
                  predictive.quantile(0.1 + 0.1 * seed), predictive.log_prob(0.1 * seed),
                  predictive.cdf(0.2 * seed),
                  predictive.sample(jax.random.key(seed), 7)]  # fmt: skip
        return predictive, values

    use(0)
    before = len(count_compilations)
    predictive, values = use(1)
    assert len(count_compilations) == before, count_compilations[before:]
    assert all(np.all(np.isfinite(np.asarray(v))) for v in values)
    idata = predictive.to_idata(jax.random.key(0), 300)
    draws = idata.posterior_predictive["y"]
    assert draws.shape == (1, 300, 4) and draws.dims == ("chain", "draw", "test_point")
    ax = predictive.plot(x_test, rng.uniform(-1, 1, 6), rng.normal(size=6))
    assert len(ax.collections) == 3  # two bands and the train points
    with pytest.raises(ValueError, match="1-d inputs"):
        predictive.plot(np.zeros((4, 2)))


def test_with_num_features_keeps_the_predictions():
    model = _random_model(num_features=2)
    rng = np.random.default_rng(0)
    x, y = rng.uniform(-1, 1, (9, 2)), rng.normal(size=9)
    wider = model.with_num_features(4)
    assert wider.num_features == 4 and model.num_features == 2
    # The structure (static fields included) of a model built with 4 features.
    assert jax.tree.structure(wider) == jax.tree.structure(_random_model(num_features=4))
    padded = np.concatenate([x, np.zeros((9, 2))], axis=1)
    logits = eqx.filter_jit(lambda m, inputs: m.logits(inputs, jnp.asarray(y), 6))
    before = logits(model, jnp.asarray(x))
    np.testing.assert_allclose(logits(wider, jnp.asarray(padded)), before, rtol=1e-5, atol=1e-5)
    # The new features start ignored, with weights that training can move (a gradient).
    moved = padded.copy()
    moved[:, 2:] = rng.uniform(-1, 1, (9, 2))
    np.testing.assert_allclose(logits(wider, jnp.asarray(moved)), before, rtol=1e-5, atol=1e-5)
    gradient = eqx.filter_jit(
        eqx.filter_grad(lambda m: m.log_prob(jnp.asarray(moved), jnp.asarray(y), 6).sum())
    )(wider)
    assert np.all(np.abs(np.asarray(gradient.x_encoder.weight[:, 2:])).max(axis=0) > 0)
    assert model.with_num_features(2) is model
    with pytest.raises(ValueError, match="gain input features, not lose"):
        model.with_num_features(1)


def test_rebinned_keeps_the_predictive():
    # Uneven widths, so that a wrong width term cannot hide in the softmax normalisation.
    uneven = 3 * np.sign(np.linspace(-1, 1, 17)) * np.linspace(-1, 1, 17) ** 2
    model = eqx.tree_at(lambda m: m.bar, _random_model(), amortize.BarDistribution(uneven))
    x_train, y_train = np.linspace(-1, 1, 6).reshape(3, 2), np.array([0.3, -0.5, 1.2])
    x_test = np.array([[0.1, 0.2], [-0.4, 0.6]])
    borders = np.asarray(model.bar.borders)
    grid = np.linspace(borders[1] + 1e-3, borders[-2] - 1e-3, 501)

    def densities(m):
        logits = m(jnp.asarray(x_train), jnp.asarray(y_train), jnp.asarray(x_test))
        return np.asarray(m.bar.log_prob(logits[:, None, :], grid[None, :]))

    # A refinement (every old bucket split 1:3): the same density wherever both are uniform.
    quarters = np.sort(np.concatenate([borders, 0.75 * borders[:-1] + 0.25 * borders[1:]]))
    refined = model.rebinned(amortize.BarDistribution(quarters))
    assert refined.bar.num_buckets == 32 and refined.decoder_out.weight.shape[0] == 32
    np.testing.assert_allclose(densities(refined), densities(model), atol=1e-5)
    # Its twin without the shift by each new bucket's share is off by up to log 2.
    unshifted = eqx.tree_at(
        lambda m: m.decoder_out.bias, refined, model.decoder_out.bias[np.arange(32) // 2]
    )
    assert np.max(np.abs(densities(unshifted) - densities(model))) > 0.5
    # Borders that straddle the old ones: every new bucket within the old inner buckets
    # gets the density of the old bucket holding most of it, over its whole width (exactly
    # its share of the mass when it lies inside that bucket), up to the normalisation.
    new_borders = np.linspace(-3.1, 2.9, 41)
    shifted = model.rebinned(amortize.BarDistribution(new_borders))
    args = (jnp.asarray(x_train), jnp.asarray(y_train), jnp.asarray(x_test))
    ends = np.concatenate([[-np.inf], new_borders[1:-1], [np.inf]])
    shares = model.bar.bucket_shares(ends[:-1], ends[1:])
    source = np.argmax(shares, axis=1)
    old_mass = np.asarray(jax.nn.softmax(np.asarray(model(*args), np.float64), axis=-1))
    old_density = old_mass / np.diff(borders)
    expected = old_density[:, source] * np.diff(ends)[None, :]
    new_mass = np.asarray(jax.nn.softmax(shifted(*args), axis=-1))
    within = (ends[:-1] >= borders[1]) & (ends[1:] <= borders[-2])
    straddles = np.any(
        (borders[None, 1:-1] > ends[:-1, None]) & (borders[None, 1:-1] < ends[1:, None]), axis=1
    )
    assert (within & straddles).sum() >= 5 and (within & ~straddles).sum() >= 5
    for row in range(2):
        checked = within & (expected[row] > 1e-6)
        assert checked.sum() >= 20
        log_ratio = np.log(new_mass[row, checked]) - np.log(expected[row, checked])
        assert np.std(log_ratio) < 1e-4
    # Each old bucket's own mass is fully shared out, far tails included (float64).
    np.testing.assert_allclose(shares.sum(axis=0), 1.0, atol=1e-12)
    far = model.bar.bucket_shares(np.array([uneven[-2] + 60.0]), np.array([np.inf]))
    assert 0 < far[0, -1] < 1e-20  # about exp(-60 / scale), lost in float32


TINY = dict(batch_size=16, max_train=10, num_test=6, num_buckets=32, width=32, num_layers=2,
            num_heads=2, mlp_width=64, warmup_steps=20, learning_rate=3e-3)  # fmt: skip


def test_predict_splits_each_model_once_and_forgets_it():
    """The network's arrays are split once per model object (weakly kept): another model
    of the same structure gives its own answer, and a model's entry goes with it."""
    import gc

    from probinfer.amortize import _predict

    first = _random_model()
    second = eqx.tree_at(lambda m: m.decoder_out.bias, first, first.decoder_out.bias + 1.0)
    x, y = np.linspace(-1, 1, 8).reshape(4, 2), np.array([0.3, -0.5, 1.2, 0.1])
    logits = [np.asarray(amortize.predict(m, x, y, x[:2]).logits) for m in (first, second)]
    assert np.all(np.abs(logits[1] - logits[0] - 1.0) < 1e-5)  # the bias, nothing cached
    key = id(second)
    assert key in _predict._SPLIT_MODELS
    del second
    gc.collect()
    assert key not in _predict._SPLIT_MODELS


def test_training_decreases_loss_and_resumes_identically(tmp_path, monkeypatch):
    """One config throughout, so that one training program serves every run here.
    Compiled at the suite's default level: 18 s here against 28 s fully optimized
    (300 steps of a tiny model: compiling, not running, takes the time)."""
    prior = amortize.GPPrior(nngp.rbf(0.3), 0.01, num_features=1)
    config = amortize.TrainingConfig(num_steps=100, steps_per_chunk=20, **TINY)
    straight, losses = amortize.train(prior, config, progress=False)
    assert losses.shape == (100,)
    # The bucket borders are fixed at the prior's quantiles, never trained.
    fresh = amortize.initial_state(prior, config).model
    np.testing.assert_array_equal(np.asarray(straight.bar.borders), np.asarray(fresh.bar.borders))
    # Per-batch losses are noisy (standard error of a 20-step mean: ~0.03); compare the
    # first and last 20 steps (measured, seeds 0-2: 1.51-1.53 -> 1.24-1.26).
    assert losses[-20:].mean() < losses[:20].mean() - 0.1, (losses[:20].mean(), losses[-20:].mean())

    amortize.train(prior, config, checkpoint_dir=tmp_path, progress=False, stop_after=60)
    assert (tmp_path / "state.eqx").exists()
    planted = [tmp_path.parent / f"{tmp_path.name}_planted{i}" for i in range(2)]
    for folder in planted:
        shutil.copytree(tmp_path, folder)
    resumed, rest = amortize.train(prior, config, checkpoint_dir=tmp_path, progress=False)
    assert rest.shape == (40,)
    # The training curve is continued across the resume: every step's loss, once.
    curve = json.loads((tmp_path / amortize.CURVE_FILE).read_text())
    assert curve["first_step"] == 0
    np.testing.assert_array_equal(curve["loss"], losses)
    for a, b in zip(jax.tree.leaves(eqx.filter(straight, eqx.is_array)),
                    jax.tree.leaves(eqx.filter(resumed, eqx.is_array)), strict=True):  # fmt: skip
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    loaded = amortize.load(tmp_path)
    # The tails are fitted to the prior (not the default ones), outside the training state
    # (its compiled steps never see them), and saved with the config.
    default_tails = amortize.BarDistribution(resumed.bar.borders).tails
    assert fresh.bar.fitted_tails is None
    assert loaded.bar.tails == resumed.bar.tails == straight.bar.tails != default_tails
    saved_tails = json.loads((tmp_path / "config.json").read_text())["tails"]
    assert saved_tails == [list(tail) for tail in resumed.bar.tails]
    x = np.linspace(-1, 1, 5)[:, None]
    np.testing.assert_allclose(
        amortize.predict(loaded, x, np.sin(x[:, 0]), x).mean,
        amortize.predict(resumed, x, np.sin(x[:, 0]), x).mean,
    )
    # A resumed run takes its tails from its checkpoint (fitting them only when it has none).
    # The first planted run was killed after writing its curve, before its state: the
    # curve's extra losses are dropped on resume. The second predates curves: its curve
    # starts where it resumes.
    killed_curve = planted[0] / amortize.CURVE_FILE
    saved_curve = json.loads(killed_curve.read_text())
    killed_curve.write_text(json.dumps({**saved_curve, "loss": saved_curve["loss"] + [9.0] * 20}))
    (planted[1] / amortize.CURVE_FILE).unlink()
    for folder, tails, first_step in zip(
        planted, ([[0.1, 0.5], [0.2, 0.7]], None), (0, 60), strict=True
    ):
        saved = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**saved, "tails": tails}))
        replanted, _ = amortize.train(prior, config, checkpoint_dir=folder, progress=False)
        curve = json.loads((folder / amortize.CURVE_FILE).read_text())
        assert curve["first_step"] == first_step
        np.testing.assert_array_equal(curve["loss"], losses[first_step:])
        if tails is None:
            assert replanted.bar.tails == straight.bar.tails
        else:
            assert replanted.bar.tails == tuple(amortize.Tail(*tail) for tail in tails)
    with pytest.raises(ValueError, match="different run: its training config differ"):
        amortize.train(
            prior, amortize.TrainingConfig(num_steps=61, **TINY), checkpoint_dir=tmp_path
        )
    with monkeypatch.context() as patch:
        patch.setattr(probinfer, "__version__", "0.0.0+another")
        with pytest.raises(ValueError, match="different run: its probinfer version differ"):
            amortize.train(prior, config, checkpoint_dir=tmp_path, progress=False)
    # Damaged files are reported with their path and never loaded.
    damaged = tmp_path / "damaged"
    shutil.copytree(tmp_path, damaged, ignore=shutil.ignore_patterns("damaged"))
    # A config written before tails were recorded gives the default tails for its borders.
    untailed = {k: v for k, v in json.loads((damaged / "config.json").read_text()).items()
                if k != "tails"}  # fmt: skip
    (damaged / "config.json").write_text(json.dumps(untailed))
    assert amortize.load(damaged).bar.tails == default_tails
    state_bytes = bytearray((damaged / "state.eqx").read_bytes())
    state_bytes[100] ^= 0xFF
    (damaged / "state.eqx").write_bytes(state_bytes)
    with pytest.raises(ValueError, match="state.eqx does not match its SHA-256 checksum"):
        amortize.train(prior, config, checkpoint_dir=damaged, progress=False)
    model_bytes = (damaged / "model.eqx").read_bytes()
    flipped = bytearray(model_bytes)
    flipped[100] ^= 0xFF
    (damaged / "model.eqx").write_bytes(flipped)
    with pytest.raises(ValueError, match="model.eqx does not match its SHA-256 checksum"):
        amortize.load(damaged)
    # A model saved before models carried a checksum loads, with a deprecation warning;
    # cut short (the trailer gone with it), it is refused as truncated.
    content = model_bytes.rpartition(CHECKSUM_MARK)[0]
    (damaged / "model.eqx").write_bytes(content)
    with pytest.warns(DeprecationWarning, match="no checksum trailer"):
        unchecked = amortize.load(damaged)
    np.testing.assert_array_equal(unchecked.bar.borders, resumed.bar.borders)
    (damaged / "model.eqx").write_bytes(content[: len(content) // 2])
    with pytest.raises(ValueError, match="model.eqx is truncated or corrupted"):
        with pytest.warns(DeprecationWarning):
            amortize.load(damaged)

    # Warm start: zero steps return the saved model's arrays (its tails refitted, the same
    # for the same prior, seed and borders); training continues from it
    # (its first loss is the saved model's, far below a fresh model's first loss).
    zero_steps, _ = amortize.train(prior, config, progress=False, init_from=tmp_path, stop_after=0)
    for a, b in zip(jax.tree.leaves(eqx.filter(zero_steps, eqx.is_array)),
                    jax.tree.leaves(eqx.filter(resumed, eqx.is_array)), strict=True):  # fmt: skip
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert zero_steps.bar.tails == resumed.bar.tails
    warm_model, warm = amortize.train(prior, config, progress=False, init_from=tmp_path)
    assert warm[:20].mean() < losses[:20].mean() - 0.1, (warm[:20].mean(), losses[:20].mean())
    # An interrupted warm-started run resumes bit-identically; another source is refused.
    warm_dir = tmp_path / "warm"
    amortize.train(prior, config, checkpoint_dir=warm_dir, progress=False, init_from=tmp_path,
                   stop_after=60)  # fmt: skip
    resumed_warm, _ = amortize.train(
        prior, config, checkpoint_dir=warm_dir, progress=False, init_from=tmp_path
    )
    warm_leaves = jax.tree.leaves(eqx.filter(warm_model, eqx.is_array))
    resumed_leaves = jax.tree.leaves(eqx.filter(resumed_warm, eqx.is_array))
    for a, b in zip(warm_leaves, resumed_leaves, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert resumed_warm.bar.tails == warm_model.bar.tails
    assert json.loads((warm_dir / "config.json").read_text())["init_from"] == str(tmp_path)
    with pytest.raises(ValueError, match="different run"):
        amortize.train(prior, config, checkpoint_dir=warm_dir, progress=False)
    for change in ({"width": 64}, {"num_heads": 4}):  # heads: the same leaf shapes
        other = amortize.TrainingConfig(num_steps=60, **{**TINY, **change})
        with pytest.raises(ValueError, match="another architecture"):
            amortize.train(prior, other, progress=False, init_from=tmp_path)
    # Another number of buckets is allowed: the source is re-binned onto the prior's
    # quantiles for the new count.
    finer = amortize.TrainingConfig(num_steps=60, **{**TINY, "num_buckets": 64})
    rebinned, _ = amortize.train(prior, finer, progress=False, init_from=tmp_path, stop_after=0)
    assert rebinned.bar.num_buckets == 64
    expected = resumed.rebinned(amortize.initial_state(prior, finer).model.bar)
    # Its tails are fitted for the new borders, with the run's own key.
    tails_key = jax.random.fold_in(jax.random.key(finer.seed), TAIL_KEY)
    assert rebinned.bar.tails == amortize.fit_tails(expected, prior, key=tails_key).bar.tails
    for a, b in zip(jax.tree.leaves(eqx.filter(rebinned, eqx.is_array)),
                    jax.tree.leaves(eqx.filter(expected, eqx.is_array)), strict=True):  # fmt: skip
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # A prior of more input features: the source is widened (the new ones start ignored).
    wider_prior = amortize.GPPrior(nngp.rbf(0.3), 0.01, num_features=3)
    widened, _ = amortize.train(wider_prior, config, progress=False, init_from=tmp_path,
                                stop_after=0)  # fmt: skip
    assert widened.num_features == 3
    for a, b in zip(jax.tree.leaves(eqx.filter(widened, eqx.is_array)),
                    jax.tree.leaves(eqx.filter(resumed.with_num_features(3), eqx.is_array)),
                    strict=True):  # fmt: skip
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # A source of more features than the prior is refused, naming both counts.
    import probinfer.amortize._predict as predict_module

    monkeypatch.setattr(predict_module, "load", lambda folder: widened)
    with pytest.raises(ValueError, match="takes 3 input features but this run's prior has 1"):
        amortize.train(prior, config, progress=False, init_from=tmp_path, stop_after=0)


@pytest.mark.parametrize(
    "args, match",
    [
        ((np.zeros((3, 2)), np.zeros(4), np.zeros((1, 2))), "match"),
        ((np.zeros((13, 2)), np.zeros(13), np.zeros((1, 2))), "at most 12"),
        ((np.zeros((3, 2)), np.array([0.0, np.nan, 1.0]), np.zeros((1, 2))), "NaN"),
        ((np.zeros((3, 2)), np.zeros(3), np.full((1, 2), np.nan)), "NaN"),
        ((np.zeros((3, 3)), np.zeros(3), np.zeros((1, 3))), "at most 2"),
        ((np.zeros((3, 1)), np.zeros(3), np.zeros((1, 2))), "same features"),
        ((np.zeros((0, 2)), np.zeros(0), np.zeros((1, 2))), "at least 1"),
    ],
)
def test_predict_bad_input(args, match):
    with pytest.raises(ValueError, match=match):
        amortize.predict(_random_model(), *args)


def test_predict_warns_on_extrapolation_and_pads_features():
    model = _random_model()
    y = np.array([0.3, -1.2, 0.8])  # on the prior's scale (the buckets span [-3, 3])
    with pytest.warns(UserWarning, match="inputs reach 5.*extrapolation"):
        amortize.predict(model, np.zeros((3, 2)), y, np.full((1, 2), 5.0))
    # Targets far off the prior's scale, either way.
    for factor, spread in [(100.0, "85"), (0.01, "0.0085")]:
        with pytest.warns(UserWarning, match=f"root mean square is {spread}.*scale-free"):
            amortize.predict(model, np.zeros((3, 2)), y * factor, np.zeros((1, 2)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        one_feature = amortize.predict(model, np.zeros((3, 1)), y, np.zeros((2, 1)))
    assert one_feature.mean.shape == (2,)
    # A 1-d array is one feature per point, whatever the model's feature count.
    flat = amortize.predict(model, np.zeros(3), y, np.array([0.1, 0.5]))
    assert flat.mean.shape == (2,)


def test_config_and_prior_spec_errors():
    with pytest.raises(ValueError, match="min_train"):
        amortize.TrainingConfig(min_train=20, max_train=10)
    with pytest.raises(ValueError, match="unknown prior type"):
        amortize.prior_from_spec({"type": "spline"})
    with pytest.raises(ValueError, match="bad prior settings"):
        amortize.prior_from_spec({"type": "linear", "slope": 1.0})
    assert isinstance(amortize.prior_from_spec({"type": "gp", "num_features": 3}), amortize.GPPrior)


@pytest.mark.parametrize(
    "folder",
    [
        amortize.PRETRAINED_GP,
        amortize.PRETRAINED_GP_HYPER,
        amortize.PRETRAINED_GP_SCALE_FREE,
        amortize.PRETRAINED_GP_HYPER_MIXED,
        amortize.PRETRAINED_STUDENT_T,
    ],
)
def test_shipped_models_load_and_predict(folder):
    model = amortize.load(folder)
    wide = folder == amortize.PRETRAINED_GP_HYPER_MIXED
    assert (model.num_features, model.max_train) == ((5, 100) if wide else (3, 50))
    x = np.linspace(-0.9, 0.9, 12)[:, None]
    predictive = amortize.predict(model, x, np.sin(3 * x[:, 0]), np.array([[0.05], [0.5]]))
    if folder == amortize.PRETRAINED_STUDENT_T:
        # Its ReLU-network prior shrinks this function more than a GP's would: the exact
        # Student-t predictive (1-d inputs padded to the prior's 3 features) is the answer.
        process = nngp.ScaleMixtureProcess(nngp.mlp(2), nngp.inverse_gamma(2.0, 2.0), 0.05)
        padded = np.pad(x, ((0, 0), (0, 2)))
        exact = process.condition(padded, np.sin(3 * x[:, 0])).predict(
            np.array([[0.05, 0, 0], [0.5, 0, 0]])
        )
        np.testing.assert_allclose(predictive.mean, exact.mean, atol=0.1)
        np.testing.assert_allclose(predictive.stddev, exact.stddev, rtol=0.1)
    else:
        # A smooth function seen at 12 points: the prediction is close and confident.
        np.testing.assert_allclose(predictive.mean, np.sin(3 * np.array([0.05, 0.5])), atol=0.25)
        assert np.all(predictive.stddev < 0.5)
    # Under x64 (which some posteriors need) the float32 weights load and predict the same.
    with jax.enable_x64(True):
        model64 = amortize.load(folder)
        predictive64 = amortize.predict(model64, x, np.sin(3 * x[:, 0]), np.array([[0.05], [0.5]]))
        np.testing.assert_allclose(predictive64.mean, predictive.mean, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(predictive64.stddev, predictive.stddev, rtol=1e-4)


HELD_OUT = json.loads((Path(__file__).parent / "data" / "pfn_held_out.json").read_text())


@pytest.mark.parametrize("name", sorted(HELD_OUT))
def test_shipped_models_keep_their_accuracy_on_held_out_datasets(name):
    """Each shipped PFN on fixed prior datasets (1- and 2-d, 10 train and 10 test points),
    through `predict` and `log_prob`, against the exact predictive's NLL (the GP's, the
    Student-t process's in closed form, a long NUTS run over the hyperparameters, or for
    the classifier NUTS on the latent process), written by `benchmarks/pfn.py --held-out`.

    Each dataset's NLL must be the one recorded when the file was written (to float32
    rounding), the mean gap must stay within 4 standard errors (over datasets) of the
    recorded gap, and the PFN must not beat the exact answer by more than that: a model or
    prediction-path regression fails (a dropped log-Jacobian of the target map moves a
    scale-free model's NLL by the targets' log scale). The scale-free model gives the same
    NLLs with the data in other units (two datasets per input dimension).
    """
    held_out = HELD_OUT[name]
    model = amortize.load(amortize.pretrained_model(name).folder)
    num_train = held_out["num_train"]

    def nll(x, y):
        with warnings.catch_warnings():
            # Prior datasets put a test input far beyond the train inputs now and then.
            warnings.filterwarnings("ignore", "`x_test` lies up to", UserWarning)
            predictive = amortize.predict(model, x[:num_train], y[:num_train], x[num_train:])
        return -float(np.mean(np.asarray(predictive.log_prob(y[num_train:]), np.float64)))

    gaps = []
    for group in held_out["groups"]:
        rows = zip(group["x"], group["y"], group["reference_nll"], group["pfn_nll"], strict=True)
        for index, (x, y, reference, recorded) in enumerate(rows):
            x, y = np.asarray(x), np.asarray(y)
            value = nll(x, y)
            # The model itself, exactly: each dataset's NLL as recorded (float32 rounding).
            np.testing.assert_allclose(value, recorded, atol=2e-3)
            gaps.append(value - reference)
            if model.scale_free and index < 2:
                # In other units: the same NLL once it moves by log(1000).
                moved = nll(20 * x - 3, 1000 * y + 50) - np.log(1000)
                np.testing.assert_allclose(moved, value, atol=2e-3)
    gaps = np.asarray(gaps)
    standard_error = gaps.std(ddof=1) / np.sqrt(gaps.size)
    assert gaps.mean() < held_out["gap_mean"] + 4 * standard_error, (gaps.mean(), held_out)
    assert gaps.mean() > -4 * standard_error, (gaps.mean(), standard_error)
