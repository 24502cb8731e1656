"""A trained PFN against the exact posterior predictive it approximates.

Run::

    .venv/bin/python benchmarks/pfn.py [--model DIR] [--datasets 200]
        [--out benchmarks/results]

Writes ``pfn.md``, ``pfn.json`` and ``pfn.png`` to ``--out``, and ``training_curve.png``
when the model's folder has the ``training_curve.json`` that ``probinfer pfn train`` writes.

Held-out datasets are drawn from the prior the model was trained on (a GP with fixed
hyperparameters, or a Student-t process: an NNGP kernel with an inverse-gamma scale; its
spec is read from the model's ``config.json``), for 1, 2 and 3 input features and several
numbers of train points, each with 10 test points. For each dataset:

- **exact**: the posterior predictive with the true hyperparameters (the best possible
  NLL, :class:`probinfer.nngp.ScaleMixtureProcess` in float64: Student-t in closed form
  for an inverse-gamma scale, by quadrature over the scale for other scale priors);
- **PFN**: one forward pass (:func:`probinfer.amortize.predict`);
- **MLE-II GP**: RBF lengthscale, variance and noise fitted per dataset by maximising the
  marginal likelihood (Adam on log parameters, 300 steps, vmapped over datasets), the
  practical alternative when the hyperparameters are unknown.

Reported: test negative log predictive density per point (nats), the PFN's gap to the exact
predictive with its standard error over datasets, and the time per dataset of the PFN
(batched) and of the exact predictive (one dataset at a time, in float64), both after
compilation.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.scipy.special import logsumexp, ndtr
from jax.scipy.stats import norm

from probinfer import amortize, nngp
from probinfer.amortize.pfn import SCALE_FREE_MIN_TRAIN
from probinfer.amortize.priors import FAMILIES, KERNEL_FAMILIES
from probinfer.bench import machine_description
from probinfer.checkpoint import atomic_write

try:  # imported as `benchmarks.pfn` (PYTHONPATH=.)
    from benchmarks.records import RecordLog
except ImportError:  # run as a script: its own folder is first on sys.path
    from records import RecordLog

NUM_TEST = 10
TRAIN_SIZES = (2, 5, 10, 20, 30, 50)


def _standard_error(values) -> float:
    """Standard error of the mean over datasets."""
    values = np.asarray(values, np.float64)
    return float(values.std(ddof=1) / np.sqrt(values.size))


def draw_datasets(prior, key, num_datasets, num_points, num_features):
    keys = jax.random.split(key, num_datasets)
    return jax.vmap(lambda k: prior.sample(k, num_points, num_features))(keys)


def exact_nll(prior, x, y, num_train):
    """``(datasets,)`` the exact predictive's NLL per test point, mean per dataset."""
    return exact_point_nll(prior, x, y, num_train).mean(axis=1)


def exact_point_nll(prior, x, y, num_train):
    """``(datasets, test points)`` the exact posterior predictive's NLL of each test target,
    in float64: the GP's for a fixed-kernel prior, the closed-form Student-t for an
    inverse-gamma scale mixture (``prior.exact_process()``)."""
    with jax.enable_x64(True):
        x64, y64 = np.asarray(x, np.float64), np.asarray(y, np.float64)
        process = prior.exact_process()

        def one(xi, yi):
            posterior = process.condition(xi[:num_train], yi[:num_train])
            predictive = posterior.predict(xi[num_train:])
            return -predictive.log_prob(yi[num_train:])

        values = [np.asarray(one(xi, yi)) for xi, yi in zip(x64, y64, strict=True)]
    return np.asarray(values)


def mle_nll(x, y, num_train, steps=300):
    """Per-dataset ML-II of RBF lengthscale, variance and noise (vmapped Adam)."""
    with jax.enable_x64(True):
        x64, y64 = jnp.asarray(x, jnp.float64), jnp.asarray(y, jnp.float64)
        optimizer = optax.adam(0.05)

        def build(params):
            lengthscale, variance, noise = jnp.exp(params)
            return nngp.ScaleMixtureProcess(
                nngp.rbf(lengthscale, variance), None, noise + 1e-4, jitter=1e-6
            )

        def fit_and_score(xi, yi):
            def loss(params):
                return -build(params).log_marginal_likelihood(xi[:num_train], yi[:num_train])

            def step(carry, _):
                params, state = carry
                grads = jax.grad(loss)(params)
                updates, state = optimizer.update(grads, state)
                return (optax.apply_updates(params, updates), state), None

            params = jnp.log(jnp.array([0.5, 1.0, 0.05]))
            (params, _), _ = jax.lax.scan(step, (params, optimizer.init(params)), None, steps)
            predictive = (
                build(params).condition(xi[:num_train], yi[:num_train]).predict(xi[num_train:])
            )
            return -jnp.mean(predictive.log_prob(yi[num_train:]))

        return np.asarray(jax.jit(jax.vmap(fit_and_score))(x64, y64))


# Cells of the hyperprior comparison, each kept where the model covers it (its
# `num_features` and `max_train`): 1-3 inputs and up to 50 points for the shipped
# gp_hyper models, 1-5 and up to 100 for the mixed-kernel one (issue 19 (a)).
HYPER_TRAIN_SIZES = (2, 5, 10, 20, 50, 100)
HYPER_FEATURES = (1, 2, 3, 4, 5)
NUTS_CHAINS = 4
NUTS_WARMUP = NUTS_DRAWS = 500
# The version of what a hyperprior reference measures: raised when a change to the
# reference or to the records' fields would make earlier records other measurements (a
# record log of another version is refused: see `hyper_settings`).
HYPER_RECORD_VERSION = 2
# A NUTS reference with a larger R-hat (over its sites) is retried once with a longer run,
# then left out of a cell's means and counted.
RHAT_LIMIT = 1.01
# The same datasets in other units: (input scale, input shift, target scale, target shift).
# A scale-free model's gap must not move; one that is not scale-free shows what it costs.
RESCALINGS = {
    "y x 0.01": (1.0, 0.0, 0.01, 0.0),
    "y x 100": (1.0, 0.0, 100.0, 0.0),
    "y + 10": (1.0, 0.0, 1.0, 10.0),
    "x x 50 + 3": (50.0, 3.0, 1.0, 0.0),
}


def _draw_predictives(x_train, y_train, x_test, draws, family="rbf"):
    """``(draws, m)`` means and standard deviations of the GP predictive at each draw of
    ``(lengthscale, variance, noise, offset, scale, half_range)``: ``y = offset +
    sqrt(scale) f`` with ``f`` a GP (kernel ``family``) in the inputs times ``half_range``
    (per feature; ones for a model that is not scale-free); and ``(draws,)`` the train
    targets' log density at each draw. The NUTS references sample ``scale x variance`` and
    ``scale x noise`` as ``variance`` and ``noise`` and pass ``scale`` = 1
    (:func:`_located_scaled_gp`)."""
    make = KERNEL_FAMILIES[family]

    def one(ls, var, nz, offset, scale, half_range):
        process = nngp.ScaleMixtureProcess(make(ls, var), None, nz + 1e-6, jitter=0.0)
        conditioned = process.condition(x_train * half_range, y_train - offset)
        predictive = conditioned.predict(x_test * half_range)
        # y - offset ~ N(0, scale C): C's log density, then the scale's change of variables.
        n = y_train.shape[0]
        log_train = -0.5 * (
            n * jnp.log(2 * jnp.pi * scale) + conditioned.log_det + conditioned.quad_form / scale
        )
        return offset + predictive.mean, jnp.sqrt(scale * predictive.variance), log_train

    # One draw after another, not vmapped: a vmapped factorisation and solve are batched
    # LAPACK calls, and two that one program runs at once (the mean's and the variance's
    # solves) can wait on each other for ever on XLA:CPU with jaxlib 0.10.0-0.11.0 (excluded
    # by the requirements; see probinfer/_linalg.py).
    return jax.lax.map(lambda draw: one(*draw), draws)


def log_weights_of_test_inputs(half_range, x_test):
    """``(draws, m)`` ``log p(x'_test | half ranges)`` up to a constant: how likely a test
    input lands where the map put it, given the train inputs' half range ``h`` per feature.

    Inputs are uniform on ``[-1, 1]``; the map sends the train range ``[c - h, c + h]`` to
    ``[-1, 1]``, with ``c | h`` uniform on ``|c| <= 1 - h``. A test input mapped to ``x'``
    came from ``c + h x'``: density ``h / 2`` if that is in ``[-1, 1]``, averaged over
    ``c``: ``h`` times the share of ``c`` that keeps it there, 1 for ``|x'| <= 1`` and
    ``(2 - h (1 + |x'|)) / (2 (1 - h))`` (clipped to ``[0, 1]``) beyond.

    Args:
        half_range: ``(draws, d)`` ``h`` per draw and active feature.
        x_test: ``(m, d)`` mapped test inputs.
    """
    h, distance = half_range[:, None, :], jnp.abs(x_test)[None, :, :]
    beyond = (2.0 - h * (1.0 + distance)) / (2.0 * (1.0 - h))
    share = jnp.where(distance <= 1.0, 1.0, jnp.clip(beyond, 0.0, 1.0))
    return jnp.sum(jnp.log(h) + jnp.log(share), axis=-1)


