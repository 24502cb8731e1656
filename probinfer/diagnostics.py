"""Convergence diagnostics (ESS, R-hat, MCSE), and the run checks.

:func:`summary` is ArviZ's; :func:`convergence` computes ArviZ's rank-normalized R-hat and
bulk/tail ESS for every component in one vectorized pass, about twice as fast (ArviZ
loops over components: 0.3-0.4 s for 4 chains x 1,000 draws of a 100-d model, about 8% of
that run's time).

:func:`check_run` reads an MCMC run's ``InferenceData`` and returns one message per problem
that a Stan user would be warned about; :func:`probinfer.sample` issues each as a
:class:`SamplingWarning`.

:func:`sbc` runs simulation-based calibration of any method on a NumPyro model and tests
the ranks with the exact rank-ECDF test (:func:`rank_ecdf_test`; ``probinfer._calibration``).
"""

import itertools
import math
from collections.abc import Iterator
from typing import Any, NamedTuple, cast

import arviz as az
import numpy as np
import pandas as pd
import scipy.fft
import scipy.special

from probinfer._validation import draws_by_site, nonfinite_counts

RHAT_MAX = 1.01  # rank-normalized split R-hat above this: chains disagree (Vehtari et al. 2021)
ESS_PER_CHAIN_MIN = 100.0  # bulk or tail ESS per chain below this: estimates too noisy
EBFMI_MIN = 0.3  # energy Bayesian fraction of missing information below this (Betancourt)
# Non-finite proposals only during warm-up are reported above this fraction of its
# transitions: a few come from the first, too long steps of the step-size search.
WARMUP_NONFINITE_FRACTION = 0.01
# HMC integrates its fixed number of steps even after the energy diverges (NUTS stops the
# tree), so each too-long step of the step-size search overflows to a non-finite proposal:
# 28 of 300 warm-up transitions (9%) on a five-point normal model with a half-normal scale.
WARMUP_NONFINITE_FRACTION_HMC = 0.25
FLOAT32_ENERGY_NATS = 0.01  # rounding of the energy in float32 that distorts acceptance
STUCK_ACCEPTANCE = 1e-3  # a chain's mean acceptance below this: it has not moved
# A chain is named when it holds over half of a run's divergences, diverged in at least
# DIVERGENT_CHAIN_RATE of its transitions, and DIVERGENT_CHAIN_RATIO times as often as the
# other chains or more. Divergences come in bursts, so a count test (binomial) fires on
# healthy runs: on gp_poisson it named a chain in 5 of 16 runs, 4 of them with good ESS
# (24 of 33 divergences, 2.4% of the chain's transitions); the failed run's chain
# diverged in 12% of its transitions.
DIVERGENT_CHAIN_RATE = 0.05
DIVERGENT_CHAIN_RATIO = 4.0
# Draws per block of components in `convergence`: its float64 copies and FFT buffers take
# about 100 bytes per draw of a block (25 MiB for a block of 2**18 draws).
CONVERGENCE_BLOCK_VALUES = 2**18


class SamplingWarning(UserWarning):
    """A problem with a run's draws: divergences, poor mixing, saturated trees, lost precision."""


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


class Convergence(NamedTuple):
    """Rank-normalized split R-hat and bulk/tail ESS of every scalar component.

    The values equal ArviZ's ``az.rhat`` and ``az.ess(method="bulk" | "tail")`` (Vehtari
    et al. 2021) to float64 rounding, computed for all components at once. One chain gets
    an R-hat too, from its two halves, as Stan computes it (ArviZ gives NaN).

    Attributes:
        rhat: ``(components,)``; NaN with fewer than 4 draws, NaN draws or constant draws.
        ess_bulk: ``(components,)``; NaN with fewer than 4 draws or NaN draws.
        ess_tail: ``(components,)``, the smaller of the 5% and 95% quantiles' ESS.
        labels: ``(components,)`` names such as ``'theta'[3]``.
    """

    rhat: np.ndarray
    ess_bulk: np.ndarray
    ess_tail: np.ndarray
    labels: list[str]


