"""The zoo's exact references against independent computations (no sampling)."""

import numpy as np
import scipy.stats

from probinfer import zoo


def test_gaussian_mixture_reference_matches_quadrature():
    """log Z, the means and the sds of gaussian_mixture_2d by a 2-d grid sum of
    prior x likelihood (0.01 spacing over +-4 prior sd: error far below the tolerances)."""
    zoo_model = zoo.get("gaussian_mixture_2d")
    (y,), _ = zoo_model.data()
    grid = np.arange(-8.0, 8.0, 0.01)
    first, second = np.meshgrid(grid, grid, indexing="ij")
    prior = scipy.stats.norm.pdf(first, 0, 2.0) * scipy.stats.norm.pdf(second, 0, 2.0)
    likelihood = sum(
        probability
        * scipy.stats.norm.pdf(y[0], first + offset[0], 0.4)
        * scipy.stats.norm.pdf(y[1], second + offset[1], 0.4)
        for probability, offset in zip(zoo_model.OFFSET_PROBS, zoo_model.OFFSETS, strict=True)
    )
    joint = prior * likelihood * 0.01**2
    z = joint.sum()
    reference = zoo_model.reference
    np.testing.assert_allclose(np.log(z), reference.log_z, atol=1e-6)
    posterior = joint / z
    means = np.array([(posterior * first).sum(), (posterior * second).sum()])
    sds = np.sqrt(
        np.array([(posterior * first**2).sum(), (posterior * second**2).sum()]) - means**2
    )
    np.testing.assert_allclose(means, reference.moments["theta"].mean, atol=1e-6)
    np.testing.assert_allclose(sds, reference.moments["theta"].sd, atol=1e-6)
    # Both modes carry mass: the left one (offset +3) about 0.47.
    left = posterior[grid < 0].sum()
    assert 0.45 < left < 0.49, left
