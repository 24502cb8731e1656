"""Using a trained PFN: loading, checked prediction, and the predictive distribution."""

from __future__ import annotations

import functools
import warnings
import weakref
from collections.abc import Hashable
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

import equinox as eqx
import jax
import numpy as np
from jax.core import Tracer
from jaxtyping import Array, ArrayLike, Float, Int, PRNGKeyArray

from probinfer._validation import check_magnitude, real_array
from probinfer.amortize._bar import BarDistribution
from probinfer.amortize._classify import PFNClassPredictive, as_labels
from probinfer.amortize._plotting import one_feature_inputs
from probinfer.amortize._predictive_base import AbstractDrawingPredictive
from probinfer.amortize._training import (
    MODEL_FILE,
    TrainingConfig,
    build_model,
    deserialise_model,
    read_saved_config,
    tails_from_config,
)
from probinfer.amortize.classifier import PFNClassifier
from probinfer.amortize.pfn import PFN, AbstractPFN, Standardisation, standardisation
from probinfer.amortize.priors import (
    INPUT_BOUND,
    KERNEL_FAMILIES,
    AbstractDatasetPrior,
    BayesianLinearRegressionPrior,
    BNNPrior,
    GPClassificationPrior,
    GPHyperPrior,
    GPPrior,
    ScaleMixturePrior,
)
from probinfer.nngp import ScaleMixtureProcess, inverse_gamma, mlp

if TYPE_CHECKING:
    from matplotlib.axes import Axes

# Inputs beyond this multiple of the prior's input range trigger an extrapolation warning.
EXTRAPOLATION_FACTOR = 1.1
# A scale-free model warns for test inputs farther than this many half-ranges of the train
# inputs from their centre (half a range beyond the train data). Prior datasets themselves
# put test inputs up to about 1.5 (10 train points in 2-d), so a lower bound would warn
# on data like those the model was trained on.
EXTRAPOLATION_HALF_RANGES = 2.0


