"""The NumPyro front end: a model function and its arguments as a target for the samplers.

A model is split in two so that a second run with new data does not recompile:

- a hashable :class:`NumPyroModel` holding everything static (the model function,
  non-array arguments, site names and unconstrained shapes): it keys the compiled programs;
- *data*, the array arguments, passed to the compiled programs as values.

``spec.bind(data)`` gives the :class:`ModelDensity`: log densities on the unconstrained space,
each from one trace of the model.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from jaxtyping import Array, PRNGKeyArray
from numpyro import handlers
from numpyro.distributions import constraints
from numpyro.distributions.transforms import biject_to

from probinfer.checkpoint import describe_callable
from probinfer.model._common import (
    explain_trace_failures,
    explain_tracer_errors,
    jitter,
    user_line,
    with_context,
)
from probinfer.model._target import Target

PyTree = Any


class SiteInfo(NamedTuple):
    """Static description of one latent site.

    Attributes:
        name: the site name.
        unconstrained_shape: shape of the site in unconstrained space.
        dtype: floating dtype.
        is_improper: the prior is improper (``ImproperUniform``): fine for MCMC, but it
            cannot be sampled.
    """

    name: str
    unconstrained_shape: tuple[int, ...]
    dtype: Any
    is_improper: bool = False


class NumPyroModel:
    """The static part of a NumPyro model with its arguments (hashable).

    Build it with :func:`prepare` (which also returns the data); ``bind(data)`` gives the
    :class:`ModelDensity`.
    """

    def __init__(
        self,
        model: Callable[..., Any],
        treedef: Any,
        static_leaves: tuple[Any, ...],
        sites: tuple[SiteInfo, ...],
    ) -> None:
        self.model = model
        self.treedef = treedef
        self.static_leaves = static_leaves
        self.sites = sites
        self.site_names = tuple(site.name for site in sites)

    def _key(self) -> tuple[Any, ...]:
        # Types too: 1 == 1.0 == True, but a model may branch on the type.
        typed_leaves = tuple((type(leaf), leaf) for leaf in self.static_leaves)
        return (self.model, self.treedef, typed_leaves, self.sites)

    def describe(self) -> str:
        """A description of everything static, stable across processes (for checkpoints).

        Returns:
            The model's qualified name and code, the static arguments and the sites.
        """
        return repr((describe_callable(self.model), self.treedef, self._key()[2], self.sites))

    def __hash__(self) -> int:
        return hash(self._key())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, NumPyroModel) and other._key() == self._key()

    def __repr__(self) -> str:
        return f"NumPyroModel({getattr(self.model, '__name__', 'model')}, sites={self.site_names})"

    def arguments(self, data: tuple[Any, ...]) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Rebuild ``(args, kwargs)`` from the array leaves ``data``.

        Args:
            data: the array leaves, in order.

        Returns:
            The model's positional and keyword arguments.
        """
        data_iter = iter(data)
        leaves = [next(data_iter) if leaf is _ARRAY else leaf for leaf in self.static_leaves]
        return jax.tree.unflatten(self.treedef, leaves)

    def bind(self, data: tuple[Any, ...]) -> ModelDensity:
        """The model's log density and helpers for concrete or traced ``data``.

        Args:
            data: the array leaves of the model's arguments.

        Returns:
            The :class:`ModelDensity`.
        """
        return ModelDensity(self, data)

    # How `initial_positions` draws, and what to change when no draw is finite (errors).
    initial_draws = "uniform(-2, 2) in unconstrained space"
    initial_fix = "pass finite `init_positions`"

    def initial_positions(self, key: PRNGKeyArray, num_chains: int) -> dict[str, Array]:
        """NumPyro's ``init_to_uniform``: uniform(-2, 2) in unconstrained space.

        Args:
            key: PRNG key.
            num_chains: number of chains.

        Returns:
            Dict of site name to arrays with a leading chain axis.
        """
        prototype = {s.name: jnp.zeros(s.unconstrained_shape, s.dtype) for s in self.sites}
        return jitter(key, prototype, num_chains, around=None)


