"""Tempered SMC from prior to posterior: reweight -> resample -> move (Del Moral et al., 2006).

The particles target ``p_beta(x) ∝ p(x) L(x)^beta`` for ``beta`` rising from 0 (the prior)
to 1 (the posterior). One step:

1. the schedule picks the next ``beta'`` (adaptive: conditional ESS at a target fraction);
2. reweight by ``L^(beta' - beta)``; the evidence estimate grows by the log of the mean
   incremental weight, ``log Z += log sum_i W_i L_i^(beta' - beta)``;
3. resample (any scheme of :mod:`probinfer.smc`) when the ESS falls below a threshold;
4. move every particle by ``num_mcmc_steps`` transitions of any :mod:`probinfer.mcmc`
   algorithm on ``p_beta'`` (:meth:`Target.tempered_fn`, whose auxiliary value is the log
   likelihood, so the moved particles keep theirs at no extra evaluation). The kernel's
   metric is the particles' covariance; its step size is adapted between steps towards the
   algorithm's target acceptance.

Adaptive number of moves (``adapt_num_mcmc_steps=True``): each step runs transitions until
the particles have decorrelated from where the step started: until no coordinate's
correlation across particles between its start and current values exceeds 0.1 in absolute
value (at most ``num_mcmc_steps`` transitions). The largest of ``d`` sample correlations of
``N`` independent pairs is about ``sqrt(2 log(2 d) / N)``: with many coordinates and few
particles (above 0.1, e.g. ``d = 100``, ``N = 2000``) the rule cannot see mixing below its
noise and runs the maximum, which costs evaluations but not accuracy. Allowing for that
noise (stopping at ``0.1 + sqrt(2 log(2 d) / N)``) biased log Z on the 20-d regression
below, as a threshold of 0.2 did. A rejected transition changes nothing, so the rule is
acceptance-weighted, and a coherent drift of the whole cloud (MALA's, towards the new
tempered target) does not count as mixing. Distance-based rules did worse: stopping when
the mean jump stops growing by 10% per transition (``particles``'s optional rule) gave
2.5 times the log Z error of 9 fixed transitions on the linear regression of
``benchmarks/smc_peers.py`` at fewer evaluations; stopping when the mean squared whitened
jump reaches ``1.5 d`` biased log Z on a 20-d correlated regression with MALA moves by 4
standard errors (drift counts as distance), and this rule with a threshold of 0.2 by 2
(see ``docs/smc.md``).

Waste-free SMC (Dau & Chopin, 2022), ``chain_length = P > 1``: every step resamples only
``M = N / P`` ancestors and runs a chain of ``P`` kept states from each (``num_mcmc_steps``
transitions between kept states), and all ``M P = N`` states form the next population: the
intermediate MCMC states are not thrown away.

At ``beta = 1`` the weighted particles approximate the posterior and ``exp(log Z)``
estimates the evidence: unbiased for a fixed ladder and fixed move parameters (Del Moral,
2004); with the ladder, the metric and the step size adapted from the particles, as here,
it is consistent, with a bias that vanishes as N grows (Beskos et al., 2016). That bias
shows: on the zoo's linear regression ``Z`` comes out low by 7% at ``N = 100`` (log of the
mean of 4,096 replicas: -0.075 ± 0.007 from the exact log Z; a ladder chosen elsewhere
removes a third of it), and on a correlated 20-d regression high by 17% at ``N = 200``
(+0.160 ± 0.012, 1,024 replicas). A system tuned by another, independent one
(``step(key, state, other.tune(...))``: the next ``beta``, the metric and the step size all
given) is free of it: +0.005 ± 0.007 and -0.005 ± 0.012 on the same tests.
``pi.evidence`` runs such a tuning replica beside its estimating replicas.

Non-finite log likelihoods: ``-inf`` is a zero likelihood (the particle gets weight 0); NaN
and ``+inf`` are invalid, treated as ``-inf`` and counted in ``Info.num_nonfinite``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, PRNGKeyArray

from probinfer._validation import check_count
from probinfer.mcmc._algorithm import (
    DENSE_MASS_MATRIX_MAX_DIM,
    Algorithm,
    adapt_step_size,
    check_metric,
)
from probinfer.mcmc._metric import population_covariance
from probinfer.model._target import Target
from probinfer.smc._tempering import NextTemperatureFn, adaptive_tempering, tempered_increments
from probinfer.smc._weights import ess, normalize, zero_invalid
from probinfer.smc.resampling import systematic

PyTree = Any
ResamplingFn = Callable[[PRNGKeyArray, Array, int], Array]
# Adaptive moves stop once no coordinate's start-to-current correlation exceeds this.
MIXING_CORRELATION = 0.1


class TemperedSMCState(NamedTuple):
    """The particle system at one temperature.

    Attributes:
        particles: positions, a pytree with a leading particle axis ``N``.
        loglikelihood: ``(N,)`` log likelihoods at the particles.
        log_weights: ``(N,)`` normalised log weights.
        inverse_temperature: ``beta`` in [0, 1].
        log_z: the running log-evidence estimate (0 at the prior).
        step_size: the move kernel's step size (adapted between steps).
    """

    particles: PyTree
    loglikelihood: Array
    log_weights: Array
    inverse_temperature: Array
    log_z: Array
    step_size: Array


class TemperedSMCInfo(NamedTuple):
    """Diagnostics of one tempered SMC step.

    Attributes:
        inverse_temperature: the new ``beta``.
        log_z: the log-evidence estimate after the step.
        ess: the ESS after reweighting (before resampling; NaN once finished).
        is_resampled: whether the particles were resampled.
        acceptance_rate: mean acceptance of the moves (NaN once the system is finished).
        num_evals: target evaluations of the step, all particles together.
        num_mcmc_steps: transitions per chain at this step (waste-free: all ``P`` kept
            states' worth; 0 once finished).
        num_nonfinite: particles whose log likelihood was NaN or ``+inf`` at reweighting
            (at the first step: prior draws where the likelihood is undefined; a particle
            that stays there, not resampled away, is counted at every step).
        is_collapsed: every particle's weight vanished at this step (all likelihoods
            zero): the evidence estimate is 0 (``log_z = -inf``) and the system stops.
    """

    inverse_temperature: Array
    log_z: Array
    ess: Array
    is_resampled: Array
    acceptance_rate: Array
    num_evals: Array
    num_mcmc_steps: Array
    num_nonfinite: Array
    is_collapsed: Array


class TemperedSMCTuning(NamedTuple):
    """What one step's reweighting and move are tuned by.

    Attributes:
        inverse_temperature: the next ``beta``.
        covariance: the move's metric: the particles' covariance weighted for the next
            ``beta``, ``(d, d)`` dense or ``(d,)`` diagonal (``d`` the flat dimension).
        step_size: the move's step size.
    """

    inverse_temperature: Array
    covariance: Array
    step_size: Array


class TemperedSMCStepFn(Protocol):
    """``step(key, state, tuning=None) -> (state, info)`` of :class:`TemperedSMC`."""

    def __call__(
        self, key: PRNGKeyArray, state: TemperedSMCState, tuning: TemperedSMCTuning | None = None
    ) -> tuple[TemperedSMCState, TemperedSMCInfo]: ...


class TemperedSMC(NamedTuple):
    """Tempered SMC closed over its target and settings.

    Attributes:
        init: ``init(particles) -> TemperedSMCState`` (particles from the prior).
        step: ``step(key, state, tuning=None) -> (state, TemperedSMCInfo)``. Without
            ``tuning`` the system tunes itself: the schedule picks the next ``beta`` from
            its particles, whose covariance is the metric, with the state's step size.
            With a :class:`TemperedSMCTuning` (e.g. another system's ``tune``) the step
            follows it (``beta`` clipped to ``[beta, 1]``), and the new state's step size
            is adapted from the given one. A state at ``beta = 1`` is returned unchanged
            (so replicas that finish early can wait).
        tune: ``state -> TemperedSMCTuning``, what ``step`` would use on its own.
    """

    init: Callable[[PyTree], TemperedSMCState]
    step: TemperedSMCStepFn
    tune: Callable[[TemperedSMCState], TemperedSMCTuning]


def particles_count(particles: PyTree) -> int:
    """The number of particles: the leading axis of the particle pytree.

    Args:
        particles: a pytree with a leading particle axis.

    Returns:
        Its length.
    """
    return jax.tree.leaves(particles)[0].shape[0]


def initial_step_size(algorithm: Algorithm, dim: int) -> float:
    """A first step size in the particles' whitened units.

    Random walks: ``2.38 / sqrt(d)`` (Roberts, Gelman & Gilks, 1997); MALA ``d^(-1/3)``;
    HMC and NUTS ``d^(-1/4)`` (Beskos et al., 2013); slice: a width of 2.

    Args:
        algorithm: the move's algorithm.
        dim: the flat dimension.

    Returns:
        The step size.
    """
    exponent = {"rwm": 0.5, "mala": 1 / 3, "hmc": 0.25, "nuts": 0.25}.get(algorithm.name)
    if exponent is None:
        return 2.0
    return float((2.38 if algorithm.name == "rwm" else 1.0) / dim**exponent)


def tempered_smc(
    target: Target,
    algorithm: Algorithm,
    *,
    num_mcmc_steps: int = 10,
    adapt_num_mcmc_steps: bool = False,
    chain_length: int = 1,
    schedule: NextTemperatureFn | None = None,
    resampling: ResamplingFn = systematic,
    resample_threshold: float = 0.5,
    metric: str | None = None,
    step_size: float | None = None,
    **options: Any,
) -> TemperedSMC:
    """Tempered SMC with any MCMC algorithm as its move.

    Args:
        target: the prior/likelihood split (``density.target``).
        algorithm: the move, e.g. ``probinfer.mcmc.rwm`` or ``nuts``.
        num_mcmc_steps: transitions per particle per SMC step (>= 1); with waste-free
            chains, transitions between kept states; with ``adapt_num_mcmc_steps``, the
            most.
        adapt_num_mcmc_steps: stop each step's transitions once every coordinate's
            start-to-current correlation across particles is at most 0.1 in absolute
            value; standard moves only.
        chain_length: 1 for the standard move; ``P > 1`` for waste-free SMC (``N / P``
            ancestors, each chain's ``P`` states all kept; ``P`` must divide ``N``, and
            every step resamples).
        schedule: ``state -> next beta``; default :func:`adaptive_tempering` (0.5).
        resampling: a resampling scheme ``(key, weights, N) -> indices``.
        resample_threshold: resample when the ESS falls below this fraction of N, in
            (0, 1]; 1 resamples at every step.
        metric: the kernel's metric from the particles' full covariance (``"dense"``;
            the default when the flat dimension is at most 200) or its diagonal
            (``"diag"``). Hundreds of independent particles estimate a dense covariance
            well, for every move algorithm.
        step_size: the move's first step size (default :func:`initial_step_size`).
        **options: the algorithm's options (e.g. ``num_integration_steps``).

    Returns:
        A :class:`TemperedSMC` ``(init, step, tune)`` for one particle system; ``vmap``
        it for independent replicas.

    Raises:
        ValueError: for bad settings.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from probinfer import mcmc, smc
        >>> from probinfer.model import Target
        >>> target = Target.from_parts(
        ...     lambda x: -0.5 * jnp.sum(x**2) - jnp.log(2 * jnp.pi),   # N(0, I), normalised
        ...     lambda x: -0.5 * jnp.sum((x - 1.0) ** 2) - jnp.log(2 * jnp.pi),
        ... )
        >>> sampler = smc.tempered_smc(target, mcmc.rwm)
        >>> state = sampler.init(jax.random.normal(jax.random.key(0), (500, 2)))
        >>> for i in range(20):
        ...     state, info = sampler.step(jax.random.key(i), state)
        >>> float(state.inverse_temperature)
        1.0
        >>> abs(float(state.log_z) - float(-jnp.log(4 * jnp.pi) - 0.5)) < 0.1   # exact: N(1; 0, 2I)
        True
    """
    num_mcmc_steps = check_count("num_mcmc_steps", num_mcmc_steps, 1)
    chain_length = check_count("chain_length", chain_length, 1)
    check_metric(metric)
    if adapt_num_mcmc_steps and chain_length > 1:
        raise ValueError(
            "`adapt_num_mcmc_steps` adapts standard moves; waste-free SMC (`chain_length > 1`) "
            "keeps every state of its chains instead: use one or the other."
        )
    if not 0.0 < resample_threshold <= 1.0:
        raise ValueError(
            f"`resample_threshold` must be in (0, 1], got {resample_threshold}; 0.5 is usual."
        )
    if not algorithm.is_metric_tuned:
        raise ValueError(
            f"`{algorithm.name}` cannot move SMC particles (it is not tuned by a step size and "
            "a metric); use rwm, mala, hmc, nuts or slice_sampler."
        )
    schedule = adaptive_tempering() if schedule is None else schedule
    build_options, parameters = algorithm.split_options(options)
    kernel = algorithm.build_kernel(**build_options)
    target_acceptance = algorithm.target_acceptance

    def init(particles: PyTree) -> TemperedSMCState:
        num = particles_count(particles)
        if num < 2:
            raise ValueError(f"tempered SMC needs at least 2 particles, got {num}.")
        if num % chain_length:
            raise ValueError(
                f"waste-free SMC runs N / P chains: `chain_length` ({chain_length}) must "
                f"divide the number of particles ({num})."
            )
        dim = ravel_pytree(jax.tree.map(lambda x: x[0], particles))[0].shape[0]
        # Kept as evaluated: the first step counts (and zeroes) NaN and +inf values.
        loglikelihood = jax.vmap(target.loglikelihood_fn)(particles)
        dtype = jnp.result_type(loglikelihood)
        first = initial_step_size(algorithm, dim) if step_size is None else step_size
        return TemperedSMCState(
            particles=particles,
            loglikelihood=loglikelihood,
            log_weights=jnp.full(num, -np.log(num), dtype),
            inverse_temperature=jnp.zeros((), dtype),
            log_z=jnp.zeros((), dtype),
            step_size=jnp.asarray(first, dtype),
        )

    def reweighted(state: TemperedSMCState, next_beta: Array) -> tuple[Array, Array, Array]:
        """Normalised log weights at ``next_beta``, the log mean incremental weight, and
        whether every weight vanished (then the weights are kept uniform)."""
        num = state.log_weights.shape[0]
        increments = tempered_increments(state.loglikelihood, next_beta - state.inverse_temperature)
        log_weights, log_increment = normalize(state.log_weights + increments)
        is_collapsed = log_increment == -jnp.inf
        log_weights = jnp.where(is_collapsed, -jnp.log(num).astype(log_weights.dtype), log_weights)
        return log_weights, log_increment, is_collapsed

    def covariance_at(state: TemperedSMCState, log_weights: Array) -> Array:
        """The particles' covariance under ``log_weights``: the move's metric."""
        flat = jax.vmap(lambda p: ravel_pytree(p)[0])(state.particles)
        dense = flat.shape[1] <= DENSE_MASS_MATRIX_MAX_DIM if metric is None else metric == "dense"
        return population_covariance(flat, log_weights, dense)

    def tune(state: TemperedSMCState) -> TemperedSMCTuning:
        state = state._replace(loglikelihood=zero_invalid(state.loglikelihood)[0])
        next_beta = schedule(state)
        log_weights = reweighted(state, next_beta)[0]
        return TemperedSMCTuning(next_beta, covariance_at(state, log_weights), state.step_size)

    def step(
        key: PRNGKeyArray, state: TemperedSMCState, tuning: TemperedSMCTuning | None = None
    ) -> tuple[TemperedSMCState, TemperedSMCInfo]:
        key_resample, key_move = jax.random.split(key)
        num = state.log_weights.shape[0]
        loglikelihood, num_nonfinite = zero_invalid(state.loglikelihood)
        state = state._replace(loglikelihood=loglikelihood)
        beta = state.inverse_temperature
        if tuning is None:  # tuned by its own particles
            tuning = tune(state)
        next_beta = jnp.clip(jnp.asarray(tuning.inverse_temperature, beta.dtype), beta, 1.0)
        # Reweight: W_i L_i^(beta' - beta); log Z grows by the log of their sum. Every
        # weight zero: Z_hat = 0 (the weights stay finite, uniform, and the system stops).
        log_weights, log_increment, is_collapsed = reweighted(state, next_beta)
        ess_after = ess(log_weights)
        # Resample (the indices are computed either way; identity when not resampling).
        num_ancestors = num // chain_length
        if chain_length > 1:  # waste-free: every step resamples N / P ancestors
            is_resampled = jnp.asarray(True)
            ancestors = resampling(key_resample, jnp.exp(log_weights), num_ancestors)
        else:
            is_resampled = ess_after < resample_threshold * num
            ancestors = resampling(key_resample, jnp.exp(log_weights), num)
            ancestors = jnp.where(is_resampled, ancestors, jnp.arange(num))
        particles = jax.tree.map(lambda x: x[ancestors], state.particles)
        log_weights = jnp.where(is_resampled, -jnp.log(num).astype(log_weights.dtype), log_weights)
        # A tuning from elsewhere (e.g. float64 under x64) in this system's dtype.
        step_size = jnp.asarray(tuning.step_size, state.step_size.dtype)
        covariance = jnp.asarray(tuning.covariance, log_weights.dtype)
        params = algorithm.make_params(step_size, covariance, **parameters)
        density = target.tempered_fn(next_beta)

        move = (
            _adaptive_moves
            if adapt_num_mcmc_steps
            else functools.partial(_fixed_moves, chain_length=chain_length)
        )
        moved, loglikelihood, acceptance_rate, num_evals, num_steps = move(
            key_move, particles, algorithm, kernel, density, params, num_mcmc_steps
        )
        # (ancestors, chain_length, ...) -> (N, ...): every kept state is a particle.
        moved = jax.tree.map(lambda x: x.reshape(num, *x.shape[2:]), moved)
        loglikelihood = loglikelihood.reshape(num)
        new_step_size = step_size
        if target_acceptance is not None:
            new_step_size = adapt_step_size(step_size, acceptance_rate, target_acceptance)
        new_state = TemperedSMCState(
            particles=moved,
            loglikelihood=loglikelihood,
            log_weights=log_weights,
            inverse_temperature=jnp.where(is_collapsed, 1.0, next_beta),
            log_z=state.log_z + log_increment,
            step_size=new_step_size.astype(state.step_size.dtype),
        )
        # A finished system stays as it is (replicas that end early wait for the others).
        is_finished = beta >= 1.0
        new_state = jax.tree.map(
            lambda old, new: jnp.where(is_finished, old, new), state, new_state
        )
        # Diagnostics of a finished (waiting) system are masked: NaN rates, zero counts.
        info = TemperedSMCInfo(
            inverse_temperature=new_state.inverse_temperature,
            log_z=new_state.log_z,
            ess=jnp.where(is_finished, jnp.nan, ess_after),
            is_resampled=is_resampled & ~is_finished,
            acceptance_rate=jnp.where(is_finished, jnp.nan, acceptance_rate),
            num_evals=jnp.where(is_finished, 0, num_evals),
            num_mcmc_steps=jnp.where(is_finished, 0, num_steps),
            num_nonfinite=jnp.where(is_finished, 0, num_nonfinite),
            is_collapsed=is_collapsed & ~is_finished,
        )
        return new_state, info

    return TemperedSMC(init, step, tune)


def _fixed_moves(
    key: PRNGKeyArray,
    particles: PyTree,
    algorithm: Algorithm,
    kernel: Callable,
    density: Callable,
    params: Any,
    num_mcmc_steps: int,
    chain_length: int,
) -> tuple[PyTree, Array, Array, Array, Array]:
    """Every particle starts a chain of ``chain_length`` kept states, ``num_mcmc_steps``
    transitions apart.

    Returns:
        ``(kept, loglikelihood, acceptance_rate, num_evals, num_steps)``: positions with
        axes ``(particles, chain_length, ...)``, their log likelihoods, the mean
        acceptance, the target evaluations (one per particle for the kernel's initial
        state) and the transitions per chain.
    """

    def chain(key: PRNGKeyArray, position: PyTree) -> tuple[PyTree, Array, Array, Array]:
        def transition(mcmc_state: Any, key: PRNGKeyArray) -> tuple[Any, Any]:
            return kernel(key, mcmc_state, density, params)

        def kept_state(mcmc_state: Any, key: PRNGKeyArray) -> tuple[Any, tuple]:
            keys = jax.random.split(key, num_mcmc_steps)
            mcmc_state, infos = jax.lax.scan(transition, mcmc_state, keys)
            kept = (mcmc_state.position, mcmc_state.aux)
            return mcmc_state, (kept, infos.acceptance_rate, infos.num_grad_evals)

        mcmc_state = algorithm.init(position, density)
        keys = jax.random.split(key, chain_length)
        _, (kept, acceptance, evals) = jax.lax.scan(kept_state, mcmc_state, keys)
        return (*kept, jnp.mean(acceptance), jnp.sum(evals) + 1)

    # Accepted points have a finite tempered density, so their log likelihoods (the
    # kernel's aux) are never NaN; -inf ones (weight 0) are resampled away.
    kept, loglikelihood, acceptance, evals = jax.vmap(chain)(
        jax.random.split(key, particles_count(particles)), particles
    )
    num_steps = jnp.asarray(num_mcmc_steps * chain_length)
    return kept, loglikelihood, jnp.mean(acceptance), jnp.sum(evals), num_steps


def _adaptive_moves(
    key: PRNGKeyArray,
    particles: PyTree,
    algorithm: Algorithm,
    kernel: Callable,
    density: Callable,
    params: Any,
    max_steps: int,
) -> tuple[PyTree, Array, Array, Array, Array]:
    """Transitions of every particle until no coordinate's correlation (across particles)
    between the start and the current positions exceeds :data:`MIXING_CORRELATION` in
    absolute value (1 to ``max_steps`` transitions).

    Returns:
        ``(moved, loglikelihood, acceptance_rate, num_evals, num_steps)``; positions with
        axes ``(particles, 1, ...)`` like :func:`_fixed_moves`.
    """
    num = particles_count(particles)
    flatten = jax.vmap(lambda position: ravel_pytree(position)[0])

    def standardized(flat: Array) -> Array:
        centered = flat - jnp.mean(flat, axis=0, keepdims=True)
        scale = jnp.std(flat, axis=0, keepdims=True)
        return centered / jnp.maximum(scale, jnp.finfo(flat.dtype).tiny)

    start = standardized(flatten(particles))
    states = jax.vmap(lambda position: algorithm.init(position, density))(particles)
    one, zero = jnp.ones((), start.dtype), jnp.zeros((), start.dtype)

    def keep_going(carry: tuple) -> Array:
        _, _, count, correlation, _, _ = carry
        return (count < max_steps) & (correlation > MIXING_CORRELATION)

    def transition(carry: tuple) -> tuple:
        key, states, count, _, acceptance, evals = carry
        key, key_step = jax.random.split(key)
        states, infos = jax.vmap(kernel, in_axes=(0, 0, None, None))(
            jax.random.split(key_step, num), states, density, params
        )
        correlations = jnp.mean(start * standardized(flatten(states.position)), axis=0)
        return (
            key,
            states,
            count + 1,
            jnp.max(jnp.abs(correlations)),  # anti-correlated (x' ~ -x) is not mixed
            acceptance + jnp.mean(infos.acceptance_rate),
            evals + jnp.sum(infos.num_grad_evals),
        )

    carry = (key, states, jnp.zeros((), jnp.int32), one, zero, jnp.asarray(num))
    _, states, count, _, acceptance, evals = jax.lax.while_loop(keep_going, transition, carry)
    moved = jax.tree.map(lambda x: x[:, None], states.position)
    return moved, states.aux[:, None], acceptance / count, evals, count
