"""`sample` and `evidence`: the one-call doors, thin glue over the model front ends, the
blocks and the driver."""

from __future__ import annotations

import inspect
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np

from probinfer import mcmc, ns
from probinfer._idata import model_dims, model_groups
from probinfer._validation import check_count, is_real_dtype
from probinfer.diagnostics import SamplingWarning, check_run
from probinfer.driver import MAX_STEPS, DriveStatus
from probinfer.mcmc._algorithm import check_step_size
from probinfer.mcmc._nuts import DEFAULT_MAX_NUM_DOUBLINGS
from probinfer.mcmc._window_adaptation import check_target_acceptance
from probinfer.model import LogDensity, UnitCube, prepare
from probinfer.run import (
    CHAIN_METHODS,
    INTERNAL_STATS,
    SamplerConfig,
    run_chains,
    thinned_ebfmi,
)
from probinfer.run_ns import MOVE_ALGORITHMS as NS_MOVE_ALGORITHMS
from probinfer.run_ns import NSConfig, flat_dim, resample_equal, run_ns
from probinfer.run_ns import check_settings as check_ns_settings
from probinfer.run_smc import MOVE_ALGORITHMS, SMCConfig, check_settings, run_smc

SAMPLER_SETTINGS = (
    "target_acceptance",
    "metric",
    "step_size",
    "chain_method",
    "chunk_size",
    "log_likelihood",
)


def _run_environment() -> dict[str, str]:
    """What produced a result: library versions and the device, for ``idata.attrs``."""
    import numpyro

    from probinfer import __version__

    device = jax.devices()[0]
    return {
        "probinfer_version": __version__,
        "jax_version": jax.__version__,
        "numpyro_version": numpyro.__version__,
        "device": f"{device.platform}: {device.device_kind} x {jax.device_count()}",
    }


def default_chain_method(method: str, num_chains: int) -> str:
    """How chains are mapped when the user does not say.

    On CPU, NUTS chains run ``sequential`` (equal groups of chains run at once, one host
    thread per usable core; see :mod:`probinfer.driver._threads`): vectorized NUTS chains
    (interleaved, :data:`probinfer.run.INTERLEAVE_MIN_CHAINS`) last as long as the chain
    with the most work, and on a CPU vectorizing a handful of chains buys little
    (``benchmarks/scale.py``: level with sequential chains on eight schools, 0.30-0.82x
    on the funnel; with both grouped over 2 cores, 4 chains, sequential chains were
    ahead or level on 5 of 6 zoo models, docs/mcmc.md). On GPU/TPU, and for the
    fixed-cost kernels (RWM, MALA, HMC) everywhere, chains are ``vectorized`` (HMC's in
    groups over the cores of a multi-core CPU). With
    several devices (GPUs, or CPU devices made with
    ``XLA_FLAGS=--xla_force_host_platform_device_count=N``) and a number of chains that
    they divide, the chains are split over the devices (``parallel-*``).

    Args:
        method: the sampling method name.
        num_chains: number of chains.

    Returns:
        One of :data:`probinfer.run.CHAIN_METHODS`.
    """
    per_device = (
        "sequential" if method == "nuts" and jax.default_backend() == "cpu" else "vectorized"
    )
    if jax.device_count() > 1 and num_chains % jax.device_count() == 0:
        return f"parallel-{per_device}"
    return per_device


def _split_keywords(
    model: Callable[..., Any] | LogDensity,
    method: str,
    setting_names: set[str],
    kwargs: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Route keywords to the model (by its signature) or to the method's settings."""
    model_parameters: set[str] = set()
    takes_any_keyword = False
    if not isinstance(model, LogDensity):
        parameters = inspect.signature(model).parameters.values()
        model_parameters = {p.name for p in parameters}
        takes_any_keyword = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)
    model_kwargs, settings = {}, {}
    for name, value in kwargs.items():
        if name in model_parameters:
            model_kwargs[name] = value
        elif name in setting_names:
            settings[name] = value
        elif takes_any_keyword:
            model_kwargs[name] = value
        else:
            raise TypeError(
                f"unknown keyword `{name}`: it is neither a parameter of the model nor a "
                f"setting of method '{method}' (settings: {sorted(setting_names)})."
            )
    return model_kwargs, settings