class _ArrayLeaf:
    def __repr__(self) -> str:
        return "<array>"


_ARRAY = _ArrayLeaf()


class ModelDensity:
    """A NumPyro model bound to its data: log densities on the unconstrained space.

    Positions are dicts from latent site name to its unconstrained array.

    Attributes:
        spec: the static :class:`NumPyroModel`.
        site_names: the latent sites, in order.
    """

    def __init__(self, spec: NumPyroModel, data: tuple[Any, ...]) -> None:
        self.spec = spec
        self.site_names = spec.site_names
        self._args, self._kwargs = spec.arguments(data)

    def _get_trace(self, model: Callable[..., Any]) -> dict[str, Any]:
        """The trace of ``model`` (the user's, with handlers) run on the bound data."""
        name = getattr(self.spec.model, "__name__", self.spec.model)
        with (
            explain_tracer_errors(
                "the model", "`jnp.where`, `jax.lax.cond`, `jnp` functions or `numpyro.factor`"
            ),
            explain_trace_failures(f"the model {name!r}"),
        ):
            return handlers.trace(model).get_trace(*self._args, **self._kwargs)

    def _trace(self, position: dict[str, Array]) -> dict[str, Any]:
        def substitute_fn(site: dict[str, Any]) -> Array | None:
            if site["type"] == "sample" and not site["is_observed"] and site["name"] in position:
                return biject_to(site["fn"].support)(position[site["name"]])
            return None

        model = handlers.substitute(
            handlers.seed(self.spec.model, jax.random.key(0)), substitute_fn=substitute_fn
        )
        return self._get_trace(model)

    def log_terms(self, position: dict[str, Array]) -> tuple[dict[str, Array], dict[str, Array]]:
        """Per-site log terms at an unconstrained position.

        Args:
            position: dict of site name to unconstrained array.

        Returns:
            ``(prior_terms, likelihood_terms)``: dicts of site name to scalar. Prior terms
            include the log-Jacobian of the map to constrained space; likelihood terms are
            the observed sites and ``numpyro.factor`` terms.
        """
        return _log_terms_of(self._trace(position), position)

    def total_log_terms(self, position: dict[str, Array]) -> tuple[Array, Array]:
        """Log prior (with the Jacobian) and log likelihood, from one trace of the model.

        Args:
            position: dict of site name to unconstrained array.

        Returns:
            ``(logprior, loglikelihood)``, two scalars.
        """
        prior, likelihood = self.log_terms(position)
        return sum(prior.values(), jnp.zeros(())), sum(likelihood.values(), jnp.zeros(()))

    @property
    def target(self) -> Target:
        """The prior/likelihood split (one trace per evaluation) for SMC and nested sampling."""
        return Target(self.total_log_terms)

    def logprior_fn(self, position: dict[str, Array]) -> Array:
        """Log prior density of the unconstrained position (with the Jacobian).

        Args:
            position: dict of site name to unconstrained array.

        Returns:
            A scalar.
        """
        return self.total_log_terms(position)[0]

    def loglikelihood_fn(self, position: dict[str, Array]) -> Array:
        """Log likelihood (observed sites and factors) at the unconstrained position.

        Args:
            position: dict of site name to unconstrained array.

        Returns:
            A scalar.
        """
        return self.total_log_terms(position)[1]

    def logdensity_fn(self, position: dict[str, Array]) -> Array:
        """Unnormalized log posterior on the unconstrained space (prior + likelihood).

        Args:
            position: dict of site name to unconstrained array.

        Returns:
            A scalar.
        """
        logprior, loglikelihood = self.total_log_terms(position)
        return logprior + loglikelihood

    def postprocess_fn(self, position: dict[str, Array]) -> dict[str, Array]:
        """Constrained values of the latent sites and the deterministic sites.

        Args:
            position: dict of site name to unconstrained array.

        Returns:
            Dict of site name to constrained array.
        """
        trace = self._trace(position)
        return {
            name: site["value"]
            for name, site in trace.items()
            if (site["type"] == "sample" and not site["is_observed"])
            or site["type"] == "deterministic"
        }

    def pointwise_loglikelihood(self, draw: dict[str, Array]) -> dict[str, Array]:
        """The log likelihood of every observed value at one constrained draw.

        NumPyro's ``log_likelihood`` semantics (what ``az.from_numpyro`` stores): for each
        observed site, ``fn.log_prob(value)`` elementwise, masks applied, scale not.

        Args:
            draw: dict of latent site name to its constrained value (the ``posterior``
                group's sites; deterministic sites are recomputed).

        Returns:
            Dict of observed site name to its pointwise log likelihood (the site's batch
            shape).
        """
        model = handlers.substitute(
            handlers.seed(self.spec.model, jax.random.key(0)),
            data={name: draw[name] for name in self.site_names},
        )
        trace = self._get_trace(model)
        return {
            name: site["fn"].log_prob(site["value"])
            for name, site in trace.items()
            if site["type"] == "sample" and site["is_observed"]
        }

    def site_dims(self) -> dict[str, list[str]]:
        """Dimension names from the model's plates, as ``az.from_numpyro`` infers them.

        For each sample or deterministic site inside plates: the plates' names, outermost
        (most negative ``dim``) first, then any ``infer={"event_dims": [...]}`` names; ArviZ
        names the remaining axes ``{site}_dim_{i}``. The model is traced abstractly (no
        computation).

        Returns:
            Dict of site name to its dimension names (sites in no plate are left out).
        """
        dims: dict[str, list[str]] = {}

        def trace_sites() -> int:
            model = handlers.substitute(
                handlers.seed(self.spec.model, jax.random.key(0)),
                substitute_fn=lambda site: improper_prototype(site, 0.0),
            )
            trace = self._get_trace(model)
            for name, site in trace.items():
                if site["type"] not in ("sample", "deterministic"):
                    continue
                frames = sorted(site.get("cond_indep_stack", []), key=lambda frame: frame.dim)
                event_dims = list((site.get("infer") or {}).get("event_dims", []))
                if frames or event_dims:
                    dims[name] = [frame.name for frame in frames] + event_dims
            return 0

        jax.eval_shape(trace_sites)
        return dims

    def constant_data(self, observed: dict[str, Array]) -> dict[str, Array]:
        """The model's array arguments that are not observations (covariates, known
        scales), by parameter name: ArviZ's ``constant_data`` group.

        An argument counts as an observation when it is an observed site's value (the same
        array, or equal to it in shape and values); arguments that are not arrays (None,
        Python numbers, pytrees) are left out.

        Args:
            observed: the observed sites' values (:meth:`observed_data`).

        Returns:
            Dict of parameter name to its value.
        """
        try:
            named = inspect.signature(self.spec.model).bind(*self._args, **self._kwargs).arguments
        except (TypeError, ValueError):  # a signature Python cannot bind (builtins, *args)
            return {}

        def is_observation(value: Any) -> bool:
            return any(
                value is seen
                or (np.shape(value) == np.shape(seen) and bool(jnp.all(value == seen)))
                for seen in observed.values()
            )

        return {
            name: jnp.asarray(value)
            for name, value in named.items()
            if isinstance(value, jax.Array | np.ndarray) and not is_observation(value)
        }

    def observed_data(self) -> dict[str, Array]:
        """The observed sites' values, as the model sees them.

        Returns:
            Dict of observed site name to its value.
        """
        model = handlers.seed(self.spec.model, jax.random.key(0))
        trace = self._get_trace(model)
        return {
            name: site["value"]
            for name, site in trace.items()
            if site["type"] == "sample" and site["is_observed"]
        }

    def sample_prior(self, key: PRNGKeyArray) -> dict[str, Array]:
        """One draw from the prior, in unconstrained space.

        Args:
            key: PRNG key.

        Returns:
            Dict of site name to unconstrained array.

        Raises:
            ValueError: if a latent site has an improper prior.
        """
        improper = [site.name for site in self.spec.sites if site.is_improper]
        if improper:
            raise ValueError(
                f"sites {improper} have improper priors (ImproperUniform), which cannot be "
                "sampled; give them a proper prior to use prior draws (nested sampling, SMC)."
            )
        model = handlers.seed(self.spec.model, key)
        trace = self._get_trace(model)
        return {
            name: biject_to(trace[name]["fn"].support).inv(trace[name]["value"])
            for name in self.site_names
        }

    def diagnose(self, position: dict[str, Array]) -> str:
        """Say which sites give non-finite log terms or gradients (for error messages).

        Args:
            position: dict of site name to unconstrained array.

        Returns:
            A human-readable description.
        """
        # Eagerly, with NumPyro's argument validation off: the point is to name the sites
        # whose terms are not finite, not to stop at the first invalid parameter. That also
        # turns off the support mask of `log_prob`, so observed values outside a support
        # that moves with the parameters (`Uniform(0, theta)`) are checked here directly.
        with numpyro.validation_enabled(False):
            trace = self._trace(position)
            bad = [
                f"{name} (observed value outside the support of "
                f"{type(_unwrap(site['fn'])).__name__})"
                for name, site in trace.items()
                if site["type"] == "sample"
                and site["is_observed"]
                and _outside_support(site["fn"], site["value"])
            ]
            prior, likelihood = _log_terms_of(trace, position)
            bad += [
                f"{n} (prior {float(v)})" for n, v in prior.items() if not np.isfinite(float(v))
            ]
            bad += [
                f"{n} (likelihood {float(v)})"
                for n, v in likelihood.items()
                if not np.isfinite(float(v))
            ]
            grad = jax.grad(self.logdensity_fn)(position)
            bad += [
                f"{n} (gradient)" for n, g in grad.items() if not bool(jnp.all(jnp.isfinite(g)))
            ]
        nonfinite = _nonfinite_arguments(self.spec.model, self._args, self._kwargs)
        return (
            "non-finite terms at sites: "
            + (", ".join(bad) or "none found")
            + (f"; {nonfinite}" if nonfinite else "")
        )