class PFNPredictive(AbstractDrawingPredictive):
    """The PFN's predictive distribution at each test point, in the data's units.

    A scale-free model predicts standardised targets; ``y = shift + scale * z`` maps its bar
    distribution back exactly (densities gain ``-log scale``; means, quantiles and draws
    map through the affine map). The bar distribution's work is compiled (one program per
    shape, in the model's dtype); the map back runs in float64 on the host, so that data
    far from zero keep their digits (float32 would round an offset of 1e8 to multiples of
    8 and lose the density of every point within them). Values in the data's units (means,
    variances, quantiles, draws), densities and CDFs are float64 NumPy arrays. ``shift``
    and ``scale`` are Python floats, converted when the predictive is made: a
    ``jax.tree.map`` or ``device_put`` over a predictive would turn them into arrays in the
    default dtype and bring the rounding back.

    Attributes:
        logits: ``(m, K)`` bucket logits.
        bar: the buckets.
        shift: the targets' shift (0 for a model that is not scale-free).
        scale: the targets' scale (1 for a model that is not scale-free).
    """

    logits: Array
    bar: BarDistribution
    shift: float = eqx.field(default=0.0, converter=float)
    scale: float = eqx.field(default=1.0, converter=float)

    def __check_init__(self) -> None:
        if not (np.isfinite(self.shift) and np.isfinite(self.scale) and self.scale > 0):
            raise ValueError(
                f"a predictive's `shift` must be finite and its `scale` positive, got "
                f"{self.shift} and {self.scale}."
            )

    def _to_data(self, standardised: Array) -> np.ndarray:
        return self.shift + self.scale * np.asarray(standardised, np.float64)

    def _to_standard(self, y: ArrayLike) -> np.ndarray:
        # In float64 first: `y - shift` is where a large offset's digits would be lost.
        standardised = (real_array("y", y).astype(np.float64) - self.shift) / self.scale
        shape, dtype = self.logits.shape[:-1], self.logits.dtype
        # A NumPy array in the logits' dtype: the compiled call transfers it (`jnp.asarray`
        # would dispatch one more operation).
        return np.broadcast_to(standardised, shape).astype(dtype)

    @property
    def mean(self) -> np.ndarray:
        """``(m,)`` predictive means (float64)."""
        return self._to_data(_bar_program("mean", self.bar, self.logits))

    @property
    def variance(self) -> np.ndarray:
        """``(m,)`` predictive variances (float64)."""
        return self.scale**2 * np.asarray(
            _bar_program("variance", self.bar, self.logits), np.float64
        )

    @property
    def stddev(self) -> np.ndarray:
        """``(m,)`` predictive standard deviations (float64)."""
        return np.sqrt(self.variance)

    def log_prob(self, y: Float[ArrayLike, " m"]) -> np.ndarray:
        """``(m,)`` log predictive density of ``y`` (one value per test point, or one for
        all; float64, with the map's ``-log scale``)."""
        standard = np.asarray(_bar_program("log_prob", self.bar, self.logits, self._to_standard(y)))
        return standard.astype(np.float64) - np.log(self.scale)

    def cdf(self, y: Float[ArrayLike, " m"]) -> np.ndarray:
        """``(m,)`` predictive CDF at ``y`` (float64)."""
        return np.asarray(
            _bar_program("cdf", self.bar, self.logits, self._to_standard(y)), np.float64
        )

    def quantile(self, q: ArrayLike) -> np.ndarray:
        """``(m,)`` the ``q``-quantile per point (``q`` a number or one per point; float64)."""
        # An array, so that every level shares one compiled program.
        levels = np.broadcast_to(real_array("q", q), self.logits.shape[:-1])
        levels = levels.astype(self.logits.dtype)
        return self._to_data(_bar_program("quantile", self.bar, self.logits, levels))

    def sample(self, key: PRNGKeyArray, num_samples: int) -> np.ndarray:
        """``(num_samples, m)`` independent draws per point (float64)."""
        return self._to_data(
            _bar_program("sample", self.bar, key, self.logits, static=(num_samples,))
        )

    def plot(
        self,
        x_test: Float[ArrayLike, " m"],
        x_train: Float[ArrayLike, " n"] | None = None,
        y_train: Float[ArrayLike, " n"] | None = None,
        *,
        ax: Axes | None = None,
    ) -> Axes:
        """The predictive mean with 50% and 90% bands against a 1-d input, and the train
        points (needs matplotlib).

        Args:
            x_test: ``(m,)`` or ``(m, 1)`` inputs the predictive was made at.
            x_train: train inputs to mark (optional).
            y_train: train targets to mark (optional).
            ax: axes to draw on (default: a new figure's).

        Returns:
            The axes.
        """
        x, ax = one_feature_inputs(x_test, self.logits.shape[0], ax)
        order = np.argsort(x)
        quantiles = {q: np.asarray(self.quantile(q))[order] for q in (0.05, 0.25, 0.75, 0.95)}
        ax.fill_between(x[order], quantiles[0.05], quantiles[0.95], alpha=0.2, color="C0",
                        label="90%")  # fmt: skip
        ax.fill_between(x[order], quantiles[0.25], quantiles[0.75], alpha=0.35, color="C0",
                        label="50%")  # fmt: skip
        ax.plot(x[order], np.asarray(self.mean)[order], color="C0", label="predictive mean")
        if x_train is not None and y_train is not None:
            ax.scatter(np.ravel(x_train), np.ravel(y_train), color="k", s=14, zorder=3,
                       label="train points")  # fmt: skip
        ax.set_xlabel("x")
        ax.set_ylabel("y")
        ax.legend(loc="best", fontsize="small")
        return ax


def _bar_program(
    method: str, bar: BarDistribution, *args: ArrayLike, static: tuple[Any, ...] = ()
) -> Array:
    """``bar.<method>(*args, *static)`` as a compiled program: the predictive's bar
    distribution work, in standardised units (the map back is on the host), so that a new
    dataset's shift and scale compile nothing. One program per method, bar structure (its
    fitted tails, static floats, are part of it: one per model), ``static`` values and
    shapes and dtypes of ``args`` (arrays or a PRNG key); the borders are traced."""
    leaves, treedef = jax.tree.flatten(bar)
    return _bar_method(method, treedef, static, leaves, *args)


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _bar_method(
    method: str,
    treedef: Hashable,
    static: tuple[Any, ...],
    leaves: list[Array],
    *args: ArrayLike,
) -> Array:
    # `jax.jit` on the flattened bar rather than equinox's `filter_jit` on a bound method,
    # which partitions its arguments in Python on every call: with NumPy arguments instead
    # of `jnp.asarray` ones, `predict` + `log_prob` went from 1.25 to 0.98 ms (gp_hyper, 5
    # train points).
    return getattr(jax.tree.unflatten(treedef, leaves), method)(*args, *static)