def _check_init_positions(spec: Any, init_positions: Any, num_chains: int) -> Any:
    prototype = spec.initial_positions(jax.random.key(0), num_chains)
    expected = jax.tree.structure(prototype)
    given = jax.tree.structure(init_positions)
    if expected != given:
        raise ValueError(
            f"`init_positions` has structure {given}, expected {expected} (one entry per "
            "latent site, in unconstrained space, with a leading chain axis)."
        )
    for want, got in zip(jax.tree.leaves(prototype), jax.tree.leaves(init_positions), strict=True):
        dtype = np.asarray(got).dtype
        if not is_real_dtype(dtype):
            raise TypeError(
                f"`init_positions` leaf has dtype {dtype}, expected real numbers "
                "(unconstrained positions as floats)."
            )
        if jnp.shape(got) != want.shape:
            raise ValueError(
                f"`init_positions` leaf has shape {jnp.shape(got)}, expected {want.shape} "
                f"(leading axis = chains = {num_chains})."
            )
    return jax.tree.map(lambda x, p: jnp.asarray(x, p.dtype), init_positions, prototype)


def sample(
    model: Callable[..., Any] | LogDensity,
    *args: Any,
    method: str = "nuts",
    chains: int = 4,
    warmup: int = 1000,
    draws: int = 1000,
    seed: int = 0,
    progress: bool = True,
    init_positions: Any = None,
    checkpoint: str | os.PathLike | None = None,
    thin: int = 1,
    **kwargs: Any,
) -> az.InferenceData:
    """Draw posterior samples with MCMC and return them as ArviZ ``InferenceData``.

    Warm-up is Stan's window adaptation (step size by dual averaging, inverse mass
    matrix from windowed Welford estimates; for NUTS and HMC dense when the dimension is
    <= 200, for MALA and RWM diagonal).

    Args:
        model: a NumPyro model function (called as ``model(*args, **model_kwargs)``) or a
            :class:`probinfer.LogDensity` (its functions called as ``fn(position, *args)``).
        *args: the model's positional arguments (data as arrays); for a ``LogDensity``,
            the data arguments its functions take after the position.
        method: "nuts", "hmc", "mala" or "rwm"; or "smc": adaptive tempered SMC as in
            :func:`evidence` with ``chains`` replicas of ``draws`` particles (``warmup`` is
            not used; ``sample_stats`` is empty and ``attrs`` holds ``log_z``,
            ``log_z_err`` and the SMC settings and timings; no tuning replica unless
            ``tuning_replica=True``); or "ns": nested sampling as in
            :func:`evidence`, ``draws`` equally weighted draws from one run as one chain
            (``chains`` and ``warmup`` are not used; ``attrs`` holds ``log_z``,
            ``log_z_err`` and the run's settings and timings).
        chains: number of chains, each started at a distinct point.
        warmup: adaptation steps per chain (discarded).
        draws: kept draws per chain.
        seed: integer seed; the same seed gives the same draws.
        progress: show a progress bar.
        init_positions: exact starting points in unconstrained space, a pytree with a
            leading chain axis (a dict of site name to array for NumPyro models).
        checkpoint: a folder for checkpoints written atomically after every chunk. Calling
            `sample` again with the same folder, model, data, settings and seed resumes an
            interrupted run (or returns a finished one) with the draws an uninterrupted run
            gives.
        thin: MCMC transitions per kept draw: the chains run ``draws * thin`` transitions
            after warm-up and keep every ``thin``-th, so a long run's memory is that of
            ``draws`` draws (each chunk keeps only its kept draws). A kept draw's
            ``n_steps`` counts its whole group's gradient evaluations, ``diverging`` flags
            a divergence anywhere in the group and ``tree_depth`` is the group's deepest;
            its other statistics are its own transition's; ``attrs["e_bfmi"]`` is the
            E-BFMI over every transition (NUTS, HMC). MCMC methods only.
        **kwargs: keywords the model accepts go to the model; the rest are settings:
            ``target_acceptance``, ``metric`` ("dense" or "diag"), ``step_size`` (initial step
            size), ``chain_method`` (one of :data:`probinfer.run.CHAIN_METHODS`),
            ``chunk_size`` (steps per compiled chunk and progress update),
            ``log_likelihood`` (True: add the ``log_likelihood``, ``observed_data`` and
            ``constant_data`` groups; False skips their extra pass over the draws), and the
            method's options (``max_num_doublings``, ``divergence_threshold`` for NUTS,
            ``num_integration_steps`` for HMC).

    Returns:
        ``InferenceData`` with ``posterior`` (constrained sites, ``(chain, draw, ...)``),
        ``sample_stats`` (``lp``, ``diverging``, ``acceptance_rate``, ``step_size``,
        ``n_steps`` = gradient evaluations per draw, ``tree_depth``, ``energy``), for
        NumPyro models ``log_likelihood`` (each observed site's pointwise log likelihood
        per draw, as ``az.from_numpyro`` stores it: ``az.loo``, ``az.waic`` and
        ``az.compare`` read it), ``observed_data`` and ``constant_data`` (the model's other
        array arguments), with dimensions named after the model's plates, and ``attrs``
        (method, seed, ``compile_seconds``, ``warmup_seconds``, ``sampling_seconds``).

    Raises:
        ValueError: for an unknown method, bad counts, discrete latent sites, or no finite
            starting point.
        TypeError: for unknown keywords.

    Example:
        >>> import numpyro, numpyro.distributions as dist, jax.numpy as jnp
        >>> import probinfer as pi
        >>> def model(y):
        ...     mu = numpyro.sample("mu", dist.Normal(0.0, 10.0))
        ...     numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)
        >>> idata = pi.sample(model, jnp.array([0.3, -0.1, 0.8]), progress=False)
        >>> idata.posterior["mu"].shape
        (4, 1000)
    """
    thin = check_count("thin", thin, 1)
    if thin != 1 and method in ("smc", "ns"):
        raise ValueError(
            f"`thin` is for MCMC; method={method!r} returns independent weighted or resampled "
            "draws, so leave `thin` at 1 (ask for fewer `draws` instead)."
        )
    mcmc_draws = method not in ("smc", "ns") and isinstance(draws, int | np.integer)
    if mcmc_draws and int(draws) * thin > MAX_STEPS:
        raise ValueError(
            f"`draws` x `thin` = {int(draws) * thin:,} transitions per chain exceed the "
            f"{MAX_STEPS:,} one run counts (int32); ask for fewer `draws` or a smaller "
            "`thin`, or continue in a second run from the first one's last draws "
            "(`init_positions`)."
        )
    if method == "smc":
        if init_positions is not None:
            raise ValueError(
                "`init_positions` is for MCMC; SMC starts its particles from prior draws."
            )
        return _evidence_by_smc(
            "sample", model, args, seed, progress, checkpoint, kwargs,
            defaults={"particles": draws, "replicas": chains, "tuning_replica": False},
        ).idata  # fmt: skip
    if method == "ns":
        if init_positions is not None:
            raise ValueError(
                "`init_positions` is for MCMC; nested sampling starts its live points from "
                "prior draws."
            )
        return _evidence_by_ns(
            model, args, seed, progress, checkpoint, kwargs, defaults={"draws": draws}
        ).idata
    if method not in mcmc.ALGORITHMS:
        raise ValueError(
            f"unknown method {method!r}; `pi.sample` supports {sorted(mcmc.ALGORITHMS)}, "
            "'smc' and 'ns'."
        )
    seed = check_count("seed", seed, 0)
    chains = check_count("chains", chains, 1)
    warmup = check_count("warmup", warmup, 0)
    draws = check_count("draws", draws, 1)
    algorithm = mcmc.ALGORITHMS[method]
    model_kwargs, settings = _split_keywords(
        model, method, set(algorithm.options) | set(SAMPLER_SETTINGS), kwargs
    )
    chain_method = settings.pop("chain_method", None) or default_chain_method(method, chains)
    if chain_method not in CHAIN_METHODS:
        raise ValueError(f"`chain_method` must be one of {CHAIN_METHODS}, got {chain_method!r}.")
    if chain_method.startswith("parallel") and chains % jax.device_count():
        raise ValueError(
            f"`chain_method={chain_method!r}` splits chains evenly over the "
            f"{jax.device_count()} devices, but `chains={chains}` is not a multiple of it; "
            "pass a multiple, or `chain_method='vectorized'`/'sequential'."
        )
    step_size = settings.pop("step_size", None)
    if step_size is not None:
        check_step_size(step_size)
    with_log_likelihood = settings.pop("log_likelihood", True)
    if not isinstance(with_log_likelihood, bool):
        raise TypeError(f"`log_likelihood` must be True or False, got {with_log_likelihood!r}.")
    chunk_size = settings.pop("chunk_size", None)
    if chunk_size is not None:
        chunk_size = check_count("chunk_size", chunk_size, 1)
    target = settings.get("target_acceptance")
    config = SamplerConfig(
        algorithm=method,
        options=tuple(
            sorted((k, v) for k, v in settings.items() if k not in ("target_acceptance", "metric"))
        ),
        metric=settings.get("metric"),
        # A float (a jax scalar would not hash as part of the compile key).
        target_acceptance=None if target is None else check_target_acceptance(target),
        initial_step_size=None if step_size is None else float(step_size),
        chain_method=chain_method,
    )
    mcmc.window_adaptation(
        algorithm,
        lambda x: x,
        **dict(config.options),
        metric=config.metric,
        target_acceptance=config.target_acceptance,
    )  # validates settings

    spec, data = prepare(model, args, model_kwargs)
    if init_positions is not None:
        init_positions = _check_init_positions(spec, init_positions, chains)
    result = run_chains(
        spec,
        data,
        config,
        jax.random.key(seed),
        chains,
        init_positions=init_positions,
        num_warmup=warmup,
        num_draws=draws,
        progress=progress,
        thin=thin,
        chunk_size=chunk_size,
        checkpoint=None if checkpoint is None else Path(checkpoint),
    )
    attrs = {
        "method": method,
        "seed": seed,
        "chain_method": chain_method,
        "num_warmup": warmup,
        "thin": thin,
        "warmup_grad_evals": result.warmup_grad_evals,
        "compile_seconds": result.compile_seconds,
        "warmup_seconds": result.warmup_seconds,
        "sampling_seconds": result.sampling_seconds,
        "inference_library": "probinfer",
    }
    sample_stats = {k: v for k, v in result.stats.items() if k not in INTERNAL_STATS}
    groups = model_groups(spec, data, result.draws) if with_log_likelihood else {}
    idata = az.from_dict(
        posterior=result.draws,
        sample_stats=sample_stats,
        log_likelihood=groups.get("log_likelihood"),
        observed_data=groups.get("observed_data"),
        constant_data=groups.get("constant_data"),
        dims=model_dims(spec, data),
        attrs=attrs,
    )
    idata.attrs["num_nonfinite_proposals"] = int(result.stats["num_nonfinite"].sum())
    if thin > 1 and method in ("nuts", "hmc") and draws > 1:
        idata.attrs["e_bfmi"] = thinned_ebfmi(result.stats, thin).tolist()
    idata.attrs["num_nonfinite_warmup_proposals"] = result.warmup_nonfinite
    idata.attrs.update(_run_environment())
    # The adapted inverse mass matrix is (chains, dim) or (chains, dim, dim).
    is_dense = np.ndim(result.parameters["inverse_mass_matrix"]) == 3
    idata.attrs["metric"] = "dense" if is_dense else "diag"
    if method == "nuts":
        idata.attrs["max_num_doublings"] = int(
            settings.get("max_num_doublings", DEFAULT_MAX_NUM_DOUBLINGS)
        )
    for message in check_run(idata):
        warnings.warn(message, SamplingWarning, stacklevel=2)
    return idata


