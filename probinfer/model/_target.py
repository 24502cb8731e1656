"""`Target`: a posterior split into log prior and log likelihood, evaluated in one pass.

Every family needs a different view of the same posterior ``p(x | y) ∝ p(x) L(x)``:

- MCMC samples ``log p(x) + log L(x)``;
- tempered SMC samples ``log p(x) + beta log L(x)`` for ``beta`` rising from 0 to 1;
- nested sampling samples the prior restricted to ``{x : log L(x) > t}``.

A :class:`Target` holds one function that returns both terms, so a model front end traces
the model once per evaluation whichever view a kernel asks for.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax.numpy as jnp
from jaxtyping import Array, ArrayLike

PyTree = Any
LogTermsFn = Callable[[PyTree], tuple[Array, Array]]


class AuxLogDensity(NamedTuple):
    """A log density that also returns auxiliary values computed in the same evaluation.

    Calling it gives the log density alone, so it serves wherever a log density does; the
    MCMC kernels recognise it and keep the auxiliary values of the current point in their
    state (``state.aux``), so a tempered or constrained target hands the log likelihood of
    every accepted point to SMC and nested sampling at no extra evaluation.

    Attributes:
        value_and_aux_fn: ``position -> (log density, aux)``; ``aux`` is any pytree of
            arrays whose structure does not depend on the position.
    """

    value_and_aux_fn: Callable[[PyTree], tuple[Array, PyTree]]

    def __call__(self, position: PyTree) -> Array:
        """The log density at ``position`` (a scalar)."""
        return self.value_and_aux_fn(position)[0]


def value_and_aux(
    logdensity_fn: Callable[[PyTree], Array],
) -> Callable[[PyTree], tuple[Array, PyTree]]:
    """``position -> (log density, aux)`` for any log density (``aux = ()`` for a plain one).

    Args:
        logdensity_fn: a plain log density or an :class:`AuxLogDensity`.

    Returns:
        The value-and-aux function.
    """
    if isinstance(logdensity_fn, AuxLogDensity):
        return logdensity_fn.value_and_aux_fn
    return lambda position: (logdensity_fn(position), ())


class Target(NamedTuple):
    """The log prior and log likelihood of a position, from one evaluation.

    Attributes:
        log_terms_fn: ``position -> (logprior, loglikelihood)``, two scalars. The prior
            term includes the log-Jacobian of any map to constrained space.

    Example:
        >>> import jax.numpy as jnp
        >>> from probinfer.model import Target
        >>> target = Target.from_parts(
        ...     lambda x: -0.5 * jnp.sum(x**2), lambda x: -0.5 * jnp.sum((x - 1.0) ** 2)
        ... )
        >>> float(target.logdensity_fn(jnp.zeros(2)))
        -1.0
        >>> float(target.tempered_fn(0.5)(jnp.zeros(2)))
        -0.5
        >>> float(target.constrained_fn(-0.5)(jnp.zeros(2)))
        -inf
    """

    log_terms_fn: LogTermsFn

    @classmethod
    def from_parts(
        cls,
        logprior_fn: Callable[[PyTree], Array],
        loglikelihood_fn: Callable[[PyTree], Array],
    ) -> Target:
        """A target from separate prior and likelihood functions.

        Args:
            logprior_fn: log prior density of a position (normalized where the evidence
                matters: SMC and nested sampling report ``log Z`` relative to it).
            loglikelihood_fn: log likelihood of a position.

        Returns:
            The :class:`Target`.
        """

        def log_terms_fn(position: PyTree) -> tuple[Array, Array]:
            return logprior_fn(position), loglikelihood_fn(position)

        return cls(log_terms_fn)

    def logprior_fn(self, position: PyTree) -> Array:
        """Log prior density at ``position`` (a scalar)."""
        return self.log_terms_fn(position)[0]

    def loglikelihood_fn(self, position: PyTree) -> Array:
        """Log likelihood at ``position`` (a scalar)."""
        return self.log_terms_fn(position)[1]

    def logdensity_fn(self, position: PyTree) -> Array:
        """Unnormalized log posterior at ``position``: log prior + log likelihood."""
        logprior, loglikelihood = self.log_terms_fn(position)
        return logprior + loglikelihood

    def tempered_fn(self, inverse_temperature: ArrayLike) -> AuxLogDensity:
        """The tempered log density ``log p(x) + beta log L(x)``, with ``log L(x)`` as aux.

        At ``beta = 0`` the likelihood is ignored even where it is ``-inf`` (``0 * -inf``
        would be NaN), so the first tempering step starts from the prior itself.

        Args:
            inverse_temperature: ``beta`` in [0, 1], a scalar (may be traced).

        Returns:
            An :class:`AuxLogDensity` of a position (aux: the log likelihood).
        """

        def tempered(position: PyTree) -> tuple[Array, Array]:
            logprior, loglikelihood = self.log_terms_fn(position)
            beta = jnp.asarray(inverse_temperature, jnp.result_type(logprior))
            return logprior + jnp.where(beta > 0, beta * loglikelihood, 0.0), loglikelihood

        return AuxLogDensity(tempered)

    def constrained_fn(self, log_likelihood_threshold: ArrayLike) -> AuxLogDensity:
        """The prior restricted to ``{x : log L(x) > t}`` (``log p(x)`` inside, ``-inf``
        out), with ``log L(x)`` as aux.

        Args:
            log_likelihood_threshold: ``t``, a scalar (may be traced).

        Returns:
            An :class:`AuxLogDensity` of a position, the form nested sampling moves sample.
        """

        def constrained(position: PyTree) -> tuple[Array, Array]:
            logprior, loglikelihood = self.log_terms_fn(position)
            inside = loglikelihood > log_likelihood_threshold
            return jnp.where(inside, logprior, -jnp.inf), loglikelihood

        return AuxLogDensity(constrained)
