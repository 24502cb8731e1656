"""Convergence diagnostics (ESS, R-hat, MCSE) computed by ArviZ, and the run checks.

:func:`check_run` reads an MCMC run's ``InferenceData`` and returns one message per problem
that a Stan user would be warned about; :func:`probinfer.sample` issues each as a
:class:`SamplingWarning`.
"""

import contextlib
import logging
import warnings
from collections.abc import Iterator
from typing import Any, cast

import arviz as az
import numpy as np
import pandas as pd

RHAT_MAX = 1.01  # rank-normalized split R-hat above this: chains disagree (Vehtari et al. 2021)
ESS_PER_CHAIN_MIN = 100.0  # bulk or tail ESS per chain below this: estimates too noisy
EBFMI_MIN = 0.3  # energy Bayesian fraction of missing information below this (Betancourt)
# Non-finite proposals only during warm-up are reported above this fraction of its
# transitions: a few come from the first, too long steps of the step-size search.
WARMUP_NONFINITE_FRACTION = 0.01
FLOAT32_ENERGY_NATS = 0.01  # rounding of the energy in float32 that distorts acceptance
STUCK_ACCEPTANCE = 1e-3  # a chain's mean acceptance below this: it has not moved


class SamplingWarning(UserWarning):
    """A problem with a run's draws: divergences, poor mixing, saturated trees, lost precision."""


@contextlib.contextmanager
def _quiet_arviz() -> Iterator[None]:
    """ArviZ logs "Shape validation failed" for one chain, whose split R-hat and ESS are
    still defined (the halves of the chain are compared): silence its log meanwhile."""
    # ArviZ 0.23 logs through its own `Logger("arviz")` instance, not the registered one.
    logger = getattr(az, "_log", None) or logging.getLogger("arviz")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def summary(idata: az.InferenceData, **kwargs: Any) -> pd.DataFrame:
    """ArviZ's posterior summary: mean, sd, HDI, MCSE, bulk/tail ESS and R-hat per site.

    Args:
        idata: output of :func:`probinfer.sample`.
        **kwargs: passed to :func:`arviz.summary` (e.g. ``var_names``, ``hdi_prob``).

    Returns:
        A data frame with one row per scalar component.
    """
    # A data frame for the default `fmt="wide"` (and "long"); `fmt="xarray"` in kwargs is the
    # caller's explicit choice of a Dataset.
    return cast(pd.DataFrame, az.summary(idata, **kwargs))


def _extreme(values: Any, *, largest: bool) -> tuple[float, str]:
    """The largest (or smallest) finite value over every site and component, and where it
    is (``'site'[i, j]``); ``(nan, "")`` when there is none."""
    best, where = np.nan, ""
    for name, array in values.data_vars.items():
        data = np.asarray(array.values, np.float64)
        if not np.any(np.isfinite(data)):
            continue
        masked = np.where(np.isfinite(data), data, -np.inf if largest else np.inf)
        index = np.unravel_index(np.argmax(masked) if largest else np.argmin(masked), data.shape)
        value = float(data[index])
        if np.isnan(best) or (value > best if largest else value < best):
            label = f"[{', '.join(map(str, index))}]" if data.ndim else ""
            best, where = value, f"'{name}'{label}"
    return best, where