SMC_DEFAULTS: dict[str, Any] = {
    "particles": 500,
    "replicas": 8,
    "move": "mala",
    "num_mcmc_steps": 10,
    "adapt_num_mcmc_steps": False,
    "chain_length": 1,
    "target_ess": 0.5,
    "tuning_replica": True,
    "resampling": "systematic",
    "resample_threshold": 0.5,
    "metric": None,
    "step_size": None,
    "max_steps": 1000,
    "chunk_size": 5,
}


class EvidenceResult(NamedTuple):
    """The evidence ``log p(data)`` of a model and its posterior draws.

    Attributes:
        log_z: the log-evidence estimate.
        log_z_err: its standard error: for SMC from the spread of independent replicas, for
            nested sampling from simulated prior-volume shrinkages.
        num_likelihood_evals: target evaluations spent.
        idata: ``InferenceData`` with equally weighted posterior draws as ``(chain, draw,
            ...)`` (SMC: ``(replica, particle, ...)``; nested sampling: one chain), and the
            estimates in ``attrs``.
        inverse_temperatures: for SMC, each replica's tempering ladder (else None).
        num_mcmc_steps: for SMC, each replica's move transitions (per chain) at each step
            of its ladder (else None).
        weighted_draws: for nested sampling, every dead point and the final live points,
            site name -> ``(num_points, ...)`` in constrained space (else None).
        log_weights: for nested sampling, ``(num_points,)`` their normalised posterior log
            weights (else None).
        information: for nested sampling, the information ``H`` in nats (else None).
    """

    log_z: float
    log_z_err: float
    num_likelihood_evals: int
    idata: az.InferenceData
    inverse_temperatures: list[np.ndarray] | None = None
    num_mcmc_steps: list[np.ndarray] | None = None
    weighted_draws: dict[str, np.ndarray] | None = None
    log_weights: np.ndarray | None = None
    information: float | None = None