# Each model's arrays and the hashable rest of it, split once per model object and kept
# while it lives: equinox's `filter_jit` splits its arguments on every call, about 0.6 ms
# for a PFN, a third of a prediction.
_SPLIT_MODELS: dict[int, tuple[weakref.ref, list[Array], Hashable]] = {}


def _split(model: AbstractPFN) -> tuple[list[Array], Hashable]:
    """``model``'s array leaves, and its structure with the other leaves (hashable)."""
    key = id(model)
    entry = _SPLIT_MODELS.get(key)
    if entry is None or entry[0]() is not model:
        # Without the fitted tails (static floats the network never reads): models that
        # differ only in them share one program.
        untailed = model
        if isinstance(model, PFN):
            untailed = eqx.tree_at(lambda m: m.bar, model, model.bar.with_tails(None))
        leaves, treedef = jax.tree.flatten(untailed)
        is_array = tuple(eqx.is_array(leaf) for leaf in leaves)
        others = tuple(leaf for leaf, array in zip(leaves, is_array, strict=True) if not array)
        arrays = [leaf for leaf, array in zip(leaves, is_array, strict=True) if array]
        if any(isinstance(leaf, Tracer) for leaf in arrays):
            return arrays, (treedef, is_array, others)  # traced: nothing to keep

        def forget(ref: weakref.ref, key: int = key) -> None:
            if key in _SPLIT_MODELS and _SPLIT_MODELS[key][0] is ref:
                del _SPLIT_MODELS[key]

        try:
            entry = (weakref.ref(model, forget), arrays, (treedef, is_array, others))
        except TypeError:  # not weakly referenceable: split it every call
            return arrays, (treedef, is_array, others)
        _SPLIT_MODELS[key] = entry
    return entry[1], entry[2]


def _rebuild(structure: Hashable, arrays: list[Array]) -> Any:
    """The model :func:`_split` took apart."""
    treedef, is_array, others = structure  # pyright: ignore[reportGeneralTypeIssues]
    array_leaves, other_leaves = iter(arrays), iter(others)
    leaves = [next(array_leaves) if array else next(other_leaves) for array in is_array]
    return jax.tree.unflatten(treedef, leaves)


@functools.partial(jax.jit, static_argnums=0)
def _forward(
    structure: Hashable, arrays: list[Array], x_train: Array, y_train: Array, x_test: Array
) -> tuple[Array, Array, Array]:
    """The logits of the model :func:`_split` gave, and the targets' shift and scale of the
    network's own map. A scale-free network re-standardises data standardised already (an
    identity up to rounding): its own map composes with the host's."""
    model: PFN = _rebuild(structure, arrays)
    scaling = model.standardisation(x_train, y_train, x_train.shape[0])
    return model(x_train, y_train, x_test), scaling.y_shift, scaling.y_scale


@functools.partial(jax.jit, static_argnums=0)
def _class_logits(
    structure: Hashable, arrays: list[Array], x_train: Array, labels: Array, x_test: Array
) -> Array:
    """The class logits at ``x_test`` of the classifier :func:`_split` gave."""
    model: PFNClassifier = _rebuild(structure, arrays)
    return model(x_train, labels, x_test)


def _as_inputs(x: ArrayLike, name: str, num_features: int) -> np.ndarray:
    array = real_array(name, x).astype(np.float64)
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
    return array


def _warn_on_extrapolation(
    model: PFN | PFNClassifier, x_train: np.ndarray, x_test: np.ndarray
) -> None:
    """Warn when inputs lie beyond what the network saw in training (with the numbers);
    a scale-free model's inputs arrive mapped already."""
    bound = EXTRAPOLATION_FACTOR * INPUT_BOUND
    if model.scale_free:
        # After the map, the train inputs span [-1, 1]: far beyond that range the
        # prediction rests on the prior alone.
        reach = np.abs(x_test).max(axis=0, initial=0.0)
        if np.any(reach > EXTRAPOLATION_HALF_RANGES):
            feature = int(np.argmax(reach))
            warnings.warn(
                f"`x_test` lies up to {reach[feature]:.3g} half-ranges from the centre of the "
                f"train inputs in feature {feature} (the train inputs lie within 1): the "
                "prediction there is an extrapolation far from the train data.",
                UserWarning,
                stacklevel=3,
            )
        return
    largest = max(np.abs(x_train).max(initial=0.0), np.abs(x_test).max(initial=0.0))
    if largest > bound:
        warnings.warn(
            f"inputs reach {largest:.3g}, outside the prior's range [-{INPUT_BOUND}, "
            f"{INPUT_BOUND}]: the prediction is an extrapolation the network never saw in "
            "training; rescale the inputs onto that range.",
            UserWarning,
            stacklevel=3,
        )


