"""Elliptical slice sampling for targets ``N(x; mean, Sigma) * L(x)`` (Murray et al., 2010).

The standard move for Gaussian-process latents: with ``nu ~ N(0, Sigma)`` it slices along
the ellipse ``x(theta) = mean + (x - mean) cos(theta) + nu sin(theta)``, which passes
through the current point, keeping ``log L(x(theta)) > log L(x) + log u``. The bracket on
``theta`` shrinks towards 0 (the current point) after each rejected angle, so every step
moves and there is nothing to tune. The Gaussian prior is handled exactly; only the
likelihood is evaluated.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, ArrayLike, PRNGKeyArray

from probinfer.mcmc._algorithm import Algorithm
from probinfer.mcmc._base import Kernel, PyTree

LogLikelihoodFn = Callable[[PyTree], Array]
# A shrinking bracket halves in expectation per rejection; 100 rejections mean the bracket
# is below float resolution and the step stays put (reported in Info).
MAX_SHRINKS = 100


class EllipticalSliceState(NamedTuple):
    """State of elliptical slice sampling.

    Attributes:
        position: the current point, any pytree of arrays.
        loglikelihood: ``log L(position)``.
    """

    position: PyTree
    loglikelihood: Array


class EllipticalSliceParams(NamedTuple):
    """The Gaussian factor ``N(mean, Sigma)`` of the target.

    Attributes:
        mean: a pytree like the position.
        cov_cholesky: a ``(dim,)`` vector of standard deviations (a diagonal covariance),
            or the ``(dim, dim)`` lower Cholesky factor of ``Sigma`` over the flattened
            position, or None for the identity (a whitened prior).
    """

    mean: PyTree
    cov_cholesky: Array | None = None


class EllipticalSliceInfo(NamedTuple):
    """Diagnostics of one elliptical slice step.

    Attributes:
        num_likelihood_evals: likelihood evaluations (angles tried).
        num_nonfinite: angles whose log likelihood was NaN or infinite (treated as rejected).
        is_accepted: ``False`` only if the bracket shrank ``MAX_SHRINKS`` times without
            success and the chain stayed put.
    """

    num_likelihood_evals: Array
    num_nonfinite: Array
    is_accepted: Array


def init(position: PyTree, loglikelihood_fn: LogLikelihoodFn) -> EllipticalSliceState:
    """Evaluate the log likelihood at ``position``.

    Args:
        position: any pytree of arrays.
        loglikelihood_fn: log likelihood of a position.

    Returns:
        The initial state.
    """
    return EllipticalSliceState(position, loglikelihood_fn(position))


def build_kernel(max_shrinks: int = MAX_SHRINKS) -> Callable[..., Any]:
    """Build the raw elliptical slice kernel.

    Args:
        max_shrinks: bracket shrinkages before giving up on the step.

    Returns:
        ``kernel(key, state, loglikelihood_fn, params)`` with
        :class:`EllipticalSliceParams`.
    """

    def kernel(
        key: PRNGKeyArray,
        state: EllipticalSliceState,
        loglikelihood_fn: LogLikelihoodFn,
        params: EllipticalSliceParams,
    ) -> tuple[EllipticalSliceState, EllipticalSliceInfo]:
        mean, cov_cholesky = params
        flat, unravel = ravel_pytree(state.position)
        mean_flat, _ = ravel_pytree(mean)
        key_nu, key_threshold, key_angle = jax.random.split(key, 3)
        nu = jax.random.normal(key_nu, flat.shape, flat.dtype)
        if cov_cholesky is not None:
            nu = cov_cholesky * nu if cov_cholesky.ndim == 1 else cov_cholesky @ nu
        deviation = flat - mean_flat
        log_u = jnp.log(jax.random.uniform(key_threshold, dtype=flat.dtype))
        threshold = state.loglikelihood + log_u
        two_pi = jnp.asarray(2 * jnp.pi, flat.dtype)
        theta0 = jax.random.uniform(key_angle, dtype=flat.dtype, maxval=two_pi)

        def propose(theta: Array) -> tuple[PyTree, Array]:
            position = unravel(mean_flat + deviation * jnp.cos(theta) + nu * jnp.sin(theta))
            return position, loglikelihood_fn(position)

        def not_done(carry: tuple) -> Array:
            *_, num_evals, is_accepted = carry
            return ~is_accepted & (num_evals <= max_shrinks)

        def shrink(carry: tuple) -> tuple:
            key, theta, lower, upper, position, loglik, num_evals, num_nonfinite, _ = carry
            lower = jnp.where(theta < 0, theta, lower)
            upper = jnp.where(theta < 0, upper, theta)
            key, key_theta = jax.random.split(key)
            theta = jax.random.uniform(key_theta, dtype=flat.dtype, minval=lower, maxval=upper)
            position, loglik = propose(theta)
            is_finite = jnp.isfinite(loglik)
            is_accepted = is_finite & (loglik > threshold)
            return (
                key, theta, lower, upper, position, loglik, num_evals + 1,
                num_nonfinite + (~is_finite).astype(jnp.int32), is_accepted,
            )  # fmt: skip

        position, loglik = propose(theta0)
        is_finite = jnp.isfinite(loglik)
        carry = (
            key_angle, theta0, theta0 - two_pi, theta0, position, loglik,
            jnp.asarray(1, jnp.int32), (~is_finite).astype(jnp.int32),
            is_finite & (loglik > threshold),
        )  # fmt: skip
        carry = jax.lax.while_loop(not_done, shrink, carry)
        _, _, _, _, position, loglik, num_evals, num_nonfinite, is_accepted = carry
        new_state = jax.tree.map(
            lambda new, old: jnp.where(is_accepted, new, old),
            EllipticalSliceState(position, loglik),
            state,
        )
        return new_state, EllipticalSliceInfo(num_evals, num_nonfinite, is_accepted)

    return kernel


class EllipticalSlice(Algorithm):
    """The elliptical slice algorithm: its target is the likelihood, its parameters the
    Gaussian factor, and its factory takes the covariance in either form."""

    def __init__(self) -> None:
        super().__init__(
            "elliptical_slice",
            init,
            build_kernel,
            EllipticalSliceParams,
            build_options=("max_shrinks",),
            target_acceptance=None,
            uses_gradient=False,
        )

    @property
    def parameter_options(self) -> tuple[str, ...]:
        """None: the Gaussian factor is given to the factory or in the parameters."""
        return ()

    def default_params(self, position: PyTree, **parameters: Any) -> EllipticalSliceParams:
        """A standard normal factor ``N(0, I)`` (a whitened prior).

        Args:
            position: an example position.
            **parameters: ``mean`` and ``cov_cholesky`` instead.

        Returns:
            The :class:`EllipticalSliceParams`.
        """
        mean = jax.tree.map(jnp.zeros_like, position)
        return EllipticalSliceParams(**{"mean": mean, "cov_cholesky": None, **parameters})

    def __call__(  # type: ignore[override]
        self,
        loglikelihood_fn: LogLikelihoodFn,
        *,
        mean: PyTree,
        cov: ArrayLike | None = None,
        cov_cholesky: ArrayLike | None = None,
        max_shrinks: int = MAX_SHRINKS,
    ) -> Kernel:
        """Close the kernel over a likelihood and a Gaussian prior ``N(mean, cov)``.

        Args:
            loglikelihood_fn: log likelihood of a position (the non-Gaussian factor).
            mean: prior mean, a pytree like the position.
            cov: ``(dim, dim)`` prior covariance over the flattened position.
            cov_cholesky: its lower Cholesky factor instead of ``cov`` (cheaper when it is
                already known), or a ``(dim,)`` vector of standard deviations for a diagonal
                covariance (no ``dim x dim`` matrix is formed). Give neither for the
                identity (a whitened prior).
            max_shrinks: bracket shrinkages before a step gives up and stays put.

        Returns:
            A :class:`~probinfer.mcmc.Kernel` ``(init, step)``.

        Raises:
            ValueError: if both ``cov`` and ``cov_cholesky`` are given, or on a shape
                mismatch with ``mean``.
        """
        if cov is not None and cov_cholesky is not None:
            raise ValueError("pass `cov` or `cov_cholesky`, not both.")
        dim = ravel_pytree(mean)[0].shape[0]
        factor = None
        if cov is not None:
            factor = jnp.linalg.cholesky(jnp.asarray(cov))
        elif cov_cholesky is not None:
            factor = jnp.asarray(cov_cholesky)
        if factor is not None and factor.shape not in ((dim, dim), (dim,)):
            raise ValueError(
                f"the prior covariance factor must be ({dim}, {dim}) (or ({dim},) standard "
                f"deviations) to match `mean` ({dim} entries when flattened), got "
                f"{factor.shape}."
            )
        kernel = build_kernel(max_shrinks)
        params = EllipticalSliceParams(mean, factor)

        def init_fn(position: PyTree) -> EllipticalSliceState:
            return init(position, loglikelihood_fn)

        def step(
            key: PRNGKeyArray, state: EllipticalSliceState
        ) -> tuple[EllipticalSliceState, EllipticalSliceInfo]:
            return kernel(key, state, loglikelihood_fn, params)

        return Kernel(init_fn, step)


elliptical_slice = EllipticalSlice()
"""Elliptical slice sampling (Murray et al., 2010) for a Gaussian prior times a likelihood:
``elliptical_slice(loglikelihood_fn, mean=..., cov=...)`` (or ``cov_cholesky=``) returns a
``Kernel``."""
