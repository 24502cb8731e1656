"""Distribution transformers: a Gaussian-mixture prior plus data to a Gaussian-mixture posterior.

After Whittle et al., "Distribution Transformers: Fast Approximate Bayesian Inference With
On-The-Fly Prior Adaptation". Each prior component becomes a token (its log weight, mean,
log Cholesky diagonal and strictly lower Cholesky entries, embedded by an MLP); each
observation becomes a token (embedded by an MLP of its observation type). Every layer lets
the component tokens attend to the observations (cross-attention, with one learned *null*
observation always present, so no data is a valid input) and then to each other
(self-attention and an MLP: the PFN's :class:`~probinfer.amortize.TransformerLayer`). A
decoder maps each output token to a *change* of its component's parameters. Residual
branches and the decoder start at zero, so an untrained network returns the prior.

The network works in the prior's standardised frame: the latent is shifted by the prior's
mean and divided by its per-axis standard deviation, and each linear-Gaussian observation
is divided by its noise. The answer is then exactly equivariant to a shift and a positive
rescaling of each latent axis and to a positive rescaling of each observation, so a prior
far narrower or wider than any seen in training (a filter's prior late in a run) is the
same problem as a standard one, as long as the data's information relative to the prior
stays in the trained range: :func:`data_sharpness` measures it, and :func:`posterior` warns
beyond the range the model was trained on (``max_sharpness``).

A prior that is not a mixture (``prior_family="normal_inverse_gamma"``: an inverse-gamma
hyperprior on a variance, with draws of a normal) enters differently: an MLP embeds its
unit-free parameters into all component tokens at once, the tokens start from a standard
normal in the prior's moment frame (:meth:`NormalInverseGamma.frame`), and the layers and
decoder are the same. Its answer is exactly equivariant to the units of the data.

A Gaussian mixture over a GP's log hyperparameters (``prior_family="gp_hyperparameters"``)
enters as mixture tokens without a frame (the hyperparameters' meaning is tied to the
data's units), its points first attend to each other (``num_observation_layers``), and
each prior component gives ``component_copies`` posterior components.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Bool, Float, Int, PRNGKeyArray

from probinfer.amortize.dt_tasks import masked_log_weights
from probinfer.amortize.gp_hyperparameters import (
    HYPERPARAMETER_NAMES,
    GPRegressionData,
)
from probinfer.amortize.gp_hyperparameters import (
    LATENT_DIM as GP_LATENT_DIM,
)
from probinfer.amortize.mixture import GaussianMixture, LinearGaussianData
from probinfer.amortize.normal_inverse_gamma import (
    LATENT_DIM,
    NormalData,
    NormalInverseGamma,
    checked_values,
    normal_inverse_gamma,
)
from probinfer.amortize.pfn import TransformerLayer

# The prior families a transformer is built for: Gaussian mixtures (one token per
# component, linear-Gaussian data); a parametric prior embedded by an MLP into all
# component tokens at once (the normal-inverse-gamma prior, draws of a normal); or
# Gaussian mixtures over a GP's log hyperparameters, with GP regression data.
PRIOR_FAMILIES = ("gaussian_mixture", "normal_inverse_gamma", "gp_hyperparameters")

Prior = GaussianMixture | NormalInverseGamma
Data = LinearGaussianData | NormalData | GPRegressionData


def data_sharpness(
    prior: Prior,
    data: Data,
    *,
    component_mask: Bool[Array, " K"] | None = None,
    observation_mask: Bool[Array, " N"] | None = None,
) -> Array:
    """How much the data sharpen the prior, at the component they sharpen most.

    For component ``k`` with Cholesky factor ``L_k`` and the noise-whitened design ``W``
    (row ``j``: ``a_j / s_j``), the largest singular value ``sigma_k`` of ``W L_k``: along
    the direction the data inform most, the component's posterior precision is ``1 +
    sigma_k^2`` times its prior precision. Any invertible affine map of the latent and any
    positive rescaling of an observation leave it unchanged (the network's symmetries are
    among them), so it is comparable between problems in any units.

    For a :class:`~probinfer.amortize.NormalInverseGamma` prior and ``n`` draws, the same
    reading: ``sqrt(max(n / pseudo_count, n / (2 concentration)))`` (``mu``'s precision
    grows ``1 + n / pseudo_count`` times, ``log sigma^2``'s about ``1 + n / (2
    concentration)`` times); it is in the units of neither ``mu`` nor ``y``.

    Args:
        prior: ``K`` components over ``R^d`` (or a normal-inverse-gamma prior).
        data: ``N`` linear-Gaussian observations (or draws of a normal).
        component_mask: ``(K,)`` which components count (default all; unused for a
            parametric prior).
        observation_mask: ``(N,)`` which observations count (default all).

    Returns:
        The largest ``sigma_k`` over the counted components (a scalar; 0 without data).
    """
    if isinstance(prior, NormalInverseGamma):
        if not isinstance(data, NormalData):
            raise TypeError(
                f"a NormalInverseGamma prior goes with NormalData, got {type(data).__name__}."
            )
        dtype = jnp.result_type(prior.concentration)
        count = (
            jnp.asarray(data.num_observations, dtype)
            if observation_mask is None
            else jnp.sum(observation_mask).astype(dtype)
        )
        return jnp.sqrt(count * jnp.maximum(1 / prior.pseudo_count, 0.5 / prior.concentration))
    if not isinstance(prior, GaussianMixture) or not isinstance(data, LinearGaussianData):
        raise TypeError(
            "`data_sharpness` takes a GaussianMixture with LinearGaussianData or a "
            f"NormalInverseGamma with NormalData, got {type(prior).__name__} with "
            f"{type(data).__name__}."
        )
    whitened = data.whitened()[0]
    if observation_mask is not None:
        whitened = jnp.where(observation_mask[:, None], whitened, 0.0)
    singular = jnp.linalg.svd(
        jnp.einsum("nd,kde->kne", whitened, prior.scale_tril), compute_uv=False
    )
    largest = singular[:, 0] if singular.shape[-1] else jnp.zeros(prior.num_components)
    if component_mask is not None:
        largest = jnp.where(component_mask, largest, 0.0)
    return jnp.max(largest)


def token_size(dim: int) -> int:
    """Length of a component token: log weight, mean, log diagonal, strictly lower part."""
    return 1 + 2 * dim + dim * (dim - 1) // 2


def _symlog(x: Array) -> Array:
    return jnp.sign(x) * jnp.log1p(jnp.abs(x))


def observation_feature_size(dim: int) -> int:
    """Length of an observation's features (see :func:`_observation_features`)."""
    return 2 * (dim + 1 + dim * (dim + 1) // 2 + dim + 1)


def _observation_features(design: Array, values: Array) -> Array:
    """Per observation: ``a``, ``y``, the upper triangle of ``a a^T``, ``a y``, ``y^2``.

    ``a`` and ``y`` are the standardised, whitened design row and value. The products are
    what an observation adds to the exact update of a Gaussian component (precision
    ``+ a a^T``, information ``+ a y``), so that attention, which averages, can form
    those sums. Each feature enters raw and as ``sign(x) log(1 + |x|)``, which keeps very
    informative observations in a range the MLP handles.
    """
    rows, cols = np.triu_indices(design.shape[1])
    outer = design[:, rows] * design[:, cols]
    raw = jnp.concatenate(
        [design, values[:, None], outer, design * values[:, None], values[:, None] ** 2], axis=-1
    )
    return jnp.concatenate([raw, _symlog(raw)], axis=-1)


# What a GP-hyperparameter model's `prior_ranges` may name: the trained range of the
# prior components' means on each axis of theta, and of their standard deviations.
GP_PRIOR_RANGE_NAMES = (*HYPERPARAMETER_NAMES, "component_sd")

# Feature counts of a normal-inverse-gamma prior and of one of its observations (see
# `_normal_inverse_gamma_inputs`).
NORMAL_INVERSE_GAMMA_PRIOR_FEATURES = 4
NORMAL_INVERSE_GAMMA_OBSERVATION_FEATURES = 4


def _normal_inverse_gamma_inputs(
    prior: NormalInverseGamma, values: Array
) -> tuple[Array, Array, Array, Array]:
    """The prior's features, its frame and the observations' features, without units.

    Prior features: ``log pseudo_count``, ``log concentration`` and their reciprocals' symlogs
    (what is left of the prior once the units of ``y`` are removed). Observation
    features: ``z = (y - loc) / typical_sd``, ``z^2``, raw and as ``sign(x) log(1 +
    |x|)``; their sums over observations, with the count, are the sufficient statistics
    of the exact update.

    Returns:
        ``(prior_features, shift, scale, observation_features)``.
    """
    shift, scale, typical_sd = prior.frame()
    count, concentration = prior.pseudo_count, prior.concentration
    prior_features = jnp.stack(
        [jnp.log(count), jnp.log(concentration), _symlog(1 / count), _symlog(1 / concentration)]
    )
    standardised = (values - prior.loc) / typical_sd
    raw = jnp.stack([standardised, standardised**2], axis=-1)
    return prior_features, shift, scale, jnp.concatenate([raw, _symlog(raw)], axis=-1)


def gp_observation_feature_size(num_features: int) -> int:
    """Length of a GP point's features (see :func:`_gp_observation_features`)."""
    return 2 * (num_features + 2)


def _gp_observation_features(inputs: Array, values: Array) -> Array:
    """Per point: ``x``, ``y``, ``y^2``, raw and as ``sign(x) log(1 + |x|)``.

    A GP's likelihood couples the points (through their distances), so unlike the other
    families these features are not sufficient one by one: the observation layers' self-
    attention relates them.
    """
    raw = jnp.concatenate([inputs, values[:, None], values[:, None] ** 2], axis=-1)
    return jnp.concatenate([raw, _symlog(raw)], axis=-1)


def _zeroed(linear: eqx.nn.Linear) -> eqx.nn.Linear:
    """``linear`` with zero weight and bias (a residual branch that starts at zero)."""
    assert linear.bias is not None  # Linear has a bias unless use_bias=False
    return eqx.tree_at(
        lambda m: (m.weight, m.bias),
        linear,
        (jnp.zeros_like(linear.weight), jnp.zeros_like(linear.bias)),
    )


class _MLP(eqx.Module):
    """``Linear -> GELU -> Linear``."""

    first: eqx.nn.Linear
    second: eqx.nn.Linear

    def __init__(self, size_in: int, hidden: int, size_out: int, *, key: PRNGKeyArray) -> None:
        key_first, key_second = jax.random.split(key)
        self.first = eqx.nn.Linear(size_in, hidden, key=key_first)
        self.second = eqx.nn.Linear(hidden, size_out, key=key_second)

    def __call__(self, x: Array) -> Array:
        return self.second(jax.nn.gelu(self.first(x)))


class CrossAttentionLayer(eqx.Module):
    """Pre-norm cross-attention from component tokens to observation tokens.

    The output projection starts at zero, so the layer starts as the identity.

    Attributes:
        attention: multi-head attention (queries: components; keys, values: observations).
        query_norm: layer norm of the component tokens.
        context_norm: layer norm of the observation tokens.
    """

    attention: eqx.nn.MultiheadAttention
    query_norm: eqx.nn.LayerNorm
    context_norm: eqx.nn.LayerNorm

    def __init__(self, width: int, num_heads: int, *, key: PRNGKeyArray) -> None:
        attention = eqx.nn.MultiheadAttention(num_heads, width, key=key)
        self.attention = eqx.tree_at(
            lambda a: a.output_proj.weight, attention, jnp.zeros_like(attention.output_proj.weight)
        )
        self.query_norm = eqx.nn.LayerNorm(width)
        self.context_norm = eqx.nn.LayerNorm(width)

    def __call__(
        self, tokens: Float[Array, "K width"], context: Float[Array, "M width"], mask: Array
    ) -> Float[Array, "K width"]:
        """``tokens`` plus attention to ``context`` (``mask[j]``: context ``j`` is real)."""
        queries = jax.vmap(self.query_norm)(tokens)
        keys = jax.vmap(self.context_norm)(context)
        full_mask = jnp.broadcast_to(mask[None, :], (tokens.shape[0], context.shape[0]))
        return tokens + self.attention(queries, keys, keys, mask=full_mask)


class DistributionTransformer(eqx.Module):
    """Maps a prior and data to a Gaussian-mixture posterior.

    Two prior families (``prior_family``): a Gaussian mixture with linear-Gaussian data,
    where each prior component is a token and its posterior component is decoded from
    it; or a parametric prior (the normal-inverse-gamma prior over ``(mu, log sigma^2)``
    with draws of a normal), which an MLP embeds into all ``max_components`` tokens at
    once and whose posterior components are decoded as changes of the prior's moment
    frame (a standard normal there).

    Attributes:
        component_encoder: MLP embedding of component tokens (mixture priors), or of the
            parametric prior's features into ``max_components * width`` (all tokens).
        observation_encoders: one MLP per observation type.
        null_observation: learned token every component can always attend to.
        count_direction: added to the null token, times ``log(1 + n)``: the number of
            observations, which attention (an average) cannot see by itself.
        summary_projection: maps the *sum* of the observation embeddings into every
            component token (zero-initialised). Sums are what an exact update adds up
            (precision and information); attention only averages.
        cross_layers: cross-attention per layer.
        self_layers: self-attention + MLP per layer.
        output_norm: final layer norm.
        decoder: MLP from a token to its component's parameter change (zero-initialised
            output).
        dim: latent dimension (static).
        max_components: most prior components it was trained for (static).
        max_observations: most observations it was trained for (static).
        max_sharpness: the edge of the trained range of :func:`data_sharpness` (its
            99.9th percentile over the training task's examples, or the task's bound
            where it has one; static), or ``None`` when unknown (a model built
            directly): :func:`posterior` warns above it (mixture priors; a parametric
            prior's is the task's bound, kept for reference: its ranges are checked).
        prior_family: one of :data:`PRIOR_FAMILIES` (static).
        prior_ranges: ``(name, low, high)`` of each parametric prior parameter the
            training task spanned (static; empty for mixture priors or when unknown):
            :func:`posterior` warns outside them (for GP hyperparameters: the range of
            the prior components' means per axis and of their standard deviations).
        observation_layers: self-attention layers over the observations, before the
            components attend to them (GP points, which are not independent given the
            latent; none for the other families).
        copy_embedding: ``(component_copies, width)`` learned embedding that tells a
            component's copies apart (``None`` with one copy).
        component_copies: posterior components per prior component (static).
        num_features: input dimension of GP data (static; 1 for the other families).
    """

    component_encoder: _MLP
    observation_encoders: tuple[_MLP, ...]
    null_observation: Array
    count_direction: Array
    summary_projection: eqx.nn.Linear
    cross_layers: tuple[CrossAttentionLayer, ...]
    self_layers: tuple[TransformerLayer, ...]
    output_norm: eqx.nn.LayerNorm
    decoder: _MLP
    observation_layers: tuple[TransformerLayer, ...]
    copy_embedding: Array | None
    dim: int = eqx.field(static=True)
    max_components: int = eqx.field(static=True)
    max_observations: int = eqx.field(static=True)
    max_sharpness: float | None = eqx.field(static=True)
    prior_family: str = eqx.field(static=True)
    prior_ranges: tuple[tuple[str, float, float], ...] = eqx.field(static=True)
    component_copies: int = eqx.field(static=True)
    num_features: int = eqx.field(static=True)

    def __init__(
        self,
        dim: int,
        *,
        max_components: int,
        max_observations: int,
        num_observation_types: int = 1,
        width: int = 64,
        num_layers: int = 3,
        num_heads: int = 4,
        mlp_width: int = 128,
        max_sharpness: float | None = None,
        prior_family: str = "gaussian_mixture",
        prior_ranges: tuple[tuple[str, float, float], ...] = (),
        component_copies: int = 1,
        num_observation_layers: int = 0,
        num_features: int = 1,
        key: PRNGKeyArray,
    ) -> None:
        for name, value, least in (("component_copies", component_copies, 1),
                                   ("num_observation_layers", num_observation_layers, 0),
                                   ("num_features", num_features, 1)):  # fmt: skip
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
                raise TypeError(f"`{name}` must be an integer, got {value!r}.")
            if value < least:
                raise ValueError(f"`{name}` must be >= {least}, got {value}.")
        if width % num_heads:
            raise ValueError(f"`width` ({width}) must be divisible by `num_heads` ({num_heads}).")
        if prior_family not in PRIOR_FAMILIES:
            raise ValueError(
                f"`prior_family` must be one of {PRIOR_FAMILIES}, got {prior_family!r}."
            )
        parametric = prior_family == "normal_inverse_gamma"
        if parametric and dim != LATENT_DIM:
            raise ValueError(
                f"a normal-inverse-gamma prior is over (mu, log sigma^2): `dim` must be "
                f"{LATENT_DIM}, got {dim}."
            )
        gp = prior_family == "gp_hyperparameters"
        if gp and dim != GP_LATENT_DIM:
            raise ValueError(
                "a GP-hyperparameter prior is over (log lengthscale, log variance, log "
                f"noise): `dim` must be {GP_LATENT_DIM}, got {dim}."
            )
        keys = iter(jax.random.split(key, 2 * num_layers + num_observation_types + 5))
        size = token_size(dim)
        if parametric:
            self.component_encoder = _MLP(
                NORMAL_INVERSE_GAMMA_PRIOR_FEATURES, mlp_width, max_components * width,
                key=next(keys),
            )  # fmt: skip
            feature_size = NORMAL_INVERSE_GAMMA_OBSERVATION_FEATURES
        else:
            self.component_encoder = _MLP(size, mlp_width, width, key=next(keys))
            feature_size = (
                gp_observation_feature_size(num_features) if gp else observation_feature_size(dim)
            )
        self.observation_encoders = tuple(
            _MLP(feature_size, mlp_width, width, key=next(keys))
            for _ in range(num_observation_types)
        )
        self.null_observation = 0.02 * jax.random.normal(next(keys), (width,))
        self.count_direction = 0.02 * jax.random.normal(next(keys), (width,))
        self.summary_projection = _zeroed(eqx.nn.Linear(width, width, key=next(keys)))
        self.cross_layers = tuple(
            CrossAttentionLayer(width, num_heads, key=next(keys)) for _ in range(num_layers)
        )
        self.self_layers = tuple(
            TransformerLayer(width, num_heads, mlp_width, key=next(keys)) for _ in range(num_layers)
        )
        self.output_norm = eqx.nn.LayerNorm(width)
        decoder = _MLP(width, mlp_width, size, key=next(keys))
        self.decoder = eqx.tree_at(lambda d: d.second, decoder, _zeroed(decoder.second))
        # Separate keys, so that the layers above start as they did before these existed.
        extra_keys = jax.random.split(jax.random.fold_in(key, 1), num_observation_layers + 1)
        self.observation_layers = tuple(
            TransformerLayer(width, num_heads, mlp_width, key=k) for k in extra_keys[1:]
        )
        self.copy_embedding = (
            None
            if component_copies == 1
            else 0.02 * jax.random.normal(extra_keys[0], (component_copies, width))
        )
        self.dim = int(dim)
        self.max_components = int(max_components)
        self.max_observations = int(max_observations)
        self.max_sharpness = None if max_sharpness is None else float(max_sharpness)
        self.prior_family = prior_family
        self.prior_ranges = tuple((str(n), float(lo), float(hi)) for n, lo, hi in prior_ranges)
        self.component_copies = int(component_copies)
        self.num_features = int(num_features)
        allowed = (
            ("pseudo_count", "concentration")
            if parametric
            else (*GP_PRIOR_RANGE_NAMES,)
            if gp
            else ()
        )
        unknown = [name for name, _, _ in self.prior_ranges if name not in allowed]
        if unknown:
            raise ValueError(
                f"`prior_ranges` names {unknown}, which a {prior_family} prior does not have "
                f"(allowed: {list(allowed)})."
            )

    @property
    def num_observation_types(self) -> int:
        """How many observation types it embeds."""
        return len(self.observation_encoders)

    def __call__(
        self,
        prior: Prior,
        data: Data,
        *,
        component_mask: Bool[Array, " K"] | None = None,
        observation_mask: Bool[Array, " N"] | None = None,
        observation_types: Int[Array, " N"] | None = None,
    ) -> GaussianMixture:
        """The approximate posterior, one example per call (``vmap`` over examples).

        Args:
            prior: ``K`` components over ``R^d`` (``prior_family`` "gaussian_mixture"),
                or a :class:`~probinfer.amortize.NormalInverseGamma` ("normal_inverse_gamma").
            data: ``N`` linear-Gaussian observations, or ``N`` draws of a normal
                (:class:`~probinfer.amortize.NormalData`); ``N`` may be 0.
            component_mask: ``(K,)`` which components are real (default: all); padded
                ones come back with weight 0. Ignored for a parametric prior, whose
                posterior always has ``max_components`` components.
            observation_mask: ``(N,)`` which observations are real (default: all).
            observation_types: ``(N,)`` observation type per observation (default 0).

        Returns:
            The posterior mixture: ``K * component_copies`` components (the prior's
            order, each component's copies together) for a mixture prior,
            ``max_components`` over ``(mu, log sigma^2)`` for a parametric one.
        """
        num_observations = data.num_observations
        if observation_mask is None:
            observation_mask = jnp.ones(num_observations, bool)
        if observation_types is None:
            observation_types = jnp.zeros(num_observations, jnp.int32)
        if self.prior_family == "normal_inverse_gamma":
            if not isinstance(prior, NormalInverseGamma) or not isinstance(data, NormalData):
                raise TypeError(
                    "this transformer takes a NormalInverseGamma prior with NormalData, got "
                    f"{type(prior).__name__} with {type(data).__name__}."
                )
            num_components = self.max_components
            component_mask = jnp.ones(num_components, bool)
            # Padded values are replaced by finite ones: masked attention multiplies them
            # by zero, and 0 * NaN would still reach the real outputs.
            values = jnp.where(observation_mask, data.values, prior.loc)
            prior_features, shift, scale, features = _normal_inverse_gamma_inputs(prior, values)
            # Every component starts as the frame's standard normal, equally weighted;
            # the prior's own shape enters through its embedding.
            tokens_in = jnp.zeros((num_components, token_size(self.dim)), shift.dtype)
            tokens = self.component_encoder(prior_features).reshape(num_components, -1)
        else:
            expected = (
                GPRegressionData
                if self.prior_family == "gp_hyperparameters"
                else (LinearGaussianData)
            )
            if not isinstance(prior, GaussianMixture) or not isinstance(data, expected):
                raise TypeError(
                    f"this transformer takes a GaussianMixture prior with {expected.__name__}, "
                    f"got {type(prior).__name__} with {type(data).__name__}."
                )
            num_components = prior.num_components
            if component_mask is None:
                component_mask = jnp.ones(num_components, bool)
            # Padded entries are replaced by harmless finite values first (as above).
            prior = GaussianMixture(
                masked_log_weights(prior.log_weights, component_mask),
                jnp.where(component_mask[:, None], prior.means, 0.0),
                jnp.where(
                    component_mask[:, None, None], prior.scale_tril, jnp.eye(prior.dim)[None]
                ),
            )
            if isinstance(data, GPRegressionData):
                # The hyperparameters' meaning is tied to the data's units: no frame.
                shift = jnp.zeros(self.dim, prior.means.dtype)
                scale = jnp.ones(self.dim, prior.means.dtype)
                features = _gp_observation_features(
                    jnp.where(observation_mask[:, None], data.inputs, 0.0),
                    jnp.where(observation_mask, data.values, 0.0),
                )
            else:
                shift, scale = prior.mean, jnp.sqrt(jnp.diagonal(prior.covariance))
                design, values = data.whitened()
                design = jnp.where(observation_mask[:, None], design, 0.0)
                values = jnp.where(observation_mask, values, 0.0)
                features = _observation_features(design * scale[None, :], values - design @ shift)
            tokens_in = _to_tokens(prior, shift, scale, component_mask)
            tokens = jax.vmap(self.component_encoder)(tokens_in)
        if self.copy_embedding is not None:
            # Each component becomes `component_copies` tokens, told apart by a learned
            # embedding, so that a posterior may have more modes than its prior.
            copies = self.component_copies
            tokens_in = jnp.repeat(tokens_in, copies, axis=0)
            tokens = jnp.repeat(tokens, copies, axis=0) + jnp.tile(
                self.copy_embedding, (num_components, 1)
            )
            component_mask = jnp.repeat(component_mask, copies)
            num_components = num_components * copies

        by_type = jnp.stack([jax.vmap(encode)(features) for encode in self.observation_encoders])
        observations = by_type[observation_types, jnp.arange(num_observations)]
        observation_pairs = observation_mask[None, :] | jnp.eye(num_observations, dtype=bool)
        for layer in self.observation_layers:
            observations = layer(observations, observation_pairs)
        count = jnp.log1p(jnp.sum(observation_mask))
        null = self.null_observation + count * self.count_direction
        context = jnp.concatenate([null[None], observations])
        context_mask = jnp.concatenate([jnp.ones(1, bool), observation_mask])
        summary = jnp.sum(jnp.where(observation_mask[:, None], observations, 0.0), axis=0)
        tokens = tokens + self.summary_projection(summary)[None, :]
        component_pairs = component_mask[None, :] | jnp.eye(num_components, dtype=bool)

        for cross, body in zip(self.cross_layers, self.self_layers, strict=True):
            tokens = cross(tokens, context, context_mask)
            tokens = body(tokens, component_pairs)
        change = jax.vmap(lambda t: self.decoder(self.output_norm(t)))(tokens)
        return _from_tokens(tokens_in + change, shift, scale, component_mask, self.dim)


def _to_tokens(prior: GaussianMixture, shift: Array, scale: Array, mask: Array) -> Array:
    """``(K, token_size)`` component tokens in the standardised frame."""
    dim = prior.dim
    means = (prior.means - shift[None, :]) / scale[None, :]
    trils = prior.scale_tril / scale[None, :, None]  # diag(1 / scale) @ L stays lower triangular
    log_diagonal = jnp.log(jnp.diagonal(trils, axis1=-2, axis2=-1))
    rows, cols = np.tril_indices(dim, -1)
    lower = trils[:, rows, cols]
    tokens = jnp.concatenate([prior.log_weights[:, None], means, log_diagonal, lower], axis=-1)
    # Padded components (weight 0, log weight -inf) become zero tokens: finite, so that
    # their rows, which nothing attends to and the output drops, stay finite in gradients.
    return jnp.where(mask[:, None], tokens, 0.0)


def _from_tokens(
    tokens: Array, shift: Array, scale: Array, mask: Array, dim: int
) -> GaussianMixture:
    """The mixture the tokens describe, mapped back from the standardised frame."""
    log_weights = masked_log_weights(tokens[:, 0], mask)
    means = shift[None, :] + scale[None, :] * jnp.where(mask[:, None], tokens[:, 1 : 1 + dim], 0.0)
    # Padded rows get no training signal: keep them finite whatever the network says.
    diagonal = jnp.where(mask[:, None], jnp.exp(tokens[:, 1 + dim : 1 + 2 * dim]), 1.0)
    rows, cols = np.tril_indices(dim, -1)
    lower = jnp.where(mask[:, None], tokens[:, 1 + 2 * dim :], 0.0)
    trils = jax.vmap(jnp.diag)(diagonal).at[:, rows, cols].set(lower)
    return GaussianMixture(log_weights, means, scale[None, :, None] * trils)


@eqx.filter_jit
def _posterior(
    model: DistributionTransformer,
    prior: Prior,
    data: Data,
    observation_types: Array,
    component_mask: Array,
    observation_mask: Array,
) -> tuple[GaussianMixture, Array]:
    result = model(
        prior,
        data,
        component_mask=component_mask,
        observation_mask=observation_mask,
        observation_types=observation_types,
    )
    if isinstance(data, GPRegressionData):  # no sharpness for GP data: ranges are checked
        return result, jnp.zeros((), result.means.dtype)
    sharpness = data_sharpness(
        prior, data, component_mask=component_mask, observation_mask=observation_mask
    )
    return result, sharpness


def _check_mixture_inputs(model: DistributionTransformer, prior: Prior, data: Data) -> None:
    """Refuse a mixture prior and linear-Gaussian data the model cannot take."""
    if isinstance(prior, NormalInverseGamma):
        raise TypeError(
            "this model was trained on Gaussian-mixture priors; for a normal-inverse-gamma "
            "prior use a model trained on one (`amortize.PRETRAINED_DT_NORMAL_INVERSE_GAMMA`, "
            "`--model dt-nig`)."
        )
    if not isinstance(prior, GaussianMixture):
        raise TypeError(
            f"`prior` must be a GaussianMixture (build it with `gaussian_mixture`), got "
            f"{type(prior).__name__}."
        )
    if model.prior_family == "gp_hyperparameters":
        if not isinstance(data, GPRegressionData):
            raise TypeError(
                "this model takes GP regression data (build it with `gp_regression_data`), "
                f"got {type(data).__name__}."
            )
        if data.num_features != model.num_features:
            raise ValueError(
                f"`data.inputs` has {data.num_features} features but the model was trained "
                f"on {model.num_features}."
            )
    elif isinstance(data, NormalData):
        raise TypeError(
            "this model takes linear-Gaussian observations; draws of a normal with unknown "
            "mean and variance go with a normal-inverse-gamma prior and a model trained on "
            "one (`amortize.PRETRAINED_DT_NORMAL_INVERSE_GAMMA`, `--model dt-nig`)."
        )
    elif isinstance(data, GPRegressionData):
        raise TypeError(
            "this model takes linear-Gaussian observations; GP regression data go with a "
            "model trained on GP hyperparameters (`amortize.PRETRAINED_DT_GP`, `--model "
            "dt-gp`)."
        )
    elif not isinstance(data, LinearGaussianData):
        raise TypeError(
            f"`data` must be LinearGaussianData (build it with `linear_gaussian_data`), got "
            f"{type(data).__name__}."
        )
    if prior.dim != model.dim:
        raise ValueError(
            f"the prior is over R^{prior.dim} but the model was trained for R^{model.dim}; "
            "use a model trained for this dimension."
        )
    if isinstance(data, LinearGaussianData) and data.design.shape[1] != model.dim:
        raise ValueError(
            f"`data.design` has {data.design.shape[1]} columns but the latent has "
            f"{model.dim} dimensions."
        )
    if prior.num_components > model.max_components:
        raise ValueError(
            f"the prior has {prior.num_components} components but the model was trained "
            f"for at most {model.max_components}; reduce the prior (merge or drop "
            "components) or train a model with a larger `max_components`."
        )
    for name, leaf in (("log_weights", prior.log_weights), ("means", prior.means),
                       ("scale_tril", prior.scale_tril)):  # fmt: skip
        if not np.all(np.isfinite(np.asarray(leaf))):
            raise ValueError(
                f"the prior's `{name}` holds NaN or infinite values (a failed update or "
                "propagation upstream?); build priors with `gaussian_mixture`."
            )


def _checked_normal_inverse_gamma(prior: Prior, data: Data) -> NormalInverseGamma:
    """The prior with array leaves, after refusing a prior and data the model cannot take."""
    if isinstance(prior, GaussianMixture):
        shipped = "2D` (`--model dt-2d" if prior.dim != 1 else "1D` (`--model dt-1d"
        raise TypeError(
            "this model was trained on normal-inverse-gamma priors; for a Gaussian-mixture "
            f"prior use a model trained on those (`amortize.PRETRAINED_DT_{shipped}`)."
        )
    if not isinstance(prior, NormalInverseGamma):
        raise TypeError(
            "`prior` must be a NormalInverseGamma (build it with `normal_inverse_gamma`), got "
            f"{type(prior).__name__}."
        )
    if not isinstance(data, NormalData):
        raise TypeError(
            f"`data` must be NormalData (build it with `normal_data`), got {type(data).__name__}."
        )
    names = ("loc", "pseudo_count", "concentration", "rate")
    leaves = [np.asarray(getattr(prior, name), dtype=float) for name in names]
    if any(leaf.shape != () for leaf in leaves):
        raise ValueError(
            "the prior's parameters must be one number each (one prior per call), got shapes "
            f"{[leaf.shape for leaf in leaves]}; build priors with `normal_inverse_gamma`."
        )
    # The builders' checks (each parameter and value by name, magnitudes included), for
    # a prior or data built directly.
    checked = normal_inverse_gamma(*(float(leaf) for leaf in leaves))
    checked_values(data.values)
    return checked


def _padded(array: ArrayLike, extra: int, fill: np.ndarray | float, dtype: np.dtype) -> Array:
    """``array`` with ``extra`` rows of ``fill`` appended, on the host, then transferred."""
    host = np.asarray(array, dtype)
    filler = np.broadcast_to(np.asarray(fill, dtype), (extra, *host.shape[1:]))
    return jnp.asarray(np.concatenate([host, filler]))  # a transfer, not a program


def _padded_mixture_inputs(
    model: DistributionTransformer, prior: GaussianMixture, data: Data, extra_observations: int
) -> tuple[GaussianMixture, LinearGaussianData | GPRegressionData, Callable[[], tuple[str, str]]]:
    """The prior and data padded to the model's sizes, and the inputs' magnitudes and the
    fix for the error on a non-finite posterior."""
    assert isinstance(data, LinearGaussianData | GPRegressionData)  # checked by the caller
    extra_components = model.max_components - prior.num_components
    dtype = np.result_type(prior.means.dtype, data.values.dtype)
    padded_prior = GaussianMixture(
        _padded(prior.log_weights, extra_components, -np.inf, dtype),
        _padded(prior.means, extra_components, 0.0, dtype),
        _padded(prior.scale_tril, extra_components, np.eye(model.dim), dtype),
    )
    padded_data: LinearGaussianData | GPRegressionData
    if isinstance(data, GPRegressionData):
        padded_data = GPRegressionData(
            _padded(data.inputs, extra_observations, 0.0, dtype),
            _padded(data.values, extra_observations, 0.0, dtype),
        )
    else:
        padded_data = LinearGaussianData(
            _padded(data.design, extra_observations, 0.0, dtype),
            _padded(data.values, extra_observations, 0.0, dtype),
            _padded(data.noise_sd, extra_observations, 1.0, dtype),
        )

    def describe() -> tuple[str, str]:  # on the host: JAX's reductions would compile
        means, values = np.asarray(prior.means), np.asarray(data.values)
        magnitudes = (
            f"prior means up to {float(np.max(np.abs(means))):.3g}; data values up to "
            f"{float(np.max(np.abs(values), initial=0.0)):.3g}"
        )
        if isinstance(data, GPRegressionData):
            return magnitudes, (
                "bring the prior and the data into the trained ranges (`model.prior_ranges`, "
                "inputs in [-1, 1])"
            )
        noise = np.asarray(data.noise_sd)
        return (
            f"{magnitudes}, noise scales down to {float(np.min(noise, initial=np.inf)):.3g}",
            "rescale the problem (the latent's units) towards the training task's",
        )

    return padded_prior, padded_data, describe


def _padded_normal_inverse_gamma_inputs(
    prior: NormalInverseGamma, data: Data, extra_observations: int
) -> tuple[NormalInverseGamma, NormalData, Callable[[], tuple[str, str]]]:
    """The data padded to the model's size, and the inputs' magnitudes and the fix for the
    error on a non-finite posterior."""
    assert isinstance(data, NormalData)  # checked by the caller
    dtype = np.result_type(prior.loc.dtype, np.asarray(data.values).dtype)
    padded_data = NormalData(_padded(data.values, extra_observations, 0.0, dtype))

    def describe() -> tuple[str, str]:  # on the host: JAX's ops would compile programs
        typical_sd = float(np.asarray(prior.frame()[2]))
        distance = np.abs(np.asarray(data.values) - float(prior.loc))
        largest = float(np.max(distance, initial=0.0)) / max(typical_sd, 1e-300)
        return (
            f"pseudo_count {float(prior.pseudo_count):.3g}, concentration "
            f"{float(prior.concentration):.3g}; data up to {largest:.3g} typical prior "
            f"standard deviations ({typical_sd:.3g}) from `loc`",
            "bring the prior's parameters into the trained ranges (`model.prior_ranges`)",
        )

    return prior, padded_data, describe


def _warn_outside_gp_ranges(
    model: DistributionTransformer, prior: GaussianMixture, data: GPRegressionData
) -> None:
    """Warn when a GP-hyperparameter prior or its inputs leave the trained ranges."""
    means = np.asarray(prior.means, float)
    # On the host (JAX's ops would compile per shape): var_i = sum_j L_ij^2 per component.
    sds = np.sqrt(np.sum(np.asarray(prior.scale_tril, float) ** 2, axis=-1))
    outside = []
    for name, low, high in model.prior_ranges:
        axis = GP_PRIOR_RANGE_NAMES.index(name)
        values = sds.ravel() if name == "component_sd" else means[:, axis]
        beyond = values[(values < low - 1e-6 * abs(low)) | (values > high + 1e-6 * abs(high))]
        if beyond.size:
            what = "standard deviations" if name == "component_sd" else f"`{name}` means"
            outside.append(
                f"component {what} {np.array2string(beyond, precision=3)} outside "
                f"[{low:.3g}, {high:.3g}]"
            )
    inputs = np.asarray(data.inputs, float)
    if inputs.size and np.max(np.abs(inputs)) > 1 + 1e-6:
        outside.append(
            f"inputs up to {float(np.max(np.abs(inputs))):.3g} in magnitude, outside [-1, 1]"
        )
    if outside:
        warnings.warn(
            f"the prior or data lie outside what the model was trained on: "
            f"{'; '.join(outside)}. The posterior may be far off: rescale the inputs onto "
            "[-1, 1] (the lengthscale's prior moves with them), or sample the hyperparameters "
            "with `pi.sample`.",
            UserWarning,
            stacklevel=3,
        )


def posterior(
    model: DistributionTransformer,
    prior: Prior,
    data: Data,
    *,
    observation_types: Int[ArrayLike, " n"] | None = None,
) -> GaussianMixture:
    """The transformer's posterior for one prior and data set, in one compiled call.

    The inputs are padded to ``model.max_components`` components and
    ``model.max_observations`` observations (masked), so that one compiled program serves
    every size.

    Args:
        model: a trained :class:`DistributionTransformer`.
        prior: the prior: for a mixture model (``model.prior_family`` is
            "gaussian_mixture"), a :func:`~probinfer.amortize.gaussian_mixture` of at most
            ``model.max_components`` components over ``R^model.dim``; for a
            normal-inverse-gamma model, a :func:`~probinfer.amortize.normal_inverse_gamma`.
        data: the observations (:func:`~probinfer.amortize.linear_gaussian_data`, or
            :func:`~probinfer.amortize.normal_data` for a normal-inverse-gamma model), at
            most ``model.max_observations`` of them; none gives (about) the prior back.
        observation_types: ``(n,)`` type of each observation (default all 0).

    Returns:
        The posterior mixture: with the prior's number of components times
        ``model.component_copies`` for a mixture prior (3 per component for the shipped GP
        model, over ``(log lengthscale, log variance, log noise)``); with
        ``model.max_components`` components over ``(mu, log sigma^2)`` for a
        normal-inverse-gamma prior.

    Raises:
        TypeError: if ``prior`` or ``data`` are not the types the model takes.
        ValueError: on a dimension mismatch, more components or observations than the
            model was trained for, observation types out of range, or a posterior that is
            not finite (a prior or data far beyond the training task's).

    Warns:
        UserWarning: when :func:`data_sharpness` exceeds ``model.max_sharpness`` (mixture
            priors): data more informative relative to the prior than the model was
            trained on; or when a parametric prior's parameter lies outside
            ``model.prior_ranges``.
    """
    if model.prior_family == "normal_inverse_gamma":
        prior = _checked_normal_inverse_gamma(prior, data)
    else:
        _check_mixture_inputs(model, prior, data)
    if data.num_observations > model.max_observations:
        if model.prior_family == "gp_hyperparameters":
            # A GP's points are not independent given theta: no feeding back.
            fix = (
                "sample the hyperparameters with `pi.sample` (NUTS), or train a model with a "
                "larger `max_observations`"
            )
        elif isinstance(prior, GaussianMixture):
            fix = "split them into batches and feed each posterior back as the next prior"
        else:
            # The posterior is a mixture, not a normal-inverse-gamma: it cannot be fed back.
            fix = (
                "use the exact update `prior.condition(data)`, or train a model with a "
                "larger `max_observations`"
            )
        raise ValueError(
            f"{data.num_observations} observations given but the model was trained for at "
            f"most {model.max_observations}; {fix}."
        )
    if observation_types is None:
        types = np.zeros(data.num_observations, np.int32)
    else:
        types = np.asarray(observation_types)
        if types.shape != (data.num_observations,) or not np.issubdtype(types.dtype, np.integer):
            raise ValueError(
                f"`observation_types` must be ({data.num_observations},) integers, got "
                f"{types.shape} {types.dtype}."
            )
        if np.any((types < 0) | (types >= model.num_observation_types)):
            raise ValueError(
                f"`observation_types` must lie in [0, {model.num_observation_types}), got "
                f"{sorted(set(types.tolist()))}."
            )
    # Pad to the sizes the model was trained for, on the host (no per-size compilation):
    # one compiled program serves every number of components and observations (a
    # filter's data may vary per step).
    num_observations = data.num_observations
    extra_observations = model.max_observations - num_observations
    if isinstance(prior, GaussianMixture):
        padded_prior, padded_data, describe = _padded_mixture_inputs(
            model, prior, data, extra_observations
        )
        num_components = prior.num_components
    else:
        padded_prior, padded_data, describe = _padded_normal_inverse_gamma_inputs(
            prior, data, extra_observations
        )
        num_components = model.max_components
    # Parameters beyond the trained ranges: warned before the call (whose result may then
    # be non-finite and raise).
    if model.prior_family == "gp_hyperparameters":
        assert isinstance(prior, GaussianMixture) and isinstance(data, GPRegressionData)
        _warn_outside_gp_ranges(model, prior, data)
    parametric_ranges = model.prior_ranges if model.prior_family == "normal_inverse_gamma" else ()
    for name, low, high in parametric_ranges:
        value = float(getattr(prior, name))
        # A relative tolerance: a bound given in JSON may come back rounded to float32.
        if not low * (1 - 1e-6) <= value <= high * (1 + 1e-6):
            warnings.warn(
                f"the prior's `{name}` is {value:.3g}, outside the range the model was "
                f"trained on, [{low:.3g}, {high:.3g}]: the posterior may be far off (a "
                "weaker prior than trained on most of all; docs/dt.md gives measured "
                "errors). Use the exact update `prior.condition(data)` where it exists, or "
                "a model trained on a range that covers this prior.",
                UserWarning,
                stacklevel=2,
            )
    result, sharpness = _posterior(
        model,
        padded_prior,
        padded_data,
        jnp.asarray(np.pad(types, (0, extra_observations)).astype(np.int32)),
        jnp.asarray(np.arange(model.max_components) < num_components),
        jnp.asarray(np.arange(model.max_observations) < num_observations),
    )
    # Each real component's copies come first (`component_copies` tokens per component).
    num_answers = num_components * model.component_copies
    log_weights, means, scale_tril = (
        np.asarray(leaf)[:num_answers]
        for leaf in (result.log_weights, result.means, result.scale_tril)
    )
    # A component's weight may underflow to zero (log weight -inf); nothing else may be
    # non-finite.
    if (
        np.any(np.isnan(log_weights) | np.isposinf(log_weights))
        or not np.all(np.isfinite(means))
        or not np.all(np.isfinite(scale_tril))
    ):
        magnitudes, fix = describe()
        raise ValueError(
            "the posterior holds NaN or infinite values: the prior or the data lie far "
            "outside what the model was trained on, or beyond what its float arithmetic "
            f"holds ({magnitudes}); {fix}."
        )
    sharpness = float(sharpness)
    # `not <=`: a sharpness that overflowed to NaN is beyond the range too. A parametric
    # prior's sharpness is a function of its parameters and the count, which its ranges
    # above and `max_observations` already bound: only mixtures are checked here.
    if (
        model.max_sharpness is not None
        and model.prior_family == "gaussian_mixture"
        and not sharpness <= model.max_sharpness
    ):
        warnings.warn(
            f"the data sharpen the prior more than the model was trained for: "
            f"`data_sharpness` is {sharpness:.3g} against {model.max_sharpness:.3g}, the "
            "99.9th percentile of its training examples (along the direction the data "
            "inform most, a prior component's precision grows 1 + sharpness^2 times), so "
            "the posterior may be far off (docs/dt.md gives measured errors). Feed the "
            "observations in smaller batches, each posterior as the next prior; if a "
            "single observation is already this sharp, use the exact update "
            "`prior.condition(data)` or a model trained on sharper data.",
            UserWarning,
            stacklevel=2,
        )
    return GaussianMixture(*(jnp.asarray(leaf) for leaf in (log_weights, means, scale_tril)))
