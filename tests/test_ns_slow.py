"""Nested sampling at higher dimension, and its error bars against the spread of repeated runs
(slow suite: ``make test-slow``)."""

import numpy as np
import pytest

import probinfer as pi
from tests.test_ns import Z_T, box_log_z, box_loglikelihood, identity

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("dim", [10, 30])
def test_gaussian_box_evidence_in_higher_dimensions(dim):
    result = pi.evidence(
        box_loglikelihood, prior_transform=identity, dim=dim, method="ns", seed=dim, progress=False
    )
    truth = box_log_z(dim)
    assert abs(result.log_z - truth) < Z_T * result.log_z_err, (result.log_z, truth)
    x = result.idata.posterior["x"].values[0]
    # Posterior sd 0.1 per coordinate: the equally weighted draws' mean over coordinates.
    assert abs(np.mean(np.std(x, axis=0)) - 0.1) < 0.01


def test_reported_error_matches_the_spread_of_repeated_runs():
    """30 runs of the 2-d box (200 live points): if ``log_z_err`` is honest, the errors
    divided by it have unit variance; their rms from 30 runs has a standard deviation of
    about 1 / sqrt(2 * 30) = 0.13, so it lies in [1 - 4 * 0.13, 1 + 4 * 0.13] unless the
    error bars are off by half. Measured (seeds 100-129): rms 1.16; bars half as wide would
    give 2.32."""
    ratios = []
    for seed in range(30):
        result = pi.evidence(
            box_loglikelihood,
            prior_transform=identity,
            dim=2,
            method="ns",
            seed=100 + seed,
            live_points=200,
            progress=False,
        )
        ratios.append((result.log_z - box_log_z(2)) / result.log_z_err)
    rms = float(np.sqrt(np.mean(np.square(ratios))))
    bound = Z_T / np.sqrt(2 * len(ratios))
    assert 1 - bound < rms < 1 + bound, (rms, ratios)
