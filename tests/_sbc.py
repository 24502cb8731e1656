"""Simulation-based calibration of the NumPyro front end with NUTS (Talts et al., 2018).

For each replicate: draw ``mu ~ Normal(0, 1)`` and ``sigma ~ HalfNormal(1)``, simulate
five observations ``Normal(mu, sigma)``, sample the posterior and record the rank of the
true value among ``NUM_RANKED`` thinned posterior draws. If the front end (transforms,
log-Jacobians, prior and likelihood terms) and the sampler are right, the ranks are
uniform on ``0..NUM_RANKED``; uniformity is tested per site with a chi-square test over 10
bins.

All replicates are one model: a plate over replicates makes the joint posterior the
product of the replicates' posteriors, so one ``pi.sample`` call (one compiled program,
one chain) samples every replicate's posterior at once, and the front end is exercised
through plates as users write them.

Negative controls: ``HalfNormalNoJacobian`` is a half-normal whose unconstrained transform
forgets its log-Jacobian (exactly the bug of a front end that drops it), and a prior on
``mu`` three times too narrow. ``benchmarks/sbc_power.py`` measures over many seeds how
often the test passes the correct model and fails the controls
(``benchmarks/results/sbc_power/``).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from fractions import Fraction

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.distributions import constraints, transforms
from scipy import stats

import probinfer as pi
from probinfer.diagnostics import SamplingWarning, SBCResult, sbc

NUM_OBSERVATIONS = 5
NUM_RANKED = 99  # ranks take values 0..99: 10 bins of 10
THIN = 10
WARMUP = 500
NUM_BINS = 10
ALPHA = 5e-5  # per site and test: the suite's per-assertion budget (STYLE section 9)


class _PositiveNoJacobian(type(constraints.positive)):  # type: ignore[misc]
    """The positive reals, mapped to by :class:`_ExpNoJacobian`."""


POSITIVE_NO_JACOBIAN = _PositiveNoJacobian()


class _ExpNoJacobian(transforms.ExpTransform):
    """``exp`` with its log-Jacobian (``x``) dropped."""

    domain = constraints.real
    codomain = POSITIVE_NO_JACOBIAN

    def log_abs_det_jacobian(self, x, y, intermediates=None):
        return jnp.zeros_like(x)


@transforms.biject_to.register(_PositiveNoJacobian)
def _exp_no_jacobian(constraint: _PositiveNoJacobian) -> _ExpNoJacobian:
    return _ExpNoJacobian()


class HalfNormalNoJacobian(dist.HalfNormal):
    """A half-normal whose unconstrained transform forgets its log-Jacobian."""

    support = POSITIVE_NO_JACOBIAN


def make_model(
    scale_prior: Callable[[float], dist.Distribution] = dist.HalfNormal, mu_scale: float = 1.0
) -> Callable[[jnp.ndarray], None]:
    """The replicated model: ``y`` is ``(replicates, NUM_OBSERVATIONS)``."""

    def model(y: jnp.ndarray) -> None:
        with numpyro.plate("replicate", y.shape[0]):
            mu = numpyro.sample("mu", dist.Normal(0.0, mu_scale))
            sigma = numpyro.sample("sigma", scale_prior(1.0))
            numpyro.sample("y", dist.Normal(mu[:, None], sigma[:, None]).to_event(1), obs=y)

    return model


def sbc_p_values(
    model: Callable[[jnp.ndarray], None], num_replicates: int, seed: int
) -> dict[str, float]:
    """Chi-square p-values of the ranks of ``mu`` and ``sigma`` (data from the true prior).

    Args:
        model: from :func:`make_model`.
        num_replicates: simulated data sets.
        seed: seeds the simulation and the sampler.

    Returns:
        Site name -> p-value of the uniformity test of its ranks.
    """
    rng = np.random.default_rng(seed)
    mu = rng.normal(0.0, 1.0, num_replicates)
    sigma = np.abs(rng.normal(0.0, 1.0, num_replicates))
    y = rng.normal(mu[:, None], sigma[:, None], (num_replicates, NUM_OBSERVATIONS))
    with warnings.catch_warnings():
        # Some replicates (five points, a scale) have funnel-like posteriors: a few
        # divergences are expected; the ranks, not the run checks, judge calibration.
        warnings.simplefilter("ignore", SamplingWarning)
        idata = pi.sample(
            model,
            jnp.asarray(y, jnp.float32),
            chains=1,
            warmup=WARMUP,
            draws=NUM_RANKED * THIN,
            seed=seed,
            progress=False,
            log_likelihood=False,
        )
    p_values = {}
    for name, truth in (("mu", mu), ("sigma", sigma)):
        draws = idata.posterior[name].values[0, ::THIN]  # (NUM_RANKED, replicates)
        ranks = np.sum(draws < truth[None, :], axis=0)
        counts = np.bincount(ranks * NUM_BINS // (NUM_RANKED + 1), minlength=NUM_BINS)
        p_values[name] = float(stats.chisquare(counts).pvalue)
    return p_values


# --- One model per replicate: `probinfer.diagnostics.sbc` on every inference family ---

CONTROLS = ("correct", "dropped Jacobian", "narrow prior")
"""The model fitted: the true one, or a negative control (data always from the true one)."""

FAMILY_REPLICATES = 500
"""Replicates per family run: at 200 a dropped Jacobian gave p = 4e-6..9e-6 for sigma,
within a factor of 12 of ``ALPHA``; 500 leave a wide margin (``benchmarks/sbc.py``)."""

FAMILY_SETTINGS: dict[str, dict[str, int]] = {
    # Single chains, with enough draws that the bulk ESS of each replicate's posterior is
    # above the 99 ranked draws in nearly all replicates (measured: smallest ESS over 10
    # replicates 170-180 for NUTS/HMC/MALA, 150 for RWM).
    "nuts": {"chains": 1, "warmup": 300, "draws": 1000},
    "hmc": {"chains": 1, "warmup": 300, "draws": 500},
    "mala": {"chains": 1, "warmup": 500, "draws": 2000},
    "rwm": {"chains": 1, "warmup": 500, "draws": 3000},
    # Particles, not a chain: 400 of them (one SMC replica; one nested-sampling run's
    # equally weighted draws), thinned evenly to the 99 ranked.
    "smc": {"chains": 1, "draws": 400},
    "ns": {"draws": 400},
}


def simulating_model(
    scale_prior: Callable[[float], dist.Distribution] = dist.HalfNormal, mu_scale: float = 1.0
) -> Callable[..., None]:
    """One replicate's model: ``y`` (``(NUM_OBSERVATIONS,)``, or None to simulate it)."""

    def model(y: jnp.ndarray | None = None) -> None:
        mu = numpyro.sample("mu", dist.Normal(0.0, mu_scale))
        sigma = numpyro.sample("sigma", scale_prior(1.0))
        numpyro.sample("y", dist.Normal(mu, sigma).expand([NUM_OBSERVATIONS]), obs=y)

    return model