def check_test_input_weights(num_train=5, num_datasets=2_000_000, seed=0):
    """Check :func:`log_weights_of_test_inputs` against simulation (run before a scale-free
    comparison): draw the train and test inputs, map them, and compare ``E[h | x']`` per
    band of ``|x'|`` with the weights' answer (``h ~ Beta(n - 1, 2)`` times the weight,
    integrated over the band on a grid). Raises when a band is off by more than 5
    standard errors; returns ``(band, simulated, weighted, s.e.)`` rows."""
    rng = np.random.default_rng(seed)
    inputs = rng.uniform(-1.0, 1.0, (num_datasets, num_train))
    low, high = inputs.min(axis=1), inputs.max(axis=1)
    centre, half_range = 0.5 * (low + high), 0.5 * (high - low)
    mapped = np.abs((rng.uniform(-1.0, 1.0, num_datasets) - centre) / half_range)
    h = np.linspace(5e-4, 1.0 - 5e-4, 1000)
    prior = np.exp(np.asarray(half_range_prior(num_train).log_prob(h)))  # the model's own
    rows = []
    for band in [(0.0, 1.0), (1.0, 1.3), (1.3, 1.7), (1.7, 2.5), (2.5, 4.0)]:
        chosen = (mapped >= band[0]) & (mapped < band[1])
        if chosen.sum() < 1000:
            raise AssertionError(f"too few simulated test inputs in |x'| band {band}")
        simulated = half_range[chosen]
        grid = np.linspace(*band, 200)
        with jax.enable_x64(True):
            log_weights = np.asarray(log_weights_of_test_inputs(h[:, None], grid[:, None]))
        joint = prior[:, None] * np.exp(log_weights)  # (h, x') on the grid
        weighted = float(np.sum(h[:, None] * joint) / np.sum(joint))
        error = float(simulated.std() / np.sqrt(simulated.size))
        rows.append((band, float(simulated.mean()), weighted, error))
        if abs(simulated.mean() - weighted) > 5 * error:
            raise AssertionError(f"test-input weights off in |x'| band {band}: {rows[-1]}")
    return rows


def _weights_over_draws(log_weights):
    """``(draws, m)`` normalised log weights per test point (columns sum to one)."""
    return log_weights - logsumexp(log_weights, axis=0, keepdims=True)


_family_predictives = jax.jit(_draw_predictives, static_argnames="family")


def _predictive_components(x_train, y_train, x_test, draws, log_weights, families):
    """The posterior predictive as a weighted mixture of Gaussians per test point: ``(k,
    m)`` means, standard deviations and normalised log weights over ``k = draws x
    families`` components. With two kernel families (a ``"mixed"`` prior) each draw's
    families are weighted by how well each explains the train targets (equal prior odds):
    NUTS ran on the likelihood summed over families, so this is the exact Bayesian average
    over the family (Rao-Blackwellised), with no evidence estimate needed.

    One compiled call per family, each finished before the next: with both families in one
    program, XLA's CPU runtime hung now and then (1-2 runs in 8 of a 20-point, 1,000-draw
    case, every thread idle; neither ``--xla_cpu_multi_thread_eigen=false`` nor synchronous
    dispatch avoided it): the XLA CPU hang of the user guide's "Errors and warnings". Within
    one family's program :func:`_draw_predictives` maps over the draws, so that it makes
    no batched LAPACK calls either.
    """
    if len(families) == 1:
        mean, std, _ = _family_predictives(x_train, y_train, x_test, draws, family=families[0])
        return mean, std, _weights_over_draws(log_weights)
    # In float64: the families' train densities differ by a few nats at most, and float32
    # log-determinants at 100 points and little noise are off by about that much.
    with jax.enable_x64(True):
        cast = [jnp.asarray(a, jnp.float64) for a in (x_train, y_train, x_test, log_weights)]
        x_train, y_train, x_test, log_weights = cast
        draws = tuple(jnp.asarray(a, jnp.float64) for a in draws)
        parts = [
            jax.block_until_ready(_family_predictives(x_train, y_train, x_test, draws, family=f))
            for f in families
        ]
        mean = jnp.concatenate([part[0] for part in parts])
        std = jnp.concatenate([part[1] for part in parts])
        # A family whose factorisation failed at a draw gets no weight there.
        log_train = jnp.nan_to_num(jnp.stack([part[2] for part in parts]), nan=-jnp.inf)
        log_family = log_train - logsumexp(log_train, axis=0, keepdims=True)
        combined = (log_weights[None] + log_family[..., None]).reshape(mean.shape)
        return mean, std, _weights_over_draws(combined)


def _mixture_log_density(x_train, y_train, x_test, y_test, draws, log_weights, families=("rbf",)):
    """``log sum_k w_k N(y_test; component k)`` over the predictive's components
    (:func:`_predictive_components`; ``log_weights``, ``(draws, m)``, per test point: zeros
    give the mean over draws)."""
    mean, std, log_w = _predictive_components(
        x_train, y_train, x_test, draws, log_weights, families
    )
    return _log_mixture(y_test, mean, std, log_w)


@jax.jit
def _log_mixture(y_test, mean, std, log_w):
    return logsumexp(norm.logpdf(y_test, mean, std) + log_w, axis=0)


def _mixture_bar_log_densities(
    x_train, y_train, x_test, y_test, draws, log_weights, bars, families=("rbf",)
):
    """The same mixture projected onto each bar's buckets: the best its histogram can do."""
    mean, std, log_w = _predictive_components(
        x_train, y_train, x_test, draws, log_weights, families
    )
    return _bar_log_densities(y_test, mean, std, jnp.exp(log_w), bars)


@jax.jit
def _bar_log_densities(y_test, mean, std, weights, bars):
    def projected(bar):
        inner = bar.borders[1:-1]
        cdf = jnp.sum(
            weights[..., None] * ndtr((inner[None, None, :] - mean[..., None]) / std[..., None]),
            axis=0,
        )
        zeros, ones = (
            jnp.zeros((cdf.shape[0], 1), cdf.dtype),
            jnp.ones((cdf.shape[0], 1), cdf.dtype),
        )
        mass = jnp.diff(jnp.concatenate([zeros, cdf, ones], axis=1), axis=1)
        return bar.log_prob(jnp.log(jnp.maximum(mass, 1e-300)), y_test)

    return [projected(bar) for bar in bars]


# The targets' scale prior in the scale-free references: LogNormal(0, 10), nearly flat in
# log s over the likelihood's reach (the location-scale group's right Haar prior).
LOG_SCALE_SD = 10.0


def gp_hyper_model(x_train, y_train, hyperprior):
    """The GP-with-hyperpriors regression model, for NUTS (module level: compiled once)."""
    import numpyro
    import numpyro.distributions as dist

    lengthscale = numpyro.sample("lengthscale", dist.LogNormal(*hyperprior[0]))
    variance = numpyro.sample("variance", dist.LogNormal(*hyperprior[1]))
    noise = numpyro.sample("noise", dist.LogNormal(*hyperprior[2]))
    kernel = nngp.rbf(lengthscale, variance)
    numpyro.sample(
        "y", nngp.gaussian_process(kernel, x_train, noise=noise, jitter=1e-6), obs=y_train
    )


def gp_scale_free_model(x_train, y_train, hyperprior):
    """What a scale-free PFN approximates, on its standardised data (active features only).

    The map divides out the targets' location and scale and each input feature's train
    range, so the model has them as unknowns:

    - the targets: the same GP, shifted by ``offset`` and scaled by ``sqrt(scale)``, with
      (nearly) flat priors on the offset and on ``log scale`` (the location-scale group's
      right Haar prior, under which the Bayes predictive is the predictive given the
      standardised data; widths of 10 and 10 in log are flat over the likelihood's reach);
    - the inputs: prior inputs are uniform on ``[-1, 1]``, and the map sends the ``n``
      train inputs' range to ``[-1, 1]``, so the GP sees the mapped inputs times each
      feature's half range ``h ~ Beta(n - 1, 2)`` (the half range of ``n`` uniforms). The
      mapped train inputs say nothing about ``h`` (given the range, the other points are
      uniform inside it); a test input does, which :func:`log_weights_of_test_inputs` adds per
      test point.
    """
    import numpyro

    num_train, num_features = x_train.shape
    half_range = numpyro.sample(
        "half_range", half_range_prior(num_train).expand([num_features]).to_event(1)
    )
    _located_scaled_gp(x_train * half_range, y_train, hyperprior)