# A model that is not scale-free assumes targets on its prior's scale: warn when the train
# targets' spread is off that scale by more than this factor either way.
TARGET_SCALE_FACTOR = 10.0


def _warn_on_target_scale(model: PFN, y_train: np.ndarray) -> None:
    """Warn when the train targets are far off the prior's scale (a model that is not
    scale-free predicts in its prior's units)."""
    if model.scale_free or y_train.size < 3:
        return
    borders = np.asarray(model.bar.borders, np.float64)
    # Equal prior mass per bucket: the prior's marginal spread from the bucket centres.
    centres = 0.5 * (borders[1:] + borders[:-1])
    prior_spread = float(np.sqrt(np.mean((centres - centres.mean()) ** 2)))
    spread = float(np.sqrt(np.mean(y_train.astype(np.float64) ** 2)))
    if not prior_spread / TARGET_SCALE_FACTOR <= spread <= prior_spread * TARGET_SCALE_FACTOR:
        warnings.warn(
            f"the train targets' root mean square is {spread:.3g}, but this model's prior "
            f"puts targets at about {prior_spread:.3g}: it assumes the prior's units, so its "
            "prediction is likely wrong; rescale `y_train` (and map the predictive back) or "
            "use a scale-free model (`pfn list`).",
            UserWarning,
            stacklevel=3,
        )


@overload
def predict(
    model: PFN, x_train: Float[ArrayLike, "n d"], y_train: Float[ArrayLike, " n"],
    x_test: Float[ArrayLike, "m d"],
) -> PFNPredictive: ...  # fmt: skip


@overload
def predict(
    model: PFNClassifier, x_train: Float[ArrayLike, "n d"], y_train: Int[ArrayLike, " n"],
    x_test: Float[ArrayLike, "m d"],
) -> PFNClassPredictive: ...  # fmt: skip


