"""Atomic checkpoints of a sampling run, so that an interrupted run resumes where it stopped.

A checkpoint folder holds ``progress.npz`` (the chains' states, the phase and step reached,
the time spent, and a fingerprint of the run) and one ``draws-<start>.npz`` per sampling
chunk. Every file is written to a temporary name and renamed, so a run killed mid-write
leaves the previous checkpoint intact. Because every step's key is derived from the seed
and the step index, a resumed run produces exactly the draws of an uninterrupted one.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

import jax
import numpy as np

PyTree = Any


class RunProgress(NamedTuple):
    """Where a run stands.

    Attributes:
        states: the chains' states (host arrays, same structure as the run's states).
        phase: index of the phase reached (0 warm-up, 1 sampling, 2 finished).
        start: next step within that phase.
        seconds: time spent so far per phase.
    """

    states: PyTree
    phase: int
    start: int
    seconds: dict[str, float]


def _describe_value(value: Any, depth: int) -> str:
    """A stable description of a value met in a function's closure or defaults."""
    if isinstance(value, jax.Array | np.ndarray | np.generic):
        array = np.asarray(value)
        # By content: ``repr`` elides the middle of large arrays, so two datasets that differ
        # in one element of thousands would otherwise describe alike.
        digest = hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()
        return f"array{array.shape}{array.dtype.str}:{digest}"
    if callable(value) and depth < 8:
        return describe_callable(value, _depth=depth + 1)
    if isinstance(value, tuple | list) and depth < 8:
        return repr(type(value)(_describe_value(v, depth + 1) for v in value))
    if isinstance(value, dict) and depth < 8:
        return repr({k: _describe_value(v, depth + 1) for k, v in value.items()})
    return repr(value)


def describe_callable(fn: Callable[..., Any], *, _depth: int = 0) -> str:
    """Name and code of a function, stable across processes (``repr`` of a function is not).

    Arrays among the closure values and defaults are described by a digest of their
    contents, and functions among them recursively, so a change of closed-over data changes
    the description.

    Args:
        fn: a function (or any callable, e.g. a ``functools.partial``).

    Returns:
        Its module, qualified name, bytecode, constants, closure values and defaults.
    """
    if isinstance(fn, functools.partial):
        return repr(
            (
                "partial",
                describe_callable(fn.func, _depth=_depth + 1),
                _describe_value(fn.args, _depth + 1),
                _describe_value(fn.keywords, _depth + 1),
            )
        )
    code = getattr(fn, "__code__", None)
    closure = getattr(fn, "__closure__", None) or ()
    cells = []
    for cell in closure:
        try:
            cells.append(_describe_value(cell.cell_contents, _depth))
        except ValueError:  # an empty cell
            cells.append("<empty>")
    parts = (
        getattr(fn, "__module__", None),
        getattr(fn, "__qualname__", type(fn).__name__),
        None if code is None else code.co_code.hex(),
        None if code is None else repr(code.co_consts),
        tuple(cells),
        _describe_value(getattr(fn, "__defaults__", None), _depth),
    )
    return repr(parts)


def fingerprint(*parts: Any, data: PyTree = ()) -> str:
    """A digest of everything that must match for a checkpoint to be resumed.

    Args:
        *parts: reprs of the run's settings (target spec, config, counts, seed).
        data: the target's array data (hashed by value).

    Returns:
        A hex digest.
    """
    digest = hashlib.sha256()
    for part in parts:
        digest.update(repr(part).encode())
    for leaf in jax.tree.leaves(data):
        array = np.asarray(leaf)
        digest.update(repr((array.shape, array.dtype.str)).encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Write a file through ``write(file)`` to a temporary name, fsync it, then rename it.

    Args:
        path: the destination; an interrupted write leaves its previous version intact.
        write: writes the content to an open binary file.
    """
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "wb") as file:
        write(file)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)


def _atomic_savez(path: Path, arrays: dict[str, np.ndarray]) -> None:
    # NumPy's stub types `**kwds` next to `allow_pickle: bool`, so a dict of arrays cannot be
    # unpacked into it as typed; widen the values (the keys are array names, never flags).
    named: dict[str, Any] = arrays
    atomic_write(path, lambda file: np.savez(file, **named))


def save_progress(folder: Path, run_fingerprint: str, progress: RunProgress) -> None:
    """Write the run's progress atomically.

    Args:
        folder: the checkpoint folder (created if needed).
        run_fingerprint: see :func:`fingerprint`.
        progress: the states and position reached.
    """
    folder.mkdir(parents=True, exist_ok=True)
    leaves = jax.tree.leaves(jax.device_get(progress.states))
    arrays = {f"state_{i}": np.asarray(leaf) for i, leaf in enumerate(leaves)}
    arrays.update(
        fingerprint=np.asarray(run_fingerprint),
        phase=np.asarray(progress.phase),
        start=np.asarray(progress.start),
        seconds=np.asarray([progress.seconds["warmup"], progress.seconds["sampling"]]),
    )
    _atomic_savez(folder / "progress.npz", arrays)


def load_progress(folder: Path, run_fingerprint: str, states_like: PyTree) -> RunProgress | None:
    """Read the run's progress, if a checkpoint of this very run exists.

    Args:
        folder: the checkpoint folder.
        run_fingerprint: see :func:`fingerprint`.
        states_like: states with the structure to restore.

    Returns:
        The :class:`RunProgress`, or None when the folder has no checkpoint.

    Raises:
        ValueError: when the checkpoint was written by a different run.
    """
    path = folder / "progress.npz"
    if not path.exists():
        return None
    with np.load(path) as saved:
        if str(saved["fingerprint"]) != run_fingerprint:
            raise ValueError(
                f"the checkpoint in {folder} was written by a different run (other model, data, "
                "settings or seed); pass another `checkpoint` folder or delete this one."
            )
        treedef = jax.tree.structure(states_like)
        leaves = [saved[f"state_{i}"] for i in range(treedef.num_leaves)]
        seconds = saved["seconds"]
        return RunProgress(
            states=jax.tree.unflatten(treedef, leaves),
            phase=int(saved["phase"]),
            start=int(saved["start"]),
            seconds={"warmup": float(seconds[0]), "sampling": float(seconds[1])},
        )


def save_chunk(
    folder: Path, start: int, draws: dict[str, np.ndarray], stats: dict[str, np.ndarray]
) -> None:
    """Write one sampling chunk's draws and stats atomically.

    Args:
        folder: the checkpoint folder.
        start: index of the chunk's first draw.
        draws: site name -> ``(chains, steps, ...)``.
        stats: stat name -> ``(chains, steps)``.
    """
    arrays = {f"draw/{k}": v for k, v in draws.items()}
    arrays.update({f"stat/{k}": v for k, v in stats.items()})
    _atomic_savez(folder / f"draws-{start:012d}.npz", arrays)


def load_chunks(
    folder: Path, end: int
) -> list[tuple[int, dict[str, np.ndarray], dict[str, np.ndarray]]]:
    """Read the saved sampling chunks that start before draw ``end``.

    Args:
        folder: the checkpoint folder.
        end: draws before this index are restored.

    Returns:
        ``(start, draws, stats)`` per chunk, in order.
    """
    chunks = []
    for path in sorted(folder.glob("draws-*.npz")):
        start = int(path.stem.split("-")[1])
        if start >= end:
            continue
        with np.load(path) as saved:
            draws = {k[5:]: saved[k] for k in saved.files if k.startswith("draw/")}
            stats = {k[5:]: saved[k] for k in saved.files if k.startswith("stat/")}
        chunks.append((start, draws, stats))
    return chunks
