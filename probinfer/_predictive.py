"""Prior and posterior predictive draws of a NumPyro model: ``pi.sample_prior`` and
``pi.predictive``, one compiled, vmapped program each.

Which sites are drawn:

- a site observed in the call (``obs=`` data given) is drawn afresh from its distribution,
  given the draw's latent values (and, in a sequential model, the observed values of the
  earlier sites), and reported under its name with the data's shape; its data go to
  ``observed_data``. So ``pi.predictive(model, idata, *args)`` takes the very arguments of
  the ``pi.sample`` call, and ``az.plot_ppc`` compares like with like;
- a site left unobserved (``obs=None``) that is not a posterior site is sampled as the
  model samples it, jointly with the other such sites: NumPyro's ``Predictive`` with
  ``y=None`` (for sequential models, pass ``None`` for a joint forecast).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, PRNGKeyArray
from numpyro import handlers

from probinfer._idata import model_dims, model_groups
from probinfer._validation import check_count, draws_by_site, nonfinite_counts
from probinfer.diagnostics import SamplingWarning
from probinfer.driver import CompileWatch, call_compiled
from probinfer.model._numpyro import NumPyroModel, check_observed_shape, split_arguments

PyTree = Any


def _substitute_checked(draw: dict[str, Array]) -> Callable[[dict[str, Any]], Array | None]:
    """A ``substitute_fn`` giving each site its value in ``draw``, after checking that the
    value has the site's shape (static: raised while tracing, at the site, before a
    mismatch breaks the model's later lines)."""

    def substitute_fn(site: dict[str, Any]) -> Array | None:
        name = site["name"]
        if name not in draw:
            return None
        if site["type"] != "sample":  # deterministic sites: the recorded values
            return draw[name]
        shape = tuple(jnp.shape(draw[name]))
        expected = tuple(site["kwargs"].get("sample_shape", ())) + tuple(site["fn"].shape())
        if shape != expected:
            raise ValueError(
                f"`idata.posterior['{name}']` has draws of shape {shape}, but the model's "
                f"site '{name}' has shape {expected} with these arguments; pass the "
                "`pi.sample` result of this model, with arguments of the shapes it was "
                "sampled with."
            )
        return draw[name]

    return substitute_fn


def _draw_sites(
    spec: NumPyroModel, data: PyTree, draw: dict[str, Array], key: PRNGKeyArray
) -> tuple[dict[str, Array], dict[str, Array], dict[str, Array]]:
    """One run of the model with ``draw`` substituted: ``(latent, predicted, is_finite)``
    sites, ``is_finite`` saying for each substituted sample site whether its value is
    finite (deterministic sites are not checked: they may be infinite by design)."""
    args, kwargs = spec.arguments(data)
    key_model, key_observed = jax.random.split(key)
    model = handlers.substitute(
        handlers.seed(spec.model, key_model), substitute_fn=_substitute_checked(draw)
    )
    trace = handlers.trace(model).get_trace(*args, **kwargs)
    latent, predicted, is_finite = {}, {}, {}
    for index, (name, site) in enumerate(trace.items()):
        if site["type"] != "sample":
            continue
        if site["is_observed"]:
            # Drawn with the observations' shape (data may carry leading axes that the
            # distribution broadcasts over, e.g. obs of shape (1,) for a scalar Normal).
            fn = site["fn"]
            check_observed_shape(name, fn, site["value"])
            extra = np.ndim(site["value"]) - len(fn.shape())
            sample_shape = tuple(np.shape(site["value"])[:extra]) if extra > 0 else ()
            predicted[name] = fn.sample(jax.random.fold_in(key_observed, index), sample_shape)
        elif name in draw:
            is_finite[name] = jnp.all(jnp.isfinite(site["value"]))
        else:
            latent[name] = site["value"]
    return latent, predicted, is_finite


def _predict(
    spec: NumPyroModel, data: PyTree, draws: dict[str, Array], keys: PRNGKeyArray
) -> tuple[dict[str, Array], dict[str, Array], dict[str, Array]]:
    """``_draw_sites`` over ``(chain, draw)``."""
    return jax.vmap(jax.vmap(lambda d, k: _draw_sites(spec, data, d, k)))(draws, keys)


def _warn_nonfinite(group: str, draws: dict[str, np.ndarray]) -> None:
    """One warning naming the sites of ``group`` with NaN or infinite draws, with counts
    and the first such (chain, draw): a distribution that overflowed its dtype (a scale
    too wide for float32) or got invalid parameters, never returned silently."""
    sites = [(name, np.asarray(values)) for name, values in draws.items()]
    nonfinite = nonfinite_counts(sites)
    if not nonfinite:
        return
    described = []
    for name, values in sites:
        if name in nonfinite:
            bad = ~np.isfinite(values).reshape(*values.shape[:2], -1).all(axis=-1)
            chain, draw = (int(i) for i in np.argwhere(bad)[0])
            described.append(
                f"{nonfinite[name]} of {values.size} in '{name}' ({values.dtype}; first at "
                f"chain {chain}, draw {draw})"
            )
    warnings.warn(
        f"`{group}` has NaN or infinite values: {'; '.join(described)}. The model's "
        "distributions may overflow there (enable float64 with "
        "`jax.config.update('jax_enable_x64', True)` if the values are merely large) or get "
        "invalid parameters at those draws.",
        SamplingWarning,
        stacklevel=3,
    )


