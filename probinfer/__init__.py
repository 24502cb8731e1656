"""probinfer: composable, jit-compiled Bayesian inference on JAX.

``pi.sample`` is the one-call door; ``probinfer.mcmc`` holds the building blocks and
``probinfer.nngp`` the neural-network Gaussian processes and their scale mixtures;
``probinfer.amortize`` (prior-data fitted networks) is imported on first use.
"""

import importlib
from types import ModuleType
from typing import TYPE_CHECKING

from probinfer import mcmc, nngp, ns, smc
from probinfer._predictive import predictive, sample_prior
from probinfer.api import EvidenceResult, evidence, sample
from probinfer.diagnostics import summary
from probinfer.model import LogDensity, Target, from_numpyro

if TYPE_CHECKING:  # for type checkers; at run time `__getattr__` imports it on first use
    from probinfer import amortize

__version__ = "0.1.0"

_LAZY_SUBMODULES = ("amortize",)


def __getattr__(name: str) -> ModuleType:
    """Import lazy submodules (``pi.amortize``) on first attribute access."""
    if name in _LAZY_SUBMODULES:
        return importlib.import_module(f"probinfer.{name}")
    raise AttributeError(f"module 'probinfer' has no attribute {name!r}")


__all__ = [
    "EvidenceResult",
    "LogDensity",
    "Target",
    "amortize",
    "evidence",
    "from_numpyro",
    "mcmc",
    "nngp",
    "ns",
    "predictive",
    "sample",
    "sample_prior",
    "smc",
    "summary",
]
