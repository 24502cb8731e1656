"""Priors over datasets: each draws ``(x, y)`` for one synthetic regression or
classification task.

A prior is an equinox module with ``sample(key, num_points) -> (x, y)`` where ``x`` is
``(num_points, num_features)`` and ``y`` is ``(num_points,)``; batch with ``vmap``. Inputs
are uniform on ``[-1, 1]`` in the first ``num_active`` features and zero in the rest, so
one network serves inputs of 1..``num_features`` dimensions: :func:`sample_batch` draws the
number of active features per batch, as Müller et al. (2022) vary it. Zero columns leave
distances (the stationary kernels) unchanged; kernels that normalise by the input
dimension (NNGP stacks: ``x . x' / d``) and the BNN prior's fan-in do count them.

- :class:`GPPrior`: a GP with a fixed kernel (``nngp.rbf``, ``nngp.matern52``, an NNGP
  stack, any :class:`~probinfer.nngp.AbstractKernel`) and noise.
- :class:`GPHyperPrior`: log-normal hyperpriors on the lengthscale, output scale and noise of
  an RBF or Matérn-5/2 GP, or of either with probability 1/2 (``"mixed"``).
- :class:`BayesianLinearRegressionPrior`: ``y = w . x + b + noise`` with Gaussian weights.
- :class:`BNNPrior`: a random tanh MLP plus noise.
- :class:`ScaleMixturePrior`: a draw of an NNGP scale-mixture process (for example a
  Student-t process).
- :class:`GPClassificationPrior`: labels from a latent scale-mixture process (GP
  classification; ``y`` holds the labels as floats).
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Literal

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int, PRNGKeyArray

from probinfer._validation import check_count
from probinfer.nngp import AbstractKernel, ScaleMixtureProcess, matern52, rbf
from probinfer.nngp._checks import check_positive
from probinfer.nngp._process import eigen_draws

INPUT_BOUND = 1.0


class AbstractDatasetPrior(eqx.Module):
    """A prior over datasets (regression targets, or class labels as floats).

    Attributes:
        num_features: input dimension of the draws (static).
    """

    num_features: eqx.AbstractVar[int]

    def sample_inputs(
        self, key: PRNGKeyArray, num_points: int, num_active: Int[Array, ""] | int
    ) -> Float[Array, "num_points num_features"]:
        """Uniform inputs on ``[-1, 1]`` in the first ``num_active`` features, zero after."""
        x = jax.random.uniform(
            key, (num_points, self.num_features), minval=-INPUT_BOUND, maxval=INPUT_BOUND
        )
        return jnp.where(jnp.arange(self.num_features) < num_active, x, 0.0)

    @abc.abstractmethod
    def sample_targets(
        self, key: PRNGKeyArray, x: Float[Array, "num_points num_features"]
    ) -> Float[Array, " num_points"]:
        """Targets ``y`` at the inputs ``x``."""

    def sample(
        self, key: PRNGKeyArray, num_points: int, num_active: Int[Array, ""] | int | None = None
    ) -> tuple[Float[Array, "num_points num_features"], Float[Array, " num_points"]]:
        """Draw one dataset.

        Args:
            key: PRNG key.
            num_points: number of points (static).
            num_active: active input features (default all).

        Returns:
            ``(x, y)``.
        """
        key_x, key_y = jax.random.split(key)
        num_active = self.num_features if num_active is None else num_active
        x = self.sample_inputs(key_x, num_points, num_active)
        return x, self.sample_targets(key_y, x)


def _float_pair(pair: tuple[float, float]) -> tuple[float, float]:
    """``(mean, std)`` as Python floats."""
    mean, std = pair
    return float(mean), float(std)


def _gp_draw(key: PRNGKeyArray, kernel_matrix: Array, noise: Array, x: Array) -> Array:
    """One draw of ``N(0, kernel_matrix + (noise + 1e-6) I)`` at inputs ``x`` (whose dtype
    the normals take)."""
    n = kernel_matrix.shape[0]
    cov = kernel_matrix + (noise + 1e-6) * jnp.eye(n, dtype=x.dtype)
    return jnp.linalg.cholesky(cov) @ jax.random.normal(key, (n,), x.dtype)


class GPPrior(AbstractDatasetPrior):
    """Datasets from a GP with a fixed kernel: ``y ~ N(0, K(x, x) + noise I)``.

    Attributes:
        kernel: the covariance function.
        noise: observation noise variance (> 0).
        num_features: input dimension (static).
    """

    kernel: AbstractKernel
    noise: Array
    num_features: int = eqx.field(static=True)

    def __init__(
        self, kernel: AbstractKernel, noise: float = 0.01, *, num_features: int = 1
    ) -> None:
        check_positive(noise, "noise")
        self.kernel = kernel
        self.noise = jnp.asarray(noise, jnp.result_type(float))
        self.num_features = check_count("num_features", num_features, 1)

    def sample_targets(self, key: PRNGKeyArray, x: Array) -> Array:
        """A GP draw plus noise."""
        return _gp_draw(key, self.kernel(x), self.noise, x)

    def exact_process(self) -> ScaleMixtureProcess:
        """The GP as a process, for the exact posterior predictive (relative noise 1:1)."""
        return ScaleMixtureProcess(self.kernel, None, self.noise)


class GPHyperPrior(AbstractDatasetPrior):
    """A GP whose hyperparameters are drawn per dataset from log-normal priors.

    ``log lengthscale ~ N(m_l, s_l^2)``, ``log variance ~ N(m_v, s_v^2)``,
    ``log noise ~ N(m_n, s_n^2)``; the kernel is RBF or Matérn-5/2, or for
    ``kernel_family="mixed"`` either of the two with probability 1/2 per dataset (a model
    trained on it serves both, and averages over them when the data do not tell).

    Attributes:
        kernel_family: ``"rbf"``, ``"matern52"`` or ``"mixed"`` (static).
        log_lengthscale: ``(mean, std)`` of the log lengthscale.
        log_variance: ``(mean, std)`` of the log output variance.
        log_noise: ``(mean, std)`` of the log noise variance.
        num_features: input dimension (static).
    """

    kernel_family: Literal["rbf", "matern52", "mixed"] = eqx.field(static=True)
    log_lengthscale: tuple[float, float] = eqx.field(static=True)
    log_variance: tuple[float, float] = eqx.field(static=True)
    log_noise: tuple[float, float] = eqx.field(static=True)
    num_features: int = eqx.field(static=True)

    def __init__(
        self,
        kernel_family: Literal["rbf", "matern52", "mixed"] = "rbf",
        *,
        log_lengthscale: tuple[float, float] = (-1.0, 0.5),
        log_variance: tuple[float, float] = (0.0, 0.3),
        log_noise: tuple[float, float] = (-4.0, 1.0),
        num_features: int = 1,
    ) -> None:
        if kernel_family not in ("rbf", "matern52", "mixed"):
            raise ValueError(
                f"`kernel_family` must be 'rbf', 'matern52' or 'mixed', got {kernel_family!r}."
            )
        for name, (_, std) in (
            ("log_lengthscale", log_lengthscale),
            ("log_variance", log_variance),
            ("log_noise", log_noise),
        ):
            check_positive(std, f"{name} std")
        self.kernel_family = kernel_family
        self.log_lengthscale = _float_pair(log_lengthscale)
        self.log_variance = _float_pair(log_variance)
        self.log_noise = _float_pair(log_noise)
        self.num_features = check_count("num_features", num_features, 1)

    def sample_hyperparameters(self, key: PRNGKeyArray) -> dict[str, Array]:
        """One draw of ``lengthscale``, ``variance`` and ``noise``."""
        z = jax.random.normal(key, (3,))
        spec = (self.log_lengthscale, self.log_variance, self.log_noise)
        values = [jnp.exp(mean + std * zi) for (mean, std), zi in zip(spec, z, strict=True)]
        return dict(zip(("lengthscale", "variance", "noise"), values, strict=True))

    def kernel(
        self,
        lengthscale: Array,
        variance: Array,
        family: Literal["rbf", "matern52"] | None = None,
    ) -> AbstractKernel:
        """The kernel at given hyperparameters (of ``family``, which a ``"mixed"`` prior
        needs: it has two)."""
        chosen = family or self.kernel_family
        if chosen not in FAMILIES or (family and self.kernel_family not in ("mixed", family)):
            raise ValueError(
                f"a {self.kernel_family!r} prior needs `family` 'rbf' or 'matern52' (a "
                f"one-family prior: its own or None), got {family!r}."
            )
        make = KERNEL_FAMILIES[chosen]
        return make(lengthscale, variance)

    def sample_targets(self, key: PRNGKeyArray, x: Array) -> Array:
        """Hyperparameters from their priors (and for ``"mixed"`` a kernel family, each
        with probability 1/2), then a GP draw plus noise."""
        key_h, key_y = jax.random.split(key)
        h = self.sample_hyperparameters(key_h)
        if self.kernel_family == "mixed":
            # A key of its own, folded in: the one-family priors keep their draws.
            key_family = jax.random.fold_in(key, 0x6B65726E)
            matrices = [self.kernel(h["lengthscale"], h["variance"], f)(x) for f in FAMILIES]
            kernel_matrix = jnp.where(jax.random.bernoulli(key_family), *matrices)
        else:
            kernel_matrix = self.kernel(h["lengthscale"], h["variance"])(x)
        return _gp_draw(key_y, kernel_matrix, h["noise"], x)


FAMILIES: tuple[Literal["rbf"], Literal["matern52"]] = ("rbf", "matern52")
"""The kernel families of :class:`GPHyperPrior` (``"mixed"`` draws one of them)."""

KERNEL_FAMILIES: dict[str, Callable[..., AbstractKernel]] = {"rbf": rbf, "matern52": matern52}
"""Each family's kernel constructor, ``(lengthscale, variance) -> kernel``."""


