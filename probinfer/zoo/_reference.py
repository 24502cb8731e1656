"""Reference posteriors for the model zoo: exact moments per site and the log evidence.

A reference is either exact (closed form or quadrature; no MCSE) or taken from long,
cross-checked runs (MCSE given). Long-run references live as JSON files in
``probinfer/zoo/references/`` and are read with :func:`load_reference`.
"""

import json
from pathlib import Path
from typing import NamedTuple

import numpy as np

__all__ = ["Reference", "SiteMoments", "load_reference", "save_reference"]


class SiteMoments(NamedTuple):
    """Posterior mean and standard deviation of one site, elementwise, in constrained space.

    ``mcse_mean`` and ``mcse_sd`` are the Monte Carlo standard errors of ``mean`` and ``sd``;
    they are ``None`` when the moments are exact.
    """

    mean: np.ndarray
    sd: np.ndarray
    mcse_mean: np.ndarray | None = None
    mcse_sd: np.ndarray | None = None


class Reference(NamedTuple):
    """The reference posterior of one zoo model.

    ``moments`` maps each constrained-space site name (latent and deterministic) to its
    moments, arrays with the site's shape. ``log_z`` is log p(data) when known exactly, else
    ``None``. ``source`` says in one line how the reference was obtained.
    """

    moments: dict[str, SiteMoments]
    log_z: float | None
    source: str


def _to_list(array: np.ndarray | None) -> list | float | None:
    return None if array is None else np.asarray(array, dtype=float).tolist()


def _to_array(value: list | float | None) -> np.ndarray | None:
    return None if value is None else np.asarray(value, dtype=float)


def save_reference(reference: Reference, path: str | Path) -> None:
    """Write a reference to a JSON file, arrays as nested lists.

    Args:
        reference: the reference to write.
        path: the JSON file to create or overwrite.
    """
    content = {
        "source": reference.source,
        "log_z": reference.log_z,
        "moments": {
            name: {field: _to_list(value) for field, value in site._asdict().items()}
            for name, site in reference.moments.items()
        },
    }
    Path(path).write_text(json.dumps(content, indent=1) + "\n")


def load_reference(path: str | Path) -> Reference:
    """Read a reference written by :func:`save_reference`.

    Args:
        path: the JSON file to read.

    Returns:
        The reference, with float64 numpy arrays.
    """
    content = json.loads(Path(path).read_text())
    moments = {
        name: SiteMoments(
            mean=np.asarray(site["mean"], dtype=float),
            sd=np.asarray(site["sd"], dtype=float),
            mcse_mean=_to_array(site.get("mcse_mean")),
            mcse_sd=_to_array(site.get("mcse_sd")),
        )
        for name, site in content["moments"].items()
    }
    log_z = content["log_z"]
    return Reference(
        moments=moments,
        log_z=None if log_z is None else float(log_z),
        source=content["source"],
    )