def _split_chains(x: np.ndarray) -> np.ndarray:
    """``(chain, draw, k)`` -> ``(2 chain, draw // 2, k)``: first and last halves (the
    middle draw of an odd count dropped)."""
    half = x.shape[1] // 2
    return np.concatenate([x[:, :half], x[:, x.shape[1] - half :]])


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """``(n, k)`` -> each column's ranks 1..n, ties given their average rank, NaN for a
    column holding NaN (as ``scipy.stats.rankdata(..., axis=0, method="average")``, 2-3x
    faster: each column is sorted contiguously, and by an unstable sort, since tied values
    share one rank)."""
    rows = np.ascontiguousarray(values.T)
    order = np.argsort(rows, axis=1)
    ordered = np.take_along_axis(rows, order, axis=1)
    count = rows.shape[1]
    position = np.broadcast_to(np.arange(count), rows.shape)
    starts = np.ones(rows.shape, dtype=bool)  # a tie group starts here
    starts[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    ends = np.ones(rows.shape, dtype=bool)  # ... ends here
    ends[:, :-1] = starts[:, 1:]
    first = np.maximum.accumulate(np.where(starts, position, 0), axis=1)
    last = np.minimum.accumulate(np.where(ends, position, count - 1)[:, ::-1], axis=1)[:, ::-1]
    ranks = np.empty(rows.shape)
    np.put_along_axis(ranks, order, (first + last) / 2.0 + 1.0, axis=1)
    ranks[np.isnan(rows).any(axis=1)] = np.nan
    return ranks.T


def _normal_scores(x: np.ndarray) -> np.ndarray:
    """Each component's values replaced by the normal quantiles of their ranks over all
    chains and draws (average ranks for ties, Blom's offset 3/8)."""
    flat = x.reshape(-1, x.shape[-1])
    ranks = _average_ranks(flat)
    return scipy.special.ndtri((ranks - 3 / 8) / (flat.shape[0] + 1 / 4)).reshape(x.shape)


def _basic_rhat(x: np.ndarray) -> np.ndarray:
    """Gelman-Rubin R-hat of ``(chain, draw, k)`` per component."""
    num_draws = x.shape[1]
    between = num_draws * x.mean(axis=1).var(axis=0, ddof=1)
    within = x.var(axis=1, ddof=1).mean(axis=0)
    return np.sqrt((between / within + num_draws - 1) / num_draws)


def _basic_ess(x: np.ndarray) -> np.ndarray:
    """ESS of ``(chain, draw, k)`` per component, by Geyer's initial monotone sequence.

    Autocorrelations averaged over chains (Stan's and ArviZ's estimator). Pairs of
    autocorrelations ``P_k = rho_2k + rho_2k+1`` are summed up to the first one that is not
    positive (among those with ``2k < draws - 2``), each replaced by the running minimum
    of the pairs before it; the truncating pair's even term is added when positive (or
    when the pair is exactly zero). A constant component has ESS ``chains x draws``.
    """
    num_chains, num_draws, _ = x.shape
    size = num_chains * num_draws
    centred = x - x.mean(axis=1, keepdims=True)
    length = scipy.fft.next_fast_len(2 * num_draws, real=True)
    spectrum = np.fft.rfft(centred, n=length, axis=1)
    autocov = np.fft.irfft(spectrum * np.conjugate(spectrum), n=length, axis=1)[:, :num_draws]
    mean_autocov = autocov.mean(axis=0) / num_draws  # (draw lag, k)
    mean_var = mean_autocov[0] * num_draws / (num_draws - 1.0)
    var_plus = mean_var * (num_draws - 1.0) / num_draws
    if num_chains > 1:
        var_plus = var_plus + x.mean(axis=1).var(axis=0, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = 1.0 - (mean_var - mean_autocov) / var_plus
    rho[0] = 1.0
    last_pair = max((num_draws - 3) // 2, 0)  # pairs k with 2k < draws - 2 are examined
    pairs = rho[0 : 2 * last_pair + 2 : 2] + rho[1 : 2 * last_pair + 2 : 2]  # (pair, k)
    stops = ~(pairs > 0)
    stops[last_pair] = True  # the last examined pair ends the sum in any case
    truncation = np.argmax(stops, axis=0)  # K: pairs 0 .. K-1 are summed
    truncation = np.where(stops[0], 0, truncation)
    monotone = np.minimum.accumulate(pairs, axis=0)
    summed = np.where(np.arange(pairs.shape[0])[:, None] < truncation, monotone, 0.0).sum(axis=0)
    columns = np.arange(x.shape[2])
    even = rho[2 * truncation, columns]
    kept = (truncation == 0) | (pairs[truncation, columns] >= 0) | (even > 0)
    tau = -1.0 + 2.0 * summed + np.where(truncation == 0, 1.0, np.where(kept, even, 0.0))
    ess = size / np.maximum(tau, 1 / np.log10(size))
    ess = np.where(np.isnan(rho).any(axis=0), np.nan, ess)
    return np.where(np.ptp(x, axis=(0, 1)) < np.finfo(float).resolution, float(size), ess)


def _type7_quantiles(values: np.ndarray, probs: tuple[float, ...]) -> np.ndarray:
    """Quantiles over axis 0, R's type 7 written as ArviZ computes it (``mquantiles`` with
    ``alphap = betap = 1``: ``(1 - g) x[k-1] + g x[k]``). Kept in that form, not
    ``np.quantile``'s: on tied draws the two can differ by an ulp, which moves a whole
    tie group across the quantile in the tail ESS."""
    ordered = np.sort(values, axis=0)
    count = ordered.shape[0]
    quantiles = []
    for prob in probs:
        aleph = count * prob + 1.0 - prob
        k = int(np.floor(np.clip(aleph, 1, count - 1)))
        gamma = float(np.clip(aleph - k, 0.0, 1.0))
        quantiles.append((1.0 - gamma) * ordered[k - 1] + gamma * ordered[k])
    return np.stack(quantiles)


def _component_convergence(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """R-hat, bulk ESS and tail ESS of ``(chain, draw, k)`` float64 draws (4 or more)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        split = _split_chains(x)
        bulk_scores = _normal_scores(split)
        folded = np.abs(split - np.median(split.reshape(-1, x.shape[2]), axis=0))
        rhat_bulk = _basic_rhat(bulk_scores)
        rhat_tail = _basic_rhat(_normal_scores(folded))
        rhat = np.where(rhat_tail > rhat_bulk, rhat_tail, rhat_bulk)  # as max(bulk, tail)
        ess_bulk = _basic_ess(bulk_scores)
        low, high = _type7_quantiles(x.reshape(-1, x.shape[2]), (0.05, 0.95))
        ess_low = _basic_ess(_split_chains((x <= low).astype(np.float64)))
        ess_high = _basic_ess(_split_chains((x <= high).astype(np.float64)))
        ess_tail = np.where(ess_high < ess_low, ess_high, ess_low)  # as min(low, high)
    has_nan = np.isnan(x).any(axis=(0, 1))
    return (
        np.where(has_nan, np.nan, rhat),
        np.where(has_nan, np.nan, ess_bulk),
        np.where(has_nan, np.nan, ess_tail),
    )


def _column_blocks(sites: list[np.ndarray], block: int) -> Iterator[np.ndarray]:
    """The scalar components of ``(chain, draw, ...)`` arrays, in order, as float64
    ``(chain, draw, <= block)`` arrays, copied one block at a time (never all at once)."""
    pending: list[np.ndarray] = []
    size = 0
    for values in sites:
        columns = values.reshape(*values.shape[:2], -1)  # a copy only for strided input
        start = 0
        while start < columns.shape[2]:
            part = columns[:, :, start : start + block - size].astype(np.float64)
            pending.append(part)
            size += part.shape[2]
            start += part.shape[2]
            if size == block:
                yield np.concatenate(pending, axis=2)
                pending, size = [], 0
    if size:
        yield np.concatenate(pending, axis=2)


def convergence(posterior: Any) -> Convergence:
    """R-hat and bulk/tail ESS of every scalar component of a posterior.

    Rank-normalized split R-hat is the larger of the Gelman-Rubin R-hat of the draws'
    normal scores (their ranks over all chains and draws, ``Phi^-1((r - 3/8) / (n +
    1/4))``) and of the scores of ``|draw - median|``, both over half chains. Bulk ESS is
    the ESS of the split normal scores, tail ESS the smaller ESS of the indicators
    ``draw <= q`` at the 5% and 95% quantiles. Components are processed together in
    blocks of about :data:`CONVERGENCE_BLOCK_VALUES` draws, so the working memory stays
    bounded for any run.

    References:
        Vehtari, Gelman, Simpson, Carpenter and Bürkner (2021), "Rank-normalization,
        folding, and localization: an improved R-hat for assessing convergence of MCMC",
        Bayesian Analysis 16(2).

    Args:
        posterior: an ``xarray.Dataset`` (``idata.posterior``) or a dict of site name ->
            ``(chain, draw, ...)`` array.

    Returns:
        The :class:`Convergence`.

    Raises:
        TypeError: when ``posterior`` is not a mapping of sites, or a site holds
            non-numbers (strings, complex numbers, objects).
        ValueError: when a site is not shaped ``(chain, draw, ...)`` or has no chains.

    Example:
        >>> import numpy as np
        >>> from probinfer.diagnostics import convergence
        >>> draws = np.random.default_rng(0).normal(size=(4, 500, 2))
        >>> result = convergence({"theta": draws})
        >>> result.labels, bool(np.all(result.rhat < 1.01))
        (["'theta'[0]", "'theta'[1]"], True)
    """
    sites, labels = [], []
    for name, values in draws_by_site("posterior", posterior):
        labels += [
            f"'{name}'[{', '.join(map(str, index))}]" if index else f"'{name}'"
            for index in np.ndindex(*values.shape[2:])
        ]
        sites.append(values)
    results = []
    # Neighbouring sites with the same chains and draws are processed as one array: the
    # fixed cost per call (FFTs, ranks) is most of the time on small models (eight schools:
    # 0.06 s in four calls, one per site).
    for (num_chains, num_draws), group in itertools.groupby(sites, key=lambda v: v.shape[:2]):
        group = list(group)
        if num_draws < 4:
            results.append(np.full((3, sum(math.prod(v.shape[2:]) for v in group)), np.nan))
            continue
        block = max(1, CONVERGENCE_BLOCK_VALUES // (num_chains * num_draws))
        for x in _column_blocks(group, block):
            results.append(np.stack(_component_convergence(x)))
    if not results:  # only empty sites
        return Convergence(np.zeros(0), np.zeros(0), np.zeros(0), labels)
    rhat, ess_bulk, ess_tail = np.concatenate(results, axis=1)
    return Convergence(rhat, ess_bulk, ess_tail, labels)


def _extreme(values: np.ndarray, labels: list[str], *, largest: bool) -> tuple[float, str]:
    """The largest (or smallest) finite value and its component's label; ``(nan, "")``
    when there is none."""
    finite = np.isfinite(values)
    if not finite.any():
        return np.nan, ""
    masked = np.where(finite, values, -np.inf if largest else np.inf)
    index = int(np.argmax(masked) if largest else np.argmin(masked))
    return float(values[index]), labels[index]


def mixing_messages(posterior: Any, *, report_nonfinite: bool = True) -> list[str]:
    """R-hat above 1.01 and bulk or tail ESS under 100 per chain, one message each.

    Args:
        posterior: draws by site, ``(chains, draws, ...)`` arrays (a dict or an xarray
            Dataset); fewer than 4 draws are not checked.
        report_nonfinite: report NaN or infinite draws (their R-hat and ESS are NaN or
            meaningless, so the other checks cannot flag them) in a message of their own;
            off where some sites may be infinite by design (a deterministic ``log p``).

    Returns:
        The messages (the worst component named in each), empty when the chains mixed.

    Raises:
        TypeError: when ``posterior`` is not a mapping of sites, or a site holds
            non-numbers.
        ValueError: when a site is not shaped ``(chain, draw, ...)`` or has no chains.
    """
    sites = draws_by_site("posterior", posterior)
    messages = []
    # Counted as the diagnostics compute: in NumPy, in the draws' own dtype.
    nonfinite = nonfinite_counts(sites)
    if report_nonfinite and nonfinite:
        sizes = {name: values.size for name, values in sites}
        counts = ", ".join(
            f"{count} of {sizes[name]} in '{name}'" for name, count in nonfinite.items()
        )
        messages.append(
            f"draws are NaN or infinite ({counts}): R-hat and ESS cannot be trusted for "
            "those sites, and the draws do not describe a distribution. Check the model "
            "where its values overflow or are undefined (supports, transforms, data)."
        )
    if not sites or sites[0][1].shape[1] < 4:
        return messages
    num_chains = sites[0][1].shape[0]
    diagnostics = convergence(dict(sites))  # the sites already read and checked
    rhat, where = _extreme(diagnostics.rhat, diagnostics.labels, largest=True)
    if rhat > RHAT_MAX:
        messages.append(
            f"R-hat is {rhat:.3f} for {where} (above {RHAT_MAX}): the chains disagree, "
            "so they have not converged to one distribution. Run longer (more `warmup` "
            "and `draws`), or reparameterize."
        )
    for kind, values in (("bulk", diagnostics.ess_bulk), ("tail", diagnostics.ess_tail)):
        ess, where = _extreme(values, diagnostics.labels, largest=False)
        if ess < ESS_PER_CHAIN_MIN * num_chains:
            messages.append(
                f"{kind} ESS is {ess:.0f} for {where}, under {ESS_PER_CHAIN_MIN:.0f} per "
                f"chain ({ESS_PER_CHAIN_MIN * num_chains:.0f} for {num_chains} chains): "
                f"{'means' if kind == 'bulk' else 'tail quantiles and intervals'} are "
                "unreliable. Run more `draws`."
            )
    return messages


def _span(values: np.ndarray, spec: str) -> str:
    """``"low-high"`` of ``values`` formatted with ``spec``, or one value when they agree."""
    low, high = format(values.min(), spec), format(values.max(), spec)
    return low if low == high else f"{low}-{high}"


def _divergent_chain_note(stats: Any, attrs: Any, thin: int) -> str:
    """A sentence naming the one chain that holds most of the divergences, or ``""``.

    Chains that share a posterior diverge at about the same rate; one chain far above the
    rest (:data:`DIVERGENT_CHAIN_RATE`, :data:`DIVERGENT_CHAIN_RATIO`) was adapted to, or
    alone reached, a region where the others' draws differ. Measured: the zoo's
    ``gp_poisson`` with a dense metric, seed 0, one chain with 119 of 151 divergences and a
    mean of ``mu`` 1 posterior sd away from the other chains'. A thinned run flags a kept
    draw when any transition of its group diverged, so its rate per kept draw, divided by
    ``thin``, is the lower bound on the transition rate that is compared.

    Args:
        stats: the run's ``sample_stats`` (``diverging``; ``step_size`` when present).
        attrs: the run's attributes (``metric`` when present).
        thin: transitions per kept draw.
    """
    diverging = np.asarray(stats["diverging"].values, bool)
    counts = diverging.reshape(diverging.shape[0], -1).sum(axis=1)
    per_chain = diverging[0].size
    chains, total = len(counts), int(counts.sum())
    worst = int(np.argmax(counts))
    if chains < 2 or 2 * counts[worst] <= total:
        return ""
    rate = counts[worst] / per_chain
    others_rate = (total - counts[worst]) / (per_chain * (chains - 1))
    if rate / thin < DIVERGENT_CHAIN_RATE or rate < DIVERGENT_CHAIN_RATIO * others_rate:
        return ""
    unit = "transitions" if thin == 1 else "kept draws"
    ours, theirs = f"{rate:.0%} of its {unit}", f"{_span(np.delete(counts, worst), 'd')}"
    if "step_size" in stats:
        step_sizes = np.asarray(stats["step_size"].values, np.float64).mean(axis=1)
        ours += f", step size {step_sizes[worst]:.3g}"
        theirs += f" divergences, step size {_span(np.delete(step_sizes, worst), '.3g')}"
    note = (
        f" Chain {stats['chain'].values[worst]} holds {counts[worst]} of the divergences "
        f"({ours}; the other chains {theirs}): its adapted step size or metric may not fit "
        "the region it sampled, or it alone reached a region the others missed; rerun with "
        "another `seed` and compare."
    )
    if attrs.get("metric") == "dense":
        note += (
            " After this dense metric, also try `metric='diag'`: on the zoo's gp_poisson it "
            "was the more robust (docs/mcmc.md)."
        )
    return note


def check_run(
    idata: az.InferenceData,
    *,
    max_num_doublings: int | None = None,
    num_warmup_nonfinite: int | None = None,
) -> list[str]:
    """The problems a Stan user would be warned about, one message each with the fix.

    Checks, in order: divergences after warm-up (naming the chain that holds most of them
    when it diverged far more often than the others, and suggesting ``metric='diag'``
    after a dense metric); chains that accepted (almost) nothing; NUTS trees that hit the
    depth limit; E-BFMI below 0.3 in any chain (NUTS and HMC; ``attrs["e_bfmi"]`` when
    given: a thinned run's, over every transition); rank-normalized split R-hat above 1.01;
    bulk or tail ESS below 100 per chain; proposals with a non-finite log density after
    warm-up (with the warm-up's count beside), or during warm-up only when more than 1% of
    its transitions had one (25% for HMC, whose fixed-length trajectories overflow at every
    too-long step of the step-size search); log densities so large that float32 energies
    lose more than 0.01 nats.

    Args:
        idata: an MCMC run's output, with ``posterior`` and ``sample_stats`` (``lp``,
            ``diverging``, ``acceptance_rate``; ``tree_depth`` and ``energy`` for NUTS/HMC;
            ``step_size`` when present) and ``attrs`` (``method``, ``num_warmup``,
            ``num_nonfinite_proposals``; ``thin`` and ``metric`` when present).
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
    # Thinned runs flag a kept draw when any transition of its group diverged (or hit the
    # depth limit), so the counts are of groups.
    thin = int(idata.attrs.get("thin", 1))
    counted = "transitions" if thin == 1 else f"groups of {thin} transitions (kept draws)"
    messages = []
    num_divergent = int(stats["diverging"].values.sum())
    if num_divergent:
        messages.append(
            f"{num_divergent} of {total} {counted} after warm-up diverged: the draws may "
            "miss part of the posterior. Raise `target_acceptance` (e.g. 0.95) or "
            "reparameterize (e.g. non-centered hierarchical scales)."
            + _divergent_chain_note(stats, idata.attrs, thin)
        )
    # Chains by their `chain` coordinate (a run merged from others need not count from 0).
    labels = [str(label) for label in stats["chain"].values]
    acceptance = np.asarray(stats["acceptance_rate"].values, np.float64).mean(axis=1)
    stuck = [
        label for label, rate in zip(labels, acceptance, strict=True) if rate < STUCK_ACCEPTANCE
    ]
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
                f"{saturated} of {total} {counted} hit the maximum tree depth "
                f"({max_num_doublings}): trajectories were cut short, so the chains move "
                "slowly. Raise `max_num_doublings`, or reparameterize (strong correlations "
                "or very different scales need a dense metric, `metric='dense'`)."
            )
    # A thinned run's, over every transition; not after a selection of chains, which
    # keeps the attrs of all of them (then the kept draws' energies serve instead).
    if "e_bfmi" in idata.attrs and np.size(idata.attrs["e_bfmi"]) == chains:
        bfmi = np.atleast_1d(np.asarray(idata.attrs["e_bfmi"], np.float64))
    elif idata.attrs.get("method") in ("nuts", "hmc") and draws > 1:
        # In float64: ArviZ's E-BFMI of float32 energies near 2e5 comes out negative.
        bfmi = np.atleast_1d(az.bfmi(np.asarray(stats["energy"].values, np.float64)))
    else:
        bfmi = np.zeros(0)
    if bfmi.size:
        low = [
            f"{label}: {value:.2f}"
            for label, value in zip(labels, bfmi, strict=True)
            if value < EBFMI_MIN
        ]
        if low:
            messages.append(
                f"E-BFMI below {EBFMI_MIN} in chain(s) {', '.join(low)}: the momentum "
                "resampling explores the energy distribution poorly (often heavy tails or a "
                "funnel). Reparameterize (e.g. non-centered scales, a log transform)."
            )
    # Latent draws of a run are finite (non-finite proposals are rejected and counted
    # below); deterministic sites, also in the posterior, may be infinite by design.
    messages += mixing_messages(idata["posterior"], report_nonfinite=False)
    num_nonfinite = int(idata.attrs.get("num_nonfinite_proposals", 0))
    warmup_transitions = chains * int(idata.attrs.get("num_warmup", 0))
    if num_nonfinite:
        messages.append(
            f"{num_nonfinite} proposals after warm-up (and {num_warmup_nonfinite} during it) "
            "had a NaN or infinite log density and were rejected (they are counted, never "
            "kept): the model is undefined in part of the space the sampler visits; check "
            "supports and data."
        )
    elif num_warmup_nonfinite > warmup_transitions * (
        WARMUP_NONFINITE_FRACTION_HMC
        if idata.attrs.get("method") == "hmc"
        else WARMUP_NONFINITE_FRACTION
    ):
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


# Simulation-based calibration lives in its own module (it drives whole runs); its public
# names are these. Imported last: it needs SamplingWarning and convergence from here.
from probinfer._calibration import (  # noqa: E402
    SBC_METHODS,
    SBCResult,
    rank_ecdf_band,
    rank_ecdf_test,
    sbc,
)

__all__ = [
    "SBC_METHODS",
    "EBFMI_MIN",
    "ESS_PER_CHAIN_MIN",
    "RHAT_MAX",
    "Convergence",
    "SBCResult",
    "SamplingWarning",
    "check_run",
    "convergence",
    "mixing_messages",
    "rank_ecdf_band",
    "rank_ecdf_test",
    "sbc",
    "summary",
]