def half_range_prior(num_train):
    """The half range of ``num_train`` inputs uniform on ``[-1, 1]``: ``Beta(n - 1, 2)``."""
    import numpyro.distributions as dist

    return dist.Beta(num_train - 1.0, 2.0)


def gp_hyper_mixed_model(x_train, y_train, hyperprior):
    """:func:`gp_hyper_model` for a ``"mixed"`` prior: the kernel is RBF or Matérn-5/2 with
    probability 1/2, summed out in the likelihood."""
    _located_scaled_gp(x_train, y_train, hyperprior, families=FAMILIES, located=False)


def gp_scale_free_mixed_model(x_train, y_train, hyperprior):
    """:func:`gp_scale_free_model` for a ``"mixed"`` prior: the kernel is RBF or Matérn-5/2
    with probability 1/2, summed out in the likelihood."""
    import numpyro

    num_train, num_features = x_train.shape
    half_range = numpyro.sample(
        "half_range", half_range_prior(num_train).expand([num_features]).to_event(1)
    )
    _located_scaled_gp(x_train * half_range, y_train, hyperprior, families=FAMILIES)


def gp_fixed_range_model(x_train, y_train, hyperprior):
    """:func:`gp_scale_free_model` with every half range 1 and no test-input weights (the
    reference used before the half ranges were modelled): what leaving them out costs."""
    _located_scaled_gp(x_train, y_train, hyperprior)


def _located_scaled_gp(x_train, y_train, hyperprior, families=("rbf",), located=True):
    """The GP with hyperpriors, shifted by an unknown offset, scaled by an unknown scale
    (offset 0 and scale 1 if not ``located``); with several kernel ``families``, each with
    equal prior probability.

    The scale ``s`` multiplies the kernel variance and the noise alike (``y ~ N(offset,
    s (v K + n I))``), so the likelihood sees only ``s v`` and ``s n``: NUTS over ``(v, n,
    s)`` runs along a ridge that only the priors bound (at 50 points, 200 draws: 118
    divergences, about 420 leapfrog steps per draw, correlations of ``log s`` with ``log v``
    and ``log n`` below -0.99999). With log-normal priors ``log(s v)`` and ``log(s n)`` are
    jointly Gaussian (``log s`` shared), so NUTS samples them directly: the same model for
    everything the predictive uses, without the ridge. The sites ``variance`` and ``noise``
    then hold ``s v`` and ``s n``, and there is no ``scale`` site (it is 1). The 1e-6
    jitter is added to ``s n`` now, not to ``n`` before scaling: a change of ``(s - 1)
    1e-6`` in the noise, below what the references resolve.
    """
    import numpyro
    import numpyro.distributions as dist

    lengthscale = numpyro.sample("lengthscale", dist.LogNormal(*hyperprior[0]))
    offset = 0.0
    if located:
        offset = numpyro.sample("offset", dist.Normal(0.0, 10.0))
        loc = jnp.stack([hyperprior[1][0], hyperprior[2][0]])
        cov = jnp.diag(jnp.stack([hyperprior[1][1], hyperprior[2][1]]) ** 2) + LOG_SCALE_SD**2
        log_scaled = numpyro.sample("log_scaled", dist.MultivariateNormal(loc, cov))
        variance = numpyro.deterministic("variance", jnp.exp(log_scaled[0]))
        noise = numpyro.deterministic("noise", jnp.exp(log_scaled[1]))
    else:
        variance = numpyro.sample("variance", dist.LogNormal(*hyperprior[1]))
        noise = numpyro.sample("noise", dist.LogNormal(*hyperprior[2]))
    log_densities = []
    for family in families:
        make = KERNEL_FAMILIES[family]
        gp = nngp.gaussian_process(make(lengthscale, variance), x_train, noise=noise, jitter=1e-6)
        likelihood = dist.MultivariateNormal(offset + gp.loc, scale_tril=gp.scale_tril)
        if len(families) == 1:
            numpyro.sample("y", likelihood, obs=y_train)
            return
        log_densities.append(likelihood.log_prob(y_train))
    numpyro.factor("y", logsumexp(jnp.stack(log_densities)) - jnp.log(len(families)))


class NutsReference(NamedTuple):
    """:func:`nuts_nll`'s answer: the NLL of each test target (an ``(m,)`` array), the bucket
    floors' function, and the run's convergence (largest R-hat over sites, divergences)."""

    point_nll: np.ndarray
    bucket_floors: Callable[..., list[float]]
    max_rhat: float
    divergences: int


def nuts_nll(
    prior,
    x,
    y,
    num_train,
    seed,
    *,
    scale_free=False,
    fixed_range=False,
    warmup=NUTS_WARMUP,
    draws=NUTS_DRAWS,
) -> NutsReference:
    """Posterior predictive NLL of each test target with NUTS over the GP hyperparameters
    (``pi.sample``, in float64), in the data's units.

    ``scale_free``: the target of a scale-free PFN instead (:func:`gp_scale_free_model`, on
    the dataset mapped as the PFN maps it, its active features only; each test point's
    predictive weighs the draws by :func:`log_weights_of_test_inputs`; the NLL is moved back by
    ``log`` of the targets' scale); with ``fixed_range``, :func:`gp_fixed_range_model`.
    Returns the NLLs of the mixture over draws, a function giving, for each of some bar
    distributions, how much NLL that mixture's histogram on its buckets adds (the least the
    histogram can cost; in the buckets' units, which are the standardised ones of a
    scale-free model; not part of NUTS's time), and the run's largest R-hat and number of
    divergences. For a ``"mixed"`` prior the model sums the RBF and Matérn-5/2 likelihoods
    (:func:`gp_hyper_mixed_model`, :func:`gp_scale_free_mixed_model`) and the predictive
    averages the two per draw (:func:`_predictive_components`).

    Float64 throughout: at 50 train points with little noise, float32 Cholesky factors of
    the GP's covariance fail (a 50-point dataset of the mixed prior: 392 of 400 transitions
    diverged on a non-finite log density, R-hat 4.1; none in float64).
    """
    import arviz as az

    import probinfer as pi
    from probinfer.amortize.pfn import standardisation

    mixed = prior.kernel_family == "mixed"
    if prior.kernel_family not in ("rbf", "mixed") or (mixed and fixed_range):
        raise ValueError(
            f"the NUTS reference is an RBF GP or, for a 'mixed' prior, RBF and Matérn-5/2 "
            f"summed (not with fixed_range); not {prior.kernel_family!r} with "
            f"fixed_range={fixed_range}"
        )
    families = FAMILIES if mixed else ("rbf",)
    log_scale = 0.0
    model = gp_hyper_mixed_model if mixed else gp_hyper_model
    with jax.enable_x64(True):
        hyperprior = jnp.asarray([prior.log_lengthscale, prior.log_variance, prior.log_noise])
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        if scale_free:
            scaling = standardisation(jnp.asarray(x), jnp.asarray(y), num_train)
            x, y = np.asarray(scaling.inputs(jnp.asarray(x))), np.asarray(scaling.targets(y))
            log_scale = float(jnp.log(scaling.y_scale))
            # The prior's inactive zero features stay zero: the GP and the weights skip them.
            x = x[:, np.ptp(x[:num_train], axis=0) > 0]
            model = gp_fixed_range_model if fixed_range else gp_scale_free_model
            model = gp_scale_free_mixed_model if mixed else model
        x_train, y_train = x[:num_train], y[:num_train]
        # `pi.sample`'s warnings (ESS, tree depth, non-finite proposals, ...) go to the log.
        idata = pi.sample(
            model, x_train, y_train, hyperprior,
            chains=NUTS_CHAINS, warmup=warmup, draws=draws, seed=seed, progress=False,
        )  # fmt: skip
        posterior = idata.posterior
        max_rhat = float(np.max(az.rhat(idata).to_array().values))  # a NaN stays NaN
        divergences = int(idata.sample_stats["diverging"].values.sum())
        flat = {
            k: jnp.asarray(v.values.reshape(-1)) for k, v in posterior.items() if k != "half_range"
        }
        size = flat["noise"].shape[0]
        if "half_range" in posterior:
            half_range = jnp.asarray(posterior["half_range"].values.reshape(size, -1))
            log_weights = log_weights_of_test_inputs(half_range, jnp.asarray(x[num_train:]))
        else:
            half_range = jnp.ones((size, x.shape[1]))
            log_weights = jnp.zeros((size, x.shape[0] - num_train))
        # A model that is not scale-free has no offset; no model has a scale site: the
        # scale-free ones fold it into `variance` and `noise` (_located_scaled_gp).
        draws_tuple = (
            flat["lengthscale"], flat["variance"], flat["noise"],
            flat.get("offset", jnp.zeros(size)), jnp.ones(size), half_range,
        )  # fmt: skip
        args = (x_train, y_train, x[num_train:], y[num_train:])
        point_nll = -np.asarray(
            _mixture_log_density(*args, draws_tuple, log_weights, families=families), np.float64
        )
    mixture_nll = float(point_nll.mean())
    if not np.isfinite(mixture_nll):  # e.g. no draw's half range admits a test input
        raise FloatingPointError(f"the NUTS reference's NLL is {mixture_nll} (seed {seed})")

    def bucket_floors(*bars: amortize.BarDistribution) -> list[float]:
        with jax.enable_x64(True):  # small bucket masses are CDF differences
            args64 = [jnp.asarray(a, jnp.float64) for a in (*args, log_weights)]
            draws64 = tuple(jnp.asarray(a, jnp.float64) for a in draws_tuple)
            projected = _mixture_bar_log_densities(
                *args64[:4], draws64, args64[4], bars, families=families
            )
            return [-float(jnp.mean(v)) - mixture_nll for v in projected]

    return NutsReference(point_nll + log_scale, bucket_floors, max_rhat, divergences)


