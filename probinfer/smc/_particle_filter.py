"""Particle filters for state-space models: bootstrap and guided, with ancestor tracing.

A state-space model with static parameters ``theta``:

    x_0 ~ mu(. | theta),   x_t ~ f(. | x_{t-1}, theta),   y_t ~ g(. | x_t, theta).

The bootstrap filter (Gordon, Salmond & Smith, 1993) proposes from ``f`` and weights by
``g``; a guided filter proposes from a user's ``q(x_t | x_{t-1}, y_t)`` and weights by
``g f / q``. Between steps the particles are resampled (any scheme of
:mod:`probinfer.smc`) when the ESS falls below a fraction of ``N``. The marginal likelihood
estimate ``log p(y_{0:T} | theta) = sum_t log sum_i W_{t-1,i} w_{t,i}`` is unbiased on the
natural scale (Del Moral, 2004), which is what particle marginal Metropolis-Hastings needs.

Every array of the result has the time axis first; ``ancestors[t, i]`` is the index at
time ``t - 1`` of particle ``i``'s parent, so :func:`trace_paths` recovers the surviving
trajectories (the genealogy; smoothing by ancestor tracing, Kitagawa, 1996).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, PRNGKeyArray

from probinfer._validation import check_count
from probinfer.smc._weights import ess, normalize, zero_invalid
from probinfer.smc.resampling import systematic

PyTree = Any
ResamplingFn = Callable[[PRNGKeyArray, Array, int], Array]


class StateSpaceModel(NamedTuple):
    """A state-space model as samplers and densities of one particle.

    ``t`` is the time index (0-based) and ``theta`` the static parameters (any pytree).

    Attributes:
        initial_sample_fn: ``(key, theta) -> x_0``.
        transition_sample_fn: ``(key, x_prev, t, theta) -> x_t``.
        observation_logdensity_fn: ``(y_t, x_t, t, theta) -> log g(y_t | x_t)``.
        transition_logdensity_fn: ``(x_t, x_prev, t, theta) -> log f(x_t | x_prev)``;
            needed by guided filters only.
    """

    initial_sample_fn: Callable[[PRNGKeyArray, PyTree], PyTree]
    transition_sample_fn: Callable[[PRNGKeyArray, PyTree, Array, PyTree], PyTree]
    observation_logdensity_fn: Callable[[PyTree, PyTree, Array, PyTree], Array]
    transition_logdensity_fn: Callable[[PyTree, PyTree, Array, PyTree], Array] | None = None


class Proposal(NamedTuple):
    """A guided filter's proposal ``q(x_t | x_{t-1}, y_t)`` for ``t >= 1``.

    Attributes:
        sample_fn: ``(key, x_prev, y_t, t, theta) -> x_t``.
        logdensity_fn: ``(x_t, x_prev, y_t, t, theta) -> log q``.
    """

    sample_fn: Callable[[PRNGKeyArray, PyTree, PyTree, Array, PyTree], PyTree]
    logdensity_fn: Callable[[PyTree, PyTree, PyTree, Array, PyTree], Array]


class FilterResult(NamedTuple):
    """The output of a particle filter over ``T`` observations.

    Attributes:
        loglikelihood: the estimate of ``log p(y_{0:T-1} | theta)`` (``-inf`` when every
            particle's weight vanished at some time: an estimate of 0).
        particles: ``(T, N, ...)`` the particles at each time (after propagation).
        log_weights: ``(T, N)`` their normalised log weights.
        ancestors: ``(T, N)`` parent indices at the previous time (identity at ``t = 0``).
        ess: ``(T,)`` the ESS after weighting.
        num_nonfinite: observation log densities (or weights) that were NaN or ``+inf``,
            weighted as zero.
    """

    loglikelihood: Array
    particles: PyTree
    log_weights: Array
    ancestors: Array
    ess: Array
    num_nonfinite: Array


def _reweight(log_weights: Array) -> tuple[Array, Array]:
    """Normalised log weights and the log of their sum; when every weight is zero the sum
    is ``-inf`` (a likelihood estimate of 0) and the weights stay uniform, not NaN."""
    log_weights, log_sum = normalize(log_weights)
    is_zero = log_sum == -jnp.inf
    uniform = jnp.full_like(log_weights, -jnp.log(log_weights.shape[0]))
    return jnp.where(is_zero, uniform, log_weights), log_sum


def particle_filter(
    model: StateSpaceModel,
    num_particles: int,
    *,
    proposal: Proposal | None = None,
    resampling: ResamplingFn = systematic,
    resample_threshold: float = 0.5,
) -> Callable[[PRNGKeyArray, PyTree, PyTree], FilterResult]:
    """A bootstrap (``proposal=None``) or guided particle filter.

    Args:
        model: the :class:`StateSpaceModel`.
        num_particles: ``N`` >= 2.
        proposal: a :class:`Proposal` for ``t >= 1`` (the model then needs
            ``transition_logdensity_fn``), or None to propose from the transition.
        resampling: a resampling scheme ``(key, weights, N) -> indices``.
        resample_threshold: resample when the ESS falls below this fraction of ``N``,
            in (0, 1]; 1 resamples at every step.

    Returns:
        ``run(key, observations, theta) -> FilterResult``, jittable; ``observations`` is a
        pytree with a leading time axis ``T``.

    Raises:
        ValueError: for bad settings.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from probinfer import smc
        >>> ar1 = smc.StateSpaceModel(
        ...     initial_sample_fn=lambda key, theta: jax.random.normal(key),
        ...     transition_sample_fn=lambda key, x, t, theta: theta * x + jax.random.normal(key),
        ...     observation_logdensity_fn=lambda y, x, t, theta: -0.5 * (y - x) ** 2
        ...     - 0.5 * jnp.log(2 * jnp.pi),
        ... )
        >>> run = smc.particle_filter(ar1, 500)
        >>> result = jax.jit(run)(jax.random.key(0), jnp.array([0.3, -0.2, 1.1]), 0.8)
        >>> result.particles.shape
        (3, 500)
    """
    num_particles = check_count("num_particles", num_particles, 2)
    if not 0.0 < resample_threshold <= 1.0:
        raise ValueError(
            f"`resample_threshold` must be in (0, 1], got {resample_threshold}; 0.5 is usual."
        )
    if proposal is not None and model.transition_logdensity_fn is None:
        raise ValueError(
            "a guided filter weights by g f / q: give the model `transition_logdensity_fn`."
        )
    num = num_particles

    def run(key: PRNGKeyArray, observations: PyTree, theta: PyTree) -> FilterResult:
        num_times = jax.tree.leaves(observations)[0].shape[0]
        key_initial, key_steps = jax.random.split(key)
        first = jax.tree.map(lambda y: y[0], observations)
        particles = jax.vmap(lambda k: model.initial_sample_fn(k, theta))(
            jax.random.split(key_initial, num)
        )
        zero = jnp.asarray(0)
        log_w = jax.vmap(lambda x: model.observation_logdensity_fn(first, x, zero, theta))(
            particles
        )
        log_w, num_nonfinite = zero_invalid(log_w)
        log_weights, log_sum = _reweight(log_w)
        initial = (particles, log_weights, log_sum - jnp.log(num), num_nonfinite)
        record0 = (particles, log_weights, jnp.arange(num), ess(log_weights))

        def step(carry: tuple[PyTree, Array, Array, Array], inputs: tuple) -> tuple[tuple, tuple]:
            particles, log_weights, loglikelihood, num_nonfinite = carry
            key, t = inputs
            y = jax.tree.map(lambda a: a[t], observations)
            key_resample, key_propagate = jax.random.split(key)
            is_resampled = ess(log_weights) < resample_threshold * num
            ancestors = resampling(key_resample, jnp.exp(log_weights), num)
            ancestors = jnp.where(is_resampled, ancestors, jnp.arange(num))
            previous = jax.tree.map(lambda x: x[ancestors], particles)
            log_weights = jnp.where(is_resampled, -jnp.log(num), log_weights[ancestors])
            keys = jax.random.split(key_propagate, num)
            if proposal is None:
                new = jax.vmap(lambda k, x: model.transition_sample_fn(k, x, t, theta))(
                    keys, previous
                )
                log_increments = jax.vmap(
                    lambda x: model.observation_logdensity_fn(y, x, t, theta)
                )(new)
            else:
                assert model.transition_logdensity_fn is not None  # checked above
                transition_logdensity_fn = model.transition_logdensity_fn
                guide = proposal
                new = jax.vmap(lambda k, x: guide.sample_fn(k, x, y, t, theta))(keys, previous)

                def increment(x: PyTree, x_prev: PyTree) -> Array:
                    return (
                        model.observation_logdensity_fn(y, x, t, theta)
                        + transition_logdensity_fn(x, x_prev, t, theta)
                        - guide.logdensity_fn(x, x_prev, y, t, theta)
                    )

                log_increments = jax.vmap(increment)(new, previous)
            log_increments, bad = zero_invalid(log_increments)
            log_weights, log_increment = _reweight(log_weights + log_increments)
            carry = (new, log_weights, loglikelihood + log_increment, num_nonfinite + bad)
            return carry, (new, log_weights, ancestors, ess(log_weights))

        times = jnp.arange(1, num_times)
        keys = jax.random.split(key_steps, max(num_times - 1, 1))[: num_times - 1]
        (_, _, loglikelihood, num_nonfinite), records = jax.lax.scan(step, initial, (keys, times))
        particles_t, log_weights_t, ancestors_t, ess_t = jax.tree.map(
            lambda first, rest: jnp.concatenate([first[None], rest]), record0, records
        )
        return FilterResult(
            loglikelihood, particles_t, log_weights_t, ancestors_t, ess_t, num_nonfinite
        )

    return run


def trace_paths(particles: PyTree, ancestors: Array) -> PyTree:
    """The trajectories of the final particles, traced back through their ancestors.

    Args:
        particles: ``(T, N, ...)`` a filter's particles.
        ancestors: ``(T, N)`` its ancestor indices.

    Returns:
        ``(N, T, ...)``: path ``i`` ends at final particle ``i``. Weighted by the final
        weights, the paths approximate the smoothing distribution ``p(x_{0:T} | y)``
        (degenerate far back in time: few distinct early ancestors survive).
    """
    num_times = ancestors.shape[0]

    def back(index: Array, t: Array) -> tuple[Array, Array]:
        # `index` holds each path's particle index at time t; its parent at t - 1 follows.
        return ancestors[t][index], index

    last = jnp.arange(ancestors.shape[1])
    _, indices = jax.lax.scan(back, last, jnp.arange(num_times - 1, -1, -1))
    indices = indices[::-1]  # (T, N): the particle index of each path at each time
    paths = jax.tree.map(
        lambda x: jnp.take_along_axis(
            x, indices.reshape(indices.shape + (1,) * (x.ndim - 2)), axis=1
        ),
        particles,
    )
    return jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), paths)
