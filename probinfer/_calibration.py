"""Simulation-based calibration (SBC): are a method's posteriors right on average?

Draw a truth ``theta`` and data ``y`` from the model's prior predictive, fit the posterior
to ``y``, and record the rank of ``theta`` among ``L`` posterior draws. Repeated over
``N`` replicates, the ranks are uniform on ``0..L`` exactly when the posteriors are
(Talts et al., 2018); a dropped log-Jacobian, a wrong prior or a biased sampler bends
them.

Uniformity is judged by the rank ECDF (Säilynoja, Bürkner and Vehtari, 2022): the count
``c_j`` of ranks ``<= j`` is ``Binomial(N, (j + 1) / (L + 1))`` at each ``j < L``. The
statistic is the smallest two-sided binomial tail probability over the ``L`` points, and
its null distribution is computed exactly, not simulated: ``c_j`` is a Markov chain
(``c_j - c_{j-1} ~ Binomial(N - c_{j-1}, 1 / (L + 1 - j))``), so the probability that every
``c_j`` stays where the statistic is larger is a product of ``(N + 1) x (N + 1)``
transition matrices restricted to those sets. The p-value is exact down to any size
(no Monte Carlo resolution), and the same computation gives the simultaneous band drawn
by :meth:`SBCResult.plot`.

References:
    Talts, Betancourt, Simpson, Vehtari and Gelman (2018), "Validating Bayesian inference
    algorithms with simulation-based calibration", arXiv:1804.06788.
    Säilynoja, Bürkner and Vehtari (2022), "Graphical test for discrete uniformity and its
    applications in goodness-of-fit evaluation and multiple sample comparison",
    Statistics and Computing 32(32).
"""

from __future__ import annotations

import inspect
import math
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import jax
import numpy as np
import scipy.special
import scipy.stats

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

MCMC_METHODS = ("nuts", "hmc", "mala", "rwm")
SBC_METHODS = (*MCMC_METHODS, "smc", "ns")
MAX_PLOTTED_COMPONENTS = 16
TAIL_RTOL = 1e-9  # tails this close to the statistic are equal to it (binomial rounding)


def _marginal_tail_probabilities(num_replicates: int, num_ranked: int) -> np.ndarray:
    """``(L, N + 1)`` two-sided binomial tail probabilities ``min(1, 2 min(P(C <= c),
    P(C >= c)))`` of every count ``c`` at every evaluation point ``j < L``."""
    counts = np.arange(num_replicates + 1)
    probs = (np.arange(num_ranked) + 1) / (num_ranked + 1)
    below = scipy.stats.binom.cdf(counts[None, :], num_replicates, probs[:, None])
    above = scipy.stats.binom.sf(counts[None, :] - 1, num_replicates, probs[:, None])
    tails = np.minimum(1.0, 2.0 * np.minimum(below, above))
    # Count c at point j and N - c at L - 1 - j have equal tails; `cdf` and `sf` round them
    # an ulp apart in about half the cells, which would let the mirror cell count as
    # "larger" than the statistic. One value for both.
    return np.minimum(tails, tails[::-1, ::-1])


def _above(tails: np.ndarray, level: float | np.ndarray) -> np.ndarray:
    """``tails > level`` with a relative margin of :data:`TAIL_RTOL`: a tail equal to the
    level up to rounding counts as at most it (the p-value errs on the large side)."""
    return tails > np.asarray(level) * (1.0 + TAIL_RTOL)


def _escape_probabilities(allowed: np.ndarray) -> np.ndarray:
    """Probabilities under uniform ranks that some count ``c_j`` leaves ``allowed[k, j]``.

    Args:
        allowed: ``(K, L, N + 1)`` booleans, for each of ``K`` regions the counts allowed
            at each evaluation point. The transition matrices are built once for all.

    Returns:
        ``(K,)`` escape probabilities, summed step by step (exact for tiny values: no
        ``1 - p``).
    """
    num_regions, num_points, size = allowed.shape
    num_replicates = size - 1
    counts = np.arange(size)
    log_factorial = scipy.special.gammaln(counts + 1.0)
    remaining = num_replicates - counts  # ranks not yet counted, per current count c
    increments = counts[None, :] - counts[:, None]  # c' - c
    valid = (increments >= 0) & (increments <= remaining[:, None])
    safe_increments = np.where(valid, increments, 0)
    log_choose = (
        log_factorial[remaining][:, None]
        - log_factorial[safe_increments]
        - log_factorial[remaining[:, None] - safe_increments]
    )
    mass = np.zeros((num_regions, size))
    mass[:, 0] = 1.0
    escaped = np.zeros(num_regions)
    for j in range(num_points):
        # c_j - c_{j-1} ~ Binomial(N - c_{j-1}, q): a rank <= j given it is >= j.
        q = 1.0 / (num_points + 1 - j)
        live = np.any(mass > 0, axis=0)  # counts some region can still be at
        log_pmf = (
            log_choose[live]
            + safe_increments[live] * math.log(q)
            + (remaining[live][:, None] - safe_increments[live]) * math.log1p(-q)
        )
        transition = np.where(valid[live], np.exp(log_pmf), 0.0)
        arrived = mass[:, live] @ transition
        escaped += np.sum(np.where(allowed[:, j], 0.0, arrived), axis=1)
        mass = np.where(allowed[:, j], arrived, 0.0)
    return escaped


