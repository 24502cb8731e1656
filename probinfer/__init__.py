"""probinfer: composable, jit-compiled Bayesian inference on JAX.

``pi.sample`` is the one-call door; ``probinfer.mcmc`` holds the building blocks and
``probinfer.nngp`` the neural-network Gaussian processes and their scale mixtures;
``probinfer.amortize`` holds the prior-data fitted networks and distribution transformers.

Every name here is imported on first use, so that ``import probinfer`` (and the
``probinfer --help`` command) starts without importing JAX.
"""

import importlib
import importlib.util
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # for type checkers; at run time `__getattr__` imports on first use
    from probinfer import amortize, mcmc, nngp, ns, smc
    from probinfer._predictive import predictive, sample_prior
    from probinfer.api import EvidenceResult, evidence, sample
    from probinfer.checkpoint import save_netcdf
    from probinfer.diagnostics import summary
    from probinfer.model import LogDensity, Target, from_numpyro

__version__ = "0.1.0"

_ATTRIBUTES = {
    "EvidenceResult": "probinfer.api",
    "LogDensity": "probinfer.model",
    "Target": "probinfer.model",
    "evidence": "probinfer.api",
    "from_numpyro": "probinfer.model",
    "predictive": "probinfer._predictive",
    "sample": "probinfer.api",
    "sample_prior": "probinfer._predictive",
    "save_netcdf": "probinfer.checkpoint",
    "summary": "probinfer.diagnostics",
}


def __getattr__(name: str) -> Any:
    """Import ``pi.<name>`` on first use: a public function or class, or any public
    submodule (``pi.mcmc``, ``pi.diagnostics``, ``pi.zoo``, ...)."""
    if name in _ATTRIBUTES:
        value = getattr(importlib.import_module(_ATTRIBUTES[name]), name)
        globals()[name] = value  # later lookups skip this function
        return value
    if not name.startswith("_") and importlib.util.find_spec(f"probinfer.{name}") is not None:
        return importlib.import_module(f"probinfer.{name}")
    raise AttributeError(f"module 'probinfer' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


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
    "save_netcdf",
    "smc",
    "summary",
]
