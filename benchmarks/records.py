"""An append-only log of a long benchmark's finished units of work, so that a killed or
interrupted run resumes where it stopped instead of starting again.

The file is JSON lines: a header with the run's settings, then one line per finished unit
(``{"key": ..., "record": ...}``), each written and flushed to disk before the next unit
starts. A run reopening the file with other settings is refused with the settings that
differ (its units would not be the same measurements); a last line cut short by a kill is
dropped with a warning and its unit measured again. One run at a time uses a log: a
second is refused while the first holds it.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

from probinfer.checkpoint import atomic_write

try:
    import fcntl
except ImportError:  # not POSIX (Windows): no lock, one run at a time is up to the user
    fcntl = None


class RecordLog:
    """The finished units of one benchmark run, kept in ``path``.

    Args:
        path: the JSON-lines file; created (with its folder) if missing.
        settings: everything the measurements depend on (JSON-serialisable); the file's
            header must equal it.
        fresh: start again: an existing file is replaced.

    Raises:
        SystemExit: the file was written with other settings, is damaged, or another run
            holds it; the message names the file and what to do.
    """

    def __init__(self, path: Path, settings: dict[str, Any], *, fresh: bool = False) -> None:
        self.path = Path(path)
        self.settings = json.loads(json.dumps(settings))  # as the header reads back
        self.records: dict[str, Any] = {}
        self._closed = False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = self._hold_lock()
        try:
            if self.path.exists() and not fresh:
                self._read()
            else:
                self._rewrite()
        except BaseException:  # refused: let the next run have the log
            self.close()
            raise

    @staticmethod
    def key(*parts: object) -> str:
        """The key of a unit from its coordinates, e.g. ``key(3, 50, 12)``."""
        return "/".join(str(part) for part in parts)

    def get(self, key: str) -> Any | None:
        """The record of a finished unit, or None if it has not run."""
        return self.records.get(key)

    def add(self, key: str, record: Any) -> None:
        """Keep a finished unit's record, on disk before this returns.

        Raises:
            RuntimeError: the log was closed (another run may hold it now).
        """
        if self._closed:
            raise RuntimeError(f"{self.path} was closed; open it again to add records")
        line = json.dumps({"key": key, "record": record}) + "\n"  # fails before any change
        with open(self.path, "a") as file:
            file.write(line)
            file.flush()
            os.fsync(file.fileno())
        self.records[key] = record

    def close(self) -> None:
        """Let another run use the log (the process's exit does too); no more records."""
        self._closed = True
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def _hold_lock(self) -> Any:
        """An open lock file held exclusively while this log lives (None without fcntl)."""
        if fcntl is None:
            return None
        lock = open(self.path.with_name(f".{self.path.name}.lock"), "w")  # noqa: SIM115
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # held by another process (other errors are raised)
            lock.close()
            raise SystemExit(
                f"{self.path} is in use by another run; wait for it, or give this one another --out"
            ) from None
        return lock

    def _read(self) -> None:
        text = self.path.read_text()
        lines = text.splitlines()
        try:
            header = json.loads(lines[0])["settings"] if lines else None
        except (json.JSONDecodeError, KeyError, TypeError):
            header = None
        if not isinstance(header, dict):
            raise SystemExit(
                f"{self.path}: not a record log (no settings header); move it away, or "
                "start again with --fresh"
            )
        if header != self.settings:
            differ = sorted(
                name
                for name in {*header, *self.settings}
                if header.get(name) != self.settings.get(name)
            )
            detail = ", ".join(
                f"{name}: {header.get(name)!r} on file, {self.settings.get(name)!r} now"
                for name in differ
            )
            raise SystemExit(
                f"{self.path} was written with other settings ({detail}); its records are "
                "other measurements: use another --out, or start again with --fresh"
            )
        for number, line in enumerate(lines[1:], start=2):
            try:
                entry = json.loads(line)
                self.records[entry["key"]] = entry["record"]
            except (json.JSONDecodeError, KeyError, TypeError):
                if number < len(lines):
                    raise SystemExit(
                        f"{self.path}, line {number}: not a record; the file is damaged "
                        "(move it away, or start again with --fresh)"
                    ) from None
                warnings.warn(
                    f"{self.path}: its last line was cut short (a killed run); that unit "
                    "runs again",
                    stacklevel=3,
                )
                text = ""  # rewritten below
        if not text.endswith("\n"):  # so that the next record starts on a line of its own
            self._rewrite()

    def _rewrite(self) -> None:
        """The header and the records kept, written atomically."""
        entries = [{"settings": self.settings}]
        entries += [{"key": key, "record": record} for key, record in self.records.items()]
        text = "".join(json.dumps(entry) + "\n" for entry in entries)
        atomic_write(self.path, lambda file: file.write(text.encode()))
