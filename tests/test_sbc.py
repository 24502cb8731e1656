"""Simulation-based calibration of the NumPyro front end with NUTS (Talts et al., 2018).

For each replicate: draw parameters from the prior, simulate data, sample the posterior
with ``pi.sample`` and record the rank of the true parameter among thinned posterior
draws. If the front end (transforms, Jacobians, prior/likelihood terms) and the sampler
are right, the ranks are uniform. Uniformity is tested with a chi-square test over 10
bins at alpha = 5e-5 (the suite's per-assertion budget, STYLE section 9).

The replicates reuse one compiled program (new data values, same shapes), so each costs
only its sampling time.
"""

import warnings

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from scipy import stats

import probinfer as pi
from probinfer.diagnostics import SamplingWarning

# 200 replicate runs of one compiled program: running, not compiling.
pytestmark = pytest.mark.optimized

NUM_OBSERVATIONS = 5
NUM_REPLICATES = 200
NUM_THINNED = 99  # ranks take values 0..99: 10 bins of 10
ALPHA = 5e-5


def make_model(prior_scale: float):
    def model(y):
        mu = numpyro.sample("mu", dist.Normal(0.0, prior_scale))
        sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
        numpyro.sample("y", dist.Normal(mu, sigma).expand([NUM_OBSERVATIONS]), obs=y)

    return model


def sbc_p_values(fit_prior_scale: float) -> dict[str, float]:
    """Chi-square p-values of the SBC ranks of mu and sigma, data simulated with scale 1."""
    fit_model = make_model(fit_prior_scale)
    rng = np.random.default_rng(0)
    ranks = {"mu": [], "sigma": []}
    for replicate in range(NUM_REPLICATES):
        mu = rng.normal(0.0, 1.0)
        sigma = np.abs(rng.normal(0.0, 1.0))
        y = jnp.asarray(rng.normal(mu, sigma, NUM_OBSERVATIONS), jnp.float32)
        with warnings.catch_warnings():
            # 200 small runs: a few divergences (5 data points, a scale) are expected;
            # the ranks, not the per-run diagnostics, judge the calibration.
            warnings.simplefilter("ignore", SamplingWarning)
            idata = pi.sample(
                fit_model,
                y,
                chains=1,
                warmup=300,
                draws=NUM_THINNED * 10,
                seed=replicate,
                progress=False,
            )
        for name, truth in (("mu", mu), ("sigma", sigma)):
            draws = idata.posterior[name].values.reshape(-1)[::10]
            ranks[name].append(int(np.sum(draws < truth)))
    p_values = {}
    for name, values in ranks.items():
        counts = np.bincount(np.asarray(values) // 10, minlength=10)
        p_values[name] = float(stats.chisquare(counts).pvalue)
    return p_values


@pytest.mark.slow  # a long statistical check (18 s): `make test-slow`
def test_sbc_ranks_are_uniform():
    """Ranks of mu and sigma are uniform (false-failure rate ~1e-4 by construction)."""
    p_values = sbc_p_values(fit_prior_scale=1.0)
    assert min(p_values.values()) > ALPHA, p_values


@pytest.mark.slow  # a long statistical check (10-20 s): `make test-slow`
def test_sbc_detects_a_wrong_prior():
    """Fitting with a prior 3x too narrow on mu skews the ranks: the check can fail."""
    p_values = sbc_p_values(fit_prior_scale=1.0 / 3.0)
    assert p_values["mu"] < ALPHA, p_values