def pfn_nll(model, x, y, num_train, rescaling=(1.0, 0.0, 1.0, 0.0), num_features=None) -> float:
    """The PFN's test NLL through the public API (``predict`` then ``log_prob``), on the
    dataset in other units (its first ``num_features`` inputs only: the rest are the
    prior's inactive zero columns); ``+ log(target scale)`` puts it back in the original
    units."""
    x_scale, x_shift, y_scale, y_shift = rescaling
    x = np.asarray(x)[:, : num_features or np.shape(x)[1]] * x_scale + x_shift
    y = y * y_scale + y_shift
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # off-scale data warn; measured here on purpose
        predictive = amortize.predict(model, x[:num_train], y[:num_train], x[num_train:])
        log_prob = predictive.log_prob(y[num_train:])
    return -float(np.mean(np.asarray(log_prob, np.float64))) - np.log(y_scale)


def run_hyper(
    model_dir: Path,
    num_datasets: int,
    features: tuple[int, ...] = HYPER_FEATURES,
    train_sizes: tuple[int, ...] = HYPER_TRAIN_SIZES,
    known_scale: bool = True,
    records: RecordLog | None = None,
) -> dict:
    """The hyperprior PFN against NUTS over the hyperparameters, on the cells of
    ``features`` x ``train_sizes`` that the model covers.

    ``records`` (see :func:`hyper_settings`) keeps each finished dataset's measurements
    as it goes: a run given the log of an interrupted one measures only the datasets it
    lacks. Each record names the commit that measured it; a row lists its records'
    commits.

    Per dataset, the PFN (``predict`` + ``log_prob``, warm) and NUTS alternate, so machine
    load hits both alike; then the PFN on the same dataset in other units (``RESCALINGS``).
    A cell's datasets do not depend on which other cells run. Without ``known_scale`` the
    second NUTS run per dataset of a scale-free model (on the prior itself) is skipped and
    its column left empty: it doubles the NUTS time (a mixed-kernel reference took 16-19 s
    per dataset at 50 train points here, in float64).
    """
    config = json.loads((model_dir / "config.json").read_text())
    prior = amortize.prior_from_spec(config["prior"])
    model = amortize.load(model_dir)
    # The same borders thinned to every fourth: what a 4x coarser histogram would cost.
    coarse = amortize.BarDistribution(np.asarray(model.bar.borders)[::4])
    rows = []
    commit = machine_description()["commit"]
    least = model.fewest_train_points if model.scale_free else 1
    weight_check = []
    if model.scale_free:  # the reference's test-input weights against simulation first
        weight_check = [
            {"band": list(band), "simulated": sim, "weighted": weighted, "se": se}
            for band, sim, weighted, se in check_test_input_weights(num_train=least)
        ]
        print(json.dumps({"test_input_weight_check": weight_check}), flush=True)
    for num_features in HYPER_FEATURES:
        if num_features > model.num_features or num_features not in features:
            continue
        key = jax.random.key(2023 + num_features)
        for num_train in HYPER_TRAIN_SIZES:
            if num_train > model.max_train:
                continue
            # `predict` refuses so few for a scale-free model.
            if num_train < least or num_train not in train_sizes:
                key, _ = jax.random.split(key)  # the same datasets for the other sizes
                continue
            key, key_data = jax.random.split(key)
            x, y = draw_datasets(prior, key_data, num_datasets, num_train + NUM_TEST, num_features)
            x, y = np.asarray(x), np.asarray(y)
            record_keys = [RecordLog.key(num_features, num_train, i) for i in range(num_datasets)]
            logged = records.records if records is not None else {}
            done = {k: logged[k] for k in record_keys if k in logged}
            if done:
                print(f"{num_features} features, {num_train} points: {len(done)} of "
                      f"{num_datasets} datasets from {records.path}", flush=True)  # fmt: skip
            if len(done) < num_datasets:  # compile before the first timed dataset
                nuts_nll(prior, x[0], y[0], num_train, 0, scale_free=model.scale_free)
                if model.scale_free and known_scale:
                    nuts_nll(prior, x[0], y[0], num_train, 0)
                pfn_nll(model, x[0], y[0], num_train)
            cell = []
            for i, record_key in enumerate(record_keys):
                if record_key in done:
                    cell.append(done[record_key])
                    continue
                start = time.perf_counter()
                pfn_value = pfn_nll(model, x[i], y[i], num_train)
                pfn_time = time.perf_counter() - start
                start = time.perf_counter()
                reference, retried = checked_reference(
                    prior, x[i], y[i], num_train, i + 1, scale_free=model.scale_free
                )
                nuts_time = time.perf_counter() - start
                max_rhat, divergences = reference.max_rhat, reference.divergences
                nuts = float(reference.point_nll.mean())
                # What knowing the prior's location and scale is worth (the same when the
                # model is not scale-free), checked as the other.
                known = nuts if not model.scale_free else None
                if model.scale_free and known_scale:
                    known_reference, known_retried = checked_reference(
                        prior, x[i], y[i], num_train, i + 1
                    )
                    known = float(known_reference.point_nll.mean())
                    max_rhat = float(np.max([max_rhat, known_reference.max_rhat]))  # NaN stays
                    divergences += known_reference.divergences
                    retried = retried or known_retried
                floor, coarse_floor = reference.bucket_floors(model.bar, coarse)
                cell.append(
                    {
                        "pfn": pfn_value, "nuts": nuts, "known": known,
                        "pfn_time": pfn_time, "nuts_time": nuts_time,
                        "floor": floor, "coarse_floor": coarse_floor,
                        "rescaled": {
                            name: pfn_nll(model, x[i], y[i], num_train, rescaling, num_features)
                            - nuts
                            for name, rescaling in RESCALINGS.items()
                        },
                        "max_rhat": max_rhat, "divergences": divergences, "retried": retried,
                        "commit": commit,
                    }
                )  # fmt: skip
                if records is not None:
                    records.add(record_key, cell[-1])
            rows.append(_hyper_row(num_features, num_train, cell, coarse.num_buckets))
            print(json.dumps(rows[-1]), flush=True)
    if not rows:
        raise SystemExit(
            f"no cell of --features {features} x --train-sizes {train_sizes} is one the model "
            f"covers (up to {model.num_features} features, {least}-{model.max_train} points)"
        )
    return {
        **_result(model_dir, config, num_datasets, rows),
        "model_sha256": model_digest(model_dir),
        "weight_check": weight_check,
    }


def model_digest(model_dir: Path) -> str:
    """A short digest of a saved model's files (its configuration and parameters)."""
    digest = hashlib.sha256()
    for name in ("config.json", "model.eqx"):
        digest.update((model_dir / name).read_bytes())
    return digest.hexdigest()[:16]