def predict(
    model: PFN | PFNClassifier,
    x_train: Float[ArrayLike, "n d"],
    y_train: Float[ArrayLike, " n"] | Int[ArrayLike, " n"],
    x_test: Float[ArrayLike, "m d"],
) -> PFNPredictive | PFNClassPredictive:
    """The PFN's posterior predictive at ``x_test`` given a train set, in one forward pass.

    A :class:`PFNClassifier` takes class labels as ``y_train`` (integers, or floats holding
    whole numbers, as its prior draws them) and gives a :class:`PFNClassPredictive` (class
    probabilities); it assumes inputs on ``[-1, 1]`` and warns when they are far off.

    A scale-free model (``model.scale_free``) maps each input feature's train range onto
    ``[-1, 1]`` and standardises the targets by their train mean and standard deviation,
    predicts, and maps the predictive back: the data may be in any units. A model that is
    not scale-free assumes its prior's units (inputs on ``[-1, 1]``, targets on the prior's
    scale) and warns when the data are far off them.

    Args:
        model: a trained :class:`PFN` or :class:`PFNClassifier`.
        x_train: ``(n, d)`` train inputs, ``d <= model.num_features`` (padded with zeros),
            ``model.min_train <= n <= model.max_train`` (and ``n >= 5`` for a scale-free
            model: :attr:`PFN.fewest_train_points`).
        y_train: ``(n,)`` train targets (a classifier's: labels ``0..num_classes-1``).
        x_test: ``(m, d)`` test inputs with the same ``d``.

    Returns:
        The :class:`PFNPredictive` (a classifier's: the :class:`PFNClassPredictive`).

    Raises:
        ValueError: on mismatched shapes, NaNs, more features or fewer or more train points
            than the model was trained for (or than a scale-free model needs), or (scale-free
            models) all-equal targets or a feature constant over the train inputs that
            varies in the test inputs, or (classifiers) labels that are not whole numbers
            in ``0..num_classes-1``.
        TypeError: if an array is not real numbers (strings, complex, ragged lists).

    Warns:
        UserWarning: when test inputs lie beyond the train inputs (scale-free models) or
            inputs beyond the prior's range (other models), and when a model that is not
            scale-free gets targets far off its prior's scale.
    """
    # Checks and a scale-free model's map in float64 (data far from zero, such as
    # timestamps, keep their spread), the network in its weights' dtype (float32 for the
    # shipped models, also under x64).
    if not isinstance(model, PFN | PFNClassifier):
        raise TypeError(
            f"`model` must be a PFN or a PFNClassifier, got {type(model).__name__}; load a "
            "trained one with `amortize.load`."
        )
    dtype = np.dtype(model.decoder_out.weight.dtype)
    x_train_np = _as_inputs(x_train, "x_train", model.num_features)
    x_test_np = _as_inputs(x_test, "x_test", model.num_features)
    if x_test_np.shape[1] != x_train_np.shape[1]:
        raise ValueError(
            f"`x_test` has {x_test_np.shape[1]} features but `x_train` has "
            f"{x_train_np.shape[1]}; pass the same features for both."
        )
    num_train = x_train_np.shape[0]
    if num_train > model.max_train:
        raise ValueError(
            f"{num_train} train points given, but the model was trained with at most "
            f"{model.max_train}; subsample the train set or train a model with a larger "
            "`max_train`."
        )
    if num_train < model.fewest_train_points and model.scale_free:
        raise ValueError(
            f"{num_train} train points given, but a scale-free model needs at least "
            f"{model.fewest_train_points}: with fewer, the scale it "
            "standardises by is too uncertain for its predictive's tails; pass more train "
            "points, or use a model in your data's units (`probinfer pfn list`)."
        )
    if num_train < model.min_train:
        raise ValueError(
            f"{num_train} train points given, but the model was trained with at least "
            f"{model.min_train}; pass more train points (for the prior predictive, sample "
            "the prior)."
        )
    # Fewer features: pad with zeros, as the prior does for its inactive features.
    pad = ((0, 0), (0, model.num_features - x_train_np.shape[1]))
    if isinstance(model, PFNClassifier):
        labels = as_labels(y_train, num_train, model.num_classes, name="y_train", rows_of="x_train")
        _warn_on_extrapolation(model, x_train_np, x_test_np)
        check_magnitude("x_test", x_test_np, "predict closer to the train inputs", dtype=dtype)
        arrays, structure = _split(model)
        logits = _class_logits(
            structure, arrays, np.pad(x_train_np, pad).astype(dtype), labels.astype(dtype),
            np.pad(x_test_np, pad).astype(dtype),
        )  # fmt: skip
        return PFNClassPredictive(logits)
    y_np = real_array("y_train", y_train).astype(np.float64)
    if y_np.shape != (x_train_np.shape[0],):
        raise ValueError(
            f"`y_train` must have shape ({x_train_np.shape[0]},) to match `x_train`, got "
            f"{y_np.shape}."
        )
    if not np.all(np.isfinite(y_np)):
        raise ValueError("`y_train` contains NaN or infinite values; remove those rows.")
    # A scale-free model's targets are mapped in float64 on the host; another model's
    # enter the network in the weights' dtype.
    check_magnitude(
        "y_train", y_np, "rescale the targets", dtype=np.float64 if model.scale_free else dtype
    )
    shift, scale = 0.0, 1.0
    if model.scale_free:
        x_train_np, y_np, x_test_np, shift, scale = _standardise(x_train_np, y_np, x_test_np)
    _warn_on_target_scale(model, y_np)
    _warn_on_extrapolation(model, x_train_np, x_test_np)
    # Far beyond the train range, a (mapped) test input leaves the weights' float range.
    check_magnitude("x_test", x_test_np, "predict closer to the train inputs", dtype=dtype)
    # Cast on the host and passed as NumPy arrays, which the compiled call transfers: a
    # cast on the device, or `jnp.asarray`, is one more dispatched operation per array.
    arrays, structure = _split(model)
    logits, own_shift, own_scale = _forward(
        structure, arrays, np.pad(x_train_np, pad).astype(dtype), y_np.astype(dtype),
        np.pad(x_test_np, pad).astype(dtype),
    )  # fmt: skip
    # The map back composed in float64 (see PFNPredictive).
    own_shift, own_scale = (float(v) for v in jax.device_get((own_shift, own_scale)))
    return PFNPredictive(logits, model.bar, shift + scale * own_shift, scale * own_scale)


