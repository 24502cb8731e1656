"""Independent Gaussians in 10 dimensions: a sanity check with different scales per axis.

Model:
    x ~ Normal(loc, scale), elementwise, d = 10,
    loc = linspace(-2, 2, 10), scale = linspace(0.5, 3, 10).

Data: none; ``loc`` and ``scale`` are fixed vectors passed as arguments.

Reference: analytic. The posterior is the prior, so mean = loc, sd = scale, and the density
is normalized, so log_z = 0.
"""

import jax.typing
import numpy as np
import numpyro
import numpyro.distributions as dist

from probinfer.zoo._reference import Reference, SiteMoments

__all__ = ["data", "model", "reference"]

NUM_DIMS = 10


def model(loc: jax.typing.ArrayLike, scale: jax.typing.ArrayLike) -> None:
    """Independent normals.

    Args:
        loc: means, shape (d,).
        scale: standard deviations, shape (d,).
    """
    numpyro.sample("x", dist.Normal(loc, scale).to_event(1))


def data() -> tuple[tuple, dict]:
    """The fixed means and standard deviations.

    Returns:
        ``((loc, scale), {})``, each of shape (10,).
    """
    loc = np.linspace(-2.0, 2.0, NUM_DIMS)
    scale = np.linspace(0.5, 3.0, NUM_DIMS)
    return (loc, scale), {}


def _reference() -> Reference:
    (loc, scale), _ = data()
    return Reference(
        moments={"x": SiteMoments(mean=loc, sd=scale)},
        log_z=0.0,
        source="analytic",
    )


reference: Reference = _reference()
