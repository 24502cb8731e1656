"""Simulation-based calibration of the NumPyro front end with NUTS (harness: ``_sbc.py``).

NUM_REPLICATES data sets, all sampled in one ``pi.sample`` call (a plate over replicates),
ranks of ``mu`` and ``sigma`` among 99 thinned draws, a chi-square test per site at
alpha = 5e-5. The power of exactly this test, over 60 seeds
(``benchmarks/results/sbc_power/sbc_power.md``, at a930425):

- correct model: passes 60/60 at 500 replicates (median p 0.47 / 0.42 for mu / sigma,
  smallest 0.0025: the p-values behave as under the null, although one chain shares its
  adaptation between the replicates);
- dropped log-Jacobian of sigma: fails 59/60 at 500 replicates (98%; the one miss p
  2.2e-4), but only 22/60 at 200 (the old test's size: a dropped Jacobian went unnoticed
  in most seeds);
- prior on mu 3x too narrow: fails 60/60 at 200 and at 500.
"""

import pytest
from _sbc import ALPHA, HalfNormalNoJacobian, make_model, sbc_p_values

# One long run of a 1,000-d product posterior: running, not compiling.
pytestmark = pytest.mark.optimized

NUM_REPLICATES = 500


@pytest.mark.slow  # a long statistical check (~15 s): `make test-slow`
def test_sbc_ranks_are_uniform():
    """Ranks of mu and sigma are uniform."""
    p_values = sbc_p_values(make_model(), NUM_REPLICATES, seed=0)
    assert min(p_values.values()) > ALPHA, p_values


@pytest.mark.slow  # a long statistical check (~15 s): `make test-slow`
def test_sbc_detects_a_dropped_jacobian():
    """A half-normal whose unconstrained transform forgets its log-Jacobian skews the
    ranks of sigma: the test catches the bug a front end that drops Jacobians would have."""
    p_values = sbc_p_values(make_model(HalfNormalNoJacobian), NUM_REPLICATES, seed=0)
    assert p_values["sigma"] < ALPHA, p_values


@pytest.mark.slow  # a long statistical check (~15 s): `make test-slow`
def test_sbc_detects_a_wrong_prior():
    """Fitting with a prior on mu 3x too narrow (data from the true prior) skews its ranks."""
    p_values = sbc_p_values(make_model(mu_scale=1.0 / 3.0), NUM_REPLICATES, seed=0)
    assert p_values["mu"] < ALPHA, p_values
