"""probinfer: composable, jit-compiled Bayesian inference on JAX.

``pi.sample`` is the one-call door; ``probinfer.mcmc`` holds the building blocks and
``probinfer.nngp`` the neural-network Gaussian processes and their scale mixtures.
"""

from probinfer import mcmc, nngp
from probinfer.api import sample
from probinfer.diagnostics import summary
from probinfer.model import LogDensity, Target, from_numpyro

__version__ = "0.1.0"

__all__ = ["LogDensity", "Target", "from_numpyro", "mcmc", "nngp", "sample", "summary"]
