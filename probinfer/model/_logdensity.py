"""The plain front end: a log density written by hand, as one function or as prior and likelihood.

Functions take the position first and then any data arguments, ``fn(position, *data)``;
``pi.sample(target, x, y)`` passes ``x, y`` as values to the compiled program, so new data of
the same shapes reuses it (a function that closes over its data is a new program each time).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.core import Tracer
from jaxtyping import Array, PRNGKeyArray

from probinfer._validation import real_array
from probinfer.checkpoint import describe_callable
from probinfer.model._common import (
    UntraceableError,
    explain_trace_failures,
    explain_tracer_errors,
    jitter,
    leaf_names,
    user_line,
)
from probinfer.model._target import Target

PyTree = Any
DataFn = Callable[..., Array]


def _takes_position_only(fn: Callable[..., Any]) -> bool:
    """Can ``fn`` be called with the position alone (no data arguments)?"""
    try:
        inspect.signature(fn).bind(None)
    except TypeError:
        return False
    except ValueError:  # no signature to read (a builtin): assume it can
        return True
    return True


def _init_leaf(path: tuple[Any, ...], leaf: Any) -> Array:
    """A leaf of ``init`` as a JAX array; non-numbers are refused naming the leaf."""
    if isinstance(leaf, jax.Array):
        return leaf
    array = real_array(f"init{jax.tree_util.keystr(path)}", leaf)
    with np.errstate(over="ignore"):  # 1e300 is infinite in float32: refused below
        return jnp.asarray(array)


class LogDensity:
    """A log density written by hand, with an example position.

    Give either ``logdensity_fn`` (enough for MCMC) or ``logprior_fn`` and
    ``loglikelihood_fn`` (what tempered SMC and nested sampling need; MCMC samples their sum).
    Each function is ``fn(position, *data) -> scalar``: the data are the positional
    arguments that follow the target in ``pi.sample(target, *data)``.

    Args:
        logdensity_fn: log density of a position (unnormalized is fine).
        init: an example position: a float array or a pytree of float arrays. Chains
            start at ``init`` plus uniform(-2, 2) jitter unless ``init_positions`` is given.
        logprior_fn: log prior density of a position, instead of ``logdensity_fn``.
        loglikelihood_fn: log likelihood of a position, with ``logprior_fn``.
        sample_prior_fn: ``key -> position``, one exact draw from the prior (normalised
            ``logprior_fn``); SMC starts its particles there.

    Raises:
        TypeError: if ``init`` is missing or has non-float leaves, if the functions are
            given in neither or both ways, or if a function does not return a float scalar
            at ``init`` (checked here when it takes no data, else when the data are given).
        ValueError: if ``init`` is empty or holds NaN or infinite values.

    Example:
        >>> import jax.numpy as jnp
        >>> import probinfer as pi
        >>> target = pi.LogDensity(lambda p: -0.5 * jnp.sum(p["x"] ** 2), {"x": jnp.zeros(3)})
        >>> target.site_names
        ('x',)
        >>> regression = pi.LogDensity(
        ...     init=jnp.zeros(2),
        ...     logprior_fn=lambda w, x, y: -0.5 * jnp.sum(w**2),
        ...     loglikelihood_fn=lambda w, x, y: -0.5 * jnp.sum((y - x @ w) ** 2),
        ... )
        >>> regression.is_split
        True
    """

    def __init__(
        self,
        logdensity_fn: DataFn | None = None,
        init: PyTree = None,
        *,
        logprior_fn: DataFn | None = None,
        loglikelihood_fn: DataFn | None = None,
        sample_prior_fn: Callable[[PRNGKeyArray], PyTree] | None = None,
    ) -> None:
        is_split = logprior_fn is not None or loglikelihood_fn is not None
        if logdensity_fn is not None and is_split:
            raise TypeError(
                "pass either `logdensity_fn` or `logprior_fn` with `loglikelihood_fn`, not both."
            )
        if is_split and (logprior_fn is None or loglikelihood_fn is None):
            missing = "loglikelihood_fn" if loglikelihood_fn is None else "logprior_fn"
            raise TypeError(
                f"`{missing}` is missing: the prior and likelihood come as a pair (or pass one "
                "`logdensity_fn`)."
            )
        if logdensity_fn is None and not is_split:
            raise TypeError(
                "`LogDensity` needs `logdensity_fn`, or `logprior_fn` and `loglikelihood_fn`."
            )
        given = (
            {"logprior_fn": logprior_fn, "loglikelihood_fn": loglikelihood_fn}
            if is_split
            else {"logdensity_fn": logdensity_fn}
        )
        named: dict[str, DataFn] = {}
        for name, fn in given.items():
            if not callable(fn):
                raise TypeError(
                    f"`{name}` must be callable, got {type(fn).__name__}; pass a function of a "
                    "position pytree (and any data arguments) returning a scalar."
                )
            named[name] = fn
        if init is None:
            raise TypeError(
                "`init` is missing; pass an example position (an array or pytree of arrays)."
            )
        init = jax.tree_util.tree_map_with_path(_init_leaf, init)
        leaves = jax.tree.leaves(init)
        if not leaves:
            raise TypeError("`init` has no array leaves; pass an array or a pytree of arrays.")
        if not sum(leaf.size for leaf in leaves):
            raise ValueError(
                f"`init` has no entries (leaf shapes {[leaf.shape for leaf in leaves]}): there "
                "is nothing to sample; pass an example position with at least one value."
            )
        for path, leaf in jax.tree_util.tree_leaves_with_path(init):
            if not jnp.issubdtype(leaf.dtype, jnp.floating):
                raise TypeError(
                    f"`init` leaf {jax.tree_util.keystr(path) or 'x'} has dtype {leaf.dtype}; "
                    "positions must be floating point (discrete parameters cannot be sampled "
                    "by gradient-based MCMC: marginalize them out)."
                )
            if isinstance(leaf, Tracer):  # built inside a traced function
                continue
            num_bad = int(np.sum(~np.isfinite(np.asarray(leaf))))  # in JAX's dtype already
            if num_bad:
                raise ValueError(
                    f"`init` leaf {jax.tree_util.keystr(path) or 'x'} has {num_bad} value(s) "
                    f"that are NaN or infinite in {leaf.dtype}; pass a finite example position "
                    "(chains start around it)."
                )
        self._named = named
        self.is_split = is_split
        self.logdensity_fn: DataFn = logdensity_fn or self._sum_of_parts
        self.logprior_fn = logprior_fn
        self.loglikelihood_fn = loglikelihood_fn
        if sample_prior_fn is not None and not callable(sample_prior_fn):
            raise TypeError("`sample_prior_fn` must be callable: `key -> position`.")
        self.sample_prior_fn = sample_prior_fn
        self.init = init
        self.treedef = jax.tree.structure(init)
        self.shapes = tuple((leaf.shape, leaf.dtype) for leaf in leaves)
        self.site_names = leaf_names(init)
        if len(set(self.site_names)) < len(self.site_names):
            raise ValueError(
                f"`init` leaves have clashing names {self.site_names}; rename the keys so that "
                "the dotted paths of the leaves are distinct."
            )
        if all(_takes_position_only(fn) for fn in named.values()):
            self.check_data(())

    def _sum_of_parts(self, position: PyTree, *data: Any) -> Array:
        assert self.logprior_fn is not None and self.loglikelihood_fn is not None
        return self.logprior_fn(position, *data) + self.loglikelihood_fn(position, *data)

    def check_data(self, data: tuple[Any, ...]) -> None:
        """Check that every function maps ``(init, *data)`` to a scalar.

        Args:
            data: the data arguments (arrays or pytrees of arrays).

        Raises:
            TypeError: naming the function that fails or returns a non-scalar or a
                non-float.
        """
        for name, fn in self._named.items():
            try:
                with explain_tracer_errors(f"`{name}` of the `LogDensity`"):
                    out = jax.eval_shape(fn, self.init, *data)
            except UntraceableError:
                raise  # the message says what to change; the signature is not at fault
            except Exception as error:
                raise self._call_error(name, data, error) from error
            if not isinstance(out, jax.ShapeDtypeStruct) or out.shape != ():
                shape = getattr(out, "shape", type(out).__name__)
                raise TypeError(
                    f"`{name}` must return a scalar, got shape {shape}; sum the "
                    "log-density terms (e.g. `jnp.sum(...)`)."
                )
            if not jnp.issubdtype(out.dtype, jnp.floating):
                raise TypeError(
                    f"`{name}` must return a real floating-point scalar (samplers "
                    f"differentiate it), got dtype {out.dtype}; return the log density as a "
                    "float (e.g. `jnp.asarray(value, float)`)."
                )

    @staticmethod
    def _call_error(name: str, data: tuple[Any, ...], error: Exception) -> TypeError:
        where = user_line(error)
        return TypeError(
            f"`{name}` of the `LogDensity` failed on `init` and {len(data)} data "
            f"argument(s){'' if where is None else ' at ' + where} "
            f"({type(error).__name__}: {error}); it must be "
            "`fn(position, *data)` with a position shaped like `init` and the data "
            "passed after the target: `pi.sample(target, *data)`."
        )

    def prepare_data(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
        """Turn ``pi.sample``'s positional arguments into checked array data.

        Args:
            args: the data arguments, arrays or pytrees of arrays (lists are converted).
            kwargs: must be empty (data are positional).

        Returns:
            The data as a tuple of array pytrees.

        Raises:
            TypeError: for keyword data, non-array data or functions that reject the data.
        """
        if kwargs:
            raise TypeError(
                f"a `LogDensity` takes its data positionally (`pi.sample(target, x, y)`), got "
                f"keyword(s) {sorted(kwargs)}."
            )
        try:
            data = jax.tree.map(jnp.asarray, tuple(args))
        except TypeError as error:
            raise TypeError(
                f"`LogDensity` data must be arrays or pytrees of arrays ({error}); close over "
                "settings such as strings in the function instead."
            ) from error
        self.check_data(data)
        return data

    def describe(self) -> str:
        """A description of the functions and the initial point (for checkpoints).

        Returns:
            The functions' qualified names and code (closed-over arrays by content), and the
            structure of ``init``.
        """
        functions = {name: describe_callable(fn) for name, fn in self._named.items()}
        if self.sample_prior_fn is not None:
            functions["sample_prior_fn"] = describe_callable(self.sample_prior_fn)
        return repr((functions, self.treedef, self.shapes))

    def _key(self) -> tuple[Any, ...]:
        return (tuple(self._named.items()), self.sample_prior_fn, self.treedef, self.shapes)

    def __hash__(self) -> int:
        return hash(self._key())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LogDensity) or other._named.keys() != self._named.keys():
            return False
        # `==` is identity for functions; hashable callables (NamedTuples) compare by value.
        same_functions = all(other._named[k] == fn for k, fn in self._named.items())
        same_functions = same_functions and other.sample_prior_fn == self.sample_prior_fn
        return same_functions and (other.treedef, other.shapes) == (self.treedef, self.shapes)

    def __repr__(self) -> str:
        names = ", ".join(getattr(fn, "__name__", "fn") for fn in self._named.values())
        return f"LogDensity({names}, sites={self.site_names})"

    def bind(self, data: tuple[Any, ...]) -> BoundLogDensity:
        """The functions of a position alone, for concrete or traced ``data``.

        Args:
            data: the data arguments (empty when the functions take none).

        Returns:
            The :class:`BoundLogDensity`.
        """
        return BoundLogDensity(self, data)

    # How `initial_positions` draws, and what to change when no draw is finite (errors).
    initial_draws = "`init` plus uniform(-2, 2) jitter"
    initial_fix = (
        "pass an `init` where the log density and its gradient are finite (the draws are "
        "jittered around it) or finite `init_positions`"
    )

    def initial_positions(self, key: PRNGKeyArray, num_chains: int) -> PyTree:
        """``init`` plus uniform(-2, 2) jitter, one per chain.

        Args:
            key: PRNG key.
            num_chains: number of chains.

        Returns:
            A pytree like ``init`` with a leading axis of length ``num_chains``.
        """
        return jitter(key, self.init, num_chains, around=self.init)


class BoundLogDensity:
    """A :class:`LogDensity` with its data: functions of the position alone.

    Attributes:
        spec: the :class:`LogDensity`.
        site_names: the names of the position's leaves.
    """

    def __init__(self, spec: LogDensity, data: tuple[Any, ...]) -> None:
        self.spec = spec
        self.site_names = spec.site_names
        self._data = data

    def logdensity_fn(self, position: PyTree) -> Array:
        """Unnormalized log posterior at ``position`` (a scalar)."""
        with (
            explain_tracer_errors("the log density"),
            explain_trace_failures("the log density of the `LogDensity`"),
        ):
            return self.spec.logdensity_fn(position, *self._data)

    @property
    def target(self) -> Target:
        """The prior/likelihood split that SMC and nested sampling need.

        Raises:
            ValueError: when the density was given as one ``logdensity_fn``.
        """
        logprior_fn, loglikelihood_fn = self.spec.logprior_fn, self.spec.loglikelihood_fn
        if logprior_fn is None or loglikelihood_fn is None:
            raise ValueError(
                "this `LogDensity` was given one `logdensity_fn`, but tempering and nested "
                "sampling need the prior and the likelihood apart: build it with "
                "`pi.LogDensity(init=..., logprior_fn=..., loglikelihood_fn=...)`."
            )
        data = self._data

        def log_terms_fn(position: PyTree) -> tuple[Array, Array]:
            with (
                explain_tracer_errors("the log prior or log likelihood"),
                explain_trace_failures("the log prior or log likelihood of the `LogDensity`"),
            ):
                return logprior_fn(position, *data), loglikelihood_fn(position, *data)

        return Target(log_terms_fn)

    def sample_prior(self, key: PRNGKeyArray) -> PyTree:
        """One exact draw from the prior.

        Args:
            key: PRNG key.

        Returns:
            A position.

        Raises:
            ValueError: when the density was built without ``sample_prior_fn``.
        """
        if self.spec.sample_prior_fn is None:
            raise ValueError(
                "SMC and nested sampling start from prior draws, but this `LogDensity` has no "
                "`sample_prior_fn`; pass `sample_prior_fn=lambda key: ...` (one exact draw "
                "of the prior as a position)."
            )
        return self.spec.sample_prior_fn(key)

    def postprocess_fn(self, position: PyTree) -> dict[str, Array]:
        """Name the leaves of a position for the output.

        Args:
            position: a position pytree.

        Returns:
            A dict from leaf name (dotted dict keys, or ``x`` for a bare array) to array.
        """
        return dict(zip(self.site_names, jax.tree.leaves(position), strict=True))

    def diagnose(self, position: PyTree) -> str:
        """Say which leaves have a non-finite gradient at ``position`` (for error messages).

        Args:
            position: one position pytree.

        Returns:
            A human-readable description.
        """
        value, grad = jax.value_and_grad(self.logdensity_fn)(position)
        bad = [
            name
            for name, leaf in zip(self.site_names, jax.tree.leaves(grad), strict=True)
            if not bool(jnp.all(jnp.isfinite(leaf)))
        ]
        return f"log density {float(value)}; non-finite gradient in {bad or 'no leaf'}"
