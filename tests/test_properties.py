"""Property-based tests (hypothesis) of bad input at the public entry points.

Every count setting of `pi.sample`, `pi.evidence` (SMC and nested sampling) and
`diagnostics.sbc`, given any value that is not an integer at or above its minimum (negative
or zero integers, floats including NaN and infinities, bools, strings, NumPy scalars and
arrays), raises a `ValueError` naming the argument before anything compiles; observed
data with a NaN or an infinity anywhere, in any shape and float dtype, are refused with the
site's name and the count of bad values; empty data sample the prior. Float settings
(`step_size`, `target_acceptance`) outside their range, NaN, infinite or not numbers, and
`init_positions` of the wrong structure, shape, type or with a non-finite value are refused
naming the argument. The rank-ECDF test's
p-value of any small rank vector equals the exact one (enumeration in rational
arithmetic). No case hangs or returns NaN: each runs in milliseconds (no compilation,
except the one check of non-finite starting points, compiled once), so hypothesis can
try many.
"""

import functools
import warnings

import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from _sbc import exact_p_values
from _strategies import not_a_count, not_a_positive_number
from hypothesis import given, settings
from hypothesis import strategies as st

import probinfer as pi
from probinfer.diagnostics import SamplingWarning, rank_ecdf_test, sbc

FAST = settings(max_examples=40, deadline=None, database=None)


def normal_model(y=None):
    mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
    numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)


Y = np.array([0.3, -0.1, 0.8])


# (entry point, argument, its minimum): the call gets only that argument wrong.
COUNT_SETTINGS = [
    (lambda **kw: pi.sample(normal_model, Y, progress=False, **kw), "chains", 1),
    (lambda **kw: pi.sample(normal_model, Y, progress=False, **kw), "warmup", 0),
    (lambda **kw: pi.sample(normal_model, Y, progress=False, **kw), "draws", 1),
    (lambda **kw: pi.sample(normal_model, Y, progress=False, **kw), "seed", 0),
    (lambda **kw: pi.evidence(normal_model, Y, progress=False, **kw), "particles", 2),
    (lambda **kw: pi.evidence(normal_model, Y, progress=False, **kw), "replicas", 2),
    (lambda **kw: pi.evidence(normal_model, Y, progress=False, **kw), "num_mcmc_steps", 1),
    (lambda **kw: pi.evidence(normal_model, Y, method="ns", progress=False, **kw),
     "live_points", 2),
    (lambda **kw: pi.evidence(normal_model, Y, method="ns", progress=False, **kw),
     "num_delete", 1),
    (lambda **kw: sbc(normal_model, observed="y", progress=False, **kw), "num_replicates", 2),
    (lambda **kw: sbc(normal_model, observed="y", progress=False, **kw), "num_ranked", 1),
    (lambda **kw: sbc(normal_model, observed="y", progress=False, **kw), "seed", 0),
    (lambda **kw: sbc(normal_model, observed="y", progress=False, **kw), "max_extensions", 0),
    (lambda **kw: sbc(normal_model, observed="y", progress=False, **kw), "draws", 1),
]  # fmt: skip


def not_a_probability() -> st.SearchStrategy:
    """Any value outside the open interval (0, 1), NaN, infinities or a non-number."""
    return st.one_of(
        st.floats(max_value=0.0),
        st.floats(min_value=1.0),
        st.sampled_from([np.nan, np.inf, -np.inf, "a", "0.5", 0.5j, np.array([0.5, 0.8])]),
    )


def not_a_step_size() -> st.SearchStrategy:
    """Anything but a finite positive number or None (the default: tuned)."""
    return not_a_positive_number().filter(lambda value: value is not None)


# (entry point, setting, strategy of wrong values): only that setting is wrong.
FLOAT_SETTINGS = [
    (lambda **kw: pi.sample(normal_model, Y, progress=False, **kw), "step_size",
     not_a_step_size()),
    (lambda **kw: pi.sample(normal_model, Y, progress=False, **kw), "target_acceptance",
     not_a_probability()),
    (lambda **kw: pi.evidence(normal_model, Y, progress=False, **kw), "step_size",
     not_a_step_size()),
    (lambda **kw: pi.evidence(normal_model, Y, method="ns", progress=False, **kw), "step_size",
     not_a_step_size()),
]  # fmt: skip