FITTED_MODELS = {
    "correct": simulating_model(),
    "dropped Jacobian": simulating_model(HalfNormalNoJacobian),
    "narrow prior": simulating_model(mu_scale=1.0 / 3.0),
}


def family_sbc(method: str, control: str, num_replicates: int, seed: int) -> SBCResult:
    """SBC of ``method`` fitting the ``control`` model to data from the true model.

    Args:
        method: one of ``FAMILY_SETTINGS``.
        control: one of ``CONTROLS``.
        num_replicates: simulated data sets.
        seed: seeds the simulations and the fits.

    Returns:
        The :class:`~probinfer.diagnostics.SBCResult` (ranks among ``NUM_RANKED`` draws).
    """
    with warnings.catch_warnings():
        # Single chains on five points and a scale: some replicates warn (a divergence,
        # an R-hat of 1.02); the ranks, not the run checks, judge calibration.
        warnings.simplefilter("ignore", SamplingWarning)
        return sbc(
            FITTED_MODELS[control],
            observed="y",
            method=method,
            num_replicates=num_replicates,
            num_ranked=NUM_RANKED,
            seed=seed,
            simulator=FITTED_MODELS["correct"],
            progress=False,
            **FAMILY_SETTINGS[method],
        )


def passes(result: SBCResult) -> bool:
    """Every component's rank-ECDF p-value is above ``ALPHA`` (the per-test budget)."""
    return all(float(np.min(p)) > ALPHA for p in result.p_values.values())


