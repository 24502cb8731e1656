"""The rank-ECDF uniformity test against exact enumeration, and `sbc`'s mechanics.

The test's null distribution is computed by a Markov-chain recursion
(``probinfer._calibration``); here it is checked against brute force: for small ``N``
and ``L`` every one of the ``(L + 1)^N`` equally likely rank vectors is enumerated, and
each one's p-value must equal the exact fraction of vectors whose statistic is at most
its own. The statistical runs of `sbc` on every method, with negative controls, are in
``test_calibration_slow.py``.
"""

import itertools
import re
import warnings

import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

from probinfer._calibration import _marginal_tail_probabilities
from probinfer.diagnostics import SamplingWarning, rank_ecdf_band, rank_ecdf_test, sbc


def _statistic(ranks: np.ndarray, num_ranked: int) -> float:
    tails = _marginal_tail_probabilities(len(ranks), num_ranked)
    counts = np.cumsum(np.bincount(ranks, minlength=num_ranked + 1))[:num_ranked]
    return float(tails[np.arange(num_ranked), counts].min())


@pytest.mark.parametrize(("num_replicates", "num_ranked"), [(5, 3), (4, 5), (7, 1)])
def test_p_values_equal_exact_enumeration(num_replicates, num_ranked):
    vectors = np.array(list(itertools.product(range(num_ranked + 1), repeat=num_replicates)))
    statistics = np.array([_statistic(v, num_ranked) for v in vectors])
    for vector, statistic in zip(vectors[::7], statistics[::7], strict=True):
        exact = np.mean(statistics <= statistic)
        assert rank_ecdf_test(vector, num_ranked) == pytest.approx(exact, abs=1e-12)


def test_tiny_p_values_and_power():
    rng = np.random.default_rng(0)
    # Ranks piled in the middle (posteriors too wide): p far below any Monte Carlo reach.
    middle = rng.integers(30, 70, size=500)
    assert rank_ecdf_test(middle, 99) < 1e-50
    # Uniform ranks: p-values spread over (0, 1); their smallest of 20 is not tiny.
    p_values = [rank_ecdf_test(rng.integers(0, 100, size=500), 99) for _ in range(20)]
    assert min(p_values) > 5e-5 / 20 and max(p_values) < 1.0


def test_band_has_its_level():
    num_replicates, num_ranked = 6, 3
    band = rank_ecdf_band(num_replicates, num_ranked, alpha=0.2)
    vectors = np.array(list(itertools.product(range(num_ranked + 1), repeat=num_replicates)))
    histograms = np.stack([np.bincount(v, minlength=num_ranked + 1) for v in vectors])
    counts = np.cumsum(histograms, axis=1)[:, :num_ranked] / num_replicates
    outside = np.any((counts < band[0] - 1e-12) | (counts > band[1] + 1e-12), axis=1)
    # Discrete counts: the band's escape probability is the largest not above alpha.
    assert 0.05 < outside.mean() <= 0.2


def test_bad_ranks():
    with pytest.raises(ValueError, match="must lie in 0..num_ranked"):
        rank_ecdf_test(np.array([0, 5]), 4)
    with pytest.raises(ValueError, match="must be integers"):
        rank_ecdf_test(np.array([0.5, 1.0]), 4)
    with pytest.raises(ValueError, match="non-empty 1-d"):
        rank_ecdf_test(np.array([], int), 4)


def normal_model(y=None, prior_scale=1.0):
    mu = numpyro.sample("mu", dist.Normal(0.0, prior_scale))
    sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
    numpyro.sample("y", dist.Normal(mu, sigma).expand([10]), obs=y)


def test_sbc_runs_every_replicate_with_one_program():
    # A single chain's run checks (R-hat, ESS per chain) fire in a few replicates by
    # chance; sbc counts them and says so in one summary warning.
    with pytest.warns(SamplingWarning, match="2 of 12 replicates' runs warned"):
        result = sbc(normal_model, observed="y", num_replicates=12, num_ranked=9, seed=3,
                     chains=1, warmup=200, draws=500, progress=False)  # fmt: skip
    assert result.num_warned == 2
    assert set(result.ranks) == {"mu", "sigma"}
    assert result.ranks["mu"].shape == (12,) and result.p_values["mu"].shape == ()
    assert all(r.min() >= 0 and r.max() <= 9 for r in result.ranks.values())
    assert result.labels() == ["mu", "sigma"] and 0.0 <= result.p_value() <= 1.0
    assert np.all(result.min_ess > 0)
    figure = result.plot()
    assert len(figure.axes) == 2


def test_sbc_warns_when_the_ranked_draws_are_autocorrelated():
    # Ranking among all 200 draws of one chain: some component's ESS is below 200.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sbc(normal_model, observed="y", num_replicates=3, num_ranked=200, seed=3,
            chains=1, warmup=150, draws=200, progress=False)  # fmt: skip
    messages = [str(w.message) for w in caught if w.category is SamplingWarning]
    assert any(re.search("bulk ESS .* is below `num_ranked` = 200", m) for m in messages)


def test_sbc_errors():
    with pytest.raises(ValueError, match="`method` must be one of"):
        sbc(normal_model, observed="y", method="gibbs")
    with pytest.raises(ValueError, match="not sample sites of the model"):
        sbc(normal_model, observed="z", num_replicates=2, progress=False)
    with pytest.raises(ValueError, match="pass its data argument as None"):
        sbc(normal_model, np.zeros(10), observed="y", num_replicates=2, progress=False)
    with pytest.raises(ValueError, match="fewer than `num_ranked`"):
        sbc(normal_model, observed="y", num_replicates=2, num_ranked=99, chains=1,
            warmup=10, draws=20, progress=False)  # fmt: skip
