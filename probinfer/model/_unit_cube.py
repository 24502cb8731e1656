"""The unit-cube front end of nested samplers: a log likelihood and a prior transform.

dynesty, UltraNest and PolyChord users write a model as ``loglikelihood_fn(x)`` and a
``prior_transform(u)`` that maps a point ``u`` of the unit cube ``[0, 1]^d`` to parameters
``x`` distributed as the prior when ``u`` is uniform. :class:`UnitCube` turns the pair into
a :class:`~probinfer.model.LogDensity` on the cube itself: the prior there is uniform
(``log p(u) = 0`` inside, ``-inf`` outside, so it is normalised and ``log Z`` is the
evidence), the likelihood is ``loglikelihood_fn(prior_transform(u))``, and draws are
reported as ``x = prior_transform(u)``.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jaxtyping import Array, PRNGKeyArray

from probinfer._validation import check_count
from probinfer.checkpoint import describe_callable
from probinfer.model._logdensity import BoundLogDensity, LogDensity

PyTree = Any


def _cube_logprior(u: Array, *data: Any) -> Array:
    """The uniform density on the unit cube: 0 inside, ``-inf`` outside."""
    return jnp.where(jnp.all((u >= 0) & (u <= 1)), 0.0, -jnp.inf).astype(u.dtype)


@dataclasses.dataclass(frozen=True)
class _TransformedLikelihood:
    """``u -> loglikelihood_fn(prior_transform(u), *data)`` (hashable: compares its parts;
    a dataclass, not a NamedTuple, since JAX keeps weak references to traced callables)."""

    loglikelihood_fn: Callable[..., Array]
    prior_transform: Callable[[Array], Array]

    def __call__(self, u: Array, *data: Any) -> Array:
        return self.loglikelihood_fn(self.prior_transform(u), *data)

    @property
    def __signature__(self) -> inspect.Signature:
        # Takes the data the user's likelihood takes: `LogDensity` reads this signature to
        # know whether the functions can be checked before the data are given.
        return inspect.signature(self.loglikelihood_fn)


@dataclasses.dataclass(frozen=True)
class _UniformCube:
    """``key -> u`` uniform on ``[0, 1]^dim`` (hashable)."""

    dim: int
    dtype: Any

    def __call__(self, key: PRNGKeyArray) -> Array:
        return jax.random.uniform(key, (self.dim,), self.dtype)


class UnitCube(LogDensity):
    """A model given as a log likelihood and a prior transform from the unit cube.

    Args:
        loglikelihood_fn: ``x -> log L(x)`` (a scalar), with ``x = prior_transform(u)``;
            it may take data arguments after ``x`` (passed to ``pi.evidence`` after it).
        prior_transform: ``u -> x``, mapping a ``(dim,)`` point of ``[0, 1]^dim`` to the
            parameters (a float array).
        dim: the number of cube coordinates (>= 1).

    Raises:
        ValueError: for a bad ``dim``, or a transform that fails or is not finite on the
            cube.
        TypeError: for arguments that are not callable.

    Example:
        >>> import jax.numpy as jnp
        >>> from probinfer.model import UnitCube
        >>> cube = UnitCube(lambda x: -0.5 * jnp.sum(x**2), lambda u: 10.0 * u - 5.0, dim=3)
        >>> cube.site_names
        ('x',)
    """

    # For `pi.sample`'s start (errors): its `init` is the cube's centre, set here.
    initial_draws = "the cube's centre plus uniform(-2, 2) jitter"
    initial_fix = "pass finite `init_positions`"

    def __init__(
        self,
        loglikelihood_fn: Callable[..., Array],
        prior_transform: Callable[[Array], Array],
        dim: int,
    ) -> None:
        dim = check_count("dim", dim, 1)
        functions = {"loglikelihood_fn": loglikelihood_fn, "prior_transform": prior_transform}
        for name, fn in functions.items():
            if not callable(fn):
                raise TypeError(f"`{name}` must be callable, got {type(fn).__name__}.")
        dtype = jnp.asarray(0.5).dtype
        self._check_transform(prior_transform, dim, dtype)
        super().__init__(
            init=jnp.full((dim,), 0.5, dtype),
            logprior_fn=_cube_logprior,
            loglikelihood_fn=_TransformedLikelihood(loglikelihood_fn, prior_transform),
            sample_prior_fn=_UniformCube(dim, dtype),
        )
        self.prior_transform = prior_transform
        self.dim = dim

    @staticmethod
    def _check_transform(prior_transform: Callable[[Array], Array], dim: int, dtype: Any) -> None:
        """The transform must map points of the cube (corners included) to finite floats."""
        # The centre, points near two opposite corners, and a fixed scatter inside.
        probes = jnp.concatenate(
            [
                jnp.full((1, dim), 0.5, dtype),
                jnp.full((1, dim), 1e-6, dtype),
                jnp.full((1, dim), 1 - 1e-6, dtype),
                jax.random.uniform(jax.random.key(0), (5, dim), dtype),
            ]
        )
        try:
            values = jax.vmap(prior_transform)(probes)
        except Exception as error:
            raise ValueError(
                f"`prior_transform` failed on points of the unit cube [0, 1]^{dim} "
                f"({type(error).__name__}: {error}); it must map a ({dim},) array u in the "
                "cube to the parameters."
            ) from error
        if not jnp.issubdtype(jnp.result_type(values), jnp.floating):
            raise ValueError(
                f"`prior_transform` must return floats, got dtype {jnp.result_type(values)}."
            )
        bad = ~jnp.all(jnp.isfinite(jnp.reshape(values, (probes.shape[0], -1))), axis=1)
        if bool(jnp.any(bad)):
            point = probes[int(jnp.argmax(bad))]
            raise ValueError(
                f"`prior_transform` is not finite at u = {point.tolist()}, a point of the unit "
                f"cube [0, 1]^{dim}: it must map the whole cube (its inputs are uniform on "
                "[0, 1], not standard normal) to finite parameters; e.g. for a normal prior "
                "use `mu + sigma * jax.scipy.special.ndtri(u)` (finite for 0 < u < 1)."
            )

    def describe(self) -> str:
        """A description of the functions and the dimension (for checkpoints).

        Returns:
            The functions' qualified names and code, and ``dim``.
        """
        loglikelihood_fn = self.loglikelihood_fn
        assert isinstance(loglikelihood_fn, _TransformedLikelihood)
        return repr(
            (
                "unit cube",
                describe_callable(loglikelihood_fn.loglikelihood_fn),
                describe_callable(self.prior_transform),
                self.dim,
            )
        )

    def __repr__(self) -> str:
        return f"UnitCube(dim={self.dim})"

    def bind(self, data: tuple[Any, ...]) -> BoundUnitCube:
        """The functions of a cube point alone, for concrete or traced ``data``.

        Args:
            data: the likelihood's data arguments.

        Returns:
            The :class:`BoundUnitCube`.
        """
        return BoundUnitCube(self, data)


class BoundUnitCube(BoundLogDensity):
    """A :class:`UnitCube` with its data; draws are reported as ``x = prior_transform(u)``."""

    def postprocess_fn(self, position: PyTree) -> dict[str, Array]:
        """The parameters of a cube point.

        Args:
            position: a ``(dim,)`` point of the cube.

        Returns:
            ``{"x": prior_transform(position)}``.
        """
        assert isinstance(self.spec, UnitCube)
        return {"x": self.spec.prior_transform(position)}