def _prepare(
    model: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[NumPyroModel, tuple[Any, ...]]:
    treedef, static_leaves, data, _, _ = split_arguments(model, args, kwargs)
    return NumPyroModel(model, treedef, static_leaves, ()), data


def predictive(
    model: Callable[..., Any],
    idata: az.InferenceData,
    *args: Any,
    seed: int = 0,
    **kwargs: Any,
) -> az.InferenceData:
    """Posterior predictive draws: the model run once per posterior draw.

    Args:
        model: the NumPyro model that was sampled.
        idata: ``pi.sample``'s result (its ``posterior`` group is substituted).
        *args: the model's positional arguments (the same as for ``pi.sample``, or with
            observations set to None, or new inputs).
        seed: integer seed.
        **kwargs: the model's keyword arguments.

    Returns:
        A copy of ``idata`` with ``posterior_predictive`` (each observed site drawn afresh;
        each unobserved non-posterior site as the model samples it), shaped ``(chain,
        draw, ...)``, and ``observed_data`` when the call has observations. A
        :class:`~probinfer.diagnostics.SamplingWarning` names the sites with NaN or
        infinite predictions (a distribution that overflowed), with counts.

    Raises:
        TypeError: for an ``idata`` that is not ``InferenceData``, or posterior draws that
            are not numbers.
        ValueError: for an ``idata`` without a ``posterior`` group, with no draws, with
            draws whose shapes the model's sites do not have, or with NaN or infinite
            draws of a latent site (a run's own never are).

    Example:
        >>> import numpyro, numpyro.distributions as dist, jax.numpy as jnp
        >>> import probinfer as pi
        >>> def model(y):
        ...     mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
        ...     with numpyro.plate("data", 3):
        ...         numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)
        >>> y = jnp.array([0.3, -0.1, 0.8])
        >>> idata = pi.sample(model, y, draws=500, progress=False)
        >>> pi.predictive(model, idata, y).posterior_predictive["y"].shape
        (4, 500, 3)
    """
    seed = check_count("seed", seed, 0)
    if not isinstance(idata, az.InferenceData):
        raise TypeError(
            f"`idata` must be an `arviz.InferenceData` (the result of `pi.sample`), got "
            f"{type(idata).__name__}; for draws in a dict, pass "
            "`arviz.from_dict(posterior=draws)` (arrays shaped (chain, draw, ...))."
        )
    if "posterior" not in idata.groups() or not idata["posterior"].data_vars:
        raise ValueError(
            "`idata` has no `posterior` group; pass the result of `pi.sample` (or use "
            "`pi.sample_prior` for prior predictive draws)."
        )
    draws = dict(draws_by_site("idata.posterior", idata["posterior"], min_draws=1))
    spec, data = _prepare(model, args, kwargs)
    num_chains, num_draws = next(iter(draws.values())).shape[:2]
    keys = jax.random.split(jax.random.key(seed), num_chains * num_draws)
    keys = keys.reshape(num_chains, num_draws)
    latent, predicted, is_finite = jax.device_get(
        call_compiled(_predict, (spec,), (data, draws, keys), CompileWatch())
    )
    for name, finite in is_finite.items():
        if not finite.all():
            raise ValueError(
                f"`idata.posterior['{name}']` has {int(np.sum(~finite))} draw(s) with NaN or "
                "infinite values (in the dtype JAX computes in); pass the `pi.sample` result "
                "of this model (its latent draws are finite)."
            )
    _warn_nonfinite("posterior_predictive", {**predicted, **latent})
    new = az.from_dict(
        posterior_predictive={**predicted, **latent},
        observed_data=model_groups(spec, data).get("observed_data"),
        dims=model_dims(spec, data),
    )
    result = idata.copy()
    # Groups `idata` already has (its own observed_data) are kept as they are.
    result.extend(new, join="left")
    return result


def _prior_draws(
    spec: NumPyroModel, data: PyTree, keys: PRNGKeyArray
) -> tuple[dict[str, Array], dict[str, Array]]:
    return jax.vmap(jax.vmap(lambda k: _draw_sites(spec, data, {}, k)[:2]))(keys)


def sample_prior(
    model: Callable[..., Any], *args: Any, draws: int = 500, seed: int = 0, **kwargs: Any
) -> az.InferenceData:
    """Prior and prior predictive draws of a NumPyro model.

    Args:
        model: a NumPyro model.
        *args: its positional arguments (observations may be given: they are drawn afresh
            and also reported as ``observed_data``).
        draws: number of draws (one chain).
        seed: integer seed.
        **kwargs: its keyword arguments.

    Returns:
        ``InferenceData`` with ``prior`` (the latent sites), ``prior_predictive`` (the
        observed sites), and when there are any, ``observed_data`` and ``constant_data``
        (the other array arguments); shapes ``(1, draws, ...)``.

    Example:
        >>> import numpyro, numpyro.distributions as dist, jax.numpy as jnp
        >>> import probinfer as pi
        >>> def model(y):
        ...     mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
        ...     numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)
        >>> prior = pi.sample_prior(model, jnp.array([0.3]), draws=50)
        >>> prior.prior["mu"].shape, prior.prior_predictive["y"].shape
        ((1, 50), (1, 50, 1))
    """
    seed = check_count("seed", seed, 0)
    draws = check_count("draws", draws, 1)
    spec, data = _prepare(model, args, kwargs)
    keys = jax.random.split(jax.random.key(seed), draws).reshape(1, draws)
    latent, predicted = jax.device_get(
        call_compiled(_prior_draws, (spec,), (data, keys), CompileWatch())
    )
    _warn_nonfinite("prior", latent)
    _warn_nonfinite("prior_predictive", predicted)
    groups: dict[str, Any] = {"prior": latent}
    if predicted:
        groups["prior_predictive"] = predicted
    groups.update(model_groups(spec, data))
    return az.from_dict(**groups, dims=model_dims(spec, data))
