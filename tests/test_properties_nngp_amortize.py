"""Property-based tests (hypothesis) of bad input at the NNGP and amortizer entry points.

Every positive parameter of a kernel, a scale prior or a dataset prior, given anything but
a finite number > 0 (zero, negatives, NaN, infinities, None, strings, complex numbers),
raises a `ValueError` or `TypeError` naming the argument; so does every count of a
training config given anything but an integer at or above its minimum. Data of any shape
and dtype, with NaN, infinities or huge entries anywhere, given to an NNGP posterior, a
PFN's `predict` or a distribution transformer's `posterior`, either give a finite answer
or raise a `ValueError`/`TypeError` that names the argument: never a silent NaN. Shapes are
drawn from small sets, so that the few programs they compile are shared by every case.
"""

import functools
import re
import warnings

import jax
import numpy as np
import pytest
from _strategies import awkward_arrays, not_a_count, not_a_positive_number
from hypothesis import given, settings
from hypothesis import strategies as st

from probinfer import amortize, nngp

FAST = settings(max_examples=40, deadline=None, database=None)
# Cases that compile a program per new shape: fewer examples, drawn from few shapes; the
# same examples on every run (so that each outcome's count below is fixed).
COMPILING = settings(max_examples=60, deadline=None, database=None, derandomize=True)

# (constructor, argument): the call gets only that argument wrong.
POSITIVE_PARAMETERS = [
    (lambda v: nngp.dense(weight_variance=v), "weight_variance"),
    (lambda v: nngp.rbf(lengthscale=v), "lengthscale"),
    (lambda v: nngp.rbf(variance=v), "variance"),
    (lambda v: nngp.matern52(lengthscale=v), "lengthscale"),
    (lambda v: nngp.inverse_gamma(v, 1.0), "concentration"),
    (lambda v: nngp.inverse_gamma(2.0, v), "rate"),
    (lambda v: nngp.gamma(v, 1.0), "concentration"),
    (lambda v: nngp.log_normal(0.0, v), "scale"),
    (lambda v: nngp.burr_xii(v, 1.0), "c"),
    (lambda v: nngp.half_cauchy_std(v), "scale"),
    (lambda v: nngp.ScaleMixtureProcess(nngp.mlp(1), noise=v), "noise"),
    (lambda v: amortize.GPPrior(nngp.rbf(0.3), noise=v), "noise"),
    (lambda v: amortize.normal_inverse_gamma(0.0, v, 2.0, 1.0), "pseudo_count"),
    (lambda v: amortize.normal_inverse_gamma(0.0, 1.0, v, 1.0), "concentration"),
    (lambda v: amortize.normal_inverse_gamma(0.0, 1.0, 2.0, v), "rate"),
]


@pytest.mark.parametrize(
    ("make", "name"),
    POSITIVE_PARAMETERS,
    ids=[f"{index}-{name}" for index, (_, name) in enumerate(POSITIVE_PARAMETERS)],
)
def test_non_positive_parameters_are_refused_by_name(make, name):
    @FAST
    @given(value=not_a_positive_number())
    def check(value):
        with pytest.raises((ValueError, TypeError), match=f"`{name}` must"):
            make(value)

    check()


# (config, count, its minimum)
CONFIG_COUNTS = [
    *((amortize.TrainingConfig, name, 1)
      for name in ("num_steps", "batch_size", "max_train", "num_test", "width", "num_layers",
                   "num_heads", "mlp_width", "steps_per_chunk")),
    (amortize.TrainingConfig, "num_buckets", 2),
    *((amortize.DTTrainingConfig, name, 1)
      for name in ("num_steps", "batch_size", "width", "num_layers", "num_heads", "mlp_width",
                   "steps_per_chunk")),
    (lambda **kw: amortize.GPPrior(nngp.rbf(0.3), **kw), "num_features", 1),
    (lambda **kw: amortize.BayesianLinearRegressionPrior(**kw), "num_features", 1),
]  # fmt: skip


@pytest.mark.parametrize(
    ("make", "name", "minimum"),
    CONFIG_COUNTS,
    ids=[f"{index}-{name}" for index, (_, name, _) in enumerate(CONFIG_COUNTS)],
)
def test_bad_config_counts_are_refused_by_name(make, name, minimum):
    @FAST
    @given(value=not_a_count(minimum))
    def check(value):
        with pytest.raises(ValueError, match=f"`{name}` must be an int >= {minimum}"):
            make(**{name: value})

    check()