NS_DEFAULTS: dict[str, Any] = {
    "live_points": 500,
    "num_delete": None,
    "move": "slice",
    "num_steps": None,
    "step_size": None,
    "metric": None,
    "remaining_fraction": 0.01,
    "draws": None,
    "max_steps": 100_000,
    "chunk_size": 10,
    "emulator": None,
    "bound": None,
    "enlarge": ns.DEFAULT_ENLARGE,
}


def evidence(
    model: Callable[..., Any] | LogDensity,
    *args: Any,
    method: str = "smc",
    seed: int = 0,
    progress: bool = True,
    checkpoint: str | os.PathLike | None = None,
    prior_transform: Callable[[Any], Any] | None = None,
    dim: int | None = None,
    **kwargs: Any,
) -> EvidenceResult:
    """Estimate the log evidence ``log p(data)`` with an error bar, and draw the posterior.

    ``method="smc"``: adaptive tempered SMC from the prior to the posterior
    (:func:`probinfer.smc.tempered_smc`), ``replicas`` independent runs of ``particles``
    particles each; ``log_z`` is the log of the mean of their (consistent) evidence estimates
    and ``log_z_err`` the standard error of that mean (delta method). One more run beside
    them (the tuning replica) tunes every step for all of them (the next temperature, the
    move's metric and step size), so that no replica's estimate is biased by tuning adapted
    to its own particles (with ``adapt_num_mcmc_steps``, each replica still stops its own
    moves; no bias from that was measurable, see docs/smc.md).

    ``method="ns"``: nested sampling (:func:`probinfer.ns.nested_sampling`): ``live_points``
    prior draws, ``num_delete`` of them replaced per iteration by likelihood-constrained
    moves (slice sampling along directions whitened by the live points), until the live
    points could add at most ``remaining_fraction`` to the evidence; ``log_z_err`` is the
    spread of ``log Z`` over simulated prior-volume shrinkages, and the dead and final live
    points come back with their posterior weights.

    The model may also be given as dynesty users write it: ``pi.evidence(loglikelihood_fn,
    prior_transform=..., dim=..., method="ns")`` with ``loglikelihood_fn(x, *args)`` and
    ``prior_transform(u)`` mapping the unit cube ``[0, 1]^dim`` to the parameters
    (:class:`probinfer.model.UnitCube`); draws are then reported as ``x``.

    Args:
        model: a NumPyro model with proper priors, or a :class:`probinfer.LogDensity` given
            as ``logprior_fn`` (normalised) and ``loglikelihood_fn`` with
            ``sample_prior_fn``; with ``prior_transform``, the log likelihood ``x -> log L``.
        *args: the model's positional arguments (the ``LogDensity``'s or likelihood's data).
        method: "smc" or "ns".
        seed: integer seed; the same seed gives the same result.
        progress: show a progress bar (SMC: tempering steps, the smallest ``beta``, log Z;
            nested sampling: iterations, log Z, the live points' remaining share,
            likelihood evaluations).
        checkpoint: a folder for checkpoints after every chunk; calling again with the same
            folder, model, data, settings and seed resumes an interrupted run.
        prior_transform: ``u -> x`` from the unit cube, with ``dim`` (then ``model`` is the
            log likelihood).
        dim: the unit cube's dimension, with ``prior_transform``.
        **kwargs: keywords the model accepts go to the model; the rest are settings.
            Nested sampling: ``live_points`` (500), ``num_delete`` (live points / 10),
            ``move`` ("slice", or "rwm": a random walk adapted to accept ~23%),
            ``num_steps`` (move transitions per replacement: 5 d for slice, 20 d for rwm),
            ``step_size`` (first width in whitened units: ``sqrt(d + 2)`` for slice),
            ``metric`` ("dense" or "diag" whitening), ``remaining_fraction`` (0.01),
            ``draws`` (equally weighted draws in ``idata``; default the weights' effective
            sample size), ``max_steps`` (100,000 iterations), ``chunk_size`` (10),
            ``emulator`` (None; True or ``probinfer.ns.Emulator(...)``: a neural network
            learns the likelihood as the run goes and, once accurate, the moves run on it,
            each new point confirmed by one likelihood call; ``attrs`` then count the
            emulated iterations and evaluations), ``bound`` ("ellipsoid", the default for
            a prior transform's unit cube without an emulator: each iteration whose
            contour an ellipsoid around the live points bounds tightly enough draws its
            replacements exactly, by rejection from it, one likelihood call per
            proposal, and the others use the move; "none": moves only, the default for
            other models), ``enlarge`` (the ellipsoid's volume margin over its bootstrap
            expansion, 1.25), and the move's options
            (``max_num_steps_out``, ``max_num_shrinks`` for slice).
            SMC: ``particles`` (500), ``replicas`` (8, >= 2), ``move`` (the MCMC kernel that
            moves the particles: "mala", the default, "rwm", "hmc", "nuts" or "slice"),
            ``num_mcmc_steps`` (10), ``adapt_num_mcmc_steps`` (False; True: each step
            moves until the particles stop mixing, at most ``num_mcmc_steps``
            transitions), ``chain_length``
            (1; ``P > 1``: waste-free SMC with ``particles / P`` chains of ``P`` kept
            states, ``num_mcmc_steps`` transitions apart), ``target_ess``
            (0.5), ``tuning_replica`` (True; False: each replica tunes itself, which
            saves one replica's evaluations but biases ``log_z`` by O(1 / particles),
            not covered by ``log_z_err``), ``resampling`` ("systematic"),
            ``resample_threshold`` (0.5), ``metric`` ("dense" or "diag"), ``step_size``
            (the move's first step size; the slice width), ``max_steps`` (1000),
            ``chunk_size`` (5), and the move's options (e.g. ``num_integration_steps``).

    Returns:
        The :class:`EvidenceResult`.

    Raises:
        ValueError: for an unknown method, bad settings, a target without a prior and
            likelihood split or prior draws, or improper priors.
        RuntimeError: when a replica did not reach the posterior within ``max_steps``, or
            every particle of a replica had zero likelihood.
        TypeError: for unknown keywords.

    Example:
        >>> import numpyro, numpyro.distributions as dist, jax.numpy as jnp
        >>> import probinfer as pi
        >>> def model(y):
        ...     mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
        ...     numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)
        >>> result = pi.evidence(model, jnp.array([0.5]), particles=500, progress=False)
        >>> exact = -0.5 * jnp.log(2 * jnp.pi * 2.0) - 0.5**2 / 4   # y ~ N(0, 2)
        >>> bool(abs(result.log_z - exact) < 5 * result.log_z_err)
        True
    """
    if method not in ("smc", "ns"):
        raise ValueError(f"unknown method {method!r}; `pi.evidence` supports 'smc' and 'ns'.")
    if (prior_transform is None) != (dim is None):
        raise TypeError(
            "`prior_transform` and `dim` come together: `pi.evidence(loglikelihood_fn, "
            "prior_transform=fn, dim=d)` with `fn` mapping the unit cube [0, 1]^d to parameters."
        )
    if prior_transform is not None:
        assert dim is not None
        if isinstance(model, LogDensity):
            raise TypeError(
                "with `prior_transform`, pass the log likelihood `x -> log L(x)` as the model, "
                "not a `LogDensity` (its prior would be ignored)."
            )
        model = UnitCube(model, prior_transform, dim)
    if method == "ns":
        return _evidence_by_ns(model, args, seed, progress, checkpoint, kwargs)
    return _evidence_by_smc("evidence", model, args, seed, progress, checkpoint, kwargs)