# --- PFN calibration: probability integral transforms on prior datasets ---

PFN_MODELS = ("gp_rbf", "gp_hyper", "gp_scale_free", "student_t_process")
PFN_CONTROLS = ("correct", "wrong prior", "narrow predictive")
"""``"wrong prior"``: datasets from another prior (:func:`_wrong_prior_spec`);
``"narrow predictive"``: the PFN's predictive squeezed 2x about its median (4x too small a
variance), a miscalibration the test must catch for every model. A scale-free model
standardises the targets and infers the hyperparameters, so a data-side shift barely
moves its PITs: measured p-values 0.005-0.7 at 1,000 datasets for lengthscales 4x or 20x
shorter or 5x longer and a far smaller noise (1e-5 with Student-t noise of scale 0.3 and
30 train points, 0.02 with 10); its wrong-prior row is reported, not asserted."""
PFN_DATASETS = 1000
PFN_TRAIN_SIZES = (10, 30)


def _wrong_prior_spec(spec: dict, scale_free: bool) -> dict:
    """The training prior with its output scale 4x in variance (2x in amplitude), or for
    a scale-free model (which standardises the targets away) its lengthscales 4x shorter,
    or for a Student-t process (whose scale the model infers from the data) its relative
    noise 4x larger."""
    spec = dict(spec)
    if spec["type"] == "student_t":
        spec["noise"] = 4.0 * spec["noise"]
    elif scale_free:
        low, width = spec["log_lengthscale"]
        spec["log_lengthscale"] = [low - float(np.log(4.0)), width]
    elif spec["type"] == "gp":
        spec["variance"] = 4.0 * spec["variance"]
    else:
        low, width = spec["log_variance"]
        spec["log_variance"] = [low + float(np.log(4.0)), width]
    return spec


def pfn_pit_ranks(
    name: str, control: str, num_train: int, num_datasets: int = PFN_DATASETS, seed: int = 0
) -> np.ndarray:
    """Ranks ``floor(100 PIT)`` in ``0..NUM_RANKED`` of one test target per prior dataset.

    Each dataset (3 input features, ``num_train + 1`` points) is drawn from the shipped
    PFN's training prior (or, for ``control="wrong prior"``, :func:`_wrong_prior_spec`);
    the PIT is the PFN predictive's CDF at the held-out target. A calibrated predictive
    gives uniform PITs, so uniform ranks on ``0..99``: the rank-ECDF test applies as to
    SBC ranks.

    Args:
        name: a shipped model (``PFN_MODELS``).
        control: one of ``PFN_CONTROLS``.
        num_train: train points per dataset.
        num_datasets: datasets (one PIT each).
        seed: seeds the datasets.

    Returns:
        ``(num_datasets,)`` integer ranks.
    """
    import json
    from pathlib import Path

    import jax

    from probinfer import amortize

    folder = Path(amortize.__file__).parent / "pretrained" / name
    model = amortize.load(folder)
    spec = json.loads((folder / "config.json").read_text())["prior"]
    if control not in PFN_CONTROLS:
        raise ValueError(f"`control` must be one of {PFN_CONTROLS}; got {control!r}.")
    if control == "wrong prior":
        spec = _wrong_prior_spec(spec, model.scale_free)
    prior = amortize.prior_from_spec(spec)
    keys = jax.random.split(jax.random.key(seed), num_datasets)
    x, y = jax.vmap(lambda key: prior.sample(key, num_train + 1, 3))(keys)
    x, y = np.asarray(x), np.asarray(y)
    pit = np.empty(num_datasets)
    with warnings.catch_warnings():
        # The wrong prior's targets are off the model's units: it says so, as it should.
        warnings.simplefilter("ignore", UserWarning)
        for i in range(num_datasets):
            predictive = amortize.predict(
                model, x[i, :num_train], y[i, :num_train], x[i, num_train:]
            )
            target = y[i, num_train:]
            if control == "narrow predictive":
                median = predictive.quantile(0.5)
                target = median + 2.0 * (target - median)
            pit[i] = float(predictive.cdf(target)[0])
    return np.minimum(np.floor(pit * (NUM_RANKED + 1)), NUM_RANKED).astype(int)