@jax.jit
def _standardisation_of_train_rows(x_train: Array, y_train: Array) -> Standardisation:
    # Compiled: op by op, the map's dozen operations cost about a millisecond per call.
    return standardisation(x_train, y_train, x_train.shape[0])


def _standardise(
    x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, float]:
    """A scale-free model's map, applied in float64 on the host (checked first)."""
    if np.ptp(y_train) <= 1e-12 * np.abs(y_train).max(initial=0.0):
        raise ValueError(
            "`y_train` is constant, so a scale-free model has no scale to predict in; "
            "pass targets that vary, or use a model with a fixed scale."
        )
    constant = np.ptp(x_train, axis=0) == 0
    varies = np.ptp(np.concatenate([x_train[:1], x_test]), axis=0) > 0
    if np.any(constant & varies):
        feature = int(np.argmax(constant & varies))
        raise ValueError(
            f"feature {feature} is constant over `x_train` but varies in `x_test`: a "
            "scale-free model has no range to map it by; drop the feature or add train "
            "points where it varies."
        )
    with jax.enable_x64(True):
        scaling = _standardisation_of_train_rows(x_train, y_train)
        scaling = jax.device_get(scaling)
    return (
        (x_train - scaling.x_shift) / scaling.x_scale,
        (y_train - scaling.y_shift) / scaling.y_scale,
        (x_test - scaling.x_shift) / scaling.x_scale,
        float(scaling.y_shift),
        float(scaling.y_scale),
    )


def prior_from_spec(spec: dict) -> AbstractDatasetPrior:
    """Build a dataset prior from its JSON description.

    Args:
        spec: ``{"type": ..., ...}`` with type ``"gp"`` (``kernel`` rbf/matern52,
            ``lengthscale``, ``variance``, ``noise``), ``"gp_hyper"`` (``kernel``
            rbf/matern52/mixed, ``log_lengthscale``, ``log_variance``, ``log_noise`` as
            ``[mean, std]``),
            ``"linear"`` (``weight_std``, ``noise_std``), ``"bnn"`` (``width``, ``depth``,
            ``weight_std``, ``noise_std``) or ``"student_t"`` (``depth``, ``a``, ``b``,
            ``noise``), or ``"gp_classification"`` (``depth``, ``a``, ``b``, ``num_classes``:
            labels from a latent process with the ReLU NNGP kernel of ``depth`` hidden
            layers and an inverse-gamma ``(a, b)`` scale); all take ``num_features``.

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
            make = KERNEL_FAMILIES[spec.pop("kernel", "rbf")]
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
        if kind == "gp_classification":
            process = ScaleMixtureProcess(
                mlp(int(spec.pop("depth", 2))),
                inverse_gamma(spec.pop("a", 2.0), spec.pop("b", 2.0)),
            )
            num_classes = spec.pop("num_classes", 2)
            if spec:
                raise TypeError(f"unexpected settings {sorted(spec)}")
            return GPClassificationPrior(
                process, num_classes=num_classes, num_features=num_features
            )
    except (TypeError, KeyError) as error:
        raise ValueError(f"bad prior settings for type {kind!r}: {error}") from None
    raise ValueError(
        f"unknown prior type {kind!r}; use 'gp', 'gp_hyper', 'linear', 'bnn', 'student_t' or "
        "'gp_classification'."
    )


def load(folder: str | Path) -> PFN | PFNClassifier:
    """Load a trained PFN saved by :func:`probinfer.amortize.train` (or the CLI): a
    regression :class:`PFN`, or a :class:`PFNClassifier` if it was trained on a
    classification prior.

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
    num_features = int(saved["num_features"])
    if "num_classes" in saved:
        skeleton = build_model(
            int(saved["num_classes"]), num_features, config, key=jax.random.key(0)
        )
        return deserialise_model(folder / MODEL_FILE, skeleton)
    # A skeleton with the right structure; every leaf (borders included) is then loaded.
    borders = BarDistribution(np.arange(config.num_buckets + 1, dtype=float))
    skeleton = build_model(borders, num_features, config, key=jax.random.key(0))
    model = deserialise_model(folder / MODEL_FILE, skeleton)
    # The tails are static, recorded in the config (a model saved before they were has the
    # default ones for its borders).
    tails = tails_from_config(saved.get("tails"))
    return eqx.tree_at(lambda m: m.bar, model, model.bar.with_tails(tails))