class BayesianLinearRegressionPrior(AbstractDatasetPrior):
    """``y = w . x + b + eps`` with ``w, b ~ N(0, weight_std^2)``, ``eps ~ N(0, noise_std^2)``.

    Attributes:
        weight_std: prior std of the weights and bias (> 0).
        noise_std: noise std (> 0).
        num_features: input dimension (static).
    """

    weight_std: float = eqx.field(static=True)
    noise_std: float = eqx.field(static=True)
    num_features: int = eqx.field(static=True)

    def __init__(
        self, weight_std: float = 1.0, noise_std: float = 0.1, *, num_features: int = 1
    ) -> None:
        check_positive(weight_std, "weight_std")
        check_positive(noise_std, "noise_std")
        self.weight_std, self.noise_std = float(weight_std), float(noise_std)
        self.num_features = check_count("num_features", num_features, 1)

    def sample_targets(self, key: PRNGKeyArray, x: Array) -> Array:
        """A random linear function plus noise."""
        key_w, key_b, key_e = jax.random.split(key, 3)
        w = self.weight_std * jax.random.normal(key_w, (self.num_features,))
        b = self.weight_std * jax.random.normal(key_b)
        return x @ w + b + self.noise_std * jax.random.normal(key_e, (x.shape[0],))


class BNNPrior(AbstractDatasetPrior):
    """A random tanh MLP (weights ``N(0, weight_std^2 / fan_in)``) plus Gaussian noise.

    Attributes:
        width: hidden width (static).
        depth: hidden layers (static).
        weight_std: weight scale (> 0).
        noise_std: noise std (> 0).
        num_features: input dimension (static).
    """

    width: int = eqx.field(static=True)
    depth: int = eqx.field(static=True)
    weight_std: float = eqx.field(static=True)
    noise_std: float = eqx.field(static=True)
    num_features: int = eqx.field(static=True)

    def __init__(
        self,
        width: int = 32,
        depth: int = 2,
        *,
        weight_std: float = 1.5,
        noise_std: float = 0.1,
        num_features: int = 1,
    ) -> None:
        if int(width) < 1 or int(depth) < 1:
            raise ValueError(f"`width` and `depth` must be >= 1, got {width}, {depth}.")
        check_positive(weight_std, "weight_std")
        check_positive(noise_std, "noise_std")
        self.width, self.depth = int(width), int(depth)
        self.weight_std, self.noise_std = float(weight_std), float(noise_std)
        self.num_features = check_count("num_features", num_features, 1)

    def sample_targets(self, key: PRNGKeyArray, x: Array) -> Array:
        """The network's outputs at ``x`` plus noise."""
        keys = jax.random.split(key, self.depth + 2)
        h = x
        for layer in range(self.depth + 1):
            fan_in = h.shape[-1]
            fan_out = 1 if layer == self.depth else self.width
            key_w, key_b = jax.random.split(keys[layer])
            w = self.weight_std / jnp.sqrt(fan_in) * jax.random.normal(key_w, (fan_in, fan_out))
            b = 0.1 * jax.random.normal(key_b, (fan_out,))
            h = h @ w + b[None, :]
            if layer < self.depth:
                h = jnp.tanh(h)
        noise = self.noise_std * jax.random.normal(keys[-1], (x.shape[0],))
        return h[:, 0] + noise