def _population_idata(
    spec: Any, data: Any, draws: dict[str, np.ndarray], attrs: dict[str, Any]
) -> az.InferenceData:
    """SMC's and nested sampling's equally weighted draws as ``InferenceData``, with the
    model's ``log_likelihood``, ``observed_data`` and ``constant_data`` groups and plate
    dims as for MCMC."""
    groups = model_groups(spec, data, draws)
    return az.from_dict(
        posterior=draws,
        log_likelihood=groups.get("log_likelihood"),
        observed_data=groups.get("observed_data"),
        constant_data=groups.get("constant_data"),
        dims=model_dims(spec, data),
        attrs={**attrs, **_run_environment()},
    )


def _move_settings(
    model: Callable[..., Any] | LogDensity,
    family: str,
    defaults: dict[str, Any],
    move_algorithms: dict[str, mcmc.Algorithm],
    options_attribute: str,
    kwargs: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Split keywords into the model's and a population family's settings (SMC, nested
    sampling), and check the move and its options.

    Keywords go to the model first (a model may take `move` or `kernel` itself); the
    settings are the family's and every move's options, checked against the chosen move.

    Args:
        model: the model or ``LogDensity``.
        family: the method name, for messages.
        defaults: the family's settings with their defaults (``move`` among them).
        move_algorithms: move name -> algorithm.
        options_attribute: the algorithm's attribute naming the options a move takes
            (``"options"``, or ``"build_options"`` where parameters are tuned by the family).
        kwargs: the keywords given.

    Returns:
        ``(model keywords, settings with defaults filled in, the move's options)``.

    Raises:
        ValueError: for an unknown move.
        TypeError: for unknown keywords or options the chosen move does not take.
    """
    move_options = {
        name
        for algorithm in move_algorithms.values()
        for name in getattr(algorithm, options_attribute)
    }
    model_kwargs, settings = _split_keywords(model, family, move_options | set(defaults), kwargs)
    settings = {**defaults, **settings}
    move = settings["move"]
    if move not in move_algorithms:
        raise ValueError(f"`move` must be one of {sorted(move_algorithms)}, got {move!r}.")
    accepted = getattr(move_algorithms[move], options_attribute)
    options = {k: v for k, v in settings.items() if k in move_options}
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise TypeError(
            f"{unknown} are not options of move {move!r} (its options: {sorted(accepted)})."
        )
    return model_kwargs, settings, options


def _evidence_by_smc(
    caller: str,
    model: Callable[..., Any] | LogDensity,
    args: tuple[Any, ...],
    seed: int,
    progress: bool,
    checkpoint: str | os.PathLike | None,
    kwargs: dict[str, Any],
    defaults: dict[str, Any] | None = None,
) -> EvidenceResult:
    """SMC for ``pi.evidence`` and ``pi.sample(method="smc")`` (one code path)."""
    seed = check_count("seed", seed, 0)
    model_kwargs, settings, options = _move_settings(
        model, "smc", {**SMC_DEFAULTS, **(defaults or {})}, MOVE_ALGORITHMS, "options", kwargs
    )
    move = settings["move"]
    step_size = settings["step_size"]
    if step_size is not None:
        check_step_size(step_size)
    config = SMCConfig(
        move=move,
        options=tuple(sorted(options.items())),
        num_particles=check_count("particles", settings["particles"], 2),
        num_replicas=check_count("replicas", settings["replicas"], 1 if caller == "sample" else 2),
        num_mcmc_steps=check_count("num_mcmc_steps", settings["num_mcmc_steps"], 1),
        adapt_num_mcmc_steps=bool(settings["adapt_num_mcmc_steps"]),
        chain_length=check_count("chain_length", settings["chain_length"], 1),
        target_ess=float(settings["target_ess"]),
        tuning_replica=bool(settings["tuning_replica"]),
        resampling=str(settings["resampling"]),
        resample_threshold=float(settings["resample_threshold"]),
        metric=settings["metric"],
        step_size=None if step_size is None else float(step_size),
        chunk_size=check_count("chunk_size", settings["chunk_size"], 1),
    )
    spec, data = prepare(model, args, model_kwargs)
    check_settings(spec, config, data)
    max_steps = check_count("max_steps", settings["max_steps"], 1)
    result = run_smc(
        spec,
        data,
        config,
        jax.random.key(seed),
        max_steps=max_steps,
        progress=progress,
        checkpoint=None if checkpoint is None else Path(checkpoint),
    )
    if result.num_collapsed:
        raise RuntimeError(
            f"in {result.num_collapsed} particle system(s) (replicas, or the tuning replica "
            "that tunes them) every particle had zero likelihood at some tempering step, so "
            "the evidence estimate is 0: the prior puts (almost) no mass where the likelihood "
            "is positive. Use more `particles`, a larger `target_ess`, or check the model and "
            "data."
        )
    if result.status is not DriveStatus.COMPLETED:
        raise RuntimeError(
            f"SMC did not reach the posterior (beta = 1) within `max_steps={max_steps}` "
            f"tempering steps: {result.status.message}; the likelihood may be extremely "
            "informative relative to the prior (raise `max_steps` or lower `target_ess`)."
        )
    attrs = {
        "method": "smc",
        "seed": seed,
        "move": move,
        "particles": config.num_particles,
        "replicas": config.num_replicas,
        "tuning_replica": config.tuning_replica,
        "tuning_replica_log_z": result.tuning_log_z,
        "log_z": result.log_z,
        "log_z_err": result.log_z_err,
        "replica_log_z": result.replica_log_z,
        "num_tempering_steps": np.asarray([ladder.size for ladder in result.inverse_temperatures]),
        "num_likelihood_evals": result.num_likelihood_evals,
        "compile_seconds": result.compile_seconds,
        "sampling_seconds": result.run_seconds,
        "inference_library": "probinfer",
    }
    idata = _population_idata(spec, data, result.draws, attrs)
    return EvidenceResult(
        log_z=result.log_z,
        log_z_err=result.log_z_err,
        num_likelihood_evals=result.num_likelihood_evals,
        idata=idata,
        inverse_temperatures=result.inverse_temperatures,
        num_mcmc_steps=result.num_mcmc_steps,
    )


def _emulator_settings(emulator: Any) -> ns.Emulator | None:
    """``emulator=`` as settings: None/False (none), True (defaults) or ``ns.Emulator``."""
    if emulator is None or emulator is False:
        return None
    if emulator is True:
        return ns.Emulator()
    if isinstance(emulator, ns.Emulator):
        if not emulator.tolerance > 0:
            raise ValueError(f"the emulator's `tolerance` must be > 0, got {emulator.tolerance}.")
        return emulator
    raise TypeError(
        f"`emulator` must be True, False or `probinfer.ns.Emulator(...)`, got {emulator!r}."
    )


def _bound_setting(bound: Any, spec: Any, emulator: ns.Emulator | None) -> str | None:
    """``bound=`` as the sampler's setting: "ellipsoid" by default for unit-cube models
    without an emulator, None ("none") otherwise; "ellipsoid" refused where the prior is not
    the unit cube's."""
    is_cube = isinstance(spec, UnitCube)
    if bound is None:
        return "ellipsoid" if is_cube and emulator is None else None
    if bound not in ("none", "ellipsoid"):
        raise ValueError(f"`bound` must be 'ellipsoid' or 'none', got {bound!r}.")
    if bound == "ellipsoid" and not is_cube:
        raise ValueError(
            "`bound='ellipsoid'` draws uniformly inside an ellipsoid, which needs the "
            "uniform prior of the unit cube: give the model as `pi.evidence(loglikelihood_fn, "
            "prior_transform=..., dim=...)`, or leave `bound` unset (MCMC moves only)."
        )
    return None if bound == "none" else bound


def _evidence_by_ns(
    model: Callable[..., Any] | LogDensity,
    args: tuple[Any, ...],
    seed: int,
    progress: bool,
    checkpoint: str | os.PathLike | None,
    kwargs: dict[str, Any],
    defaults: dict[str, Any] | None = None,
) -> EvidenceResult:
    """Nested sampling for ``pi.evidence`` and ``pi.sample(method="ns")`` (one code path)."""
    seed = check_count("seed", seed, 0)
    model_kwargs, settings, options = _move_settings(
        model, "ns", {**NS_DEFAULTS, **(defaults or {})}, NS_MOVE_ALGORITHMS, "build_options",
        kwargs,
    )  # fmt: skip
    move = settings["move"]
    algorithm = NS_MOVE_ALGORITHMS[move]
    spec, data = prepare(model, args, model_kwargs)
    dim = flat_dim(spec, data)
    num_live = check_count("live_points", settings["live_points"], 2)
    num_delete = settings["num_delete"]
    num_delete = max(1, num_live // 10) if num_delete is None else num_delete
    num_steps = settings["num_steps"]
    num_steps = ns.default_num_steps(algorithm, dim) if num_steps is None else num_steps
    step_size = settings["step_size"]
    if step_size is None:
        step_size = ns.default_step_size(algorithm, dim)
    check_step_size(step_size)
    emulator = _emulator_settings(settings["emulator"])
    config = NSConfig(
        move=move,
        options=tuple(sorted(options.items())),
        num_live=num_live,
        num_delete=check_count("num_delete", num_delete, 1),
        num_steps=check_count("num_steps", num_steps, 1),
        step_size=float(step_size),
        metric=settings["metric"],
        remaining_fraction=float(settings["remaining_fraction"]),
        chunk_size=check_count("chunk_size", settings["chunk_size"], 1),
        emulator=emulator,
        bound=_bound_setting(settings["bound"], spec, emulator),
        enlarge=float(settings["enlarge"]),
    )
    check_ns_settings(spec, config, data)
    max_steps = check_count("max_steps", settings["max_steps"], 1)
    num_draws = settings["draws"]
    if num_draws is not None:
        num_draws = check_count("draws", num_draws, 1)
    key_run, key_draws = jax.random.split(jax.random.key(seed))
    result = run_ns(
        spec,
        data,
        config,
        key_run,
        max_steps=max_steps,
        progress=progress,
        checkpoint=None if checkpoint is None else Path(checkpoint),
    )
    if result.status is not DriveStatus.COMPLETED:
        raise RuntimeError(
            f"nested sampling did not converge within `max_steps={max_steps}` iterations: "
            f"{result.status.message}; the posterior may be extremely concentrated relative "
            "to the prior (raise `max_steps`, or `remaining_fraction`)."
        )
    if not np.isfinite(result.log_z):
        raise RuntimeError(
            "every point had zero likelihood (log L = -inf), so the evidence estimate is 0: "
            "the prior puts (almost) no mass where the likelihood is positive; use more "
            "`live_points` or check the model and data."
        )
    if num_draws is None:
        num_draws = max(1, round(result.ess))
    indices = resample_equal(key_draws, result.log_weights, num_draws)
    draws = {name: values[indices][None] for name, values in result.points.items()}
    attrs = {
        "method": "ns",
        "seed": seed,
        "move": move,
        "live_points": num_live,
        "num_delete": config.num_delete,
        "num_steps": config.num_steps,
        "log_z": result.log_z,
        "log_z_err": result.log_z_err,
        "log_z_err_information": result.log_z_err_information,
        "information": result.information,
        "ess": result.ess,
        "num_iterations": result.num_iterations,
        "bound": config.bound or "none",
        "num_bounded_iterations": result.num_bounded_iterations,
        "num_likelihood_evals": result.num_likelihood_evals,
        "num_emulator_evals": result.num_emulator_evals,
        "num_emulated_iterations": result.num_emulated_iterations,
        "num_unconfirmed_emulated_points": result.num_unconfirmed,
        "num_nonfinite_likelihoods": result.num_nonfinite,
        "compile_seconds": result.compile_seconds,
        "sampling_seconds": result.run_seconds,
        "inference_library": "probinfer",
    }
    idata = _population_idata(spec, data, draws, attrs)
    return EvidenceResult(
        log_z=result.log_z,
        log_z_err=result.log_z_err,
        num_likelihood_evals=result.num_likelihood_evals,
        idata=idata,
        weighted_draws=result.points,
        log_weights=result.log_weights,
        information=result.information,
    )