def check_run(
    idata: az.InferenceData,
    *,
    max_num_doublings: int | None = None,
    num_warmup_nonfinite: int | None = None,
) -> list[str]:
    """The problems a Stan user would be warned about, one message each with the fix.

    Checks, in order: divergences after warm-up; chains that accepted (almost) nothing;
    NUTS trees that hit the depth limit;
    E-BFMI below 0.3 in any chain (NUTS and HMC); rank-normalized split R-hat above 1.01;
    bulk or tail ESS below 100 per chain; proposals with a non-finite log density after
    warm-up (with the warm-up's count beside), or during warm-up only when more than 1% of
    its transitions had one; log densities so large that float32 energies lose more than
    0.01 nats.

    Args:
        idata: an MCMC run's output, with ``posterior`` and ``sample_stats`` (``lp``,
            ``diverging``, ``acceptance_rate``; ``tree_depth`` and ``energy`` for NUTS/HMC)
            and ``attrs``
            (``method``, ``num_warmup``, ``num_nonfinite_proposals``).
        max_num_doublings: the NUTS depth limit of the run; default
            ``attrs["max_num_doublings"]`` (absent: not NUTS, no depth check).
        num_warmup_nonfinite: non-finite proposals during warm-up; default
            ``attrs["num_nonfinite_warmup_proposals"]`` (absent: 0).

    Returns:
        The messages, empty when nothing is wrong.
    """
    if max_num_doublings is None and "max_num_doublings" in idata.attrs:
        max_num_doublings = int(idata.attrs["max_num_doublings"])
    if num_warmup_nonfinite is None:
        num_warmup_nonfinite = int(idata.attrs.get("num_nonfinite_warmup_proposals", 0))
    stats = idata["sample_stats"]
    chains, draws = stats["lp"].shape[:2]
    total = chains * draws
    messages = []
    num_divergent = int(stats["diverging"].values.sum())
    if num_divergent:
        messages.append(
            f"{num_divergent} of {total} transitions after warm-up diverged: the draws may "
            "miss part of the posterior. Raise `target_acceptance` (e.g. 0.95) or "
            "reparameterize (e.g. non-centered hierarchical scales)."
        )
    acceptance = np.asarray(stats["acceptance_rate"].values, np.float64).mean(axis=1)
    stuck = [str(chain) for chain, rate in enumerate(acceptance) if rate < STUCK_ACCEPTANCE]
    if stuck:
        messages.append(
            f"chain(s) {', '.join(stuck)} accepted almost no proposal after warm-up (mean "
            f"acceptance below {STUCK_ACCEPTANCE}): they are stuck, and their draws repeat "
            "one point. Check the model where they started (a NaN or very steep log "
            "density), or pass a smaller `step_size`."
        )
    if max_num_doublings is not None:
        saturated = int((stats["tree_depth"].values >= max_num_doublings).sum())
        if saturated:
            messages.append(
                f"{saturated} of {total} transitions hit the maximum tree depth "
                f"({max_num_doublings}): trajectories were cut short, so the chains move "
                "slowly. Raise `max_num_doublings`, or reparameterize (strong correlations "
                "or very different scales need a dense metric, `metric='dense'`)."
            )
    if idata.attrs.get("method") in ("nuts", "hmc") and draws > 1:
        # In float64: ArviZ's E-BFMI of float32 energies near 2e5 comes out negative.
        bfmi = np.atleast_1d(az.bfmi(np.asarray(stats["energy"].values, np.float64)))
        low = [f"{chain}: {value:.2f}" for chain, value in enumerate(bfmi) if value < EBFMI_MIN]
        if low:
            messages.append(
                f"E-BFMI below {EBFMI_MIN} in chain(s) {', '.join(low)}: the momentum "
                "resampling explores the energy distribution poorly (often heavy tails or a "
                "funnel). Reparameterize (e.g. non-centered scales, a log transform)."
            )
    if draws >= 4:
        with warnings.catch_warnings(), _quiet_arviz():
            warnings.simplefilter("ignore", RuntimeWarning)  # constant draws divide by zero
            posterior = idata["posterior"].astype(np.float64)
            rhat_all = az.rhat(posterior)
            ess_all = {kind: az.ess(posterior, method=kind) for kind in ("bulk", "tail")}
        rhat, where = _extreme(rhat_all, largest=True)
        if rhat > RHAT_MAX:
            messages.append(
                f"R-hat is {rhat:.3f} for {where} (above {RHAT_MAX}): the chains disagree, "
                "so they have not converged to one distribution. Run longer (more `warmup` "
                "and `draws`), or reparameterize."
            )
        for kind in ("bulk", "tail"):
            ess, where = _extreme(ess_all[kind], largest=False)
            if ess < ESS_PER_CHAIN_MIN * chains:
                messages.append(
                    f"{kind} ESS is {ess:.0f} for {where}, under {ESS_PER_CHAIN_MIN:.0f} per "
                    f"chain ({ESS_PER_CHAIN_MIN * chains:.0f} for {chains} chains): "
                    f"{'means' if kind == 'bulk' else 'tail quantiles and intervals'} are "
                    "unreliable. Run more `draws`."
                )
    num_nonfinite = int(idata.attrs.get("num_nonfinite_proposals", 0))
    warmup_transitions = chains * int(idata.attrs.get("num_warmup", 0))
    if num_nonfinite:
        messages.append(
            f"{num_nonfinite} proposals after warm-up (and {num_warmup_nonfinite} during it) "
            "had a NaN or infinite log density and were rejected (they are counted, never "
            "kept): the model is undefined in part of the space the sampler visits; check "
            "supports and data."
        )
    elif num_warmup_nonfinite > WARMUP_NONFINITE_FRACTION * warmup_transitions:
        messages.append(
            f"{num_warmup_nonfinite} proposals during warm-up ({warmup_transitions} "
            "transitions; none after it) had a NaN or infinite log density and were rejected, "
            "too many to come only from the first, too long steps: the model is undefined in "
            "part of the space the sampler visits; check supports and data."
        )
    lp = stats["lp"].values
    if lp.dtype == np.float32 and np.any(np.isfinite(lp)):
        largest = float(np.nanmax(np.abs(np.where(np.isfinite(lp), lp, np.nan))))
        rounding = largest * float(np.finfo(np.float32).eps)
        if rounding > FLOAT32_ENERGY_NATS:
            messages.append(
                f"|log density| reaches {largest:.3g}, where float32 rounds energies by "
                f"{rounding:.2g} nats (over {FLOAT32_ENERGY_NATS}): acceptance decisions "
                "and divergence checks lose precision. Enable float64 before anything else "
                "runs: `jax.config.update('jax_enable_x64', True)`."
            )
    return messages