PFN_CLASSIFIER_CONTROLS = ("correct", "overconfident", "underconfident")
"""``"overconfident"`` / ``"underconfident"``: the classifier PFN's logits doubled /
halved (its probabilities pushed towards 0 and 1 / towards 1/2)."""
PFN_CLASSIFIER_DATASETS = 2000


def pfn_classifier_calibration(
    control: str, num_train: int, num_datasets: int = PFN_CLASSIFIER_DATASETS, seed: int = 0
) -> tuple[float, float]:
    """Spiegelhalter's test of the shipped classifier PFN (``gp-classifier``) on one
    held-out label per dataset from its training prior (3 input features).

    For predicted probabilities ``p_i`` of class 1 and labels ``y_i``, ``z = sum (y_i -
    p_i)(1 - 2 p_i) / sqrt(sum (1 - 2 p_i)^2 p_i (1 - p_i))`` is standard normal when the
    ``p_i`` are the labels' true probabilities (independent datasets); a predictive too
    sharp or too flat moves it far off zero, where a plain mean of ``y - p`` would not.

    Args:
        control: one of ``PFN_CLASSIFIER_CONTROLS``.
        num_train: train points per dataset.
        num_datasets: datasets (one held-out label each).
        seed: seeds the datasets.

    Returns:
        ``(z, two-sided p-value)``.
    """
    import jax

    from probinfer import amortize

    if control not in PFN_CLASSIFIER_CONTROLS:
        raise ValueError(f"`control` must be one of {PFN_CLASSIFIER_CONTROLS}; got {control!r}.")
    folder = amortize.PRETRAINED_GP_CLASSIFIER
    model = amortize.load(folder)
    spec = json.loads((folder / "config.json").read_text())["prior"]
    prior = amortize.prior_from_spec(spec)
    keys = jax.random.split(jax.random.key(seed), num_datasets)
    x, y = jax.vmap(lambda key: prior.sample(key, num_train + 1, 3))(keys)
    x, labels = np.asarray(x), np.asarray(y).astype(int)
    factor = {"correct": 1.0, "overconfident": 2.0, "underconfident": 0.5}[control]
    p = np.empty(num_datasets)
    for i in range(num_datasets):
        predictive = amortize.predict(
            model, x[i, :num_train], labels[i, :num_train], x[i, num_train:]
        )
        logits = factor * np.asarray(predictive.logits, np.float64)[0]
        p[i] = 1 / (1 + np.exp(logits[0] - logits[1]))
    y1 = labels[:, num_train]
    z = np.sum((y1 - p) * (1 - 2 * p)) / np.sqrt(np.sum((1 - 2 * p) ** 2 * p * (1 - p)))
    return float(z), float(2 * stats.norm.sf(abs(z)))


# --- NNGP classifier calibration: `nngp.sample_classifier` on data from its own model ---