def hyper_settings(model_dir: Path, num_datasets: int, known_scale: bool) -> dict:
    """What :func:`run_hyper`'s per-dataset records depend on, for its record log: the
    model (its files' digest, wherever it lies), the datasets, the references (their
    version, settings and libraries), the test points and the other units measured."""
    import probinfer

    machine = machine_description()
    return {
        "version": HYPER_RECORD_VERSION,
        "model_sha256": model_digest(model_dir),
        "num_datasets": num_datasets,
        "num_test": NUM_TEST,
        "known_scale": known_scale,
        "nuts": {"chains": NUTS_CHAINS, "warmup": NUTS_WARMUP, "draws": NUTS_DRAWS,
                 "rhat_limit": RHAT_LIMIT},
        "rescalings": RESCALINGS,
        "jax": jax.__version__,
        "probinfer": probinfer.__version__,
        # The records' times: the medians of one table come from one machine.
        "machine": {name: machine[name] for name in ("cpu", "cores", "backend")},
    }  # fmt: skip


def check_addable(saved: dict, model_dir: Path, num_datasets: int) -> None:
    """Refuse ``--add`` to a saved :func:`run_hyper` result whose rows would not make one
    table with this run's: another model, number of datasets, reference (rows saved before
    the float64 reference and its convergence checks) or machine (timings)."""
    cpu = machine_description()["cpu"]
    # Results saved before they carried the model's digest: its path and training.
    config = json.loads((model_dir / "config.json").read_text())
    same_training = "the same" if saved["training"] == config["training"] else "another"
    differences = {
        "model": (saved.get("model_sha256"), model_digest(model_dir))
        if "model_sha256" in saved
        else (saved["model"], _display_path(model_dir)),
        "training configuration": ("the same", same_training),
        "prior": (saved["prior"], config["prior"]),
        "datasets per cell": (saved["num_datasets"], num_datasets),
        "reference": ("checked" if all("nuts_max_rhat" in r for r in saved["rows"]) else
                      "unchecked (float32, no R-hat)", "checked"),
        "machine": (saved["machine"]["cpu"], cpu),
    }  # fmt: skip
    differ = [f"{name}: {old!r} saved, {new!r} now" for name, (old, new) in differences.items()
              if old != new]  # fmt: skip
    if differ:
        raise SystemExit(
            f"--add: the saved result differs from this run ({'; '.join(differ)}); its rows "
            "and this run's would not be one table: write to another --out"
        )


def _with_saved_rows(result: dict, saved: dict) -> dict:
    """``result`` with the rows of ``saved`` (checked by :func:`check_addable`) for the
    cells it lacks; each kept row names the commit that measured it, and the rows are
    ordered by features, then train points. The saved note is kept."""
    measured = {(r["num_features"], r["num_train"]) for r in result["rows"]}
    kept = [
        {**r, "commits": _row_commits(r, saved)}
        for r in saved["rows"]
        if (r["num_features"], r["num_train"]) not in measured
    ]
    rows = sorted([*result["rows"], *kept], key=lambda r: (r["num_features"], r["num_train"]))
    return {**result, "rows": rows, **({"note": saved["note"]} if saved.get("note") else {})}


def checked_reference(
    prior, x, y, num_train, seed, *, warmup=NUTS_WARMUP, draws=NUTS_DRAWS, **settings
) -> tuple[NutsReference, bool]:
    """:func:`nuts_nll`, run again with twice the warm-up and four times the draws (1000 +
    2000 from the default 500 + 500) when its R-hat is above ``RHAT_LIMIT`` (or NaN); and
    whether it was. The caller decides what an answer still above the limit is worth."""
    reference = nuts_nll(prior, x, y, num_train, seed, warmup=warmup, draws=draws, **settings)
    retried = not converged(reference.max_rhat)
    if retried:
        reference = nuts_nll(
            prior, x, y, num_train, seed, warmup=2 * warmup, draws=4 * draws, **settings
        )
    return reference, retried


def converged(max_rhat: float) -> bool:
    """Whether a NUTS reference's largest R-hat is within ``RHAT_LIMIT`` (a NaN is not)."""
    return max_rhat <= RHAT_LIMIT


def _hyper_row(num_features: int, num_train: int, records: list[dict], coarse_buckets: int) -> dict:
    """One cell of :func:`run_hyper` from its per-dataset records. Datasets whose NUTS
    reference did not converge (R-hat above ``RHAT_LIMIT`` after a longer retry) are
    counted and left out of every mean: their reference is not the answer. A cell where
    none converged keeps its times and checks; its accuracy fields are None."""
    kept = [r for r in records if converged(r["max_rhat"])]
    pfn_time = np.median([r["pfn_time"] for r in records])
    nuts_time = np.median([r["nuts_time"] for r in records])
    row = {
        "num_features": num_features,
        "num_train": num_train,
        **_accuracy_fields(kept),
        "coarse_buckets": coarse_buckets,
        "pfn_seconds_per_dataset": float(pfn_time),
        "nuts_seconds_per_dataset": float(nuts_time),
        "speedup": float(nuts_time / pfn_time),
        "nuts_unconverged": len(records) - len(kept),
        "nuts_retried": sum(r["retried"] for r in records),
        "nuts_max_rhat": float(np.max([r["max_rhat"] for r in records])),  # NaN if any is
        "nuts_divergences": sum(r["divergences"] for r in records),
        "nuts_divergent_datasets": sum(r["divergences"] > 0 for r in records),
    }
    # Records made before they named their commit have none (the result's machine does).
    commits = sorted({r["commit"] for r in records if "commit" in r})
    return {**row, "commits": commits} if commits else row


def _accuracy_fields(kept: list[dict]) -> dict:
    """A cell's NLLs, gaps and bucket floors, means over the datasets ``kept`` (each with
    its standard error); every field None when none is kept. Without a known-scale run
    (``known_scale`` off) its three fields are None too."""
    names = (
        "pfn_nll", "nuts_nll", "gap", "gap_se", "known_scale_nuts_nll", "known_scale_gap",
        "known_scale_gap_se", "rescaled_gaps", "bucket_floor", "bucket_floor_se",
        "coarse_floor", "coarse_floor_se",
    )  # fmt: skip
    if not kept:
        return dict.fromkeys(names)

    def column(name: str) -> np.ndarray:
        return np.array([r[name] for r in kept], np.float64)

    pfn, nuts = column("pfn"), column("nuts")
    gap = pfn - nuts
    known = column("known") if kept[0]["known"] is not None else None
    return {
        "pfn_nll": float(pfn.mean()),
        "nuts_nll": float(nuts.mean()),
        "gap": float(gap.mean()),
        "gap_se": _standard_error(gap),
        "known_scale_nuts_nll": float(known.mean()) if known is not None else None,
        "known_scale_gap": float((pfn - known).mean()) if known is not None else None,
        "known_scale_gap_se": _standard_error(pfn - known) if known is not None else None,
        "rescaled_gaps": {
            name: float(np.mean([r["rescaled"][name] for r in kept])) for name in RESCALINGS
        },
        "bucket_floor": float(column("floor").mean()),
        "bucket_floor_se": _standard_error(column("floor")),
        "coarse_floor": float(column("coarse_floor").mean()),
        "coarse_floor_se": _standard_error(column("coarse_floor")),
    }


def compare_references(model_dir: Path, num_features: int, num_train: int, num_datasets: int):
    """A scale-free PFN against both references on the same prior datasets: the exact one
    (:func:`gp_scale_free_model`) and the one with every half range 1
    (:func:`gp_fixed_range_model`). The exact predictive is the best any can be on prior
    data (the log score is proper), so it must not lose to the other on average; the PFN,
    trained on such data, must not beat it. Returns the mean paired differences (nats
    per test point) with their standard errors, over the datasets where both references
    converged (:func:`checked_reference`; the others counted)."""
    config = json.loads((model_dir / "config.json").read_text())
    prior = amortize.prior_from_spec(config["prior"])
    model = amortize.load(model_dir)
    x, y = draw_datasets(
        prior, jax.random.key(99 + num_features), num_datasets, num_train + NUM_TEST,
        num_features,
    )  # fmt: skip
    x, y = np.asarray(x), np.asarray(y)
    values, max_rhat, retried = [], [], 0
    for i in range(num_datasets):
        exact, exact_retried = checked_reference(prior, x[i], y[i], num_train, i + 1,
                                                  scale_free=True)  # fmt: skip
        fixed, fixed_retried = checked_reference(prior, x[i], y[i], num_train, i + 1,
                                                  scale_free=True, fixed_range=True)  # fmt: skip
        retried += exact_retried + fixed_retried
        max_rhat += [exact.max_rhat, fixed.max_rhat]
        # Else neither is the answer: left out.
        if converged(exact.max_rhat) and converged(fixed.max_rhat):
            values.append([pfn_nll(model, x[i], y[i], num_train), exact.point_nll.mean(),
                           fixed.point_nll.mean()])  # fmt: skip
    if len(values) < 2:
        raise SystemExit(
            f"only {len(values)} of {num_datasets} datasets' references converged (largest "
            f"R-hat {np.max(max_rhat):.3f} after a longer rerun); a mean and its standard "
            "error need at least 2: ask for more datasets"
        )
    pfn, exact, fixed = np.array(values).T
    pairs = {"pfn - exact": pfn - exact, "pfn - fixed range": pfn - fixed,
             "exact - fixed range": exact - fixed}  # fmt: skip
    return {
        "model": _display_path(model_dir),
        "num_features": num_features,
        "num_train": num_train,
        "num_datasets": num_datasets,
        **{name: [float(v.mean()), _standard_error(v)] for name, v in pairs.items()},
        # Each reference rerun longer above RHAT_LIMIT; a dataset with one still above is
        # left out of the means.
        "nuts_max_rhat": float(np.max(max_rhat)),
        "nuts_retried": retried,
        "nuts_unconverged": num_datasets - len(values),
    }