class Outcomes:
    """Counts how the cases of one property ended: a finite answer, or a refusal naming
    an argument (anything else fails the test). Both must occur, or the property tested
    nothing; a non-finite DT posterior caught only by its last guard fails too."""

    def __init__(self) -> None:
        self.finite = self.refused = self.unexplained = 0

    def check(self, call, names: tuple[str, ...]) -> None:
        """``call()``'s array results are all finite, or it raises a ValueError/TypeError
        whose message names one of ``names`` (backquoted, perhaps indexed)."""
        pattern = "|".join(rf"`{re.escape(name)}(\[\d+\])?`" for name in names)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # extrapolation warnings: data off the prior
                result = call()
        except (ValueError, TypeError) as error:
            if str(error).startswith("the posterior holds NaN"):  # the DT's last guard
                self.unexplained += 1
                return
            assert re.search(pattern, str(error)), f"no argument named in: {error}"
            self.refused += 1
            return
        for leaf in jax.tree.leaves(result):
            assert np.all(np.isfinite(np.asarray(leaf))), "a silent NaN or infinity"
        self.finite += 1

    def assert_both_seen(self, minimum: int = 5) -> None:
        """Both outcomes at least ``minimum`` times, and no non-finite result that only a
        last guard caught (an input check is missing then)."""
        assert self.finite >= minimum and self.refused >= minimum, vars(self)
        assert self.unexplained == 0, vars(self)