def rank_ecdf_test(ranks: np.ndarray, num_ranked: int) -> float:
    """Exact p-value of the rank-ECDF test that ``ranks`` are uniform on ``0..num_ranked``.

    The statistic is the smallest two-sided binomial tail probability of the rank ECDF
    over its ``num_ranked`` evaluation points; the p-value is the probability, under
    uniform ranks, of a statistic at most as large (module docstring). Time
    ``O(L N^2)`` and memory ``O(N^2)`` (a few ``(N + 1) x (N + 1)`` float64 arrays: 8 MB
    each at ``N = 1,000``, 0.8 GB at 10,000): 0.1 s for ``N = 500`` replicates and
    ``L = 99``; the band of :func:`rank_ecdf_band` takes a few seconds there.

    Args:
        ranks: ``(N,)`` integer ranks in ``0..num_ranked``.
        num_ranked: ``L``, the number of posterior draws each truth was ranked among.

    Returns:
        The p-value in ``[0, 1]``.

    Raises:
        ValueError: for an empty or non-integer ``ranks``, or ranks outside
            ``0..num_ranked``.
    """
    ranks = np.asarray(ranks)
    if ranks.ndim != 1 or ranks.size == 0:
        raise ValueError(f"`ranks` must be a non-empty 1-d array; got shape {ranks.shape}.")
    if not np.issubdtype(ranks.dtype, np.integer):
        raise ValueError(f"`ranks` must be integers; got dtype {ranks.dtype}.")
    if ranks.min() < 0 or ranks.max() > num_ranked:
        raise ValueError(
            f"`ranks` must lie in 0..num_ranked = 0..{num_ranked}; got "
            f"{ranks.min()}..{ranks.max()}."
        )
    tails = _marginal_tail_probabilities(ranks.size, num_ranked)
    counts = np.cumsum(np.bincount(ranks, minlength=num_ranked + 1))[:num_ranked]
    statistic = tails[np.arange(num_ranked), counts].min()
    return min(1.0, float(_escape_probabilities(_above(tails, statistic)[None])[0]))


def rank_ecdf_band(num_replicates: int, num_ranked: int, alpha: float = 0.05) -> np.ndarray:
    """The simultaneous ``1 - alpha`` band of the rank ECDF under uniform ranks.

    Args:
        num_replicates: ``N``.
        num_ranked: ``L``.
        alpha: the probability that uniform ranks leave the band somewhere.

    Returns:
        ``(2, L)`` lowest and highest ECDF values ``c_j / N`` inside the band at the
        evaluation points ``(j + 1) / (L + 1)``.
    """
    tails = _marginal_tail_probabilities(num_replicates, num_ranked)
    # The band's marginal level: the largest tail value whose region uniform ranks leave
    # with probability at most alpha (escape rises with the level). Four rounds of 16
    # levels, evenly spaced in log level, narrow 1e-300..alpha 16-fold each (to 0.011 in
    # log); then the distinct tail values left in the bracket are tried one by one.
    low, high = math.log(1e-300), math.log(alpha)
    for _ in range(4):
        levels = np.linspace(low, high, 17)[1:]
        escaped = _escape_probabilities(_above(tails[None], np.exp(levels)[:, None, None]))
        below = np.flatnonzero(escaped <= alpha)
        index = below[-1] if below.size else -1
        low = levels[index] if index >= 0 else low
        high = levels[index + 1] if index + 1 < len(levels) else high
    candidates = np.unique(tails[(tails > math.exp(low)) & (tails <= math.exp(high))])
    level = math.exp(low)
    if candidates.size:
        escaped = _escape_probabilities(_above(tails[None], candidates[:, None, None]))
        within = np.flatnonzero(escaped <= alpha)
        level = float(candidates[within[-1]]) if within.size else level
    allowed = _above(tails, level)
    counts = np.arange(num_replicates + 1)
    lowest = np.where(allowed, counts[None, :], num_replicates).min(axis=1)
    highest = np.where(allowed, counts[None, :], 0).max(axis=1)
    return np.stack([lowest, highest]) / num_replicates