class ScaleMixturePrior(AbstractDatasetPrior):
    """Datasets from an NNGP scale-mixture process (``s`` drawn per dataset).

    Attributes:
        process: the :class:`~probinfer.nngp.ScaleMixtureProcess`.
        num_features: input dimension (static).
    """

    process: ScaleMixtureProcess
    num_features: int = eqx.field(static=True)

    def __init__(self, process: ScaleMixtureProcess, *, num_features: int = 1) -> None:
        if not isinstance(process, ScaleMixtureProcess):
            raise TypeError(f"`process` must be a ScaleMixtureProcess, got {type(process)}.")
        self.process = process
        self.num_features = check_count("num_features", num_features, 1)

    def sample_targets(self, key: PRNGKeyArray, x: Array) -> Array:
        """One draw of the process (with noise) at ``x``."""
        return self.process.sample(key, x, 1)[0]

    def exact_process(self) -> ScaleMixtureProcess:
        """The process, for the exact posterior predictive (closed-form Student-t for an
        inverse-gamma scale prior)."""
        return self.process


class GPClassificationPrior(AbstractDatasetPrior):
    """Labelled datasets from a latent scale-mixture process (GP classification).

    ``s ~ scale_prior``, ``f_c | s ~ GP(0, s (K + jitter I))`` for ``C`` latent functions
    (``C = 1`` with a logistic link for two classes, ``C = num_classes`` with a softmax
    otherwise), ``label_i ~ Cat(softmax(f(x_i)))``: the model of
    :func:`probinfer.nngp.sample_classifier`, whose MCMC posterior predictive a
    :class:`~probinfer.amortize.PFNClassifier` trained on this prior approximates. The
    process's ``noise`` is not used; its ``jitter`` is.

    Attributes:
        process: the latent :class:`~probinfer.nngp.ScaleMixtureProcess` (kernel, scale
            prior, jitter).
        num_classes: number of classes (static, >= 2).
        num_features: input dimension (static).
    """

    process: ScaleMixtureProcess
    num_classes: int = eqx.field(static=True)
    num_features: int = eqx.field(static=True)

    def __init__(
        self, process: ScaleMixtureProcess, *, num_classes: int = 2, num_features: int = 1
    ) -> None:
        if not isinstance(process, ScaleMixtureProcess):
            raise TypeError(f"`process` must be a ScaleMixtureProcess, got {type(process)}.")
        self.process = process
        self.num_classes = check_count("num_classes", num_classes, 2)
        self.num_features = check_count("num_features", num_features, 1)

    def sample_targets(self, key: PRNGKeyArray, x: Array) -> Array:
        """A scale, the latent functions, then one label per point (as floats)."""
        key_scale, key_latent, key_label = jax.random.split(key, 3)
        num_latent = 1 if self.num_classes == 2 else self.num_classes
        process = self.process
        # By eigendecomposition, not Cholesky: without noise, `K + jitter I` of a smooth
        # kernel at a few dozen points is singular in float32 (the ReLU NNGP kernel at 21
        # points in 1-d: a Cholesky draw gave all 20 train labels 1 in 9.3% of datasets,
        # NaN latents, against 0.2% with this draw, as in float64).
        cov = process.kernel(x) + process.jitter * jnp.eye(x.shape[0], dtype=x.dtype)
        normal = jax.random.normal(key_latent, (x.shape[0], num_latent), x.dtype)
        latent = eigen_draws(cov, normal)
        if process.scale_prior is not None:
            # One scale for all latent functions, as in `nngp.sample_classifier`.
            latent = jnp.sqrt(process.scale_prior.sample(key_scale)) * latent
        # One latent column is the logit of class 1 against class 0's fixed 0.
        logits = (
            jnp.concatenate([jnp.zeros_like(latent), latent], axis=1) if num_latent == 1 else latent
        )
        labels = jax.random.categorical(key_label, logits)
        return labels.astype(x.dtype)


def sample_batch(
    key: PRNGKeyArray,
    prior: AbstractDatasetPrior,
    batch_size: int,
    num_points: int,
    *,
    min_features: int = 1,
) -> tuple[Float[Array, "batch num_points num_features"], Float[Array, "batch num_points"]]:
    """A batch of datasets sharing one number of active features (drawn per batch).

    Args:
        key: PRNG key.
        prior: the dataset prior.
        batch_size: datasets per batch (static).
        num_points: points per dataset (static).
        min_features: smallest number of active features.

    Returns:
        ``x`` of shape ``(batch_size, num_points, num_features)`` and ``y``.
    """
    key_d, key_data = jax.random.split(key)
    num_active = jax.random.randint(key_d, (), min_features, prior.num_features + 1)
    keys = jax.random.split(key_data, batch_size)
    return jax.vmap(lambda k: prior.sample(k, num_points, num_active))(keys)