def markdown_hyper(result: dict) -> str:
    scale_free = result["training"].get("scale_free", False)
    if "weight_check" in result:
        reference = (
            "`gp_scale_free_model` on the standardised data, the GP with an unknown offset "
            "and scale, flat priors on the offset and the log scale, and each input "
            "feature's train half range `h ~ Beta(n - 1, 2)` that the map divides out, the "
            "draws weighed per test point by how likely its mapped input is given `h`, a "
            "weighting checked against simulation before the run"
        )
    else:  # a result saved before the half ranges were modelled
        reference = (
            "the GP with an unknown offset and scale, flat priors on the offset and the log "
            "scale, on the standardised data, an approximate reference: the exact target "
            "also averages over the train inputs' ranges that the map divides out"
        )
    # Rows made before the float64 reference and its checks have no convergence fields.
    checked = all("nuts_max_rhat" in r for r in result["rows"])
    # A commit column when any row was measured (in part) at another commit than the
    # result's machine line names: resumed or --add runs.
    mixed = any(_row_commits(r, result) != [result["machine"]["commit"]] for r in result["rows"])
    lines = [
        "# PFN (GP with hyperpriors) against NUTS over the hyperparameters",
        "",
        f"Machine: `{json.dumps(result['machine'])}`",
        "",
        *([f"Note: {result['note']}", ""] if result.get("note") else []),
        f"Model `{result['model']}` ({result['training']['num_buckets']} buckets, "
        f"{'scale-free' if scale_free else 'not scale-free'}); prior "
        f"`{json.dumps(result['prior'])}`; {result['num_datasets']} held-out datasets per row, "
        f"{NUM_TEST} test points; NUTS: `pi.sample`, {NUTS_CHAINS} chains x {NUTS_WARMUP} "
        f"warm-up + {NUTS_DRAWS} "
        f"draws{' in float64' if checked else ''}, predictive = mixture over draws, on the "
        "model the PFN approximates (for a "
        f"scale-free PFN: {reference}; "
        "*known scale*: NUTS on the prior itself, what knowing the "
        "offset and scale is worth). PFN: `amortize.predict` then `log_prob`, "
        "timed together through the public API, alternating with NUTS dataset by dataset. "
        "*Bucket floor*: the NLL the PFN's histogram would add if its bucket masses were "
        "exactly the NUTS predictive's (its least possible gap; for a scale-free model, in "
        "standardised units the buckets move with the data, so this is indicative only); "
        "*coarse floor*: the same with every fourth border only "
        f"({result['rows'][0]['coarse_buckets']} buckets).",
        "",
        *(
            [
                "*NUTS checks*: the largest R-hat over the cell's references; a reference "
                f"with R-hat above {RHAT_LIMIT} is rerun with 1000 warm-up + 2000 draws "
                "(*retried*) and, if still above, its dataset is left out of every mean of the "
                "row (*left out*: the row's means are over the other datasets); divergent "
                "transitions in all, and the datasets that had any.",
                "",
            ]
            if checked
            else []
        ),
        *(
            [
                "*Commit*: the rows were not all measured at the commit of the machine line "
                "above (a resumed run, or rows kept by `--add`); each names its own.",
                "",
            ]
            if mixed
            else []
        ),
        "| features | train points | NUTS | PFN | PFN - NUTS (± s.e.) | PFN - NUTS, known "
        "scale (± s.e.) | bucket floor | coarse floor | NUTS s/dataset | PFN s/dataset "
        "| speed-up | NUTS checks |" + (" commit |" if mixed else ""),
        "|---|---|---|---|---|---|---|---|---|---|---|---|" + ("---|" if mixed else ""),
    ]
    for r in result["rows"]:
        if r["gap"] is None:  # no reference in the cell converged
            accuracy = "no converged reference | " * 6
        else:
            known = (
                "skipped"  # --skip-known-scale
                if r["known_scale_gap"] is None
                else f"{r['known_scale_gap']:+.4f} ± {r['known_scale_gap_se']:.4f}"
            )
            accuracy = (
                f"{r['nuts_nll']:.4f} | {r['pfn_nll']:.4f} | "
                f"{r['gap']:+.4f} ± {r['gap_se']:.4f} | {known} | "
                f"{r['bucket_floor']:+.4f} ± {r['bucket_floor_se']:.4f} | "
                f"{r['coarse_floor']:+.4f} ± {r['coarse_floor_se']:.4f} | "
            )
        lines.append(
            f"| {r['num_features']} | {r['num_train']} | {accuracy}"
            f"{r['nuts_seconds_per_dataset']:.2f} | "
            f"{r['pfn_seconds_per_dataset'] * 1e3:.2f} ms | {r['speedup']:.0f}x | "
            f"{_nuts_checks(r)} |" + (f" {', '.join(_row_commits(r, result))} |" if mixed else "")
        )
    least = SCALE_FREE_MIN_TRAIN if scale_free else 1
    measured = [r for r in result["rows"] if r["gap"] is not None]
    gaps = np.array([r["gap"] for r in measured if r["num_train"] >= least])
    fewer = any(r["num_train"] < least for r in measured)
    unmeasured = len(result["rows"]) - len(measured)
    if not gaps.size:
        summary = "No cell has a converged reference"
    else:
        summary = f"Mean gap {gaps.mean():+.4f} nats per test point; largest {gaps.max():+.4f}"
    if unmeasured and gaps.size:
        cells = "cell" if unmeasured == 1 else "cells"
        summary += f" ({unmeasured} {cells} without a converged reference left out)"
    lines += [
        "",
        summary
        + (
            f" (rows with at least {least} train points: `predict` refuses fewer for a "
            "scale-free model; rows with fewer were measured before that floor existed and "
            "show why it does)."
            if scale_free and fewer
            else "."
        ),
        "",
        *_weight_check_lines(result.get("weight_check", [])),
        "## The same datasets in other units",
        "",
        "PFN - NUTS in nats per test point, the NUTS NLL moved by the change of units "
        "(`+ log(target scale)`). `y x 0.01`: targets times 0.01; `x x 50 + 3`: inputs "
        "times 50 plus 3.",
        "",
        "| features | train points | as drawn | " + " | ".join(RESCALINGS) + " |",
        "|---|---|---|" + "---|" * len(RESCALINGS),
    ]
    for r in measured:
        cells = " | ".join(f"{r['rescaled_gaps'][name]:+.4f}" for name in RESCALINGS)
        lines.append(f"| {r['num_features']} | {r['num_train']} | {r['gap']:+.4f} | {cells} |")
    return "\n".join(lines) + "\n"


def _row_commits(row: dict, result: dict) -> list[str]:
    """The commits that measured a row (a row saved before rows named theirs: the
    result's)."""
    return row.get("commits", [result["machine"]["commit"]])


def _nuts_checks(row: dict) -> str:
    """A cell's NUTS convergence in a few words (a row made before the checks: not checked)."""
    if "nuts_max_rhat" not in row:
        return "not checked"
    rhat = row["nuts_max_rhat"]
    worst = "R-hat NaN in some run" if np.isnan(rhat) else f"R-hat <= {rhat:.3f}"
    return (
        f"{worst}; {row['nuts_retried']} retried, "
        f"{row['nuts_unconverged']} left out; {row['nuts_divergences']} divergences "
        f"in {row['nuts_divergent_datasets']}"
    )