@dataclass(frozen=True)
class SBCResult:
    """Ranks of the true values among posterior draws, and their uniformity tests.

    Attributes:
        ranks: site name -> ``(replicates, *site_shape)`` integer ranks in
            ``0..num_ranked`` (constrained space, as the posterior reports the site).
        p_values: site name -> ``(*site_shape)`` rank-ECDF p-values
            (:func:`rank_ecdf_test`).
        num_ranked: ``L``, the posterior draws each truth was ranked among.
        method: the inference method calibrated.
        min_ess: ``(replicates,)`` smallest bulk ESS over components of each replicate's
            posterior (MCMC methods; NaN for SMC and nested sampling, whose draws are
            weighted particles, not a chain).
        num_warned: replicates whose run issued a :class:`SamplingWarning` (divergences,
            poor mixing; with single chains R-hat and ESS checks fire in many by chance).
        draws: ``(replicates,)`` draws per chain of the fit whose draws were ranked (more
            than asked where :func:`sbc` extended a run whose ESS was below ``L``; NaN
            when unknown).
    """

    ranks: dict[str, np.ndarray]
    p_values: dict[str, np.ndarray]
    num_ranked: int
    method: str
    min_ess: np.ndarray
    num_warned: int
    draws: np.ndarray

    @classmethod
    def from_ranks(
        cls,
        ranks: dict[str, np.ndarray],
        num_ranked: int,
        method: str,
        min_ess: np.ndarray | None = None,
        num_warned: int = 0,
        draws: np.ndarray | None = None,
    ) -> SBCResult:
        """The result of ranks computed elsewhere (a fit :func:`sbc` cannot run), with the
        rank-ECDF p-value of every component.

        Args:
            ranks: site name -> ``(replicates, *site_shape)`` integer ranks in
                ``0..num_ranked``.
            num_ranked: ``L``.
            method: what was calibrated (a label).
            min_ess: ``(replicates,)`` smallest bulk ESS per replicate (NaN when unknown).
            num_warned: replicates whose run warned.
            draws: ``(replicates,)`` draws per chain ranked among (NaN when unknown).

        Raises:
            ValueError: if ``ranks`` is empty.
        """
        p_values = {
            name: np.array(
                [rank_ecdf_test(values[(slice(None), *index)], num_ranked)
                 for index in np.ndindex(*values.shape[1:])]
            ).reshape(values.shape[1:])
            for name, values in ranks.items()
        }  # fmt: skip
        if not ranks:
            raise ValueError("`ranks` is empty: pass at least one site's ranks.")
        num_replicates = len(next(iter(ranks.values())))
        if min_ess is None:
            min_ess = np.full(num_replicates, np.nan)
        if draws is None:
            draws = np.full(num_replicates, np.nan)
        return cls(ranks, p_values, num_ranked, method, min_ess, num_warned, draws)

    @property
    def num_replicates(self) -> int:
        """``N``, the simulated data sets."""
        return len(self.min_ess)

    def labels(self) -> list[str]:
        """One label per scalar component, e.g. ``"sigma"`` or ``"beta[1]"``."""
        return [label for label, _ in self._components()]

    def _components(self) -> list[tuple[str, np.ndarray]]:
        components = []
        for name, ranks in self.ranks.items():
            for index in np.ndindex(*ranks.shape[1:]):
                label = f"{name}[{', '.join(map(str, index))}]" if index else name
                components.append((label, ranks[(slice(None), *index)]))
        return components

    def p_value(self) -> float:
        """One p-value for all components: the smallest, times their number (Bonferroni)."""
        values = np.concatenate([np.ravel(p) for p in self.p_values.values()])
        return float(min(1.0, values.min() * values.size))

    def plot(self, alpha: float = 0.05, axes: Sequence[Axes] | None = None) -> Figure:
        """Rank-ECDF difference plots, one per component, with the simultaneous band.

        Each panel draws ``ECDF(z) - z`` of the fractional ranks against ``z``; uniform
        ranks stay inside the shaded ``1 - alpha`` band everywhere with probability
        ``1 - alpha``. A curve above zero throughout (a hump) means truths rank low: the
        posteriors sit too high (below zero: too low). An S, below zero on the left and
        above on the right, means ranks pile in the middle: the posteriors are too wide;
        the mirror image (ranks at both ends) too narrow, or autocorrelated draws.

        Args:
            alpha: the band's level.
            axes: one matplotlib axis per component to draw in (e.g. a row of a larger
                figure); by default a new figure with up to four panels per row.

        Returns:
            The matplotlib figure (at most :data:`MAX_PLOTTED_COMPONENTS` panels).
        """
        import matplotlib.pyplot as plt

        components = self._components()[:MAX_PLOTTED_COMPONENTS]
        title = (
            f"SBC of {self.method}: {self.num_replicates} replicates, ranks among "
            f"{self.num_ranked} draws, {1 - alpha:.0%} simultaneous band"
        )
        if axes is None:
            columns = min(4, len(components))
            rows = math.ceil(len(components) / columns)
            figure, grid = plt.subplots(
                rows, columns, figsize=(3.2 * columns, 2.6 * rows), squeeze=False
            )
            axes = list(grid.flat)
            for axis in axes[len(components) :]:
                axis.set_visible(False)
            figure.suptitle(title, fontsize=10)
        else:
            axes = list(np.ravel(np.asarray(axes, dtype=object)))
            if len(axes) < len(components):
                raise ValueError(
                    f"`axes` has {len(axes)} axes for {len(components)} components: pass "
                    "one per component."
                )
        figure = cast("Figure", axes[0].figure)
        points = (np.arange(self.num_ranked) + 1) / (self.num_ranked + 1)
        band = rank_ecdf_band(self.num_replicates, self.num_ranked, alpha) - points[None, :]
        p_values = np.concatenate([np.ravel(p) for p in self.p_values.values()])
        for axis, (label, ranks), p_value in zip(axes, components, p_values, strict=False):
            counts = np.cumsum(np.bincount(ranks, minlength=self.num_ranked + 1))
            difference = counts[: self.num_ranked] / self.num_replicates - points
            axis.fill_between(points, band[0], band[1], step="post", color="0.85")
            axis.step(points, difference, where="post", color="C0")
            axis.axhline(0.0, color="0.5", linewidth=0.5)
            axis.set_title(f"{label} (p = {p_value:.2g})", fontsize=9)
            axis.set_xlabel("fractional rank")
        axes[0].set_ylabel("ECDF difference")
        figure.tight_layout()
        return figure


