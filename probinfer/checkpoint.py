"""Atomic checkpoints of a drive, so that an interrupted run resumes where it stopped.

A drive's checkpoint folder holds ``progress.npz`` (the loop state, the step reached, the
time spent, the groups its members ran in, and a fingerprint of the run) and one
``records-<start>.npz`` per chunk of recorded steps. Every file is written to a temporary
name and renamed, so a run killed mid-write leaves the previous checkpoint intact. Because
every step's key is derived from the run's key and the step index, a resumed run produces
exactly the results of an uninterrupted one. Fingerprints describe functions by their code
and closed-over values (arrays by content), part by named part (model, settings, data,
seed, steps, library version), so a checkpoint is never resumed by another run and the
refusal names what differs. Every file carries a SHA-256 checksum of its arrays: a
truncated or corrupted file is reported with its path and never loaded. Files in other
formats (the amortizers' equinox serialisations) carry a checksum of their bytes in a
trailer (:func:`atomic_write_checked`, :func:`read_checked`).
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

import jax
import numpy as np

PyTree = Any


class DriveProgress(NamedTuple):
    """Where a drive stands.

    Attributes:
        state: the loop state (host arrays, same structure as the drive's state).
        step: steps done.
        seconds: run time so far, compilation excluded.
        num_groups: the groups of members the drive ran at once from host threads (1:
            one program); None in checkpoints written before it was recorded. A resumed
            drive of vectorized members keeps it, so that their steps round as before.

    Whether the drive had ended is not stored: the driver derives it from the step and the
    stop condition, so a run resumed with a larger step limit goes on.
    """

    state: PyTree
    step: int
    seconds: float
    num_groups: int | None = None


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


PART_DESCRIPTIONS = {
    "model": "model (its log density's code and constants)",
    "settings": "sampler settings",
    "data": "data",
    "seed": "seed",
    "drive_seed": "seed",
    "initial_points": "initial points (set by the seed, `chains` or `init_positions`)",
    "drive": "number of steps, chunk size, thinning or chain mapping",
    "library": "probinfer version",
    "run": "`run_fingerprint` given to the driver",
}
"""What each named part of a fingerprint covers, for the message when one differs."""


def _digest(value: PyTree) -> str:
    """SHA-256 (first 24 hex digits) of a pytree: its structure, array leaves by shape,
    dtype and bytes (whole, never an elided repr), other leaves by repr."""
    leaves, treedef = jax.tree.flatten(value)
    digest = hashlib.sha256(repr(treedef).encode())
    for leaf in leaves:
        if isinstance(leaf, np.ndarray | np.generic | jax.Array):
            array = np.asarray(leaf)
            digest.update(repr((array.shape, array.dtype.str)).encode())
            digest.update(np.ascontiguousarray(array).tobytes())
        else:
            digest.update(repr(leaf).encode())
    return digest.hexdigest()[:24]


def fingerprint(**parts: PyTree) -> str:
    """What must match for a checkpoint to be resumed, part by named part.

    Args:
        **parts: the run's named parts (``model``, ``settings``, ``data``, ``seed``, ...:
            :data:`PART_DESCRIPTIONS`), pytrees whose arrays are hashed by value.

    Returns:
        ``"name=digest"`` pairs joined by ``";"``; fingerprints of nested stages are joined
        with :func:`combine_fingerprints`.
    """
    return ";".join(f"{name}={_digest(value)}" for name, value in parts.items())


def combine_fingerprints(*fingerprints: str) -> str:
    """One fingerprint of several stages' (empty ones skipped)."""
    return ";".join(part for part in fingerprints if part)


def _differing_parts(saved: str, expected: str) -> list[str]:
    """The named parts whose digests differ between two fingerprints."""

    def parts(fingerprint: str) -> dict[str, str]:
        pairs = (piece.partition("=") for piece in fingerprint.split(";") if piece)
        return {name: digest for name, _, digest in pairs}

    saved_parts, expected_parts = parts(saved), parts(expected)
    names = dict.fromkeys([*expected_parts, *saved_parts])
    return [name for name in names if saved_parts.get(name) != expected_parts.get(name)]


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
    _fsync_folder(path.parent)