CLASSIFIER_METHODS = ("nuts", "gibbs")
CLASSIFIER_CONTROLS = ("correct", "narrow scale prior")
"""``"narrow scale prior"``: fitted with ``log s ~ Normal(0, 1/3)`` to data simulated with
``log s ~ Normal(0, 1)`` (a prior scale 3x too small)."""
CLASSIFIER_POINTS = 16
CLASSIFIER_CLASSES = (2, 3)
"""Two classes: one latent function, Bernoulli-logit labels; three: three independent
latent functions, softmax labels."""
CLASSIFIER_SETTINGS: dict[str, dict[str, int]] = {
    # One chain, thinned to exactly the 99 ranked draws. The bulk ESS of the 99 kept draws
    # has a median of 77-80 here and at half these thinnings alike (about 10% of
    # replicates below 50): an estimate's noise on 99 draws as much as autocorrelation.
    # The Gibbs sampler's run check warns in every replicate (ESS < 100 of 99 draws).
    "nuts": {"num_warmup": 300, "num_draws": 1980, "thin": 20},
    "gibbs": {"num_warmup": 500, "num_draws": 5940, "thin": 60},
}
CLASSIFIER_REPLICATES = 300
"""At 100 replicates the narrow prior already failed with p < 1e-4 for ``log s`` (both
methods) and the correct model passed (smallest p 0.67)."""


def classifier_sbc(
    method: str, control: str, num_replicates: int, seed: int, num_classes: int = 2
) -> SBCResult:
    """SBC of the NNGP classifier (``nngp.sample_classifier``), binary or multiclass.

    Each replicate draws ``log s ~ Normal(0, 1)`` and latent functions ``f_c | s ~ GP(0,
    s K)`` at ``CLASSIFIER_POINTS`` inputs evenly spaced on ``[-1, 1]`` (the
    one-hidden-layer ReLU NNGP ``nngp.mlp(1)``, plus the classifier's jitter): one with
    ``label_i ~ Bernoulli(sigmoid(f_i))`` for two classes, ``num_classes`` independent ones
    with ``label_i ~ Categorical(softmax(f(x_i)))`` otherwise. It fits one chain with
    ``method`` and ranks ``log s``, ``f`` of the first class at the first input and ``f``
    of the last class at the last input among its 99 kept draws.

    Args:
        method: one of ``CLASSIFIER_METHODS``.
        control: one of ``CLASSIFIER_CONTROLS``.
        num_replicates: simulated label sets.
        seed: seeds the simulations and the fits.
        num_classes: one of ``CLASSIFIER_CLASSES``.

    Returns:
        The :class:`~probinfer.diagnostics.SBCResult` (sites ``log_scale`` and ``f``, the
        latter ``(replicates, 2)``).
    """
    import jax

    from probinfer import nngp
    from probinfer._calibration import _ranks_of_truth
    from probinfer.diagnostics import convergence

    if control not in CLASSIFIER_CONTROLS:
        raise ValueError(f"`control` must be one of {CLASSIFIER_CONTROLS}; got {control!r}.")
    if num_classes not in CLASSIFIER_CLASSES:
        raise ValueError(f"`num_classes` must be one of {CLASSIFIER_CLASSES}; got {num_classes}.")
    kernel = nngp.mlp(1)
    x = np.linspace(-1.0, 1.0, CLASSIFIER_POINTS)[:, None]
    jitter = 1e-6
    # The generative model's factor, as the classifier builds it (float32 kernel + jitter).
    covariance = np.asarray(kernel(jnp.asarray(x, jnp.float32)), np.float64)
    eigenvalues, eigenvectors = np.linalg.eigh(covariance + jitter * np.eye(len(x)))
    factor = eigenvectors * np.sqrt(eigenvalues)
    fitted_prior = nngp.log_normal(0.0, 1.0 if control == "correct" else 1.0 / 3.0)
    rng = np.random.default_rng(seed)
    keys = jax.random.split(jax.random.key(seed), num_replicates)
    ranks: dict[str, list[np.ndarray]] = {"log_scale": [], "f": []}
    min_ess, num_warned = np.empty(num_replicates), 0
    num_latent = 1 if num_classes == 2 else num_classes
    # (input, latent column) of the two ranked latent values: the first and the last.
    ranked = ([0, CLASSIFIER_POINTS - 1], [0, num_latent - 1])
    for replicate in range(num_replicates):
        log_scale = rng.normal()
        f = np.exp(0.5 * log_scale) * factor @ rng.normal(size=(CLASSIFIER_POINTS, num_latent))
        if num_classes == 2:
            p1 = 1.0 / (1.0 + np.exp(-f[:, 0]))
            labels = (rng.uniform(size=CLASSIFIER_POINTS) < p1).astype(int)
        else:
            probabilities = np.exp(f - f.max(axis=1, keepdims=True))
            probabilities /= probabilities.sum(axis=1, keepdims=True)
            cumulative = np.cumsum(probabilities, axis=1)
            uniform = rng.uniform(size=(CLASSIFIER_POINTS, 1))
            labels = np.minimum(np.sum(cumulative < uniform, axis=1), num_classes - 1)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", SamplingWarning)
            posterior = nngp.sample_classifier(
                keys[replicate], kernel, x, labels, scale_prior=fitted_prior,
                num_classes=num_classes,
                num_chains=1, jitter=jitter, method=method, progress=False,
                **CLASSIFIER_SETTINGS[method],
            )  # fmt: skip
        num_warned += any(issubclass(w.category, SamplingWarning) for w in caught)
        draws = posterior.idata["posterior"]
        sites = {"log_scale": draws["log_scale"].values,
                 "f": draws["f"].values[:, :, ranked[0], ranked[1]]}  # fmt: skip
        min_ess[replicate] = np.nanmin(convergence(sites).ess_bulk)
        truths = {"log_scale": np.asarray(log_scale), "f": f[ranked]}
        for name, value in truths.items():
            flat = sites[name].reshape(-1, *sites[name].shape[2:])
            ranks[name].append(_ranks_of_truth(flat, value, NUM_RANKED, rng))
    stacked = {name: np.stack(values) for name, values in ranks.items()}
    return SBCResult.from_ranks(stacked, NUM_RANKED, method, min_ess, num_warned)


