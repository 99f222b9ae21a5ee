"""One writer per run folder: an OS lock on the folder's lock file, held by whoever trains, resumes, replaces,
compares with or deletes the run.

The lock is ``flock`` on ``gantune-run.lock``: the kernel drops it when its process ends, however it
ends, so a crash never leaves a stale lock. Taking it never waits: a second writer is refused at once
with one line naming the run and the holder (its process id, what it does, since when), which the
holder writes into the file. Locks belong to an open file, not to a process: two jobs of one server
exclude each other as two processes do.
"""

from __future__ import annotations

import fcntl
import json
import os
import stat
import time
from pathlib import Path

from ..errors import GantuneError

LOCK = "gantune-run.lock"
_HELD: dict[Path, int] = {}  # run folders this process holds locks on (resolved), and how many


class RunInUse(GantuneError):
    """Another writer holds the run folder's lock."""


class RunLock:
    """A held lock on a run folder; ``release`` (or the process's end) gives it back."""

    def __init__(self, folder: Path, fd: int):
        self.folder, self._fd = folder, fd
        self._key = Path(folder).resolve()
        _HELD[self._key] = _HELD.get(self._key, 0) + 1

    @staticmethod
    def held_here(folder: Path) -> bool:
        """Whether this process holds ``folder``'s lock (a job of this process that uses the run)."""
        return _HELD.get(Path(folder).resolve(), 0) > 0

    @classmethod
    def take(cls, folder: Path, doing: str) -> "RunLock":
        """Lock ``folder`` for a writer that is ``doing`` something (training, resuming …), or refuse in one line."""
        try:
            fd = os.open(Path(folder) / LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                         0o644)
        except OSError as exc:
            raise GantuneError(f"cannot lock run folder {folder}: {exc.strerror or type(exc).__name__}") from None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise GantuneError(f"cannot lock run folder {folder}: its {LOCK} is not a regular file")
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise RunInUse(f"{folder} is in use by another gantune job ({_holder(fd)}); wait for it to end or "
                                   "stop it first") from None
            holder = {"pid": os.getpid(), "doing": doing, "since": time.strftime("%Y-%m-%d %H:%M:%S")}
            try:
                os.ftruncate(fd, 0)
                os.pwrite(fd, json.dumps(holder).encode(), 0)
            except OSError:
                pass  # the lock holds without its note (a full disk): a refusal then names no holder
        except BaseException:
            os.close(fd)
            raise
        return cls(Path(folder), fd)

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # closing the file gives the lock back
            self._fd = -1
            _HELD[self._key] -= 1
            if not _HELD[self._key]:
                del _HELD[self._key]

    __del__ = release  # a lock nobody holds any more is given back

def _holder(fd: int) -> str:
    """Who holds the lock, as its note says (a note cut short reads as unknown)."""
    try:
        note = json.loads(os.pread(fd, 4096, 0).decode("utf-8"))
        return f"process {int(note['pid'])}, {note['doing']} since {note['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"