def _split_model_keywords(
    model: Callable[..., Any], kwargs: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Keywords the model names (by its signature) go to it; the rest are settings."""
    names = set(inspect.signature(model).parameters)
    model_kwargs = {name: value for name, value in kwargs.items() if name in names}
    settings = {name: value for name, value in kwargs.items() if name not in names}
    return model_kwargs, settings


def _simulate(
    simulator: Callable[..., Any],
    key: jax.Array,
    args: tuple,
    model_kwargs: dict[str, Any],
    observed: Sequence[str],
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """One draw of the truth (latent sites) and the data (``observed`` sites)."""
    from numpyro import handlers

    trace = handlers.trace(handlers.seed(simulator, key)).get_trace(*args, **model_kwargs)
    truth, data = {}, {}
    for name, site in trace.items():
        if site["type"] != "sample":
            continue
        if name in observed:
            if site["is_observed"]:
                raise ValueError(
                    f"site '{name}' is observed in the model as called: pass its data "
                    "argument as None so that the model simulates it."
                )
            data[name] = np.asarray(site["value"])
        elif not site["is_observed"]:
            truth[name] = np.asarray(site["value"])
    missing = sorted(set(observed) - set(data))
    if missing:
        raise ValueError(
            f"`observed` names {missing}, which are not sample sites of the model (its "
            f"sample sites: {sorted(n for n, s in trace.items() if s['type'] == 'sample')})."
        )
    if not truth:
        raise ValueError("the model has no latent sample sites to calibrate.")
    return truth, data


def _ranks_of_truth(
    draws: np.ndarray, truth: np.ndarray, num_ranked: int, rng: np.random.Generator
) -> np.ndarray:
    """Ranks of ``truth`` among ``num_ranked`` of ``draws`` (``(T, *shape)``), evenly
    thinned. Draws equal to the truth (discrete values, a truth on a boundary) put it at a
    random place among them. Repeated particles (SMC, nested sampling) tie with each
    other, not with the truth: like autocorrelation, many repeats push ranks to the ends."""
    picked = np.linspace(0, draws.shape[0] - 1, num_ranked).round().astype(int)
    thinned = draws[picked]
    below = np.sum(thinned < truth[None], axis=0)
    tied = np.sum(thinned == truth[None], axis=0)
    return below + rng.integers(0, tied + 1)


def sbc(
    model: Callable[..., Any],
    *args: Any,
    observed: str | Sequence[str],
    method: str = "nuts",
    num_replicates: int = 200,
    num_ranked: int = 99,
    seed: int = 0,
    simulator: Callable[..., Any] | None = None,
    max_extensions: int = 2,
    progress: bool = True,
    **kwargs: Any,
) -> SBCResult:
    """Simulation-based calibration of ``method`` on a NumPyro model.

    Each replicate draws the latent sites and the ``observed`` sites from the
    ``simulator``'s prior predictive (by default the model's own), fits ``model``
    conditioned on the simulated data with :func:`probinfer.sample`, and ranks each true
    value among ``num_ranked`` of its posterior draws, evenly thinned from all chains.
    The fit compiles once: every replicate reuses the program with new data.

    For MCMC the thinned draws should be nearly independent (Talts et al.): a bulk ESS
    below ``num_ranked`` pushes the ranks toward 0 and ``L`` (it looks like an
    overconfident posterior). So the draws are thinned by ESS: a replicate whose bulk ESS
    (smallest over components) is below ``L`` is fitted again, afresh, with twice the
    draws, up to ``max_extensions`` times, until the ``L`` ranked draws are at least one
    ESS apart; a warning counts the replicates still below. The refit never looks at the
    truth, but a first run is kept only when its own ESS is high enough, which in
    principle tilts its draws: the ranks' distribution can differ from that of unselected
    runs by at most the fraction of replicates refitted, in total variation (for a
    strictly exchangeable check pass ``max_extensions=0`` with enough ``draws``). SMC and
    nested-sampling draws are particles: ask for at least ``num_ranked`` of them.

    Args:
        model: a NumPyro model whose ``observed`` sites are simulated when their data
            arguments are None (pass them as None in ``args``/``kwargs``).
        *args: the model's positional arguments, with None for the observed data.
        observed: the name(s) of the sample sites that are data.
        method: one of :data:`SBC_METHODS` ("nuts", "hmc", "mala", "rwm", "smc", "ns").
        num_replicates: ``N``, the simulated data sets.
        num_ranked: ``L``, the posterior draws each truth is ranked among.
        seed: integer seed of the simulations and the fits.
        simulator: a model to draw truths and data from instead of ``model`` (to check
            that SBC detects a mismatch, or a fit under a deliberately different prior).
        max_extensions: MCMC only: how many times a replicate whose bulk ESS is below
            ``num_ranked`` is refitted with doubled ``draws`` (0: never).
        progress: show a progress bar over replicates.
        **kwargs: keywords ``model`` takes go to it (and to ``simulator``); the others are
            :func:`probinfer.sample`'s (``chains``, ``warmup``, ``draws`` and the method's
            settings).

    Returns:
        The :class:`SBCResult`; ``result.p_value()`` tests every component at once,
        ``result.plot()`` draws the rank ECDFs.

    Raises:
        ValueError: for an unknown method, bad counts, an ``observed`` name that is not a
            simulated sample site, or too few posterior draws to rank among.

    Example:
        >>> import numpyro, numpyro.distributions as dist
        >>> from probinfer.diagnostics import sbc
        >>> def model(y=None):
        ...     mu = numpyro.sample("mu", dist.Normal(0, 1))
        ...     numpyro.sample("y", dist.Normal(mu, 1).expand([3]), obs=y)
        >>> result = sbc(model, observed="y", num_replicates=50, chains=1, warmup=200,
        ...              draws=400, progress=False)  # doctest: +SKIP
        >>> result.p_value() > 1e-3  # doctest: +SKIP
        True
    """
    import probinfer as pi
    from probinfer._validation import check_count
    from probinfer.diagnostics import SamplingWarning, convergence
    from probinfer.driver import progress_bar

    if method not in SBC_METHODS:
        raise ValueError(f"`method` must be one of {SBC_METHODS}; got {method!r}.")
    seed = check_count("seed", seed, 0)
    num_replicates = check_count("num_replicates", num_replicates, 2)
    num_ranked = check_count("num_ranked", num_ranked, 1)
    max_extensions = check_count("max_extensions", max_extensions, 0)
    observed = (observed,) if isinstance(observed, str) else tuple(observed)
    simulator = model if simulator is None else simulator
    model_kwargs, settings = _split_model_keywords(model, kwargs)
    from numpyro import handlers

    def conditioned(observations: dict[str, Any], *model_args: Any) -> Any:
        with handlers.condition(data=observations):
            return model(*model_args, **model_kwargs)

    # The pointwise log likelihood is not needed: skip its pass over the draws.
    mcmc_settings = {"log_likelihood": False} if method in MCMC_METHODS else {}
    asked_draws = check_count(
        "draws", settings.pop("draws", inspect.signature(pi.sample).parameters["draws"].default), 1
    )
    rng = np.random.default_rng(seed)
    keys = jax.random.split(jax.random.key(seed), num_replicates)
    ranks: dict[str, list[np.ndarray]] = {}
    min_ess = np.full(num_replicates, np.nan)
    draws_used = np.full(num_replicates, asked_draws, dtype=float)
    num_warned = 0
    first_message = ""

    def fit(
        data: dict[str, np.ndarray], names: Iterable[str], draws: int
    ) -> tuple[dict[str, np.ndarray], list[warnings.WarningMessage]]:
        """The posterior draws ``(chains, draws, *shape)`` of ``names``, and the run's
        sampling warnings."""
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            idata = pi.sample(
                conditioned, data, *args, method=method, draws=draws,
                seed=int(rng.integers(2**31)), progress=False, **mcmc_settings, **settings,
            )  # fmt: skip
        posterior = {name: idata["posterior"][name].values for name in names}
        total = next(iter(posterior.values())).shape[:2]
        if total[0] * total[1] < num_ranked:
            raise ValueError(
                f"{total[0]} x {total[1]} posterior draws are fewer than `num_ranked` = "
                f"{num_ranked}: ask for more draws (or fewer ranked)."
            )
        return posterior, [w for w in caught if issubclass(w.category, SamplingWarning)]

    with progress_bar(progress, num_replicates, f"SBC of {method}", rate_unit="fits/s") as bar:
        for replicate in range(num_replicates):
            truth, data = _simulate(simulator, keys[replicate], args, model_kwargs, observed)
            draws = asked_draws
            posterior, run_warnings = fit(data, truth, draws)
            if method in MCMC_METHODS:
                min_ess[replicate] = np.nanmin(convergence(posterior).ess_bulk)
                for _ in range(max_extensions):
                    if not min_ess[replicate] < num_ranked:
                        break
                    draws *= 2
                    posterior, run_warnings = fit(data, truth, draws)
                    min_ess[replicate] = np.nanmin(convergence(posterior).ess_bulk)
            draws_used[replicate] = draws
            if run_warnings:
                num_warned += 1
                first_message = first_message or str(run_warnings[0].message)
            for name, value in truth.items():
                flat = posterior[name].reshape(-1, *posterior[name].shape[2:])
                ranks.setdefault(name, []).append(_ranks_of_truth(flat, value, num_ranked, rng))
            if bar is not None:
                bar.update(advance=1)
    stacked = {name: np.stack(values) for name, values in ranks.items()}
    low_ess = int(np.sum(min_ess < num_ranked))
    if low_ess:
        warnings.warn(
            f"in {low_ess} of {num_replicates} replicates the posterior's bulk ESS (smallest "
            f"{np.nanmin(min_ess):.0f}) is below `num_ranked` = {num_ranked}"
            f"{f' even after {max_extensions} doubling(s) of the draws' if max_extensions else ''}"
            ": the thinned draws are autocorrelated, "
            "which pushes the ranks toward 0 and `num_ranked` (it looks like an "
            "overconfident posterior). Ask for more `draws` or `max_extensions` (or fewer "
            "`num_ranked`).",
            SamplingWarning,
            stacklevel=2,
        )
    if num_warned:
        warnings.warn(
            f"{num_warned} of {num_replicates} replicates' runs warned (the first: "
            f"{first_message}). SBC judges the ranks; check such replicates' fits if the "
            "ranks fail.",
            SamplingWarning,
            stacklevel=2,
        )
    return SBCResult.from_ranks(stacked, num_ranked, method, min_ess, num_warned, draws_used)