def _fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (an OS crash right after it keeps the new name).

    Folders cannot be opened for syncing on every platform (Windows): skipped there.
    """
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass  # some file systems refuse to sync a folder (EINVAL); the rename still stands
    finally:
        os.close(descriptor)


def atomic_save(path: Path, save: Callable[[Path], None]) -> None:
    """Save a file through a library that wants a path (``save(temporary_path)``), fsync
    it, then rename it into place: a crash (of the process or the OS) or an error mid-write
    never leaves a half-written ``path`` (a failed attempt's temporary file is removed; a
    killed one's is left as ``<name>.tmp``, never read).

    Args:
        path: the destination.
        save: writes the whole file to the path it is given.
    """
    temporary = path.with_name(path.name + ".tmp")
    try:
        save(temporary)
        # The library closed it; its bytes may still be cached. (Writable: Windows syncs
        # only handles opened for writing.)
        with open(temporary, "r+b") as file:
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)


def save_netcdf(idata: Any, path: str | os.PathLike) -> Path:
    """Write an ``InferenceData`` (every group and ``attrs``) to a NetCDF file atomically:
    under a temporary name, then renamed, so that a crash, a full disk or an interrupt
    never leaves a half-written ``path`` (``az.from_netcdf`` reads it back).

    Args:
        idata: what ``pi.sample``, ``pi.evidence(...).idata`` or ArviZ returned.
        path: the destination (``.nc``); an existing file there is replaced only once the
            new one is complete.

    Returns:
        The path written.

    Raises:
        TypeError: if ``idata`` is not an ``arviz.InferenceData``.
    """
    import arviz as az

    if not isinstance(idata, az.InferenceData):
        raise TypeError(
            f"`idata` must be an arviz.InferenceData, got {type(idata).__name__}; pass what "
            "`pi.sample` returns (or `result.idata` of `pi.evidence`)."
        )
    destination = Path(path)

    def save(temporary: Path) -> None:
        idata.to_netcdf(str(temporary))

    atomic_save(destination, save)
    return destination


CHECKSUM_MARK = b"\n#probinfer-sha256:"
"""Separates a checked file's content from the hex SHA-256 of that content at its end."""


def atomic_write_checked(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """:func:`atomic_write` with the SHA-256 of the content appended as a trailer
    (``CHECKSUM_MARK`` + 64 hex digits), for formats without a place for one.

    Readers that stop at the end of their format (equinox's) still read such a file;
    :func:`read_checked` verifies it.
    """
    buffer = io.BytesIO()
    write(buffer)
    content = buffer.getvalue()
    digest = hashlib.sha256(content).hexdigest().encode()

    def write_checked(file: BinaryIO) -> None:
        file.write(content + CHECKSUM_MARK + digest)

    atomic_write(path, write_checked)


def read_checked(path: Path, fix: str, *, allow_unchecked: bool = False) -> bytes:
    """The content of a file written by :func:`atomic_write_checked`, after checking it
    against its trailer.

    Args:
        path: the file.
        fix: what to do when it is refused (for the message).
        allow_unchecked: return a file without a trailer whole, with a
            ``DeprecationWarning`` (written before probinfer checked such files); its
            reader must still fail on a truncated one.

    Raises:
        ValueError: naming the file when the trailer is missing (truncated, or written
            without one) or the content does not match it (corrupted); nothing is used.
    """
    data = Path(path).read_bytes()
    content, mark, digest = data.rpartition(CHECKSUM_MARK)
    if not mark and allow_unchecked:
        warnings.warn(
            f"the file {path} has no checksum trailer (written by an older probinfer, or "
            "truncated): it is loaded unchecked. Save it again to add one.",
            DeprecationWarning,
            stacklevel=3,
        )
        return data
    if not mark:
        problem = "has no checksum trailer (truncated, or not written by probinfer)"
    elif hashlib.sha256(content).hexdigest().encode() != digest:
        problem = "does not match its SHA-256 checksum (corrupted or truncated)"
    else:
        return content
    raise ValueError(f"the file {path} {problem} and was not loaded. {fix}")


def _checksum(arrays: dict[str, np.ndarray]) -> str:
    """SHA-256 of every array's name, shape, dtype and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        array = np.asarray(arrays[name])
        digest.update(repr((name, array.shape, array.dtype.str)).encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def _atomic_savez(path: Path, arrays: dict[str, np.ndarray]) -> None:
    # NumPy's stub types `**kwds` next to `allow_pickle: bool`, so a dict of arrays cannot be
    # unpacked into it as typed; widen the values (the keys are array names, never flags).
    named: dict[str, Any] = {**arrays, "checksum": np.asarray(_checksum(arrays))}
    atomic_write(path, lambda file: np.savez(file, **named))


def _load_verified(path: Path) -> dict[str, np.ndarray]:
    """Every array of a checkpoint file, after checking it against its stored checksum.

    Raises:
        ValueError: naming the file when it cannot be read (truncated) or its content does
            not match its checksum (corrupted); nothing of it is used.
    """
    try:
        with np.load(path) as saved:
            arrays = {name: saved[name] for name in saved.files}
    except Exception as error:  # zipfile, OSError, EOFError, ValueError: all unreadable
        raise ValueError(
            f"the checkpoint file {path} is truncated or corrupted and was not loaded "
            f"({type(error).__name__}: {error}). Delete the folder {path.parent} to start the "
            "run over."
        ) from error
    stored = str(arrays.pop("checksum", ""))
    if stored != _checksum(arrays):
        raise ValueError(
            f"the checkpoint file {path} does not match its checksum (corrupted, or written "
            f"by a probinfer without checksums) and was not loaded. Delete the folder "
            f"{path.parent} to start the run over."
        )
    return arrays


def save_progress(folder: Path, run_fingerprint: str, progress: DriveProgress) -> None:
    """Write a drive's progress atomically.

    Args:
        folder: the checkpoint folder (created if needed).
        run_fingerprint: see :func:`fingerprint`.
        progress: the state and step reached.
    """
    folder.mkdir(parents=True, exist_ok=True)
    leaves = jax.tree.leaves(jax.device_get(progress.state))
    arrays = {f"state_{i}": np.asarray(leaf) for i, leaf in enumerate(leaves)}
    arrays.update(
        fingerprint=np.asarray(run_fingerprint),
        step=np.asarray(progress.step),
        seconds=np.asarray(progress.seconds),
    )
    if progress.num_groups is not None:
        arrays["num_groups"] = np.asarray(progress.num_groups)
    _atomic_savez(folder / "progress.npz", arrays)


def load_progress(folder: Path, run_fingerprint: str, state_like: PyTree) -> DriveProgress | None:
    """Read a drive's progress, if a checkpoint of this very drive exists.

    Args:
        folder: the checkpoint folder.
        run_fingerprint: see :func:`fingerprint`.
        state_like: a state with the structure to restore.

    Returns:
        The :class:`DriveProgress`, or None when the folder has no checkpoint.

    Raises:
        ValueError: when the checkpoint was written by a different run (naming the parts
            that differ), or its file is truncated or corrupted (naming the file).
    """
    path = folder / "progress.npz"
    if not path.exists():
        return None
    saved = _load_verified(path)
    if str(saved["fingerprint"]) != run_fingerprint:
        differing = _differing_parts(str(saved["fingerprint"]), run_fingerprint)
        what = ", ".join(dict.fromkeys(PART_DESCRIPTIONS.get(name, name) for name in differing))
        raise ValueError(
            f"the checkpoint in {folder} was written by a different run: its {what} "
            "differ(s) from this one's. Pass another `checkpoint` folder, or delete this one "
            "to start over."
        )
    treedef = jax.tree.structure(state_like)
    leaves = [saved[f"state_{i}"] for i in range(treedef.num_leaves)]
    return DriveProgress(
        state=jax.tree.unflatten(treedef, leaves),
        step=int(saved["step"]),
        seconds=float(saved["seconds"]),
        num_groups=int(saved["num_groups"]) if "num_groups" in saved else None,
    )


def save_records(folder: Path, start: int, records: PyTree) -> None:
    """Write one chunk's records atomically.

    Args:
        folder: the checkpoint folder (created if needed).
        start: index of the chunk's first step.
        records: the chunk's records (host arrays).
    """
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {f"leaf_{i}": np.asarray(leaf) for i, leaf in enumerate(jax.tree.leaves(records))}
    _atomic_savez(folder / f"records-{start:012d}.npz", arrays)


def load_records(folder: Path, end: int, records_like: PyTree) -> list[tuple[int, PyTree]]:
    """Read the saved chunks of records that start before step ``end``.

    Args:
        folder: the checkpoint folder.
        end: records of steps before this index are restored.
        records_like: a pytree with the records' structure.

    Returns:
        ``(start, records)`` per chunk, in order.
    """
    treedef = jax.tree.structure(records_like)
    chunks = []
    for path in sorted(folder.glob("records-*.npz")):
        start = int(path.stem.split("-")[1])
        if start >= end:
            continue
        saved = _load_verified(path)
        leaves = [saved[f"leaf_{i}"] for i in range(treedef.num_leaves)]
        chunks.append((start, jax.tree.unflatten(treedef, leaves)))
    return chunks
