"""The output folder's record of finished items, so that a rerun redoes only what changed.

The manifest is ``OUT/.densecrf-manifest.jsonl``: a header line, then one
JSON line per finished item::

    {"key": "0001TP_008550", "inputs": [[path, size, mtime_ns], [path, size, mtime_ns]],
     "job": "<digest of the parameters>", "outputs": {"png": ["0001TP_008550.png", 5112]}}

An item counts as done when its latest line has the same inputs (absolute
path, size and modification time of each file, or a digest of each array),
the same job digest (parameters, output options, backend and densecrf's
version, not the executor or the worker count) and its outputs are still
there with the recorded sizes. Anything else is redone.

Lines are appended as items finish, after their outputs have been renamed
into place, each with one ``write`` on a file opened for appending: a run
killed at any point loses at most the items in flight, and a line cut short
by the kill is ignored when the file is read. At the end of a run the file is
rewritten (to a temporary file, then renamed) with one line per item. A
lock (``flock``) keeps two runs from writing to one folder at once.
"""

from __future__ import annotations

import contextlib
import json
import os

from .. import io

__all__ = ["MANIFEST_NAME", "Manifest"]

MANIFEST_NAME = ".densecrf-manifest.jsonl"
_HEADER = {"format": "densecrf-manifest", "version": 1}


class Manifest:
    """The records of an output folder (read on creation; :meth:`open` before :meth:`add`)."""

    def __init__(self, out_dir: str):
        self.out_dir = out_dir
        self.path = os.path.join(out_dir, MANIFEST_NAME)
        self.records: dict = {}
        self._fd = None
        self._lock_fd = None
        if os.path.exists(self.path):
            self._read()

    def _read(self) -> None:
        with open(self.path, "rb") as fh:
            lines = fh.read().split(b"\n")
        if not lines or not lines[0].strip():
            return
        try:
            head = json.loads(lines[0])
        except ValueError:
            head = None
        if not isinstance(head, dict) or head.get("format") != _HEADER["format"]:
            raise io.InputError(f"{self.path} is not a densecrf manifest; move it away or use another output folder")
        if head.get("version") != _HEADER["version"]:
            return  # another version's records: redo everything
        for line in lines[1:]:
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except ValueError:  # a line cut short by a killed run
                continue
            if isinstance(rec, dict) and isinstance(rec.get("key"), str):
                self.records[rec["key"]] = rec

    def is_done(self, key: str, inputs: list, job_key: str) -> bool:
        """True when ``key`` was finished from these inputs with this job and its outputs are intact."""
        rec = self.records.get(key)
        if rec is None or rec.get("job") != job_key or rec.get("inputs") != inputs:
            return False
        outputs = rec.get("outputs")
        if not isinstance(outputs, dict) or "png" not in outputs:
            return False
        for name, size in outputs.values():
            path = os.path.join(self.out_dir, name)
            try:
                if os.path.getsize(path) != size:
                    return False
            except OSError:
                return False
        return True

    # -- writing ---------------------------------------------------------------------
    def open(self) -> None:
        """Takes the folder's lock and opens the file for appending (writing the header if new)."""
        lock_path = os.path.join(self.out_dir, ".densecrf-manifest.lock")
        self._lock_fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock
            fcntl = None
        if fcntl is not None:
            try:
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(self._lock_fd)
                self._lock_fd = None
                raise io.InputError(f"another densecrf run is writing to {self.out_dir}") from None
        new = not os.path.exists(self.path) or os.path.getsize(self.path) == 0
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        if new:
            os.write(self._fd, (json.dumps(_HEADER) + "\n").encode())
        else:
            with open(self.path, "rb") as fh:  # a line cut short by a kill: end it before appending
                fh.seek(-1, os.SEEK_END)
                if fh.read(1) != b"\n":
                    os.write(self._fd, b"\n")

    def add(self, key: str, inputs: list, job_key: str, outputs: dict) -> None:
        """Records a finished item (its outputs already in place): one appended line."""
        rec = {
            "key": key,
            "inputs": inputs,
            "job": job_key,
            "outputs": {k: [os.path.basename(p), size] for k, (p, size) in outputs.items()},
        }
        self.records[key] = rec
        if self._fd is not None:
            os.write(self._fd, (json.dumps(rec, separators=(",", ":")) + "\n").encode())

    def close(self, compact: bool = True) -> None:
        """Rewrites the file with one line per item (atomically), then releases the lock."""
        try:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
                if compact:
                    with io.atomic_path(self.path) as tmp, open(tmp, "w") as fh:
                        fh.write(json.dumps(_HEADER) + "\n")
                        fh.writelines(json.dumps(rec, separators=(",", ":")) + "\n" for rec in self.records.values())
        finally:
            if self._lock_fd is not None:
                with contextlib.suppress(OSError):
                    os.close(self._lock_fd)
                self._lock_fd = None
