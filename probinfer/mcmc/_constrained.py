"""Likelihood-constrained moves: any MCMC kernel on the prior restricted to ``{log L > t}``.

Nested sampling replaces its worst live point by a draw from the prior restricted to the
likelihood contour of that point, ``p(x) 1[log L(x) > t]``. A constrained move runs any
:class:`~probinfer.mcmc.Algorithm`'s kernel on that density, written as
``log p(x)`` inside the contour and ``-inf`` outside (:meth:`Target.constrained_fn`), for
``num_steps`` transitions, and returns the new point with its log likelihood. The
restricted density is an :class:`~probinfer.model.AuxLogDensity` whose auxiliary value is
the log likelihood, so the kernel's state carries it: a move costs no likelihood evaluation
beyond the kernel's own.

How each kernel meets the contour:

- random-walk Metropolis rejects proposals outside it (plain Metropolis on the restricted
  density);
- slice sampling treats points outside it as outside the slice: the interval stops
  stepping out there and shrinks past them;
- MALA and HMC *reject* at the contour: a proposal or trajectory end outside is rejected
  (inside the contour the leapfrog flow follows the prior; where a trajectory passes
  outside, the masked gradient is zero, which keeps the integrator volume-preserving and
  reversible, so the Metropolis correction stays exact);
- NUTS stops a trajectory at its first point outside (its energy is infinite, a
  divergence) and discards that subtree, so it too rejects at the contour.

The kernels' own ``Info`` counts points outside the contour as non-finite proposals (and
HMC/NUTS as divergences); inside a constrained move that is expected, so only the
acceptance and the evaluation counts are reported.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, PRNGKeyArray

from probinfer._validation import check_count
from probinfer.mcmc._algorithm import Algorithm
from probinfer.model._target import AuxLogDensity, Target

PyTree = Any


class ConstrainedState(NamedTuple):
    """State of a constrained move for one live point.

    Attributes:
        mcmc_state: the kernel's state; its ``logdensity`` is the log prior (the restricted
            density inside the contour) and its ``aux`` the log likelihood.
    """

    mcmc_state: Any

    @property
    def loglikelihood(self) -> Array:
        """Log likelihood at the position, a scalar."""
        return self.mcmc_state.aux


class ConstrainedInfo(NamedTuple):
    """Diagnostics of one constrained move (``num_steps`` kernel transitions).

    Attributes:
        acceptance_rate: mean acceptance probability over the transitions (1 for slice).
        num_accepted: transitions that moved.
        num_evals: target evaluations (log-density or gradient evaluations of the
            kernel; each evaluates prior and likelihood once).
    """

    acceptance_rate: Array
    num_accepted: Array
    num_evals: Array


class ConstrainedMove(NamedTuple):
    """A constrained move closed over its target.

    Attributes:
        init: ``init(position) -> ConstrainedState``.
        step: ``step(key, state, log_likelihood_threshold, params) -> (state, info)``
            with the algorithm's parameters (``algorithm.params_type``, e.g.
            :class:`~probinfer.mcmc.MetricParams`); the state's position must lie inside
            the contour (its log likelihood above the threshold), as a surviving live
            point does.
    """

    init: Callable[[PyTree], ConstrainedState]
    step: Callable[
        [PRNGKeyArray, ConstrainedState, ArrayLike, Any],
        tuple[ConstrainedState, ConstrainedInfo],
    ]


def constrained(
    algorithm: Algorithm, target: Target, *, num_steps: int = 1, **options: Any
) -> ConstrainedMove:
    """Run ``algorithm`` on the prior restricted to a likelihood contour.

    Args:
        algorithm: ``probinfer.mcmc.rwm``, ``slice_sampler``, ``mala``, ``hmc`` or ``nuts``.
        target: the prior/likelihood split (``density.target`` of a model front end).
        num_steps: kernel transitions per move (>= 1).
        **options: the algorithm's build options (e.g. ``max_num_doublings``).

    Returns:
        A :class:`ConstrainedMove` ``(init, step)``.

    Raises:
        ValueError: for ``num_steps`` < 1 or an unknown option.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from probinfer import mcmc
        >>> from probinfer.model import Target
        >>> target = Target.from_parts(
        ...     lambda x: -0.5 * jnp.sum(x**2), lambda x: -0.5 * jnp.sum((x - 1.0) ** 2)
        ... )
        >>> move = mcmc.constrained(mcmc.slice_sampler, target, num_steps=5)
        >>> state = move.init(jnp.ones(2))
        >>> params = mcmc.MetricParams(jnp.asarray(1.0), jnp.ones(2))
        >>> state, info = move.step(jax.random.key(0), state, -1.0, params)
        >>> bool(state.loglikelihood > -1.0)
        True
    """
    num_steps = check_count("num_steps", num_steps, 1)
    if not algorithm.is_metric_tuned:
        raise ValueError(
            f"`{algorithm.name}` samples a Gaussian factor times a likelihood, not a density "
            "restricted to a contour; use rwm, slice_sampler, mala, hmc or nuts."
        )
    build_options, parameters = algorithm.split_options(options)
    if parameters:
        raise ValueError(
            f"{sorted(parameters)} are parameters of `{algorithm.name}`, which may change "
            "between moves: set them in the `params` passed to `step`."
        )
    kernel = algorithm.build_kernel(**build_options)

    def init(position: PyTree) -> ConstrainedState:
        # The prior with the likelihood as aux: one evaluation of both terms.
        return ConstrainedState(algorithm.init(position, AuxLogDensity(target.log_terms_fn)))

    def step(
        key: PRNGKeyArray,
        state: ConstrainedState,
        log_likelihood_threshold: ArrayLike,
        params: Any,
    ) -> tuple[ConstrainedState, ConstrainedInfo]:
        restricted_fn = target.constrained_fn(log_likelihood_threshold)

        def transition(mcmc_state: Any, key: PRNGKeyArray) -> tuple[Any, Any]:
            return kernel(key, mcmc_state, restricted_fn, params)

        keys = jax.random.split(key, num_steps)
        mcmc_state, infos = jax.lax.scan(transition, state.mcmc_state, keys)
        info = ConstrainedInfo(
            acceptance_rate=jnp.mean(infos.acceptance_rate),
            num_accepted=jnp.sum(infos.is_accepted.astype(jnp.int32)),
            num_evals=jnp.sum(infos.num_grad_evals),
        )
        return ConstrainedState(mcmc_state), info

    return ConstrainedMove(init, step)