def _nonfinite_arguments(
    model: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> str:
    """Name the model arguments holding NaN or infinite values (``""`` when none do).

    Args:
        model: the model function (for its parameter names).
        args: its positional arguments.
        kwargs: its keyword arguments.

    Returns:
        E.g. ``"argument 'x' has 1 NaN value(s)"``, one clause per array argument.
    """
    try:
        named = dict(inspect.signature(model).bind_partial(*args, **kwargs).arguments)
    except (TypeError, ValueError):
        named = {f"#{i}": a for i, a in enumerate(args)} | dict(kwargs)
    clauses = []
    for name, value in named.items():
        for path, leaf in jax.tree_util.tree_leaves_with_path(value):
            if not _is_array(leaf) or not jnp.issubdtype(jnp.result_type(leaf), jnp.inexact):
                continue
            array = np.asarray(leaf)
            counts = {"NaN": int(np.isnan(array).sum()), "infinite": int(np.isinf(array).sum())}
            found = " and ".join(f"{n} {kind}" for kind, n in counts.items() if n)
            if found:
                where = f"'{name}{jax.tree_util.keystr(path)}'"
                clauses.append(f"argument {where} has {found} value(s)")
    return "; ".join(clauses)


def improper_prototype(site: dict[str, Any], fill: float) -> Array | None:
    """A value for an improper-prior site (which cannot be sampled), else None.

    Any point of the support serves as a prototype: the image of the unconstrained point
    with every coordinate ``fill``.

    Args:
        site: a NumPyro trace message.
        fill: the unconstrained coordinates' value.

    Returns:
        The constrained value for an ``ImproperUniform`` sample site, None for others.
    """
    if site["type"] != "sample" or not isinstance(_unwrap(site["fn"]), dist.ImproperUniform):
        return None
    transform = biject_to(site["fn"].support)
    unconstrained_shape = transform.inverse_shape(site["fn"].shape())
    return transform(jnp.full(unconstrained_shape, fill))


def _log_terms_of(
    trace: dict[str, Any], position: dict[str, Array]
) -> tuple[dict[str, Array], dict[str, Array]]:
    """:meth:`ModelDensity.log_terms` from a trace of the model at ``position``."""
    prior, likelihood = {}, {}
    for name, site in trace.items():
        if site["type"] != "sample":
            continue
        log_prob = site["fn"].log_prob(site["value"])
        if site.get("scale") is not None:
            log_prob = site["scale"] * log_prob
        if site["is_observed"]:
            likelihood[name] = jnp.sum(log_prob)
        else:
            transform = biject_to(site["fn"].support)
            log_det = transform.log_abs_det_jacobian(position[name], site["value"])
            prior[name] = jnp.sum(log_prob) + jnp.sum(log_det)
    return prior, likelihood


# Distributions that wrap a base distribution without changing its support.
_WRAPPERS = (dist.ExpandedDistribution, dist.MaskedDistribution, dist.Independent)


def _observation_mask(fn: dist.Distribution) -> Any:
    """Where an observed site's terms count: the product of the masks of every
    ``MaskedDistribution`` among ``fn``'s wrappers (``True`` when none)."""
    mask: Any = True
    while isinstance(fn, _WRAPPERS):
        if isinstance(fn, dist.MaskedDistribution):  # a bool or a boolean array
            mask = np.logical_and(mask, np.asarray(fn._mask, bool))
        fn = fn.base_dist
    return mask


def _outside_support(fn: dist.Distribution, value: Any) -> bool:
    """Whether an observed value lies outside ``fn``'s support where it is not masked out."""
    assert fn.support is not None  # NumPyro requires a support to score an observation
    outside = ~np.asarray(fn.support(value), bool)
    try:
        counted = np.broadcast_to(_observation_mask(fn), outside.shape)
    except ValueError:  # a mask on event components that `Independent` scores as one
        return False  # cannot tell which components count: claim nothing
    return bool(np.any(outside & counted))


def _unwrap(fn: dist.Distribution) -> dist.Distribution:
    while isinstance(fn, _WRAPPERS):
        fn = fn.base_dist
    return fn


def _constraint_bounds(constraint: Any) -> list[Any]:
    """The parameters of a (possibly nested) NumPyro constraint, e.g. an interval's ends, as
    stored: Python numbers, NumPy or JAX arrays."""
    bounds: list[Any] = []
    for value in vars(constraint).values():
        if isinstance(value, constraints.Constraint):
            bounds += _constraint_bounds(value)
        elif isinstance(value, jax.Array | np.ndarray | float | int):
            bounds.append(value)
    return bounds


def _same_support(first: dist.Distribution, second: dist.Distribution | None) -> bool:
    """Do two traces' distributions of one observed site have the same support?

    ``second`` is None when the other trace has no such site (the model branched).
    """
    if second is None or type(first.support) is not type(second.support):
        return False
    first_bounds = [np.asarray(b) for b in _constraint_bounds(first.support)]
    second_bounds = [np.asarray(b) for b in _constraint_bounds(second.support)]
    return len(first_bounds) == len(second_bounds) and all(
        a.shape == b.shape and np.array_equal(a, b)
        for a, b in zip(first_bounds, second_bounds, strict=True)
    )


def check_observed_shape(name: str, fn: dist.Distribution, value: Any) -> None:
    """Reject observed data whose shape does not broadcast with the site's distribution.

    NumPyro does not check it, and the log density (or a predictive draw) would fail with
    a broadcasting error inside the compiled program, naming no site.

    Args:
        name: the site's name.
        fn: its distribution.
        value: the observed data.

    Raises:
        ValueError: naming the site, both shapes and the fix.
    """
    shape, expected = tuple(np.shape(value)), tuple(fn.shape())
    try:
        np.broadcast_shapes(shape, expected)
    except ValueError:
        raise ValueError(
            f"observed site '{name}' has data of shape {shape}, which does not broadcast with "
            f"the shape {expected} of its distribution {type(_unwrap(fn)).__name__} (batch "
            f"shape {tuple(fn.batch_shape)}, event shape {tuple(fn.event_shape)}); pass data of "
            f"shape {expected}, or give the site the data's shape (a `numpyro.plate` of its "
            "size, or `.expand(...)`)."
        ) from None


def _check_observed(
    name: str, fn: dist.Distribution, value: Any, support_is_fixed: bool = True
) -> None:
    """Reject observed data that no parameter value can explain (NaN, outside the support,
    a shape the distribution cannot score).

    Args:
        name: the site's name.
        fn: its distribution at one prior draw.
        value: the observed data.
        support_is_fixed: whether the support is the same at every parameter value. A
            support that moves with the parameters (``Uniform(0, theta)``) can contain the
            data elsewhere, so then only NaN and infinite data are rejected here; whether
            any finite starting point exists is the initial-point search's question.
    """
    if isinstance(_unwrap(fn), dist.Unit):  # numpyro.factor terms carry no data
        return
    check_observed_shape(name, fn, value)
    support = fn.support
    assert support is not None  # NumPyro requires a support to score an observation
    in_support = np.asarray(support(value))
    if not support_is_fixed:
        in_support = np.ones_like(in_support, bool)
    if support.is_discrete:
        is_valid = in_support
    else:
        # Finite in every event component (the support's shape is the batch shape); the
        # event size is spelled out, as -1 cannot be inferred for empty data.
        finite = np.isfinite(np.asarray(value))
        batch_shape = np.shape(in_support)
        event_size = math.prod(finite.shape[len(batch_shape) :])
        is_valid = in_support & np.all(finite.reshape(*batch_shape, event_size), axis=-1)
    # Masked-out entries never reach the likelihood: only the others must be valid.
    is_valid = is_valid | ~np.broadcast_to(_observation_mask(fn), np.shape(is_valid))
    num_invalid = int(np.size(is_valid) - np.count_nonzero(is_valid))
    if num_invalid:
        raise ValueError(
            f"the log density is not finite anywhere: observed site '{name}' has "
            f"{num_invalid} value(s) that are NaN, infinite or outside the support of "
            f"{type(_unwrap(fn)).__name__} ({fn.support}); fix or drop those data points (or "
            "mask them with `numpyro.handlers.mask`)."
        )


def _inspect_sites(
    model: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[SiteInfo, ...]:
    def run_model(seed: int) -> dict[str, Any]:
        # The unconstrained point `seed` for improper sites, so that two traces differ.
        inspected = handlers.substitute(
            handlers.seed(model, jax.random.key(seed)),
            substitute_fn=lambda site: improper_prototype(site, float(seed)),
        )
        try:
            return handlers.trace(inspected).get_trace(*args, **kwargs)
        except Exception as error:
            # NaN data are the usual cause; name them (masked NaN observations are
            # legitimate, so this is a note beside the error, not a verdict).
            nonfinite = _nonfinite_arguments(model, args, kwargs)
            note = (
                f"; note: {nonfinite}: drop or impute those entries, or mask NaN observations "
                "of a sample site with `numpyro.handlers.mask`"
                if nonfinite
                else ""
            )
            where = user_line(error)
            raise with_context(
                error,
                f"running the model {getattr(model, '__name__', model)!r} with the given "
                f"arguments failed{'' if where is None else ' at ' + where} "
                f"({type(error).__name__}: {error}){note}",
            ) from error

    trace = run_model(0)
    # A second prior draw tells supports that move with the parameters from fixed ones.
    other_trace: dict[str, Any] | None = None
    sites = []
    for name, site in trace.items():
        if (
            site["type"] == "plate"
            and site["args"][1] is not None
            and (site["args"][1] < site["args"][0])
        ):
            raise ValueError(
                f"plate '{name}' subsamples {site['args'][1]} of {site['args'][0]} items; MCMC "
                "needs the full likelihood (a random subsample each step breaks detailed "
                "balance): drop `subsample_size`."
            )
        if site["type"] == "param":
            raise ValueError(
                f"site '{name}' is a `numpyro.param`; MCMC samples random variables only: make "
                f"it a `numpyro.sample` site with a prior, or pass its value as an argument."
            )
        if site["type"] != "sample":
            continue
        fn = site["fn"]
        if site["is_observed"]:
            support_is_fixed = True
            # Python-number bounds (``positive``'s 0) never depend on the parameters; only
            # array bounds call for the second trace.
            if any(isinstance(b, jax.Array) for b in _constraint_bounds(fn.support)):
                other_trace = other_trace if other_trace is not None else run_model(1)
                other = other_trace.get(name)
                support_is_fixed = _same_support(fn, None if other is None else other["fn"])
            _check_observed(name, fn, site["value"], support_is_fixed)
            continue
        if fn.support.is_discrete:
            raise ValueError(
                f"latent site '{name}' is discrete ({type(_unwrap(fn)).__name__}); probinfer's "
                "samplers need continuous latent sites: marginalize it out (sum its values with "
                "logsumexp in the model) or condition on it with `obs=`."
            )
        if isinstance(_unwrap(fn), dist.Delta):
            raise ValueError(
                f"latent site '{name}' is a Delta distribution (a point mass, no density to "
                "sample); record a derived value with `numpyro.deterministic` instead."
            )
        value = jnp.asarray(site["value"])
        unconstrained = biject_to(fn.support).inv(value)
        sites.append(
            SiteInfo(
                name,
                tuple(unconstrained.shape),
                jnp.result_type(unconstrained),
                isinstance(_unwrap(fn), dist.ImproperUniform),
            )
        )
    if not sites:
        raise ValueError(
            f"the model {getattr(model, '__name__', model)!r} has no latent sample sites: "
            "nothing to infer (are all sites observed?)."
        )
    return tuple(sites)


def _is_array(leaf: Any) -> bool:
    # NumPy integer and boolean scalars are sizes and switches (static), like Python ints.
    if isinstance(leaf, np.integer | np.bool_):
        return False
    return isinstance(leaf, jax.Array | np.ndarray | np.generic)


def _canonical_arguments(
    model: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The model's arguments bound to its signature: positional wherever they can be.

    ``model(y)`` and ``model(y=y)`` are one call, so they give one spec (and one compiled
    program) instead of two.

    Raises:
        TypeError: when the arguments do not fit the model's signature, naming both.
    """
    try:
        signature = inspect.signature(model)
    except (TypeError, ValueError):  # a builtin or C callable: take the arguments as given
        return args, kwargs
    try:
        bound = signature.bind(*args, **kwargs)
    except TypeError as error:
        raise TypeError(
            f"the arguments do not fit the model {getattr(model, '__name__', model)!r}"
            f"{signature}: {error}."
        ) from error
    return tuple(bound.args), dict(bound.kwargs)


def _numeric_list_to_array(value: Any) -> Any:
    """A (nested, rectangular) list with floats in it as an array; anything else unchanged.

    Data passed as Python lists would reach the model as lists of Python scalars (static,
    and ``array * list`` fails). Lists of ints or bools stay as they are (they are as
    likely settings, such as layer sizes, that the model needs as Python values), and so
    do tuples.
    """
    if not isinstance(value, list):
        return value
    try:
        array = np.asarray(value)
    except ValueError:  # ragged
        return value
    return jnp.asarray(array) if array.size and array.dtype.kind == "f" else value


def prepare_numpyro(
    model: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[NumPyroModel, tuple[Any, ...]]:
    """Split a NumPyro model and its arguments into a hashable spec and array data.

    Args:
        model: a NumPyro model function.
        args: positional arguments of the model.
        kwargs: keyword arguments of the model.

    Returns:
        ``(spec, data)``; ``spec.bind(data)`` gives the :class:`ModelDensity`.

    Raises:
        TypeError: for a non-callable model or unhashable non-array arguments.
        ValueError: for discrete, Delta or param latent sites.
    """
    treedef, static_leaves, data, args, kwargs = split_arguments(model, args, kwargs)
    sites = _inspect_sites(model, tuple(args), dict(kwargs))
    return NumPyroModel(model, treedef, static_leaves, sites), data


def split_arguments(
    model: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[Any, tuple[Any, ...], tuple[Any, ...], tuple[Any, ...], dict[str, Any]]:
    """A model's arguments as a static part (structure and settings) and array data.

    Args:
        model: a NumPyro model function.
        args: positional arguments of the model.
        kwargs: keyword arguments of the model.

    Returns:
        ``(treedef, static_leaves, data, args, kwargs)``: the arguments' structure, their
        leaves with arrays replaced by a marker, the arrays, and the canonical arguments.

    Raises:
        TypeError: for a non-callable model or unhashable non-array arguments.
    """
    if not callable(model):
        raise TypeError(
            f"`model` must be a NumPyro model function or a `probinfer.LogDensity`, got "
            f"{type(model).__name__}."
        )
    args, kwargs = _canonical_arguments(model, args, kwargs)
    args = tuple(_numeric_list_to_array(a) for a in args)
    kwargs = {k: _numeric_list_to_array(v) for k, v in kwargs.items()}
    leaves, treedef = jax.tree.flatten((tuple(args), dict(kwargs)), is_leaf=lambda x: x is None)
    data = tuple(leaf for leaf in leaves if _is_array(leaf))
    static_leaves = tuple(_ARRAY if _is_array(leaf) else leaf for leaf in leaves)
    for leaf in static_leaves:
        try:
            hash(leaf)
        except TypeError as error:
            raise TypeError(
                f"model argument of type {type(leaf).__name__} is neither an array nor hashable; "
                "pass arrays for data and hashable values (ints, strings, tuples) for settings."
            ) from error
    return treedef, static_leaves, data, tuple(args), dict(kwargs)


def from_numpyro(model: Callable[..., Any], *args: Any, **kwargs: Any) -> ModelDensity:
    """The unconstrained log density of a NumPyro model with its data, for composing blocks.

    Args:
        model: a NumPyro model function.
        *args: its positional arguments.
        **kwargs: its keyword arguments.

    Returns:
        A :class:`ModelDensity` with ``logdensity_fn``, ``logprior_fn``,
        ``loglikelihood_fn``, ``postprocess_fn`` and ``sample_prior``.

    Raises:
        ValueError: for discrete, Delta or param latent sites.

    Example:
        >>> import numpyro, numpyro.distributions as dist, jax.numpy as jnp
        >>> from probinfer import from_numpyro
        >>> def model(y):
        ...     mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
        ...     numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)
        >>> density = from_numpyro(model, jnp.array([0.5]))
        >>> float(density.logdensity_fn({"mu": jnp.array(0.0)})) < 0
        True
    """
    spec, data = prepare_numpyro(model, args, kwargs)
    return spec.bind(data)