@st.composite
def regression_data(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x, y, x_test): 5 or 7 train rows, 3 test rows, 1 or 2 features, in any dtype; one
    fault, or none: an array of the wrong shape, or NaN, infinite or huge entries."""
    num_train, num_features = draw(st.sampled_from([5, 7])), draw(st.sampled_from([1, 2]))
    shapes = {"x": (num_train, num_features), "y": (num_train,), "x_test": (3, num_features)}
    fault = draw(st.sampled_from(["none", "values", "x", "y", "x_test"]))
    if fault in shapes:
        wrong = {"x": [(num_train,), (num_train, num_features, 1), (num_train - 1, num_features)],
                 "y": [(num_train - 1,), (num_train, 1)],
                 "x_test": [(3, num_features + 1), (3,)]}  # fmt: skip
        shapes[fault] = draw(st.sampled_from(wrong[fault]))
    corrupt = fault == "values"
    x, y, x_test = (draw(awkward_arrays(shapes[name], corrupt)) for name in ("x", "y", "x_test"))
    return x, y, x_test


PROCESS = nngp.ScaleMixtureProcess(nngp.mlp(1), nngp.inverse_gamma(2.0, 2.0), noise=0.05)


def nngp_posterior(x, y, x_test):
    predictive = PROCESS.condition(x, y).predict(x_test)
    return predictive.mean, predictive.variance, PROCESS.log_marginal_likelihood(x, y)


@functools.cache
def shipped_pfn() -> amortize.PFN:
    return amortize.load(amortize.pretrained_model("gp-scale-free").folder)


def pfn_predictive(x, y, x_test):
    predictive = amortize.predict(shipped_pfn(), x, y, x_test)
    return predictive.mean, predictive.log_prob(np.zeros(len(x_test)))


# (call on (x, y, x_test), the names its refusals may give): an ill-conditioned kernel
# (inputs in the hundreds, in float32) names `jitter`.
REGRESSION_ENTRY_POINTS = {
    "nngp-posterior": (nngp_posterior, ("x", "y", "x_test", "jitter")),
    "pfn-predict": (pfn_predictive, ("x_train", "y_train", "x_test")),
}


@pytest.mark.parametrize("entry", list(REGRESSION_ENTRY_POINTS))
def test_regression_entry_point_is_finite_or_refuses_by_name(entry):
    call, names = REGRESSION_ENTRY_POINTS[entry]
    outcomes = Outcomes()

    @COMPILING
    @given(data=regression_data())
    def check(data):
        outcomes.check(lambda: call(*data), names)

    check()
    outcomes.assert_both_seen()


@st.composite
def mixture_and_data(draw: st.DrawFn) -> tuple[tuple, tuple]:
    """(weights, means, covariances) of 1-3 components over R^2 and (design, values,
    noise_sd) of 0-3 observations, in any dtype; one fault, or none: an array of the wrong
    shape, NaN, infinite or huge entries, weights that do not sum to 1, covariances that are
    not positive definite, or a non-positive noise scale."""
    num_components, num_observations = draw(st.integers(1, 3)), draw(st.integers(0, 3))
    fault = draw(st.sampled_from(["none", "values", "shape", "weights", "covariances",
                                  "noise_sd"]))  # fmt: skip
    corrupt = fault == "values"
    weights = np.full(num_components, 1 / num_components)
    if fault == "weights":
        weights = draw(awkward_arrays((num_components,)))
    dim = draw(st.sampled_from([2, 3])) if fault == "shape" else 2
    means = draw(awkward_arrays((num_components, dim), corrupt))
    scales = draw(st.lists(st.floats(1e-2, 1e2), min_size=num_components,
                           max_size=num_components))  # fmt: skip
    covariances = np.stack([scale * np.eye(2) for scale in scales])
    if fault == "covariances":
        covariances = draw(awkward_arrays((num_components, 2, 2)))
    design = draw(awkward_arrays((num_observations, 2), corrupt))
    values = draw(awkward_arrays((num_observations,), corrupt))
    noise_sd = draw(st.floats(1e-2, 10.0))
    if fault == "noise_sd":
        noise_sd = draw(st.one_of(st.floats(max_value=0.0), awkward_arrays((num_observations,))))
    return (weights, means, covariances), (design, values, noise_sd)


@pytest.fixture(scope="module")
def distribution_transformer() -> amortize.DistributionTransformer:
    return amortize.load_dt(amortize.PRETRAINED_DT_2D)


def test_dt_posterior_is_finite_or_refuses_by_name(distribution_transformer):
    outcomes = Outcomes()

    @COMPILING
    @given(case=mixture_and_data())
    def check(case):
        prior_arrays, data_arrays = case

        def call():
            prior = amortize.gaussian_mixture(*prior_arrays)
            data = amortize.linear_gaussian_data(*data_arrays, dim=2)
            posterior = amortize.posterior(distribution_transformer, prior, data)
            return posterior.means, posterior.scale_tril, posterior.log_prob(np.zeros(2))

        names = ("weights", "means", "covariances", "design", "values", "noise_sd")
        outcomes.check(call, names)

    check()
    outcomes.assert_both_seen()


@st.composite
def normal_inverse_gamma_and_draws(draw: st.DrawFn) -> tuple[tuple, np.ndarray]:
    """(loc, pseudo_count, concentration, rate) and 0-4 draws in any dtype; one fault, or
    none: NaN, infinite or huge draws, or a parameter that is not a finite number > 0."""
    fault = draw(st.sampled_from(["none", "values", "loc", "pseudo_count", "concentration",
                                  "rate"]))  # fmt: skip
    parameters = [draw(st.floats(-10.0, 10.0)), draw(st.floats(0.1, 10.0)),
                  draw(st.floats(0.5, 10.0)), draw(st.floats(1e-2, 1e2))]  # fmt: skip
    names = ("loc", "pseudo_count", "concentration", "rate")
    if fault in names:
        bad = st.one_of(not_a_positive_number(), st.just(np.nan), st.just(np.inf))
        parameters[names.index(fault)] = draw(bad)
    values = draw(awkward_arrays((draw(st.integers(0, 4)),), fault == "values"))
    return tuple(parameters), values


@pytest.fixture(scope="module")
def normal_inverse_gamma_transformer() -> amortize.DistributionTransformer:
    return amortize.load_dt(amortize.PRETRAINED_DT_NORMAL_INVERSE_GAMMA)


def test_normal_inverse_gamma_posterior_is_finite_or_refuses_by_name(
    normal_inverse_gamma_transformer,
):
    outcomes = Outcomes()

    @COMPILING
    @given(case=normal_inverse_gamma_and_draws())
    def check(case):
        parameters, values = case

        def call():
            prior = amortize.normal_inverse_gamma(*parameters)
            data = amortize.normal_data(values)
            posterior = amortize.posterior(normal_inverse_gamma_transformer, prior, data)
            return posterior.means, posterior.scale_tril, posterior.log_prob(np.zeros(2))

        outcomes.check(call, ("loc", "pseudo_count", "concentration", "rate", "values"))

    check()
    outcomes.assert_both_seen()


@FAST
@given(size=st.integers(max_value=-1))
def test_mixture_draws_refuse_negative_sizes(size):
    mixture = amortize.gaussian_mixture(np.ones(1), np.zeros((1, 2)), np.eye(2)[None])
    with pytest.raises(ValueError, match="`sample_shape` must be an int >= 0"):
        mixture.sample(jax.random.key(0), size)


def test_extreme_magnitudes_are_named_with_their_size():
    """Values whose squares overflow the float dtype are refused with their size and the
    fix, before any NaN can appear (1e200 is too large in float32 and float64 alike)."""
    x = np.linspace(-1.0, 1.0, 5)[:, None]
    with pytest.raises(ValueError, match=r"`y` has entries up to 1e\+200, too extreme"):
        PROCESS.condition(x, np.full(5, 1e200))
    with pytest.raises(ValueError, match=r"`covariances` has standard deviations up to 1e\+153"):
        amortize.gaussian_mixture(np.ones(1), np.zeros((1, 1)), np.full((1, 1, 1), 1e306))
