"""MCSE-based checks of Monte Carlo estimates against exact values (STYLE section 9).

Every statistical assertion in the suite goes through :func:`check_expectation`: the
estimate is the sample mean of ``values`` (draws of some function ``f`` of the position),
its Monte Carlo standard error is ``sd(f) / sqrt(ess(f))`` with the ESS from ArviZ
(``method="mean"``, the ESS that governs the error of a mean), and the check passes when

    ess >= min_ess   and   |estimate - truth| < z * mcse.

Means use ``f = x``, variances ``f = (x - mean)^2`` and covariances
``f = (x_i - mean_i)(x_j - mean_j)``. The ESS gate comes first, so a stuck sampler (tiny
ESS, huge MCSE) cannot pass. ``z = 4`` is the suite-wide choice: two-sided alpha ~ 6e-5 per
assertion, so ~200 assertions give at most ~1 spurious failure in 100 CI runs.

Checks *return* a result instead of asserting, so a test can also show that a check fails
against a deliberately wrong truth.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import arviz as az
import numpy as np

Z = 4.0
MIN_ESS = 400.0


@dataclass(frozen=True)
class Check:
    """The outcome of one MCSE check."""

    name: str
    estimate: float
    truth: float
    mcse: float
    ess: float
    z: float
    min_ess: float

    @property
    def is_precise(self) -> bool:
        return bool(self.ess >= self.min_ess)

    @property
    def ok(self) -> bool:
        return self.is_precise and bool(abs(self.estimate - self.truth) < self.z * self.mcse)

    def __str__(self) -> str:
        verdict = "ok" if self.ok else ("ESS TOO LOW" if not self.is_precise else "FAIL")
        return (
            f"{self.name}: estimate {self.estimate:.4g} truth {self.truth:.4g} "
            f"|err|/mcse {abs(self.estimate - self.truth) / self.mcse:.2f} (z {self.z}) "
            f"ess {self.ess:.0f} (min {self.min_ess:.0f}) -> {verdict}"
        )


def effective_sample_size(values: np.ndarray, *, iid: bool = False) -> float:
    """ArviZ mean-ESS of ``values`` shaped ``(chain, draw)``; ``n`` for independent draws."""
    values = np.asarray(values, np.float64)
    if iid:
        return float(values.size)
    if not np.all(np.isfinite(values)) or np.ptp(values) == 0.0:
        return 0.0
    return float(az.ess(values, method="mean"))


def check_expectation(
    values: np.ndarray,
    truth: float,
    *,
    name: str,
    z: float = Z,
    min_ess: float = MIN_ESS,
    iid: bool = False,
    truth_mcse: float = 0.0,
) -> Check:
    """Check that the mean of ``values`` ``(chain, draw)`` estimates ``truth``.

    With ``iid=True`` the draws are treated as independent (ESS = number of values); use
    it for final states of independent chains and for exact prior draws. A ``truth`` that
    is itself a Monte Carlo estimate (a long-run reference) brings its own standard error,
    ``truth_mcse``, combined with the run's: ``sqrt(mcse^2 + truth_mcse^2)``.
    """
    values = np.asarray(values, np.float64)
    if values.ndim == 1:
        values = values[None]
    ess = effective_sample_size(values, iid=iid)
    sd = float(np.std(values, ddof=1)) if np.all(np.isfinite(values)) else np.nan
    mcse = sd / np.sqrt(ess) if ess > 0 else np.inf
    mcse = float(np.hypot(mcse, truth_mcse))
    return Check(name, float(np.mean(values)), float(truth), float(mcse), ess, z, min_ess)


def check_moments(
    draws: np.ndarray,
    mean: np.ndarray,
    cov: np.ndarray,
    *,
    z: float = Z,
    min_ess: float = MIN_ESS,
    iid: bool = False,
    covariances: bool = True,
) -> list[Check]:
    """Means, variances and (optionally) all pairwise covariances of ``(chain, draw, dim)``.

    Args:
        draws: the draws, shape ``(chain, draw, dim)``.
        mean: the exact mean ``(dim,)``.
        cov: the exact covariance ``(dim, dim)``.
        z: the z threshold.
        min_ess: the ESS gate.
        iid: treat the draws as independent.
        covariances: also check the off-diagonal covariances.

    Returns:
        One :class:`Check` per mean, variance and (if asked) covariance.
    """
    draws = np.asarray(draws, np.float64)
    mean, cov = np.asarray(mean), np.asarray(cov)
    dim = draws.shape[-1]
    centered = draws - draws.mean(axis=(0, 1))
    options = {"z": z, "min_ess": min_ess, "iid": iid}
    checks = [
        check_expectation(draws[..., i], mean[i], name=f"mean[{i}]", **options) for i in range(dim)
    ]
    checks += [
        check_expectation(centered[..., i] ** 2, cov[i, i], name=f"var[{i}]", **options)
        for i in range(dim)
    ]
    if covariances:
        checks += [
            check_expectation(
                centered[..., i] * centered[..., j], cov[i, j], name=f"cov[{i},{j}]", **options
            )
            for i, j in itertools.combinations(range(dim), 2)
        ]
    return checks


def failures(checks: list[Check]) -> list[Check]:
    """The checks that failed (ESS gate or estimate)."""
    return [c for c in checks if not c.ok]


def assert_checks(checks: list[Check]) -> None:
    """Assert that every check passes; the message lists every check."""
    bad = failures(checks)
    assert not bad, "MCSE checks failed:\n" + "\n".join(str(c) for c in checks)