# Every wrong setting: (entry point, argument, wrong values, errors, message).
BAD_SETTINGS = [
    (call, name, not_a_count(minimum), ValueError, f"`{name}` must be an int >= {minimum}")
    for call, name, minimum in COUNT_SETTINGS
] + [(call, name, values, (ValueError, TypeError), f"`{name}`")
     for call, name, values in FLOAT_SETTINGS]  # fmt: skip


@pytest.mark.parametrize(
    ("call", "name", "values", "errors", "message"),
    BAD_SETTINGS,
    ids=[f"{index}-{setting[1]}" for index, setting in enumerate(BAD_SETTINGS)],
)
def test_bad_settings_are_refused_by_name(call, name, values, errors, message):
    @FAST
    @given(value=values)
    def check(value):
        with pytest.raises(errors, match=message):
            call(**{name: value})

    check()


@st.composite
def wrong_init_positions(draw: st.DrawFn) -> object:
    """Starting points for ``normal_model`` (one scalar site ``mu``, 2 chains) that are
    wrong in one way: the structure, the leading (chain) shape, a trailing shape, a
    non-numeric leaf, or a NaN or infinity (a float dtype)."""
    kind = draw(st.sampled_from(["structure", "chains", "trailing", "text", "nonfinite"]))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    if kind == "structure":
        return draw(st.sampled_from([
            [np.zeros(2)], np.zeros(2), {"sigma": np.zeros(2)},
            {"mu": np.zeros(2), "sigma": np.zeros(2)}, {"mu": {"mu": np.zeros(2)}},
        ]))  # fmt: skip
    if kind == "chains":
        return {"mu": np.zeros(draw(st.sampled_from([0, 1, 3, 8])), dtype)}
    if kind == "trailing":
        return {"mu": np.zeros((2, draw(st.integers(1, 3))), dtype)}
    if kind == "text":
        return {"mu": np.array(["a", "b"])}
    values = np.zeros(2, dtype)
    values[draw(st.integers(0, 1))] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    return {"mu": values}


@FAST
@given(init_positions=wrong_init_positions())
def test_wrong_init_positions_are_refused_by_name(init_positions):
    with pytest.raises((ValueError, TypeError), match="`init_positions`"):
        pi.sample(normal_model, Y, chains=2, progress=False, init_positions=init_positions)


@st.composite
def data_with_a_nonfinite_value(draw: st.DrawFn) -> np.ndarray:
    shape = tuple(draw(st.lists(st.integers(1, 4), min_size=1, max_size=3)))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    values = np.asarray(
        draw(st.lists(st.floats(-1e3, 1e3), min_size=int(np.prod(shape)),
                      max_size=int(np.prod(shape)))),
        dtype,
    ).reshape(shape)  # fmt: skip
    flat = values.reshape(-1)
    for index in draw(st.lists(st.integers(0, flat.size - 1), min_size=1, max_size=3)):
        flat[index] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    return values


@FAST
@given(y=data_with_a_nonfinite_value(), method=st.sampled_from(["nuts", "smc", "ns"]))
def test_nonfinite_data_are_refused_with_the_site_and_count(y, method):
    num_bad = int(np.sum(~np.isfinite(y)))
    with pytest.raises(ValueError, match=f"observed site 'y' has {num_bad} value\\(s\\)"):
        pi.sample(normal_model, y, method=method, progress=False)


def test_empty_data_sample_the_prior():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SamplingWarning)  # 1 chain x 200 draws: short
        idata = pi.sample(normal_model, np.zeros(0), chains=1, warmup=100, draws=200,
                          seed=1, progress=False, log_likelihood=False)  # fmt: skip
    mu = idata["posterior"]["mu"].values
    # The prior N(0, 1): a bound far beyond any chain's reach (ESS >= 50 of 200 draws).
    assert abs(mu.mean()) < 4.5 / np.sqrt(50) and 0.6 < mu.std() < 1.5


_exact_p_values = functools.lru_cache(exact_p_values)


@FAST
@given(num_replicates=st.integers(1, 5), num_ranked=st.integers(1, 3), data=st.data())
def test_rank_ecdf_p_value_is_the_exact_one(num_replicates, num_ranked, data):
    ranks = tuple(
        data.draw(st.lists(st.integers(0, num_ranked), min_size=num_replicates,
                           max_size=num_replicates))
    )  # fmt: skip
    exact = float(_exact_p_values(num_replicates, num_ranked)[ranks])
    assert rank_ecdf_test(np.array(ranks), num_ranked) == pytest.approx(exact, abs=1e-12)