def _weight_check_lines(rows: list[dict]) -> list[str]:
    """The reference's test-input weights against simulation, as markdown lines."""
    if not rows:
        return []
    lines = [
        "## The reference's test-input weights against simulation",
        "",
        "`E[h | x']` per band of mapped test inputs `|x'|`: simulated (2,000,000 prior "
        "datasets of the smallest train size) and from the weights (`check_test_input_"
        "weights`); the run stops if a band is off by more than 5 s.e.",
        "",
        "| band of abs(x') | simulated (± s.e.) | from the weights |",
        "|---|---|---|",
    ]
    for row in rows:
        low, high = row["band"]
        lines.append(
            f"| [{low}, {high}) | {row['simulated']:.4f} ± {row['se']:.4f} | "
            f"{row['weighted']:.4f} |"
        )
    return [*lines, ""]


def _result(model_dir: Path, config: dict, num_datasets: int, rows: list[dict]) -> dict:
    """The fields every PFN benchmark result carries."""
    return {
        "machine": machine_description(),
        "model": _display_path(model_dir),
        "prior": config["prior"],
        "training": config["training"],
        "num_datasets": num_datasets,
        "rows": rows,
    }


def _display_path(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def run(model_dir: Path, num_datasets: int) -> dict:
    config = json.loads((model_dir / "config.json").read_text())
    prior = amortize.prior_from_spec(config["prior"])
    if not hasattr(prior, "exact_process"):
        raise SystemExit(
            f"{model_dir}'s prior ({config['prior'].get('type')}) has no closed-form "
            "predictive to compare with (a GP-hyperprior model: use --hyper-model; a "
            "classifier: benchmarks/pfn_classifier.py)."
        )
    model = amortize.load(model_dir)
    rows = []
    key = jax.random.key(12345)  # held-out: training used keys derived from its own seed
    for num_features in range(1, prior.num_features + 1):
        for num_train in TRAIN_SIZES:
            if num_train > model.max_train:
                continue
            key, key_data = jax.random.split(key)
            x, y = draw_datasets(prior, key_data, num_datasets, num_train + NUM_TEST, num_features)
            x_np, y_np = np.asarray(x), np.asarray(y)

            def pfn_batch(x=x, y=y, num_train=num_train):
                if model.scale_free:  # densities in the data's units: the map back
                    log_prob = jax.vmap(lambda xi, yi: model.log_prob(xi, yi, num_train))(x, y)
                    return log_prob[:, num_train:]
                logits = jax.vmap(model)(x[:, :num_train], y[:, :num_train], x[:, num_train:])
                return model.bar.log_prob(logits, y[:, num_train:])

            jax.block_until_ready(jax.jit(pfn_batch)())
            start = time.perf_counter()
            log_prob = jax.block_until_ready(jax.jit(pfn_batch)())
            pfn_seconds = (time.perf_counter() - start) / num_datasets
            pfn = -np.asarray(log_prob, np.float64).mean(axis=1)
            exact_nll(prior, x_np[:1], y_np[:1], num_train)  # compile, outside the timing
            start = time.perf_counter()
            exact = exact_nll(prior, x_np, y_np, num_train)
            exact_seconds = (time.perf_counter() - start) / num_datasets
            mle = mle_nll(x_np, y_np, num_train)
            gap = pfn - exact
            rows.append(
                {
                    "num_features": num_features,
                    "num_train": num_train,
                    "pfn_nll": float(pfn.mean()),
                    "exact_nll": float(exact.mean()),
                    "mle_nll": float(np.mean(mle)),
                    "gap": float(gap.mean()),
                    "gap_se": _standard_error(gap),
                    "pfn_seconds_per_dataset": pfn_seconds,
                    "exact_seconds_per_dataset": exact_seconds,
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    all_gaps = np.array([r["gap"] for r in rows])
    result = _result(model_dir, config, num_datasets, rows)
    result.update(mean_gap=float(all_gaps.mean()), max_gap=float(all_gaps.max()))
    return result


def markdown(result: dict) -> str:
    lines = [
        "# PFN against the exact posterior predictive",
        "",
        f"Machine: `{json.dumps(result['machine'])}`",
        "",
        f"Model `{result['model']}`; prior `{json.dumps(result['prior'])}`; "
        f"{result['num_datasets']} held-out datasets per row, {NUM_TEST} test points each.",
        "",
        "| features | train points | exact | PFN | MLE-II RBF GP | PFN - exact (± s.e.) |",
        "|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['num_features']} | {r['num_train']} | {r['exact_nll']:.4f} | "
            f"{r['pfn_nll']:.4f} | {r['mle_nll']:.4f} | {r['gap']:+.4f} ± {r['gap_se']:.4f} |"
        )
    lines += [
        "",
        f"Mean gap {result['mean_gap']:+.4f} nats per test point; "
        f"largest {result['max_gap']:+.4f}.",
        "",
    ]
    return "\n".join(lines)


def write_result(out: Path, stem: str, result: dict, render, draw) -> None:
    """``out/stem.{json,md,png}``: the result, its table (``render(result)``) and its
    figure (``draw(result, path)``)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(result, indent=2))
    (out / f"{stem}.md").write_text(render(result))
    draw(result, out / f"{stem}.png")


def nll_panels(result: dict, series: tuple[tuple[str, str], ...], *, log_x: bool = False) -> tuple:
    """One panel of test NLL against train points per input dimension, a line per
    ``(row key, label)`` of ``series``, ticks at the train-set sizes (on a log axis if
    ``log_x``); returns the figure and its axes by dimension."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    features = sorted({r["num_features"] for r in result["rows"]})
    fig, axes = plt.subplots(1, len(features), figsize=(4.5 * len(features), 3.8), squeeze=False)
    panels = {}
    for ax, d in zip(axes[0], features, strict=True):
        rows = [r for r in result["rows"] if r["num_features"] == d]
        n = [r["num_train"] for r in rows]
        for key, label in series:
            ax.plot(n, [r[key] for r in rows], marker="o", label=label)
        if log_x:
            ax.set_xscale("log")
            ax.minorticks_off()
        ax.set_xticks(n, [str(v) for v in n])
        ax.set_xlabel("train points")
        ax.set_ylabel("test NLL per point (nats)")
        ax.set_title(f"{d}-d inputs")
        panels[d] = (ax, rows)
    return fig, panels


def plot(result: dict, path: Path) -> None:
    series = (("exact_nll", "exact"), ("pfn_nll", "PFN"), ("mle_nll", "MLE-II"))
    fig, panels = nll_panels(result, series)
    for ax, rows in panels.values():
        # MLE-II overfits two or five points badly; keep the PFN and exact curves readable.
        values = [r[k] for r in rows for k in ("exact_nll", "pfn_nll")]
        ax.set_ylim(min(values) - 0.2, max(values) + 0.6)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def plot_training_curve(curve: dict, path: Path, window: int = 100) -> None:
    """The training loss per step (faint) and its running mean over ``window`` steps, from
    the ``training_curve.json`` that ``probinfer pfn train`` writes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    loss = np.asarray(curve["loss"], np.float64)
    if not np.any(np.isfinite(loss)):
        raise ValueError("the training curve has no finite loss to plot")
    steps = curve["first_step"] + np.arange(loss.size)
    window = min(window, loss.size)
    smooth = np.convolve(loss, np.ones(window) / window, mode="valid")
    fig, ax = plt.subplots(figsize=(6, 3.8))
    ax.plot(steps, loss, color="C0", alpha=0.25, linewidth=0.5, label="per step")
    ax.plot(steps[window - 1 :], smooth, color="C0", label=f"mean of {window} steps")
    # Clip the first steps' large losses out of the view, so the late ones can be read.
    late = loss[loss.size // 20 :]
    finite, late = loss[np.isfinite(loss)], late[np.isfinite(late)]
    top = np.percentile(late if late.size else finite, 99.5)
    ax.set_ylim(np.percentile(finite, 0.5) - 0.1, top + 0.1)
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("training loss (nats per test point)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def copy_training_curve(given: str | None, model_dir: Path, out: Path) -> None:
    """Copy the training curve (``given``, else the model folder's, if any) to ``out`` as
    ``training_curve.json`` and plot it to ``training_curve.png``."""
    curve_path = Path(given or model_dir / amortize.CURVE_FILE)
    if curve_path.exists():
        curve = json.loads(curve_path.read_text())
        (out / "training_curve.json").write_text(json.dumps(curve))
        plot_training_curve(curve, out / "training_curve.png")


HELD_OUT_FEATURES = (1, 2)
HELD_OUT_DATASETS = 20  # per feature count
HELD_OUT_TRAIN = 10


def held_out_sets(path: Path, names: list[str] | None = None) -> dict:
    """Fixed held-out datasets per shipped PFN with the exact predictive's NLL on each, for
    the fast suite's regression test (``tests/test_pfn.py``).

    ``names`` (default: every shipped PFN) are (re)written; the file's other entries are
    kept as they are.

    The exact answer: the GP's (or the Student-t process's) closed-form predictive for a
    prior with fixed hyperparameters; NUTS over the
    hyperparameters (4 chains x 1,000 warm-up + 2,000 draws, mixture over draws) for a
    hyperprior; for the classifier, NUTS on the latent process
    (:func:`benchmarks.pfn_classifier.mcmc_probabilities`). The file also records each
    model's own NLLs when it was written, and the mean gap with its standard error, which
    the test holds the model to.
    """
    shipped = [entry.name for entry in amortize.PRETRAINED_MODELS if entry.kind == "pfn"]
    unknown = sorted(set(names or ()) - set(shipped))
    if unknown:
        raise ValueError(f"no shipped PFN is called {unknown}; the shipped ones are {shipped}")
    result = json.loads(path.read_text()) if path.exists() and names else {}
    for entry in amortize.PRETRAINED_MODELS:
        if entry.kind != "pfn" or (names and entry.name not in names):
            continue
        config = json.loads((entry.folder / "config.json").read_text())
        prior = amortize.prior_from_spec(config["prior"])
        model = amortize.load(entry.folder)
        groups = []
        for num_features in HELD_OUT_FEATURES:
            key = jax.random.key(4242 + num_features)
            x, y = draw_datasets(prior, key, HELD_OUT_DATASETS, HELD_OUT_TRAIN + NUM_TEST,
                                 num_features)  # fmt: skip
            x, y = np.asarray(x, np.float64)[..., :num_features], np.asarray(y, np.float64)
            padded = np.pad(x, ((0, 0), (0, 0), (0, prior.num_features - num_features)))
            if isinstance(prior, amortize.GPClassificationPrior):
                # NUTS on the latent process per dataset (its kernel sees the padded inputs).
                from benchmarks.pfn_classifier import class_nll, mcmc_probabilities

                labels, n = np.rint(y).astype(int), HELD_OUT_TRAIN
                reference = []
                for index, (xi, li) in enumerate(zip(padded, labels, strict=True)):
                    probabilities, mixed = mcmc_probabilities(
                        prior, xi[:n], li[:n], xi[n:], key=jax.random.fold_in(key, index)
                    )
                    if not mixed:
                        raise SystemExit(f"{entry.name}: the MCMC reference did not mix")
                    reference.append(class_nll(probabilities, li[n:]))
            elif isinstance(prior, amortize.GPHyperPrior):
                # A long NUTS run per dataset, for the model's own target, longer still
                # where its R-hat is above the limit; never a reference that has not mixed.
                reference = []
                for index, (xi, yi) in enumerate(zip(x, y, strict=True)):
                    nuts, _ = checked_reference(prior, xi, yi, HELD_OUT_TRAIN, 0,
                                                 scale_free=model.scale_free, warmup=1000,
                                                 draws=2000)  # fmt: skip
                    if not converged(nuts.max_rhat):
                        raise SystemExit(
                            f"{entry.name}, {num_features} features, dataset {index}: the "
                            f"NUTS reference did not mix (R-hat {nuts.max_rhat:.3f} after "
                            "2,000 warm-up + 8,000 draws); the held-out sets need every "
                            "dataset's: look at this dataset's posterior, or change "
                            "HELD_OUT_DATASETS' seed"
                        )
                    reference.append(float(nuts.point_nll.mean()))
            else:
                reference = exact_nll(prior, padded, y, HELD_OUT_TRAIN).tolist()
            pfn = [pfn_nll(model, xi, yi, HELD_OUT_TRAIN) for xi, yi in zip(x, y, strict=True)]
            groups.append({"num_features": num_features, "x": x.tolist(), "y": y.tolist(),
                           "reference_nll": reference, "pfn_nll": pfn})  # fmt: skip
        gaps = np.concatenate([np.subtract(g["pfn_nll"], g["reference_nll"]) for g in groups])
        result[entry.name] = {
            "num_train": HELD_OUT_TRAIN,
            "groups": groups,
            "gap_mean": float(gaps.mean()),
            "gap_se": _standard_error(gaps),
        }
        print(entry.name, result[entry.name]["gap_mean"], result[entry.name]["gap_se"])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(amortize.PRETRAINED_GP))
    parser.add_argument("--datasets", type=int, default=200)
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument(
        "--hyper-model", help="a GP-hyperprior PFN: compare it with NUTS (writes pfn_hyper.*)"
    )
    parser.add_argument(
        "--features", nargs="+", type=int, default=list(HYPER_FEATURES),
        choices=HYPER_FEATURES, metavar="D",
        help="with --hyper-model: only these numbers of input features",
    )  # fmt: skip
    parser.add_argument(
        "--train-sizes", nargs="+", type=int, default=list(HYPER_TRAIN_SIZES),
        choices=HYPER_TRAIN_SIZES, metavar="N",
        help="with --hyper-model: only these numbers of train points",
    )  # fmt: skip
    parser.add_argument(
        "--skip-known-scale", action="store_true",
        help="with --hyper-model (scale-free): no second NUTS run on the prior itself",
    )  # fmt: skip
    parser.add_argument(
        "--fresh", action="store_true",
        help="with --hyper-model: start again, discarding the record log "
        "(pfn_hyper_records.jsonl in --out) that an interrupted run resumes from",
    )  # fmt: skip
    parser.add_argument(
        "--add", action="store_true",
        help="with --hyper-model: keep the saved pfn_hyper.json's rows of the cells this "
        "run does not measure (same model and --datasets), each naming its commit",
    )  # fmt: skip
    parser.add_argument(
        "--held-out", help="write the fast suite's held-out sets to this file and stop"
    )
    parser.add_argument(
        "--held-out-models", nargs="+", metavar="NAME",
        help="with --held-out: (re)write only these shipped models' sets, keep the rest",
    )  # fmt: skip
    parser.add_argument(
        "--training-curve",
        help="the model's training_curve.json (default: the one in --model's folder, if any)",
    )
    parser.add_argument(
        "--markdown-only", action="store_true",
        help="with --hyper-model: rewrite pfn_hyper.md from the saved pfn_hyper.json",
    )  # fmt: skip
    parser.add_argument(
        "--compare-references", nargs=3, type=int, metavar=("FEATURES", "TRAIN", "DATASETS"),
        help="with --hyper-model (scale-free): the PFN against the exact and the fixed-range "
        "references on DATASETS prior datasets; writes reference_comparison.json",
    )  # fmt: skip
    args = parser.parse_args()
    if args.training_curve and not Path(args.training_curve).is_file():
        raise SystemExit(f"--training-curve {args.training_curve}: no such file")
    if args.compare_references:
        result = compare_references(Path(args.hyper_model), *args.compare_references)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "reference_comparison.json").write_text(json.dumps(result, indent=2))
        print(json.dumps(result, indent=2))
        return
    if args.held_out:
        held_out_sets(Path(args.held_out), args.held_out_models)
        return
    if args.hyper_model:
        out = Path(args.out)
        if args.markdown_only:
            result = json.loads((out / "pfn_hyper.json").read_text())
            (out / "pfn_hyper.md").write_text(markdown_hyper(result))
            return
        model_dir, known_scale = Path(args.hyper_model), not args.skip_known_scale
        # The log first: its lock keeps another run from rewriting the saved table too.
        records = RecordLog(
            out / "pfn_hyper_records.jsonl",
            hyper_settings(model_dir, args.datasets, known_scale),
            fresh=args.fresh,
        )
        saved_path, saved = out / "pfn_hyper.json", None
        if args.add:  # checked before hours of work, not after
            if not saved_path.is_file():
                raise SystemExit(f"--add: no saved result {saved_path} to add to")
            saved = json.loads(saved_path.read_text())
            check_addable(saved, model_dir, args.datasets)
        result = run_hyper(
            model_dir, args.datasets, tuple(args.features), tuple(args.train_sizes),
            known_scale=known_scale, records=records,
        )  # fmt: skip
        if saved is not None:
            result = _with_saved_rows(result, saved)
        for name, text in (("pfn_hyper.json", json.dumps(result, indent=2)),
                           ("pfn_hyper.md", markdown_hyper(result))):  # fmt: skip
            atomic_write(out / name, lambda file, text=text: file.write(text.encode()))
        print(markdown_hyper(result))
        return
    result = run(Path(args.model), args.datasets)
    write_result(Path(args.out), "pfn", result, markdown, plot)
    copy_training_curve(args.training_curve, Path(args.model), Path(args.out))
    print(markdown(result))


if __name__ == "__main__":
    main()
