"""The kernel contract shared by every MCMC algorithm.

A kernel is a pair of pure functions: ``init(position) -> State`` and
``step(key, state) -> (State, Info)``. ``State`` carries what the next step needs;
``Info`` carries diagnostics only.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, PRNGKeyArray

from probinfer.model._target import value_and_aux

PyTree = Any
LogDensityFn = Callable[[PyTree], Array]


class Kernel(NamedTuple):
    """An MCMC kernel closed over its target and parameters.

    Attributes:
        init: ``init(position) -> State``; ``position`` is any pytree of arrays.
        step: ``step(key, state) -> (State, Info)``; pure and jittable.
    """

    init: Callable[[PyTree], Any]
    step: Callable[[PRNGKeyArray, Any], tuple[Any, Any]]


class KernelStages(NamedTuple):
    """A raw kernel's transition split at its gradient evaluations.

    ``kernel(key, state, logdensity_fn, params)`` is ``begin``, then ``advance`` until
    ``is_done``, then ``end``. A loop over many chains that calls ``advance`` once per
    iteration can let each chain start its next transition as soon as its own ends
    (``probinfer.driver.StagedStep``), instead of waiting, in lock step, for the longest
    trajectory of the group, as a vmapped ``while_loop`` per transition does.

    Attributes:
        begin: ``(key, state, logdensity_fn, params) -> work``: draws the transition's
            randomness (momentum, directions); no gradient evaluation.
        advance: ``(work, state, logdensity_fn, params) -> work``: one unit of work (one
            leapfrog step for HMC and NUTS, the whole transition for one-step kernels).
        is_done: ``work -> bool``: the transition is complete.
        end: ``(work, state, logdensity_fn, params) -> (state, info)``: the new state and
            the transition's diagnostics.
        varies_in_length: whether transitions take different numbers of ``advance`` calls
            (NUTS, jittered HMC); only then can chains gain from not waiting for each other.
    """

    begin: Callable[[PRNGKeyArray, Any, LogDensityFn, Any], Any]
    advance: Callable[[Any, Any, LogDensityFn, Any], Any]
    is_done: Callable[[Any], Array]
    end: Callable[[Any, Any, LogDensityFn, Any], tuple[Any, Any]]
    varies_in_length: bool = True


RawKernel = Callable[[PRNGKeyArray, Any, LogDensityFn, Any], tuple[Any, Any]]


def kernel_from_stages(stages: KernelStages) -> RawKernel:
    """The raw kernel ``(key, state, logdensity_fn, params) -> (state, info)`` of ``stages``.

    Args:
        stages: the transition's stages.

    Returns:
        One transition: ``begin``, a ``while_loop`` of ``advance``, ``end``.
    """

    def kernel(key: PRNGKeyArray, state: Any, logdensity_fn: LogDensityFn, params: Any) -> Any:
        work = stages.begin(key, state, logdensity_fn, params)
        work = jax.lax.while_loop(
            lambda w: ~stages.is_done(w),
            lambda w: stages.advance(w, state, logdensity_fn, params),
            work,
        )
        return stages.end(work, state, logdensity_fn, params)

    return kernel


class _OneShotWork(NamedTuple):
    key: PRNGKeyArray
    state: Any
    info: Any
    is_done: Array


def one_shot_stages(kernel: RawKernel) -> KernelStages:
    """Stages of a kernel whose transitions all cost the same: ``advance`` runs it whole.

    So that every algorithm has stages (``Algorithm.stages``) and composes with a staged
    loop; ``pi.sample`` never interleaves such kernels, whose chains never wait.

    Args:
        kernel: a raw kernel.

    Returns:
        :class:`KernelStages` with one ``advance`` per transition.
    """

    def begin(key: PRNGKeyArray, state: Any, logdensity_fn: LogDensityFn, params: Any) -> Any:
        info_shape = jax.eval_shape(lambda: kernel(key, state, logdensity_fn, params)[1])
        info = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), info_shape)
        return _OneShotWork(key, state, info, jnp.asarray(False))

    def advance(work: _OneShotWork, state: Any, logdensity_fn: LogDensityFn, params: Any) -> Any:
        new_state, info = kernel(work.key, state, logdensity_fn, params)
        return _OneShotWork(work.key, new_state, info, jnp.asarray(True))

    def end(work: _OneShotWork, *_: Any) -> tuple[Any, Any]:
        return work.state, work.info

    return KernelStages(begin, advance, lambda work: work.is_done, end, varies_in_length=False)


class MetricParams(NamedTuple):
    """Parameters of the kernels tuned by a step size and a metric (RWM, MALA, NUTS, slice).

    Attributes:
        step_size: integrator step size (MALA, NUTS), proposal scale (RWM) or width
            (slice), > 0.
        inverse_mass_matrix: ``(dim,)`` diagonal or ``(dim, dim)`` dense (or a
            :class:`~probinfer.mcmc.MassMatrix`): the metric, or the covariance that RWM
            proposals and slice directions follow.
    """

    step_size: Array
    inverse_mass_matrix: Any


class GradientState(NamedTuple):
    """State of the gradient-based kernels (MALA, HMC, NUTS).

    Attributes:
        position: the current point, any pytree of arrays.
        logdensity: log density at ``position``, a scalar.
        logdensity_grad: gradient of the log density, same structure as ``position``.
        aux: the auxiliary values of an :class:`~probinfer.model.AuxLogDensity` at
            ``position`` (``()`` for a plain log density).
    """

    position: PyTree
    logdensity: Array
    logdensity_grad: PyTree
    aux: PyTree = ()


class TransitionInfo(NamedTuple):
    """Diagnostics of one transition, common to every kernel.

    Attributes:
        acceptance_rate: Metropolis acceptance probability of the proposal (for NUTS, the
            mean over the trajectory, as Stan reports it); the quantity that step-size
            adaptation targets.
        is_accepted: whether the chain moved.
        is_divergent: whether the energy error exceeded the divergence threshold.
        num_grad_evals: number of log-density gradient evaluations (for random-walk
            Metropolis, log-density evaluations).
        num_nonfinite: number of proposals whose log density was NaN or infinite and
            were therefore rejected.
        tree_depth: NUTS trajectory doublings kept in the trajectory, as Stan's
            ``treedepth__`` (a last subtree rejected for a divergence or an inner U-turn
            is not counted, its leapfrog steps are); 0 for the other kernels.
        energy: Hamiltonian at the new state (minus the log density for RWM).
    """

    acceptance_rate: Array
    is_accepted: Array
    is_divergent: Array
    num_grad_evals: Array
    num_nonfinite: Array
    tree_depth: Array
    energy: Array


def init_gradient_state(position: PyTree, logdensity_fn: LogDensityFn) -> GradientState:
    """Evaluate the log density and its gradient at ``position``.

    Args:
        position: any pytree of arrays.
        logdensity_fn: maps a position to a scalar log density (an
            :class:`~probinfer.model.AuxLogDensity` also fills ``aux``).

    Returns:
        The :class:`GradientState` at ``position``.
    """
    value_and_grad = jax.value_and_grad(value_and_aux(logdensity_fn), has_aux=True)
    (logdensity, aux), logdensity_grad = value_and_grad(position)
    return GradientState(position, logdensity, logdensity_grad, aux)


def safe_log_ratio(log_numerator: Array, log_denominator: Array) -> tuple[Array, Array]:
    """Return ``min(0, log_numerator - log_denominator)`` with non-finite values mapped to -inf.

    Args:
        log_numerator: log density (or minus energy) of the proposal, a scalar.
        log_denominator: log density (or minus energy) of the current state, a scalar.

    Returns:
        The log acceptance probability and a flag saying the proposal was non-finite.
    """
    delta = log_numerator - log_denominator
    is_nonfinite = ~jnp.isfinite(delta)
    log_accept = jnp.where(is_nonfinite, -jnp.inf, jnp.minimum(delta, 0.0))
    return log_accept, is_nonfinite
