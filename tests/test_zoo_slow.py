"""NUTS through `pi.sample` on the zoo models against their reference posteriors (slow suite).

Every coordinate of every reference site: the mean (z = 4 on the run's and the reference's
combined MCSE, ESS >= 400 first) and, for the exact references, the variance via squared
deviations from the reference mean. The
centered funnel is left out: NUTS cannot reach its neck (a known limitation, reported by
`probinfer bench`), and sd(x) there is not z-testable (kurtosis ~3e9). So is the bimodal
gaussian_mixture_2d: its modes are 15 sd apart and a chain stays in the mode it starts in
(tempered SMC is checked on a mixture like it in test_smc.py, and on this model by
`probinfer bench --methods smc`).
"""

import warnings

import numpy as np
import pytest
from _stats import assert_checks, check_expectation, failures

import probinfer as pi
from probinfer import zoo
from probinfer.diagnostics import SamplingWarning

# 4 chains x 2000 draws per zoo model: these tests spend their time running.
pytestmark = pytest.mark.optimized

MODELS = [name for name in zoo.names() if name not in ("neals_funnel", "gaussian_mixture_2d")]
# Divergences every NUTS implementation has on these models (docs/benchmarks.md), and the
# few non-finite proposals (exp overflow) at their far ends: expected, so only those two
# warnings are silenced for them; any other run check still fails the test.
DIVERGENT = ("gp_poisson",)
# Eight schools at the default target acceptance 0.8 sits at the edge: 0-5 divergences in
# 8,000 transitions depending on float rounding (every library has some: docs/benchmarks.md);
# Stan's remedy, a higher target, removes them, so the run checks stay strict.
SETTINGS = {"eight_schools_noncentered": {"target_acceptance": 0.95}}
# gp_poisson mixes slowly in its amplitude: with 2,000 draws per chain the largest R-hat was
# 1.004-1.010 over seeds 11-14 (at the 1.01 warning, so float rounding decided the test);
# with 4,000 it was 1.001-1.004.
DRAWS = {"gp_poisson": 4000}


def zoo_checks(name: str, shift_in_sd: float = 0.0) -> list:
    zoo_model = zoo.get(name)
    args, kwargs = zoo_model.data()
    with warnings.catch_warnings():
        if name in DIVERGENT:
            warnings.filterwarnings("ignore", ".*diverged", SamplingWarning)
            warnings.filterwarnings("ignore", ".*NaN or infinite log density", SamplingWarning)
        idata = pi.sample(
            zoo_model.model,
            *args,
            chains=4,
            warmup=1000,
            draws=DRAWS.get(name, 2000),
            seed=11,
            progress=False,
            **SETTINGS.get(name, {}),
            **kwargs,
        )
    checks = []
    for site, ref in zoo_model.reference.moments.items():
        draws = idata.posterior[site].values
        draws = draws.reshape(draws.shape[0], draws.shape[1], -1)
        mean, sd = np.ravel(ref.mean), np.ravel(ref.sd)
        truth = mean + shift_in_sd * sd
        # A long-run reference carries its own MCSE (an exact one none).
        ref_mcse = np.zeros_like(mean) if ref.mcse_mean is None else np.ravel(ref.mcse_mean)
        for i in range(draws.shape[-1]):
            checks.append(
                check_expectation(
                    draws[..., i], truth[i], name=f"{site}[{i}] mean", truth_mcse=ref_mcse[i]
                )
            )
            if ref.mcse_sd is None:
                checks.append(
                    check_expectation(
                        (draws[..., i] - mean[i]) ** 2, sd[i] ** 2, name=f"{site}[{i}] var"
                    )
                )
    return checks


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_nuts_matches_zoo_reference(name):
    assert_checks(zoo_checks(name))


@pytest.mark.slow
def test_zoo_check_fails_on_shifted_reference():
    """Means shifted by 0.3 posterior sd are caught."""
    bad = failures(zoo_checks("linear_regression", shift_in_sd=0.3))
    assert len(bad) >= 6, "the shifted means of all 6 coordinates should fail"
