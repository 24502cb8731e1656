"""Tempered SMC on the driver: independent replicas, an evidence estimate with its error.

``num_replicas`` independent particle systems of ``num_particles`` particles each (and, by
default, the tuning replica below) run side by side (``vmap``): one driver step is one
tempering step of every system, and the drive stops when every system reaches ``beta = 1``
(a finished system waits unchanged). The evidence estimate is the mean of the replicas'
estimates ``Z_k``, and its error the standard error of that mean, in log space by the
delta method.

With a tuning replica (``SMCConfig.tuning_replica``), one more particle system runs beside
them and tunes itself as usual (next ``beta`` from its conditional ESS, the move's metric
from its particles' covariance, the step size from its acceptance), and its tuning is every
replica's (:meth:`probinfer.smc.TemperedSMC.tune`). No replica is then tuned by its own
particles, so each ``Z_k`` is unbiased given the tuning replica, instead of biased by
``O(1 / N)`` (low on the zoo's linear regression, high on a 20-d one; see
:mod:`probinfer.smc._tempered`): a bias that does not average away over replicas while
their error does. The cost is one replica's evaluations; the tuning replica's estimate and
draws are not reported. With ``adapt_num_mcmc_steps`` each replica still stops its own
moves by its own particles' mixing, which the argument does not cover (measured on the
20-d regression: -0.006 ± 0.013 nats, no bias seen; see docs/smc.md).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, PRNGKeyArray

from probinfer import mcmc, smc
from probinfer.checkpoint import fingerprint
from probinfer.driver import CompileWatch, DriveStatus, call_compiled, count_trace, drive
from probinfer.driver import progress_bar as make_progress_bar

PyTree = Any
MOVE_ALGORITHMS: dict[str, mcmc.Algorithm] = {**mcmc.ALGORITHMS, "slice": mcmc.slice_sampler}


class SMCConfig(NamedTuple):
    """Static settings of one SMC run (hashable: they key the compiled programs).

    Attributes:
        move: the move's algorithm name (:data:`MOVE_ALGORITHMS`).
        options: sorted ``(name, value)`` pairs of the algorithm's options.
        num_particles: particles per replica.
        num_replicas: independent replicas (estimating ones: the tuning replica is extra).
        num_mcmc_steps: move transitions per particle per tempering step (the most, when
            adapted).
        adapt_num_mcmc_steps: stop each step's moves once the particles stop mixing.
        chain_length: 1, or the waste-free chain length ``P``.
        target_ess: adaptive tempering's conditional-ESS fraction.
        tuning_replica: whether one extra replica tunes every step of all the others.
        resampling: a name in :data:`probinfer.smc.RESAMPLING`.
        resample_threshold: resample below this ESS fraction.
        metric: the move's metric, "dense" or "diag" (None: by dimension).
        step_size: the move's first step size (None: by algorithm and dimension).
        chunk_size: tempering steps per compiled chunk.
    """

    move: str
    options: tuple[tuple[str, Any], ...]
    num_particles: int
    num_replicas: int
    num_mcmc_steps: int
    adapt_num_mcmc_steps: bool
    chain_length: int
    target_ess: float
    tuning_replica: bool
    resampling: str
    resample_threshold: float
    metric: str | None
    step_size: float | None
    chunk_size: int


class SMCResult(NamedTuple):
    """What an SMC run produced, on the host.

    Attributes:
        draws: site name -> ``(replicas, particles, ...)`` equally weighted posterior draws
            (each estimating replica's final particles resampled by their weights),
            constrained.
        log_z: the log-evidence estimate (log of the mean of the replicas' ``Z_k``).
        log_z_err: its standard error (delta method on the mean of ``Z_k``).
        replica_log_z: ``(replicas,)`` each estimating replica's estimate.
        tuning_log_z: the tuning replica's own (self-tuned) estimate; NaN without one.
        inverse_temperatures: per estimating replica, its ladder ``(steps,)`` (0
            excluded).
        num_mcmc_steps: per estimating replica, the move transitions per chain at each of
            its steps.
        num_likelihood_evals: target evaluations, all particles and replicas (the tuning
            replica's included).
        num_nonfinite: NaN or ``+inf`` log likelihoods met (weighted as zero), all
            replicas.
        num_collapsed: replicas (the tuning replica included) whose every particle had
            zero likelihood at some step.
        status: how the drive ended.
        compile_seconds: time spent compiling.
        run_seconds: wall time of the run, compilation excluded.
    """

    draws: dict[str, np.ndarray]
    log_z: float
    log_z_err: float
    replica_log_z: np.ndarray
    tuning_log_z: float
    inverse_temperatures: list[np.ndarray]
    num_mcmc_steps: list[np.ndarray]
    num_likelihood_evals: int
    num_nonfinite: int
    num_collapsed: int
    status: DriveStatus
    compile_seconds: float
    run_seconds: float


def _sampler(spec: Any, config: SMCConfig, data: PyTree) -> smc.TemperedSMC:
    return smc.tempered_smc(
        spec.bind(data).target,
        MOVE_ALGORITHMS[config.move],
        num_mcmc_steps=config.num_mcmc_steps,
        adapt_num_mcmc_steps=config.adapt_num_mcmc_steps,
        chain_length=config.chain_length,
        schedule=smc.adaptive_tempering(config.target_ess),
        resampling=smc.RESAMPLING[config.resampling],
        resample_threshold=config.resample_threshold,
        metric=config.metric,
        step_size=config.step_size,
        **dict(config.options),
    )


def check_settings(spec: Any, config: SMCConfig, data: PyTree) -> None:
    """Build the sampler once outside any trace, so bad settings raise readable errors.

    Args:
        spec: the target spec.
        config: the settings.
        data: the target's data.

    Counts and the move's name are checked where they are read (``pi.evidence``); the
    sampler checks its own settings, and the particle count against ``chain_length``
    when it starts.

    Raises:
        ValueError: for settings the sampler rejects, or a target without a prior and
            likelihood split.
    """
    if config.resampling not in smc.RESAMPLING:
        raise ValueError(
            f"`resampling` must be one of {sorted(smc.RESAMPLING)}, got {config.resampling!r}."
        )
    _sampler(spec, config, data)


class _TemperingStep(NamedTuple):
    """One tempering step of every replica (a driver step; hashable)."""

    spec: Any
    config: SMCConfig

    def __call__(
        self, key: PRNGKeyArray, state: smc.TemperedSMCState, step_index: Array, data: PyTree
    ) -> tuple[smc.TemperedSMCState, smc.TemperedSMCInfo]:
        sampler = _sampler(self.spec, self.config, data)
        keys = jax.random.split(key, _num_systems(self.config))
        if not self.config.tuning_replica:
            return jax.vmap(sampler.step)(keys, state)
        # System 0 is the tuning replica: its tuning (next beta, metric, step size) is
        # everyone's, so no estimating replica is tuned by its own particles.
        tuning = sampler.tune(jax.tree.map(lambda x: x[0], state))
        return jax.vmap(sampler.step, in_axes=(0, 0, None))(keys, state, tuning)


def _num_systems(config: SMCConfig) -> int:
    """Particle systems run side by side: the replicas, and the tuning replica if any."""
    return config.num_replicas + int(config.tuning_replica)


def _first_replica(config: SMCConfig) -> int:
    """The index of the first estimating replica (the tuning replica is system 0)."""
    return int(config.tuning_replica)


def _estimating(config: SMCConfig, values: np.ndarray, axis: int = 0) -> np.ndarray:
    """The estimating replicas' part of per-system values along ``axis``."""
    return values[(slice(None),) * axis + (slice(_first_replica(config), None),)]


def _all_finished(state: smc.TemperedSMCState) -> Array:
    return jnp.all(state.inverse_temperature >= 1.0)


def _initial_states(
    spec: Any, config: SMCConfig, data: PyTree, keys: PRNGKeyArray
) -> smc.TemperedSMCState:
    """Prior draws for every particle of every replica, and their log likelihoods."""
    count_trace("smc_init")
    density = spec.bind(data)
    particles = jax.vmap(jax.vmap(density.sample_prior))(keys)
    return jax.vmap(_sampler(spec, config, data).init)(particles)


def _final_draws(
    spec: Any, config: SMCConfig, data: PyTree, state: smc.TemperedSMCState, key: PRNGKeyArray
) -> dict[str, Array]:
    """Each estimating replica's particles resampled to equal weights, in constrained
    space."""
    density = spec.bind(data)
    state = jax.tree.map(lambda x: x[_first_replica(config) :], state)

    def one_replica(key: PRNGKeyArray, replica: smc.TemperedSMCState) -> dict[str, Array]:
        num = replica.log_weights.shape[0]
        key_resample, key_shuffle = jax.random.split(key)
        ancestors = smc.systematic(key_resample, jnp.exp(replica.log_weights), num)
        # Shuffle so that draw order carries no ancestry (systematic indices are sorted).
        ancestors = jax.random.permutation(key_shuffle, ancestors)
        particles = jax.tree.map(lambda x: x[ancestors], replica.particles)
        return jax.vmap(density.postprocess_fn)(particles)

    return jax.vmap(one_replica)(jax.random.split(key, config.num_replicas), state)


def combine_log_z(replica_log_z: np.ndarray) -> tuple[float, float]:
    """The log of the mean of ``Z_k`` and its standard error (delta method).

    Args:
        replica_log_z: ``(K,)`` independent log-evidence estimates, ``K >= 2``.

    Returns:
        ``(log_z, log_z_err)``; ``log_z_err`` is ``sd(Z_k) / (sqrt(K) mean(Z_k))``.
    """
    values = np.asarray(replica_log_z, np.float64)
    shift = np.max(values)
    if not np.isfinite(shift):  # every estimate 0 (or one infinite): no spread to measure
        return float(shift), float("nan")
    z = np.exp(values - shift)
    log_z = float(np.log(np.mean(z)) + shift)
    log_z_err = float(np.std(z, ddof=1) / np.sqrt(z.size) / np.mean(z))
    return log_z, log_z_err


def run_smc(
    spec: Any,
    data: PyTree,
    config: SMCConfig,
    key: PRNGKeyArray,
    *,
    max_steps: int,
    progress: bool,
    checkpoint: Path | None = None,
) -> SMCResult:
    """Run tempered SMC replicas from the prior to the posterior.

    Args:
        spec: hashable target spec (see :mod:`probinfer.model`).
        data: the target's array data.
        config: static settings.
        key: PRNG key of the run.
        max_steps: the most tempering steps.
        progress: show a progress bar (the smallest ``beta`` of the replicas and the
            running log Z).
        checkpoint: folder for atomic checkpoints after every chunk (resumable).

    Returns:
        The :class:`SMCResult`.
    """
    key_init, key_run, key_draws = jax.random.split(key, 3)
    watch = CompileWatch()
    num_replicas, num_particles = config.num_replicas, config.num_particles
    init_keys = jax.random.split(key_init, _num_systems(config) * num_particles)
    init_keys = init_keys.reshape(_num_systems(config), num_particles)
    states = call_compiled(_initial_states, (spec, config), (data, init_keys), watch)
    run_fingerprint = ""
    if checkpoint is not None:
        # `max_steps` is left out: an interrupted run may resume with a larger limit.
        run_fingerprint = fingerprint(
            model=spec.describe(), settings=config, seed=jax.random.key_data(key), data=data
        )

    def fields(records: smc.TemperedSMCInfo) -> dict[str, Any]:
        replica_log_z = _estimating(config, np.asarray(records.log_z[-1]))
        return {
            "beta": float(np.min(records.inverse_temperature[-1])),
            "log Z": combine_log_z(replica_log_z)[0]
            if num_replicas > 1
            else float(replica_log_z[0]),
        }

    # The number of steps is not known in advance: the bar counts them and shows beta.
    with make_progress_bar(progress, None, "tempering", rate_unit="steps/s") as bar:
        result = drive(
            _TemperingStep(spec, config),
            states,
            key_run,
            shared=data,
            is_done_fn=_all_finished,
            max_steps=max_steps,
            chunk_size=config.chunk_size,
            progress=bar,
            progress_fn=fields,
            description="tempering",
            checkpoint=checkpoint,
            run_fingerprint=run_fingerprint,
            watch=watch,
        )
    draws = call_compiled(_final_draws, (spec, config), (data, result.state, key_draws), watch)
    records: smc.TemperedSMCInfo = result.records
    replica_log_z = _estimating(config, np.asarray(result.state.log_z, np.float64))
    log_z, log_z_err = (
        combine_log_z(replica_log_z) if num_replicas > 1 else (float(replica_log_z[0]), np.nan)
    )
    betas = _estimating(config, np.asarray(records.inverse_temperature), 1)  # (steps, replicas)
    mcmc_steps = _estimating(config, np.asarray(records.num_mcmc_steps), 1)
    ladders, steps = [], []
    for replica in range(num_replicas):
        ladder = betas[:, replica]
        last = int(np.argmax(ladder >= 1.0)) if np.any(ladder >= 1.0) else ladder.size - 1
        ladders.append(ladder[: last + 1])
        steps.append(mcmc_steps[: last + 1, replica])
    # Prior draws cost one likelihood evaluation per particle.
    num_evals = int(np.sum(records.num_evals)) + _num_systems(config) * num_particles
    num_nonfinite = int(np.sum(records.num_nonfinite))
    num_collapsed = int(np.sum(records.is_collapsed))
    if num_nonfinite:
        warnings.warn(
            f"{num_nonfinite} particle log likelihoods were NaN or +inf and were weighted as "
            "zero likelihood: the model is undefined in part of the prior's support; check "
            "supports and data.",
            UserWarning,
            stacklevel=3,
        )
    return SMCResult(
        draws=jax.device_get(draws),
        log_z=log_z,
        log_z_err=log_z_err,
        replica_log_z=replica_log_z,
        tuning_log_z=float(result.state.log_z[0]) if config.tuning_replica else np.nan,
        inverse_temperatures=ladders,
        num_mcmc_steps=steps,
        num_likelihood_evals=num_evals,
        num_nonfinite=num_nonfinite,
        num_collapsed=num_collapsed,
        status=result.status,
        compile_seconds=result.compile_seconds,
        run_seconds=result.run_seconds,
    )
