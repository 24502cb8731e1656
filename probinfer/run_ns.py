"""Nested sampling on the driver: live points from the prior, iterations until the live
points hold a negligible share of the evidence, then the accounting of every point.

One driver step is one ``k``-deletion iteration (:func:`probinfer.ns.nested_sampling`); its
record is the ``k`` dead points. After the drive, the dead points and the final live points
(in increasing likelihood) are summarised by :func:`probinfer.ns.summarize`: ``log Z``, its
error from simulated shrinkages, the information and the posterior weights; equally
weighted draws are resampled from the weighted points.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, PRNGKeyArray

from probinfer import ns
from probinfer.checkpoint import fingerprint
from probinfer.driver import CompileWatch, DriveStatus, call_compiled, count_trace, drive
from probinfer.driver import progress_bar as make_progress_bar
from probinfer.mcmc import slice_sampler
from probinfer.mcmc._algorithm import Algorithm
from probinfer.mcmc._rwm import rwm

PyTree = Any
MOVE_ALGORITHMS: dict[str, Algorithm] = {"slice": slice_sampler, "rwm": rwm}
# Points are mapped to constrained space in batches of this size (one compiled program).
POSTPROCESS_BATCH = 1024
# The emulator's initial weights come from the run's initial key folded with this constant
# (a small integer would equal one of the live points' prior-draw keys).
EMULATOR_KEY_DATA = 0xE1A7_0C0D


class NSConfig(NamedTuple):
    """Static settings of one nested-sampling run (hashable: they key the compiled programs).

    Attributes:
        move: the constrained move's algorithm name (:data:`MOVE_ALGORITHMS`).
        options: sorted ``(name, value)`` pairs of the algorithm's build options.
        num_live: live points ``n``.
        num_delete: points replaced per iteration ``k``.
        num_steps: move transitions per replacement.
        step_size: the move's first step size (whitened units).
        metric: "dense" or "diag" whitening (None: by dimension).
        remaining_fraction: stop once the live points can add at most this fraction of Z.
        chunk_size: iterations per compiled chunk.
        emulator: likelihood-emulator settings, or None.
        bound: "ellipsoid" (draws by rejection from an ellipsoid around the live points
            while it accepts often enough; unit-cube targets only) or None.
        enlarge: the ellipsoid's volume margin.
    """

    move: str
    options: tuple[tuple[str, Any], ...]
    num_live: int
    num_delete: int
    num_steps: int
    step_size: float
    metric: str | None
    remaining_fraction: float
    chunk_size: int
    emulator: ns.Emulator | None = None
    bound: str | None = None
    enlarge: float = ns.DEFAULT_ENLARGE


class NSResult(NamedTuple):
    """What a nested-sampling run produced, on the host.

    Attributes:
        points: site name -> ``(num_points, ...)``: every dead point and the final live
            points, in removal order, constrained.
        log_weights: ``(num_points,)`` their normalised posterior log weights.
        log_z: the log-evidence estimate.
        log_z_err: its standard deviation over simulated shrinkage sequences.
        information: ``H`` in nats.
        log_z_err_information: Skilling's ``sqrt(H / n)``.
        ess: Kish's effective sample size of the weights.
        num_iterations: ``k``-deletion iterations.
        num_bounded_iterations: iterations whose replacements came from the bound.
        num_likelihood_evals: likelihood evaluations, prior draws included.
        num_emulator_evals: emulator evaluations (0 without one).
        num_emulated_iterations: iterations whose moves ran on the emulator.
        num_unconfirmed: emulated replacements the likelihood did not confirm.
        num_nonfinite: NaN or ``+inf`` log likelihoods met (treated as zero likelihood).
        status: how the drive ended.
        compile_seconds: time spent compiling.
        run_seconds: wall time of the run, compilation excluded.
    """

    points: dict[str, np.ndarray]
    log_weights: np.ndarray
    log_z: float
    log_z_err: float
    information: float
    log_z_err_information: float
    ess: float
    num_iterations: int
    num_bounded_iterations: int
    num_likelihood_evals: int
    num_emulator_evals: int
    num_emulated_iterations: int
    num_unconfirmed: int
    num_nonfinite: int
    status: DriveStatus
    compile_seconds: float
    run_seconds: float


def flat_dim(spec: Any, data: PyTree) -> int:
    """The flat dimension of the spec's positions (from a prior draw's shape, no compute).

    Args:
        spec: the target spec.
        data: its data.

    Returns:
        The number of unconstrained coordinates.
    """
    density = spec.bind(data)
    shapes = jax.eval_shape(density.sample_prior, jax.random.key(0))
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(shapes))


def _sampler(spec: Any, config: NSConfig, data: PyTree) -> ns.NestedSampler:
    return ns.nested_sampling(
        spec.bind(data).target,
        MOVE_ALGORITHMS[config.move],
        num_delete=config.num_delete,
        num_steps=config.num_steps,
        step_size=config.step_size,
        metric=config.metric,
        emulator=config.emulator,
        bound=config.bound,
        enlarge=config.enlarge,
        **dict(config.options),
    )


def check_settings(spec: Any, config: NSConfig, data: PyTree) -> None:
    """Check the settings against the target before anything is compiled.

    Args:
        spec: the target spec.
        config: the settings.
        data: the target's data.

    Raises:
        ValueError: for too few live points for ``num_delete`` or the dimension, a
            remaining fraction outside (0, 1), bad move settings, or a target without a
            prior and likelihood split.
    """
    ns.check_live_points(config.num_live, config.num_delete, flat_dim(spec, data))
    if not 0.0 < config.remaining_fraction < 1.0:
        raise ValueError(
            f"`remaining_fraction` must be in (0, 1), got {config.remaining_fraction}; 0.01 "
            "stops once the live points could add at most 1% to the evidence."
        )
    _sampler(spec, config, data)


class _Iteration(NamedTuple):
    """One nested-sampling iteration (a driver step; hashable)."""

    spec: Any
    config: NSConfig

    def __call__(
        self, key: PRNGKeyArray, state: ns.NestedState, step_index: Array, data: PyTree
    ) -> tuple[ns.NestedState, ns.NestedInfo]:
        return _sampler(self.spec, self.config, data).step(key, state)


class _Converged(NamedTuple):
    """Stop once ``L_max X / Z`` is below the fraction (hashable)."""

    log_fraction: float

    def __call__(self, state: ns.NestedState) -> Array:
        return ns.remaining_log_fraction(state) < self.log_fraction


def _initial_state(
    spec: Any, config: NSConfig, data: PyTree, key: PRNGKeyArray
) -> tuple[ns.NestedState, Array]:
    """``n`` prior draws as the live points, with their log likelihoods."""
    count_trace("ns_init")
    density = spec.bind(data)
    positions = jax.vmap(density.sample_prior)(jax.random.split(key, config.num_live))
    return _sampler(spec, config, data).init(positions, jax.random.fold_in(key, EMULATOR_KEY_DATA))


def _postprocess(spec: Any, data: PyTree, positions: PyTree) -> dict[str, Array]:
    """A batch of unconstrained points to constrained sites."""
    return jax.vmap(spec.bind(data).postprocess_fn)(positions)


def _constrained_points(
    spec: Any, data: PyTree, positions: PyTree, watch: CompileWatch
) -> dict[str, np.ndarray]:
    """Every point in constrained space, in fixed-size batches (one compiled program)."""
    num = jax.tree.leaves(positions)[0].shape[0]
    padded = -(-num // POSTPROCESS_BATCH) * POSTPROCESS_BATCH
    positions = jax.tree.map(
        lambda x: np.concatenate([x, np.repeat(x[:1], padded - num, axis=0)]), positions
    )
    batches = [
        jax.device_get(
            call_compiled(
                _postprocess,
                (spec,),
                (data, jax.tree.map(lambda x, i=i: x[i : i + POSTPROCESS_BATCH], positions)),
                watch,
            )
        )
        for i in range(0, padded, POSTPROCESS_BATCH)
    ]
    return jax.tree.map(lambda *parts: np.concatenate(parts)[:num], *batches)


def resample_equal(key: PRNGKeyArray, log_weights: np.ndarray, num_draws: int) -> np.ndarray:
    """Indices of ``num_draws`` equally weighted draws (systematic resampling, shuffled).

    Args:
        key: PRNG key.
        log_weights: ``(num,)`` normalised log weights.
        num_draws: draws to return.

    Returns:
        ``(num_draws,)`` indices into the points, in random order.
    """
    key_offset, key_shuffle = jax.random.split(key)
    weights = np.exp(np.asarray(log_weights, np.float64))
    cumulative = np.cumsum(weights / weights.sum())
    offset = float(jax.random.uniform(key_offset))
    indices = np.searchsorted(cumulative, (offset + np.arange(num_draws)) / num_draws)
    indices = np.minimum(indices, weights.size - 1)
    # Shuffle so that draw order carries no trace of the likelihood order (NumPy's generator
    # seeded by the key: JAX's permutation would compile anew for every number of draws).
    generator = np.random.default_rng(np.asarray(jax.random.key_data(key_shuffle)))
    return indices[generator.permutation(num_draws)]


def run_ns(
    spec: Any,
    data: PyTree,
    config: NSConfig,
    key: PRNGKeyArray,
    *,
    max_steps: int,
    progress: bool,
    checkpoint: Path | None = None,
) -> NSResult:
    """Run nested sampling until the live points hold a negligible share of the evidence.

    Args:
        spec: hashable target spec (see :mod:`probinfer.model`).
        data: the target's array data.
        config: static settings.
        key: PRNG key of the run.
        max_steps: the most iterations.
        progress: show a progress bar (log Z, the live points' remaining share, likelihood
            evaluations).
        checkpoint: folder for atomic checkpoints after every chunk (resumable).

    Returns:
        The :class:`NSResult`.
    """
    key_init, key_run, key_summary = jax.random.split(key, 3)
    watch = CompileWatch()
    state, num_nonfinite_init = call_compiled(
        _initial_state, (spec, config), (data, key_init), watch
    )
    run_fingerprint = ""
    if checkpoint is not None:
        # `max_steps` is left out: an interrupted run may resume with a larger limit.
        run_fingerprint = fingerprint(
            model=spec.describe(), settings=config, seed=jax.random.key_data(key), data=data
        )
    num_evals_so_far = [config.num_live]

    def fields(records: ns.NestedInfo) -> dict[str, Any]:
        num_evals_so_far[0] += int(np.sum(records.num_evals))
        emulated = (
            ""
            if config.emulator is None
            else f"{int(np.sum(records.is_emulated))}/{len(records.is_emulated)}"
        )
        return {
            **({"emulated": emulated} if emulated else {}),
            "log Z": float(records.log_z[-1]),
            "remaining": f"{float(np.exp(min(records.remaining_log_fraction[-1], 50.0))):.2g}",
            "evals": f"{num_evals_so_far[0]:.3g}",
        }

    with make_progress_bar(progress, None, "nested sampling", rate_unit="iterations/s") as bar:
        result = drive(
            _Iteration(spec, config),
            state,
            key_run,
            shared=data,
            is_done_fn=_Converged(float(np.log(config.remaining_fraction))),
            max_steps=max_steps,
            chunk_size=config.chunk_size,
            progress=bar,
            progress_fn=fields,
            description="nested sampling",
            checkpoint=checkpoint,
            run_fingerprint=run_fingerprint,
            watch=watch,
        )
    records: ns.NestedInfo = result.records
    final: ns.NestedState = result.state
    num_iterations = int(records.dead_loglikelihood.shape[0])
    order = np.argsort(np.asarray(final.loglikelihood), kind="stable")
    positions = jax.tree.map(
        lambda dead, live: np.concatenate(
            [dead.reshape(-1, *dead.shape[2:]), np.asarray(live)[order]]
        ),
        records.dead_positions,
        final.positions,
    )
    loglikelihood = np.concatenate(
        [records.dead_loglikelihood.reshape(-1), np.asarray(final.loglikelihood)[order]]
    )
    counts = ns.removal_counts(config.num_live, config.num_delete, num_iterations)
    num_points = counts.size
    # Padded to a power of two: one compiled program serves runs of similar lengths.
    padding = max(1024, 1 << (num_points - 1).bit_length()) - num_points
    padded_loglikelihood = np.concatenate([loglikelihood, np.full(padding, -np.inf)])
    padded_counts = np.concatenate([counts, np.zeros(padding, counts.dtype)])
    summary = call_compiled(
        ns.summarize,
        (),
        (key_summary, jnp.asarray(padded_loglikelihood, loglikelihood.dtype), padded_counts),
        watch,
    )
    summary = jax.device_get(summary)
    points = _constrained_points(spec, data, positions, watch)
    num_nonfinite = int(num_nonfinite_init) + int(np.sum(records.num_nonfinite))
    if num_nonfinite:
        warnings.warn(
            f"{num_nonfinite} log likelihoods were NaN or +inf and were treated as zero "
            "likelihood: the model is undefined in part of the prior's support; check "
            "supports and data.",
            UserWarning,
            stacklevel=3,
        )
    return NSResult(
        points=points,
        log_weights=np.asarray(summary.log_weights)[:num_points],
        log_z=float(summary.log_z),
        log_z_err=float(summary.log_z_err),
        information=float(summary.information),
        log_z_err_information=float(summary.log_z_err_information),
        ess=float(summary.ess),
        num_iterations=num_iterations,
        num_bounded_iterations=int(np.sum(records.is_bounded)),
        num_likelihood_evals=config.num_live + int(np.sum(records.num_evals)),
        num_emulator_evals=int(np.sum(records.num_emulator_evals)),
        num_emulated_iterations=int(np.sum(records.is_emulated)),
        num_unconfirmed=int(np.sum(records.num_unconfirmed)),
        num_nonfinite=num_nonfinite,
        status=result.status,
        compile_seconds=watch.compile_seconds,
        run_seconds=result.run_seconds,
    )
