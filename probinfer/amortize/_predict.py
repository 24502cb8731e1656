"""Using a trained PFN: loading, checked prediction, and the predictive distribution."""

from __future__ import annotations

import warnings
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from probinfer.amortize._bar import BarDistribution
from probinfer.amortize._training import (
    MODEL_FILE,
    TrainingConfig,
    build_model,
    deserialise_model,
    read_saved_config,
)
from probinfer.amortize.pfn import PFN
from probinfer.amortize.priors import (
    INPUT_BOUND,
    AbstractDatasetPrior,
    BayesianLinearRegressionPrior,
    BNNPrior,
    GPHyperPrior,
    GPPrior,
    ScaleMixturePrior,
)
from probinfer.nngp import ScaleMixtureProcess, inverse_gamma, matern52, mlp, rbf

# Inputs beyond this multiple of the prior's input range trigger an extrapolation warning.
EXTRAPOLATION_FACTOR = 1.1


class PFNPredictive(eqx.Module):
    """The PFN's predictive distribution at each test point.

    Attributes:
        logits: ``(m, K)`` bucket logits.
        bar: the buckets.
    """

    logits: Array
    bar: BarDistribution

    @property
    def mean(self) -> Float[Array, " m"]:
        """Predictive means."""
        return self.bar.mean(self.logits)

    @property
    def variance(self) -> Float[Array, " m"]:
        """Predictive variances."""
        return self.bar.variance(self.logits)

    @property
    def stddev(self) -> Float[Array, " m"]:
        """Predictive standard deviations."""
        return jnp.sqrt(self.variance)

    def log_prob(self, y: Float[ArrayLike, " m"]) -> Float[Array, " m"]:
        """Log predictive density of ``y``."""
        return self.bar.log_prob(self.logits, y)

    def cdf(self, y: Float[ArrayLike, " m"]) -> Float[Array, " m"]:
        """Predictive CDF at ``y``."""
        return self.bar.cdf(self.logits, y)

    def quantile(self, q: ArrayLike) -> Float[Array, " m"]:
        """The ``q``-quantile per point."""
        return self.bar.quantile(self.logits, jnp.broadcast_to(q, self.logits.shape[:-1]))

    def sample(self, key: PRNGKeyArray, num_samples: int) -> Float[Array, "num_samples m"]:
        """Independent draws per point."""
        return self.bar.sample(key, self.logits, num_samples)


@eqx.filter_jit
def _logits(model: PFN, x_train: Array, y_train: Array, x_test: Array) -> Array:
    return model(x_train, y_train, x_test)


def _as_inputs(x: ArrayLike, name: str, num_features: int) -> np.ndarray:
    array = np.asarray(x, dtype=np.float32)
    if array.ndim == 1:
        array = array[:, None]  # one feature per point
    if array.ndim != 2:
        raise ValueError(f"`{name}` must have shape (num_points, num_features), got {array.shape}.")
    if array.shape[1] > num_features:
        raise ValueError(
            f"`{name}` has {array.shape[1]} features but the model was trained for at most "
            f"{num_features}; use a model trained on more features."
        )
    if not np.all(np.isfinite(array)):
        raise ValueError(f"`{name}` contains NaN or infinite values; remove those rows.")
    # Fewer features: pad with zeros, as the prior does for its inactive features.
    return np.pad(array, ((0, 0), (0, num_features - array.shape[1])))


