"""The rank-ECDF uniformity test against exact enumeration, and `sbc`'s mechanics.

The test's null distribution is computed by a Markov-chain recursion
(``probinfer._calibration``); here it is checked against brute force in rational
arithmetic: for small ``N`` and ``L`` every one of the ``(L + 1)^N`` equally likely rank
vectors is enumerated, and each one's p-value must equal the exact fraction of vectors
whose statistic is at most its own. The statistical runs of `sbc` on every method, with
negative controls, are in ``test_calibration_slow.py``.
"""

import itertools
import re
import warnings

import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from _sbc import exact_p_values

from probinfer._calibration import _marginal_tail_probabilities
from probinfer.diagnostics import SamplingWarning, rank_ecdf_band, rank_ecdf_test, sbc


@pytest.mark.parametrize(("num_replicates", "num_ranked"), [(5, 3), (4, 5), (7, 1), (6, 2)])
def test_p_values_equal_exact_enumeration(num_replicates, num_ranked):
    """Against rational arithmetic: ties between equal tails are exact there, so a p-value
    that counted an ulp-larger mirror cell as larger than the statistic would fail."""
    exact = exact_p_values(num_replicates, num_ranked)
    for vector in list(exact)[::5]:
        got = rank_ecdf_test(np.array(vector), num_ranked)
        assert got == pytest.approx(float(exact[vector]), abs=1e-12), vector


def test_tiny_p_values_and_null_p_values_are_uniform():
    rng = np.random.default_rng(0)
    # Ranks piled in the middle (posteriors too wide): p far below any Monte Carlo reach.
    assert rank_ecdf_test(rng.integers(30, 70, size=500), 99) < 1e-50
    # Uniform ranks: P(p <= a) = a up to the counts' discreteness (conservative); at
    # N = 100, L = 99 within 4.5 binomial standard errors of a over 400 sets.
    p_values = np.array([rank_ecdf_test(rng.integers(0, 100, size=100), 99) for _ in range(400)])
    for level in (0.1, 0.5):
        bound = 4.5 * np.sqrt(level * (1 - level) / p_values.size)
        assert abs(np.mean(p_values <= level) - level) < bound, (level, np.mean(p_values <= level))


def test_band_is_the_narrowest_with_its_level():
    """By enumeration: uniform ranks leave the band with probability at most alpha, and
    the next narrower band (the next distinct marginal level) more than alpha."""
    num_replicates, num_ranked, alpha = 6, 3, 0.2
    band = rank_ecdf_band(num_replicates, num_ranked, alpha=alpha)
    vectors = np.array(list(itertools.product(range(num_ranked + 1), repeat=num_replicates)))
    histograms = np.stack([np.bincount(v, minlength=num_ranked + 1) for v in vectors])
    counts = np.cumsum(histograms, axis=1)[:, :num_ranked]

    def escape(allowed_low, allowed_high):
        return np.mean(np.any((counts < allowed_low) | (counts > allowed_high), axis=1))

    low, high = np.rint(band * num_replicates)
    assert escape(low, high) <= alpha
    tails = _marginal_tail_probabilities(num_replicates, num_ranked)
    inside = tails[np.arange(num_ranked)[:, None], np.arange(num_replicates + 1)[None, :]]
    level = inside[(np.arange(num_replicates + 1)[None, :] >= low[:, None])
                   & (np.arange(num_replicates + 1)[None, :] <= high[:, None])].min()  # fmt: skip
    narrower = tails > level * (1 + 1e-9)
    grid = np.arange(num_replicates + 1)
    narrower_low = np.where(narrower, grid, num_replicates + 1).min(axis=1)
    narrower_high = np.where(narrower, grid, -1).max(axis=1)
    assert escape(narrower_low, narrower_high) > alpha


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
    with pytest.warns(SamplingWarning, match=r"\d+ of 12 replicates' runs warned"):
        result = sbc(normal_model, observed="y", num_replicates=12, num_ranked=9, seed=3,
                     chains=1, warmup=200, draws=500, progress=False)  # fmt: skip
    assert 1 <= result.num_warned <= 12
    assert set(result.ranks) == {"mu", "sigma"}
    assert result.ranks["mu"].shape == (12,) and result.p_values["mu"].shape == ()
    assert all(r.min() >= 0 and r.max() <= 9 for r in result.ranks.values())
    assert result.labels() == ["mu", "sigma"] and 0.0 <= result.p_value() <= 1.0
    assert np.all(result.min_ess > 0)
    figure = result.plot()
    assert len(figure.axes) == 2


def test_sbc_warns_when_the_ranked_draws_are_autocorrelated():
    # Ranking among all 200 draws of one chain, never extended: some component's ESS is
    # below 200.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = sbc(normal_model, observed="y", num_replicates=3, num_ranked=200, seed=3,
                     chains=1, warmup=150, draws=200, max_extensions=0, progress=False)  # fmt: skip
    messages = [str(w.message) for w in caught if w.category is SamplingWarning]
    assert any(re.search("bulk ESS .* is below `num_ranked` = 200", m) for m in messages)
    assert np.all(result.draws == 200)


def test_sbc_thins_by_ess_by_extending_short_runs():
    # 100 draws of one chain, ranked among 100: replicates whose bulk ESS is below 100 are
    # refitted with 200, then 400 draws, so every replicate ends with an ESS of at least 100
    # (thinning by ESS) and no ESS warning.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = sbc(normal_model, observed="y", num_replicates=6, num_ranked=100, seed=3,
                     chains=1, warmup=150, draws=100, progress=False)  # fmt: skip
    messages = [str(w.message) for w in caught if w.category is SamplingWarning]
    assert not any("bulk ESS" in m for m in messages), messages
    assert set(result.draws) <= {100, 200, 400} and result.draws.max() > 100, result.draws
    assert np.all(result.min_ess >= 100), result.min_ess


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
