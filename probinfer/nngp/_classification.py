"""Classification with a latent scale-mixture process, by MCMC.

Model, for ``C`` latent functions (``C = 1`` with a Bernoulli-logit likelihood for two
classes, ``C = num_classes`` with a softmax likelihood otherwise):

    s ~ scale_prior,   f_c | s ~ GP(0, s K) independently,   label_i ~ Cat(softmax(f(x_i))).

Both samplers work in the whitened parameterisation ``F = sqrt(s) L Z`` (``L L^T = K +
jitter I``, ``Z ~ N(0, I)``), which decouples ``s`` from the latent values a priori, with
``L = Q diag(sqrt(lambda))`` from one eigendecomposition of ``K``.

``method="nuts"`` (the default) runs :func:`probinfer.sample`'s NUTS with Stan's warm-up
(diagonal metric) on the joint ``(Z, log s)``: it moves ``s`` and the latents together, so
``s`` mixes where Gibbs moves cannot (breast cancer, 350 points, defaults, two priors and
two seeds: R-hat of ``log s`` <= 1.004 and bulk ESS 1,482-1,958, against 1.05-1.19 and
15-59 for the Gibbs sweeps; ``benchmarks/results/nngp.md``), and it reports its
diagnostics (R-hat, ESS, divergences) as ``pi.sample`` does.

``method="gibbs"`` runs vectorised Gibbs sweeps, cheaper per iteration but slow to mix
``s`` when the data are informative:

1. ``Z | s``: one elliptical slice step (:data:`probinfer.mcmc.elliptical_slice`) whose
   Gaussian factor is a diagonal approximation of the posterior in the eigenbasis (centred
   at the mode, precision ``1 + s lambda w`` with ``w`` the likelihood's mean curvature at
   the mode); the rest of the target is the exact ratio, so the move stays exact;
2. ``log s | Z``: one univariate slice-sampling step (stepping out and shrinkage; Neal,
   2003) on ``log p(s) + log s + log L(sqrt(s) L Z)``;
3. ``log s`` again, by surrogate-data slice sampling (Murray & Adams, 2010): with auxiliary
   data ``g = F + noise`` it holds ``F`` whitened under ``p(F | g, s)`` fixed, which moves
   ``s`` when the data pin down ``F`` (where step 2 cannot). ``L`` being an
   eigendecomposition makes every quantity of this step diagonal.

Chains of both methods start, dispersed, from the joint mode of ``(Z, log s)`` found by
Adam (a start at the prior would need a long burn-in). Predictions average the softmax
over draws of ``f* | F, s ~ N(K*^T K^{-1} F, s (k** + jitter - K*^T K^{-1} K*))``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Literal, NamedTuple

import arviz as az
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import optax
from jaxtyping import Array, ArrayLike, Float, Int, PRNGKeyArray

from probinfer import mcmc
from probinfer.checkpoint import fingerprint
from probinfer.diagnostics import SamplingWarning, mixing_messages
from probinfer.driver import CompileWatch, call_compiled, drive
from probinfer.mcmc._base import MetricParams
from probinfer.mcmc._rwm import init as init_slice
from probinfer.mcmc._slice import build_kernel as build_slice_kernel
from probinfer.nngp._checks import check_inputs
from probinfer.nngp._kernel import AbstractKernel
from probinfer.nngp._scale_priors import check_scale_prior

# Univariate slice sampling on log s: initial bracket width (nats of scale) and the
# stepping-out / shrinkage budgets.
SLICE_WIDTH = 1.0
SLICE_MAX_STEPS = 32
_SLICE_KERNEL = build_slice_kernel(SLICE_MAX_STEPS, 4 * SLICE_MAX_STEPS)
# Chains start at the joint mode of (Z, log s) found by Adam, plus N(0, d^2) on Z and
# U(-d, d) on log s with d = INIT_DISPERSION.
MODE_LEARNING_RATE = 0.05
# Surrogate-data noise variance S: about the inverse curvature of a logistic likelihood
# (p (1 - p) <= 1/4), as Murray & Adams (2010) suggest matching S to the likelihood.
SURROGATE_NOISE = 4.0
# NUTS's step-size target. Where the data pin F down, the whitened latents of those
# directions shrink as s grows (a funnel); at Stan's 0.8 a near-separable 150-point problem
# diverged in 1 of 3 seeds (53 of 2,000 transitions), at 0.9 in 1 of 5 (8 of 4,000); at
# 0.95 in none of 5, for ~10% more gradient evaluations.
NUTS_TARGET_ACCEPTANCE = 0.95
# Sweeps per compiled chunk of the driver.
SWEEPS_PER_CHUNK = 500
INIT_DISPERSION = 0.5


def _log_likelihood(latent: Array, labels: Array) -> Array:
    """Bernoulli-logit (one column) or softmax (several columns) log likelihood."""
    if latent.shape[-1] == 1:
        logits = latent[:, 0]
        return jnp.sum(labels * logits - jnp.logaddexp(0.0, logits))
    log_probs = jax.nn.log_softmax(latent, axis=-1)
    return jnp.sum(jnp.take_along_axis(log_probs, labels[:, None], axis=-1))


def class_probabilities(latent: Array) -> Array:
    """Class probabilities ``(..., num_classes)`` from latent values ``(..., C)``.

    One latent column is the logit of class 1 of two; several are softmax logits.
    """
    if latent.shape[-1] == 1:
        p1 = jax.nn.sigmoid(latent[..., 0])
        return jnp.stack([1 - p1, p1], axis=-1)
    return jax.nn.softmax(latent, axis=-1)


def _mean_curvature(latent: Array) -> Array:
    """Mean diagonal curvature ``p (1 - p)`` of the log likelihood at the latent values."""
    if latent.shape[-1] == 1:
        p = jax.nn.sigmoid(latent)
    else:
        p = jax.nn.softmax(latent, axis=-1)
    return jnp.mean(p * (1 - p))


def _slice_step(
    key: PRNGKeyArray, x0: Array, logdensity_fn: Callable[[Array], Array], width: float
) -> tuple[Array, Array]:
    """One univariate slice-sampling step with stepping out; returns ``(x, evaluations)``."""
    state = init_slice(x0, logdensity_fn)
    params = MetricParams(jnp.asarray(width, x0.dtype), jnp.ones(1, x0.dtype))
    state, info = _SLICE_KERNEL(key, state, logdensity_fn, params)
    return state.position, 1 + info.num_grad_evals


def check_labels(
    labels: ArrayLike,
    num_points: int,
    num_classes: int | None,
    *,
    name: str = "labels",
    rows_of: str = "x",
) -> tuple[np.ndarray, int]:
    """Check integer class labels, one per point; return them and the number of classes.

    Args:
        labels: the labels.
        num_points: how many there must be.
        num_classes: the number of classes (``None``: ``max(labels) + 1``).
        name: the argument's name, for the errors.
        rows_of: the inputs' argument, whose rows the labels follow (for the errors).

    Raises:
        ValueError: on a wrong dtype or shape, a label out of ``0..num_classes-1``, or
            fewer than two classes.
    """
    labels_np = np.asarray(labels)
    if labels_np.shape != (num_points,) or not np.issubdtype(labels_np.dtype, np.integer):
        raise ValueError(
            f"`{name}` must be integers of shape ({num_points},) (one per row of "
            f"`{rows_of}`), got dtype {labels_np.dtype} and shape {labels_np.shape}; pass "
            "class labels as integers (0, 1, ...)."
        )
    given = num_classes is not None
    num_classes = int(labels_np.max()) + 1 if num_classes is None else int(num_classes)
    if given and (labels_np.min() < 0 or labels_np.max() >= num_classes):
        raise ValueError(
            f"`{name}` must lie in 0..{num_classes - 1} (there are {num_classes} classes), "
            f"got values in {labels_np.min()}..{labels_np.max()}."
        )
    if labels_np.min() < 0 or labels_np.max() >= num_classes or num_classes < 2:
        raise ValueError(
            f"`{name}` must lie in 0..{num_classes - 1} with at least two classes, got "
            f"values in {labels_np.min()}..{labels_np.max()}."
        )
    return labels_np, num_classes


class ClassificationPosterior(eqx.Module):
    """Posterior draws of a scale-mixture classifier, and predictions from them.

    Attributes:
        kernel: the NNGP kernel.
        x: ``(n, d)`` training inputs.
        eigenvectors: ``(n, n)`` eigenvectors ``Q`` of ``K + jitter I``.
        eigenvalues: ``(n,)`` its eigenvalues ``lambda`` (``K + jitter I = Q diag(lambda) Q^T``).
        whitened_latents: ``(chains, draws, n, C)`` draws of ``Z``.
        log_scales: ``(chains, draws)`` draws of ``log s``.
        num_likelihood_evals: ``(chains, draws)`` likelihood evaluations per iteration
            (NUTS: gradient evaluations).
        num_classes: number of classes.
        jitter: the white-noise variance added to the kernel (the training covariance is
            ``K + jitter I``); predictions add it to the test variances too.
    """

    kernel: AbstractKernel
    x: Array
    eigenvectors: Array
    eigenvalues: Array
    whitened_latents: Array
    log_scales: Array
    num_likelihood_evals: Array
    num_classes: int = eqx.field(static=True)
    jitter: float = eqx.field(static=True, default=1e-6)

    def predict_proba(
        self,
        x_test: Float[ArrayLike, "m d"],
        *,
        key: PRNGKeyArray,
        num_latent_samples: int = 16,
    ) -> Float[Array, "m num_classes"]:
        """Posterior predictive class probabilities at ``x_test``.

        Args:
            x_test: test inputs, ``(m, d)``.
            key: PRNG key for the draws of ``f*``.
            num_latent_samples: draws of ``f*`` per posterior draw.

        Returns:
            ``(m, num_classes)`` probabilities (rows sum to one).
        """
        check_inputs(x_test, "x_test", num_features=self.x.shape[1])
        x_test = jnp.asarray(x_test, self.x.dtype)
        # Kernels evaluated outside the jitted algebra, as in training: quadrature layers
        # choose their nodes from the data only on concrete inputs.
        cross, prior_variance = self.kernel(self.x, x_test), self.kernel.diagonal(x_test)
        return _predict_proba(self, cross, prior_variance, key, num_latent_samples)

    @property
    def idata(self) -> az.InferenceData:
        """Every latent as ArviZ data (for R-hat, ESS and trace plots).

        ``posterior``: ``log_scale`` ``(chain, draw)``; ``f``, the latent functions at the
        training inputs, ``(chain, draw, point, latent)`` (one latent function for two
        classes, else one per class); ``z``, their whitened coordinates (``f = sqrt(s) Q
        diag(sqrt(lambda)) z``), ``(chain, draw, component, latent)``. ``sample_stats``:
        ``n_steps``, likelihood evaluations per iteration.
        """
        latent = jax.vmap(jax.vmap(_latent, in_axes=(None, None, 0, 0)), in_axes=(None, None, 0, 0))
        f = latent(self.eigenvectors, self.eigenvalues, self.whitened_latents, self.log_scales)
        return az.from_dict(
            posterior={
                "log_scale": np.asarray(self.log_scales),
                "f": np.asarray(f),
                "z": np.asarray(self.whitened_latents),
            },
            sample_stats={"n_steps": np.asarray(self.num_likelihood_evals)},
            dims={"f": ["point", "latent"], "z": ["component", "latent"]},
        )


@eqx.filter_jit
def _predict_proba(
    posterior: ClassificationPosterior,
    cross: Array,
    prior_variance: Array,
    key: PRNGKeyArray,
    num_latent: int,
) -> Array:
    """Softmax averaged over draws; ``cross`` is ``k(x, x*)``, ``prior_variance`` ``k(x*, x*)``."""
    # With the square root L = Q diag(sqrt(lambda)), L^{-1} K* = diag(lambda^-1/2) Q^T K*.
    whitened = (posterior.eigenvectors.T @ cross) / jnp.sqrt(posterior.eigenvalues)[:, None]
    prior_variance = prior_variance + posterior.jitter
    base_variance = jnp.maximum(prior_variance - jnp.sum(whitened**2, axis=0), 0.0)
    z = posterior.whitened_latents.reshape(-1, *posterior.whitened_latents.shape[2:])
    log_s = posterior.log_scales.reshape(-1)
    keys = jax.random.split(key, z.shape[0])

    def one_draw(total: Array, inputs: tuple[Array, Array, PRNGKeyArray]) -> tuple[Array, None]:
        z_draw, log_scale, key_draw = inputs
        scale = jnp.exp(log_scale)
        mean = jnp.sqrt(scale) * (whitened.T @ z_draw)
        noise = jax.random.normal(key_draw, (num_latent, *mean.shape), mean.dtype)
        latent = mean[None] + jnp.sqrt(scale * base_variance)[None, :, None] * noise
        return total + class_probabilities(latent).mean(axis=0), None

    initial = jnp.zeros((cross.shape[1], posterior.num_classes), cross.dtype)
    total, _ = jax.lax.scan(one_draw, initial, (z, log_s, keys))
    return total / z.shape[0]


def sample_classifier(
    key: PRNGKeyArray,
    kernel: AbstractKernel,
    x: Float[ArrayLike, "n d"],
    labels: Int[ArrayLike, " n"],
    *,
    scale_prior: dist.Distribution | None = None,
    num_classes: int | None = None,
    num_chains: int = 4,
    num_warmup: int = 1000,
    num_draws: int = 1000,
    thin: int = 1,
    num_mode_steps: int = 1000,
    jitter: float = 1e-6,
    method: Literal["nuts", "gibbs"] = "nuts",
    target_acceptance: float = NUTS_TARGET_ACCEPTANCE,
    progress: bool = True,
) -> ClassificationPosterior:
    """Sample the posterior of a scale-mixture NNGP classifier (NUTS or Gibbs sweeps).

    Args:
        key: PRNG key.
        kernel: the NNGP kernel.
        x: training inputs, ``(n, d)``.
        labels: integer classes ``0..num_classes-1``, ``(n,)``.
        scale_prior: NumPyro distribution of ``s``, or ``None`` to fix ``s = 1``.
        num_classes: number of classes (default ``max(labels) + 1``); two classes use one
            latent function with a logistic link.
        num_chains: chains run in parallel (vectorised).
        num_warmup: iterations discarded per chain (NUTS: Stan's warm-up adaptation).
        num_draws: iterations kept per chain (before thinning).
        thin: keep every ``thin``-th draw.
        num_mode_steps: Adam steps towards the joint mode of ``(Z, log s)``, where the
            chains start (dispersed); 0 starts at ``Z = 0``, ``s = 1``.
        jitter: a white-noise variance added to the kernel (training and test covariances).
        method: ``"nuts"`` (joint NUTS on ``(Z, log s)``, the default; warns as
            :func:`probinfer.sample` does when the chains have not mixed) or ``"gibbs"``
            (elliptical slice and slice sweeps; see the module docstring).
        target_acceptance: NUTS's step-size target (see ``NUTS_TARGET_ACCEPTANCE``).
        progress: show a progress bar (NUTS).

    Returns:
        The :class:`ClassificationPosterior`.

    Raises:
        ValueError: on mismatched shapes, non-integer or out-of-range labels, or a kernel
            matrix that is not positive definite after jitter.
    """
    check_scale_prior(scale_prior)
    if method not in ("nuts", "gibbs"):
        raise ValueError(f"`method` must be 'nuts' or 'gibbs', got {method!r}.")
    x_np = check_inputs(x, "x")
    assert x_np is not None  # None only for a tracer; the sampler needs concrete inputs
    labels_np, num_classes = check_labels(labels, x_np.shape[0], num_classes)
    for value, name in ((num_chains, "num_chains"), (num_draws, "num_draws"), (thin, "thin")):
        if int(value) < 1:
            raise ValueError(f"`{name}` must be >= 1, got {value}.")
    if int(thin) > int(num_draws):
        raise ValueError(
            f"`thin` ({thin}) must be <= `num_draws` ({num_draws}): `num_draws // thin` "
            "draws are kept."
        )
    x = jnp.asarray(x_np, jnp.result_type(float))
    cov = kernel(x) + jitter * jnp.eye(x.shape[0], dtype=x.dtype)
    eigenvalues, eigenvectors = jnp.linalg.eigh(cov)
    if not bool(jnp.all(jnp.isfinite(eigenvalues))) or float(eigenvalues.min()) <= 0:
        raise ValueError(
            f"the kernel matrix plus jitter ({jitter:.3g}) is not positive definite in "
            f"{x.dtype}; increase `jitter` (e.g. 1e-4), remove duplicate inputs, or enable "
            "float64 with `jax.config.update('jax_enable_x64', True)`."
        )
    num_latent = 1 if num_classes == 2 else num_classes
    labels_array = jnp.asarray(labels_np)
    watch = CompileWatch()
    mode, curvature = call_compiled(
        _find_mode,
        (StaticPrior(scale_prior), num_latent, int(num_mode_steps)),
        (eigenvectors, eigenvalues, labels_array),
        watch,
    )
    key_init, key_warmup, key_draws = jax.random.split(key, 3)
    positions = call_compiled(
        _initial_positions,
        (scale_prior is not None,),
        (jax.random.split(key_init, int(num_chains)), mode),
        watch,
    )
    if method == "nuts":
        z, log_s, evals = _sample_nuts(
            key_warmup, scale_prior, positions, (eigenvectors, eigenvalues, labels_array),
            num_warmup=int(num_warmup), num_draws=int(num_draws),
            target_acceptance=float(target_acceptance), progress=progress,
        )  # fmt: skip
        keep = slice(int(thin) - 1, None, int(thin))
        z, log_s, evals = z[:, keep], log_s[:, keep], evals[:, keep]
    else:
        sweep = _Sweep(StaticPrior(scale_prior))
        shared = (eigenvectors, eigenvalues, labels_array, mode, curvature)
        common = {"member_map": "vectorized", "chunk_size": SWEEPS_PER_CHUNK, "watch": watch}
        warmup = drive(
            sweep, positions, key_warmup, shared=(*shared, jnp.asarray(1)),
            num_steps=int(num_warmup), record_fn=lambda records: (), **common,
        )  # fmt: skip
        # Each kept draw is the last of `thin` sweeps (one step of the second drive).
        draws = drive(
            sweep, warmup.state, key_draws, shared=(*shared, jnp.asarray(int(thin))),
            num_steps=int(num_draws) // int(thin), **common,
        )  # fmt: skip
        z, log_s, evals = draws.records
    posterior = ClassificationPosterior(
        kernel, x, eigenvectors, eigenvalues, jnp.asarray(z), jnp.asarray(log_s),
        jnp.asarray(evals), num_classes, float(jitter),
    )  # fmt: skip
    if method == "gibbs":  # NUTS runs through `pi.sample`, which has warned already
        draws_by_site = posterior.idata["posterior"]
        for message in mixing_messages({name: draws_by_site[name] for name in ("log_scale", "f")}):
            warnings.warn(
                f"{message} With `method='gibbs'`, `s` mixes slowly when the data are "
                "informative; `method='nuts'` moves it with the latents.",
                SamplingWarning,
                stacklevel=2,
            )
    return posterior


def _joint_log_density(
    position: dict[str, Array],
    eigenvectors: Array,
    eigenvalues: Array,
    labels: Array,
    scale_prior: dist.Distribution | None,
) -> Array:
    """``log N(Z; 0, I) + log L(sqrt(s) L Z) [+ log p(s) + log s]`` of a position."""
    z = position["z"]
    log_scale = position.get("log_scale", jnp.zeros((), z.dtype))
    value = -0.5 * jnp.sum(z**2) + _log_likelihood(
        _latent(eigenvectors, eigenvalues, z, log_scale), labels
    )
    if scale_prior is None:
        return value
    return _log_scale_density(scale_prior, log_scale, value)


class StaticPrior:
    """A scale prior (or None) as part of a compiled program's static settings: equal to,
    and hashing like, any equal prior (same type and parameters; NumPyro's and probinfer's
    distributions), so that the programs are compiled once per prior, not once per call
    with a freshly built prior.

    Attributes:
        prior: the NumPyro distribution of ``s``, or None.
    """

    def __init__(self, prior: dist.Distribution | None) -> None:
        self.prior = prior
        # NumPyro's and probinfer's distributions flatten into all their parameters; a
        # user's subclass may keep some outside its pytree fields: compared by identity.
        module = type(prior).__module__.split(".")[0]
        by_value = prior is None or module in ("numpyro", "probinfer")
        self._key = fingerprint(scale_prior=prior) if by_value else ("object", id(prior))

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other._key == self._key  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self), self._key))


class _JointLogDensity(StaticPrior):
    """:func:`_joint_log_density` under one scale prior, equal to any other under an equal
    prior: a fresh ``functools.partial`` per call compiled the NUTS chunk again each time
    (measured: 2.2 s of each 4 s call on 8 points)."""

    def __call__(
        self, position: dict[str, Array], eigenvectors: Array, eigenvalues: Array, labels: Array
    ) -> Array:
        return _joint_log_density(position, eigenvectors, eigenvalues, labels, self.prior)


def _sample_nuts(
    key: PRNGKeyArray,
    scale_prior: dist.Distribution | None,
    positions: dict[str, Array],
    data: tuple[Array, Array, Array],
    *,
    num_warmup: int,
    num_draws: int,
    target_acceptance: float,
    progress: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """NUTS on the joint whitened posterior through :func:`probinfer.sample`.

    Returns:
        ``Z`` draws ``(chains, draws, n, C)``, ``log s`` draws ``(chains, draws)`` (zeros
        without a scale prior) and gradient evaluations per draw.
    """
    # Imported here: the convenience layer imports the model front end, which imports nngp.
    from probinfer.api import sample
    from probinfer.model import LogDensity

    if scale_prior is None:
        positions = {"z": positions["z"]}
    example = jax.tree.map(lambda leaf: leaf[0], positions)
    target = LogDensity(_JointLogDensity(scale_prior), example)
    seed = int(jax.random.randint(key, (), 0, np.iinfo(np.int32).max))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SamplingWarning)
        idata = sample(
            target, *data, method="nuts", chains=positions["z"].shape[0],
            warmup=num_warmup, draws=num_draws, seed=seed, progress=progress,
            init_positions=positions, metric="diag", target_acceptance=target_acceptance,
        )  # fmt: skip
    for record in caught:
        message = str(record.message)
        if issubclass(record.category, SamplingWarning):
            # In the words of `sample_classifier`'s arguments.
            message = (
                message.replace("`warmup`", "`num_warmup`")
                .replace("`draws`", "`num_draws`")
                .replace("`target_acceptance` (e.g. 0.95)", "`target_acceptance` (e.g. 0.99)")
            )
        warnings.warn(message, record.category, stacklevel=3)
    posterior = idata["posterior"]
    z = np.asarray(posterior["z"].values)
    if scale_prior is None:
        log_s = np.zeros(z.shape[:2], z.dtype)
    else:
        log_s = np.asarray(posterior["log_scale"].values)
    return z, log_s, np.asarray(idata["sample_stats"]["n_steps"].values)


def _latent(eigenvectors: Array, eigenvalues: Array, z: Array, log_scale: Array) -> Array:
    """``F = sqrt(s) L Z`` with ``L = Q diag(sqrt(lambda))``."""
    return jnp.exp(0.5 * log_scale) * (eigenvectors @ (jnp.sqrt(eigenvalues)[:, None] * z))


def _log_scale_density(
    scale_prior: dist.Distribution, log_scale: Array, log_likelihood: Array
) -> Array:
    """``log p(s) + log s + log L``, with NaN (an invalid scale) as outside the support."""
    value = scale_prior.log_prob(jnp.exp(log_scale)) + log_scale + log_likelihood
    return jnp.where(jnp.isnan(value), -jnp.inf, value)


def _find_mode(
    static_prior: StaticPrior,
    num_latent: int,
    num_mode_steps: int,
    eigenvectors: Array,
    eigenvalues: Array,
    labels: Array,
) -> tuple[tuple[Array, Array], Array]:
    """The joint mode of ``(Z, log s)`` by Adam, and the likelihood's mean curvature there."""
    scale_prior = static_prior.prior

    def negative_log_joint(params: tuple[Array, Array]) -> Array:
        z, log_scale = params
        log_likelihood = _log_likelihood(_latent(eigenvectors, eigenvalues, z, log_scale), labels)
        value = -0.5 * jnp.sum(z**2) + log_likelihood
        if scale_prior is not None:
            value = value + scale_prior.log_prob(jnp.exp(log_scale)) + log_scale
        return -value

    optimizer = optax.adam(MODE_LEARNING_RATE)

    def step(carry: tuple, _: None) -> tuple[tuple, None]:
        params, opt_state = carry
        grads = jax.grad(negative_log_joint)(params)
        if scale_prior is None:
            grads = (grads[0], jnp.zeros_like(grads[1]))
        updates, opt_state = optimizer.update(grads, opt_state)
        return (optax.apply_updates(params, updates), opt_state), None

    dtype = eigenvectors.dtype
    params = (jnp.zeros((eigenvectors.shape[0], num_latent), dtype), jnp.asarray(0.0, dtype))
    (mode, _), _ = jax.lax.scan(step, (params, optimizer.init(params)), None, num_mode_steps)
    return mode, _mean_curvature(_latent(eigenvectors, eigenvalues, *mode))


def _initial_positions(
    has_scale_prior: bool, keys: PRNGKeyArray, mode: tuple[Array, Array]
) -> dict[str, Array]:
    """Per chain: the joint mode, dispersed so that R-hat means something.

    The prior draw is far from the posterior and elliptical slice moves there slowly.
    """

    def one_chain(key: PRNGKeyArray) -> dict[str, Array]:
        key_z, key_s = jax.random.split(key)
        z = mode[0] + INIT_DISPERSION * jax.random.normal(key_z, mode[0].shape, mode[0].dtype)
        log_scale = mode[1]
        if has_scale_prior:
            log_scale = log_scale + jax.random.uniform(
                key_s, dtype=log_scale.dtype, minval=-INIT_DISPERSION, maxval=INIT_DISPERSION
            )
        return {"z": z, "log_scale": log_scale}

    return jax.vmap(one_chain)(keys)


class _Sweep(NamedTuple):
    """``num_sweeps`` Gibbs sweeps of one chain (a driver step; hashable).

    A sweep is ``compose(gibbs({z: elliptical slice, log_scale: slice}), surrogate)``
    (only the ``z`` block without a scale prior). The step records the position after its
    last sweep and that sweep's likelihood evaluations.
    """

    static_prior: StaticPrior

    def kernel(
        self, eigenvectors: Array, eigenvalues: Array, labels: Array, mode: tuple, curvature: Array
    ) -> mcmc.Kernel:
        """The sweep as a position kernel over ``{"z", "log_scale"}``."""
        scale_prior = self.static_prior.prior

        def loglik(z: Array, log_scale: Array) -> Array:
            return _log_likelihood(_latent(eigenvectors, eigenvalues, z, log_scale), labels)

        def z_given_scale(position: dict[str, Array]) -> mcmc.Kernel:
            # Elliptical slice on N(z; mode, diag(1 / precision)) times the exact rest of the
            # target, N(0, I) L / N(mode, .): the Gaussian factor has the posterior's scale
            # per eigendirection (a Laplace-style approximation with the likelihood's mean
            # curvature at the mode), so the ellipses are not limited by the prior's scale.
            log_scale = position["log_scale"]
            precision = 1.0 + jnp.exp(log_scale) * eigenvalues[:, None] * curvature
            std = jnp.broadcast_to(1.0 / jnp.sqrt(precision), mode[0].shape).reshape(-1)

            def loglik_z(z: Array) -> Array:
                approximation = -0.5 * jnp.sum(precision * (z - mode[0]) ** 2)
                return loglik(z, log_scale) - 0.5 * jnp.sum(z**2) - approximation

            return mcmc.elliptical_slice(loglik_z, mean=mode[0], cov_cholesky=std)

        if scale_prior is None:
            return mcmc.gibbs({"z": z_given_scale})

        def scale_given_z(position: dict[str, Array]) -> mcmc.Kernel:
            z = position["z"]
            return mcmc.slice_sampler(
                lambda t: _log_scale_density(scale_prior, t, loglik(z, t)),
                SLICE_WIDTH,
                jnp.ones(1, z.dtype),
                max_num_steps_out=SLICE_MAX_STEPS,
                max_num_shrinks=4 * SLICE_MAX_STEPS,
            )

        def surrogate_step(
            key: PRNGKeyArray, position: dict[str, Array]
        ) -> tuple[dict[str, Array], Array]:
            """Slice-sample log s with the surrogate-data whitening of Murray & Adams (2010).

            With ``g = F + e``, ``e ~ N(0, S)``, ``S = surrogate_noise I``, ``F | g, s`` is
            Gaussian with (in the eigenbasis) variances ``r = s lambda S / (s lambda + S)``
            and mean ``r / S * g``; holding ``eta = (F - mean) / sqrt(r)`` fixed, ``log s``
            has density ``p(s) s N(g; 0, s K + S) L(F(s, eta))``.
            """
            z, log_scale = position["z"], position["log_scale"]
            key_g, key_slice = jax.random.split(key)
            f_rotated = eigenvectors.T @ _latent(eigenvectors, eigenvalues, z, log_scale)
            g = f_rotated + jnp.sqrt(SURROGATE_NOISE) * jax.random.normal(key_g, z.shape, z.dtype)

            def moments(t: Array) -> tuple[Array, Array]:
                prior_var = jnp.exp(t) * eigenvalues[:, None]
                r = prior_var * SURROGATE_NOISE / (prior_var + SURROGATE_NOISE)
                return r, r / SURROGATE_NOISE * g

            r0, m0 = moments(log_scale)
            eta = (f_rotated - m0) / jnp.sqrt(r0)

            def rotated_latent(t: Array) -> Array:
                r, m = moments(t)
                return m + jnp.sqrt(r) * eta

            def density(t: Array) -> Array:
                marginal_var = jnp.exp(t) * eigenvalues[:, None] + SURROGATE_NOISE
                log_g = -0.5 * jnp.sum(jnp.log(marginal_var) + g**2 / marginal_var)
                f = eigenvectors @ rotated_latent(t)
                return _log_scale_density(scale_prior, t, log_g + _log_likelihood(f, labels))

            new_log_scale, evals = _slice_step(key_slice, log_scale, density, SLICE_WIDTH)
            new_z = rotated_latent(new_log_scale) / (
                jnp.exp(0.5 * new_log_scale) * jnp.sqrt(eigenvalues)[:, None]
            )
            return {"z": new_z, "log_scale": new_log_scale}, evals

        sweep = mcmc.gibbs({"z": z_given_scale, "log_scale": scale_given_z})
        return mcmc.compose(sweep, mcmc.Kernel(lambda position: position, surrogate_step))

    def __call__(
        self, key: PRNGKeyArray, position: dict[str, Array], step_index: Array, shared: tuple
    ) -> tuple[dict[str, Array], tuple[Array, Array, Array]]:
        *arrays, num_sweeps = shared
        sweep = self.kernel(*arrays)

        def one_sweep(j: Array, carry: tuple) -> tuple:
            position, _ = carry
            position, infos = sweep.step(jax.random.fold_in(key, j), position)
            if self.static_prior.prior is None:
                return position, infos["z"].num_likelihood_evals
            block_infos, surrogate_evals = infos
            # The slice block's initialisation evaluates the density once more.
            evals = block_infos["z"].num_likelihood_evals + 1
            return position, evals + block_infos["log_scale"].num_grad_evals + surrogate_evals

        position, evals = jax.lax.fori_loop(
            0, num_sweeps, one_sweep, (position, jnp.asarray(0, jnp.int32))
        )
        return position, (position["z"], position["log_scale"], evals)