def predict(
    model: PFN,
    x_train: Float[ArrayLike, "n d"],
    y_train: Float[ArrayLike, " n"],
    x_test: Float[ArrayLike, "m d"],
) -> PFNPredictive:
    """The PFN's posterior predictive at ``x_test`` given a train set, in one forward pass.

    Args:
        model: a trained :class:`PFN`.
        x_train: ``(n, d)`` train inputs, ``d <= model.num_features`` (padded with zeros).
        y_train: ``(n,)`` train targets.
        x_test: ``(m, d)`` test inputs.

    Returns:
        The :class:`PFNPredictive`.

    Raises:
        ValueError: on mismatched shapes, NaNs, more features or more train points than the
            model was trained for.

    Warns:
        UserWarning: when inputs lie outside the prior's input range (extrapolation).
    """
    x_train_np = _as_inputs(x_train, "x_train", model.num_features)
    x_test_np = _as_inputs(x_test, "x_test", model.num_features)
    y_np = np.asarray(y_train, dtype=np.float32)
    if y_np.shape != (x_train_np.shape[0],):
        raise ValueError(
            f"`y_train` must have shape ({x_train_np.shape[0]},) to match `x_train`, got "
            f"{y_np.shape}."
        )
    if not np.all(np.isfinite(y_np)):
        raise ValueError("`y_train` contains NaN or infinite values; remove those rows.")
    if x_train_np.shape[0] > model.max_train:
        raise ValueError(
            f"{x_train_np.shape[0]} train points given, but the model was trained with at most "
            f"{model.max_train}; subsample the train set or train a model with a larger "
            "`max_train`."
        )
    bound = EXTRAPOLATION_FACTOR * INPUT_BOUND
    if np.any(np.abs(x_train_np) > bound) or np.any(np.abs(x_test_np) > bound):
        warnings.warn(
            f"inputs outside the prior's range [-{INPUT_BOUND}, {INPUT_BOUND}]: the prediction "
            "is an extrapolation the network never saw in training; rescale the inputs.",
            UserWarning,
            stacklevel=2,
        )
    logits = _logits(model, jnp.asarray(x_train_np), jnp.asarray(y_np), jnp.asarray(x_test_np))
    return PFNPredictive(logits, model.bar)


def prior_from_spec(spec: dict) -> AbstractDatasetPrior:
    """Build a dataset prior from its JSON description.

    Args:
        spec: ``{"type": ..., ...}`` with type ``"gp"`` (``kernel`` rbf/matern52,
            ``lengthscale``, ``variance``, ``noise``), ``"gp_hyper"`` (``kernel``,
            ``log_lengthscale``, ``log_variance``, ``log_noise`` as ``[mean, std]``),
            ``"linear"`` (``weight_std``, ``noise_std``), ``"bnn"`` (``width``, ``depth``,
            ``weight_std``, ``noise_std``) or ``"student_t"`` (``depth``, ``a``, ``b``,
            ``noise``); all take ``num_features``.

    Returns:
        The prior.

    Raises:
        ValueError: on an unknown type or setting.
    """
    spec = dict(spec)
    kind = spec.pop("type", None)
    num_features = int(spec.pop("num_features", 1))
    try:
        if kind == "gp":
            make = {"rbf": rbf, "matern52": matern52}[spec.pop("kernel", "rbf")]
            kernel = make(spec.pop("lengthscale", 0.3), spec.pop("variance", 1.0))
            return GPPrior(kernel, spec.pop("noise", 0.01), num_features=num_features)
        if kind == "gp_hyper":
            return GPHyperPrior(spec.pop("kernel", "rbf"), num_features=num_features,
                                **{k: tuple(spec.pop(k)) for k in list(spec)})  # fmt: skip
        if kind == "linear":
            return BayesianLinearRegressionPrior(**spec, num_features=num_features)
        if kind == "bnn":
            return BNNPrior(**spec, num_features=num_features)
        if kind == "student_t":
            process = ScaleMixtureProcess(
                mlp(int(spec.pop("depth", 2))),
                inverse_gamma(spec.pop("a", 2.0), spec.pop("b", 2.0)),
                spec.pop("noise", 0.01),
            )
            if spec:
                raise TypeError(f"unexpected settings {sorted(spec)}")
            return ScaleMixturePrior(process, num_features=num_features)
    except (TypeError, KeyError) as error:
        raise ValueError(f"bad prior settings for type {kind!r}: {error}") from None
    raise ValueError(
        f"unknown prior type {kind!r}; use 'gp', 'gp_hyper', 'linear', 'bnn' or 'student_t'."
    )


def load(folder: str | Path) -> PFN:
    """Load a trained PFN saved by :func:`probinfer.amortize.train` (or the CLI).

    Works with or without ``jax_enable_x64`` (the weights keep the dtype they were saved in).

    Args:
        folder: the checkpoint folder (``config.json`` and ``model.eqx``).

    Returns:
        The model.

    Raises:
        FileNotFoundError: if the folder lacks the files.
    """
    folder = Path(folder)
    saved = read_saved_config(folder, "`probinfer pfn train`")
    config = TrainingConfig(**saved["training"])
    # A skeleton with the right structure; every leaf (borders included) is then loaded.
    borders = BarDistribution(np.arange(config.num_buckets + 1, dtype=float))
    skeleton = build_model(borders, int(saved["num_features"]), config, key=jax.random.key(0))
    return deserialise_model(folder / MODEL_FILE, skeleton)
