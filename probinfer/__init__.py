"""probinfer: composable, jit-compiled Bayesian inference on JAX.

``pi.sample`` is the one-call door; ``probinfer.mcmc`` holds the building blocks and
``probinfer.nngp`` the neural-network Gaussian processes and their scale mixtures.
"""

from probinfer import mcmc, nngp, smc
from probinfer.api import EvidenceResult, evidence, sample
from probinfer.diagnostics import summary
from probinfer.model import LogDensity, Target, from_numpyro

__version__ = "0.1.0"

__all__ = [
    "EvidenceResult",
    "LogDensity",
    "Target",
    "evidence",
    "from_numpyro",
    "mcmc",
    "nngp",
    "sample",
    "smc",
    "summary",
]