# --- Exact reference of the rank-ECDF test, in rational arithmetic ---


def exact_statistic(ranks: np.ndarray, num_ranked: int) -> Fraction:
    """The rank-ECDF statistic (smallest two-sided binomial tail) as an exact fraction."""
    from math import comb

    num_replicates = len(ranks)
    counts = np.cumsum(np.bincount(ranks, minlength=num_ranked + 1))[:num_ranked]
    tails = []
    for j, count in enumerate(counts):
        p = Fraction(j + 1, num_ranked + 1)
        pmf = [comb(num_replicates, k) * p**k * (1 - p) ** (num_replicates - k)
               for k in range(num_replicates + 1)]  # fmt: skip
        below, above = sum(pmf[: count + 1]), sum(pmf[count:])
        tails.append(min(Fraction(1), 2 * min(below, above)))
    return min(tails)


def exact_p_values(num_replicates: int, num_ranked: int) -> dict[tuple[int, ...], Fraction]:
    """Every rank vector's exact p-value, by enumerating all ``(L + 1)^N`` of them."""
    import itertools

    vectors = list(itertools.product(range(num_ranked + 1), repeat=num_replicates))
    statistics = [exact_statistic(np.array(v), num_ranked) for v in vectors]
    ordered = sorted(statistics)
    from bisect import bisect_right

    return {
        vector: Fraction(bisect_right(ordered, statistic), len(vectors))
        for vector, statistic in zip(vectors, statistics, strict=True)
    }
