"""The marker and claims: a run folder is its run's own, and gantune deletes only what it can prove it wrote.

A run claims its folder atomically (made create-exclusive, locked, then marked with ``gantune-run.json``),
so two runs never share one; gantune deletes only files of a folder holding its marker, and never
replaces a folder that lacks it (a user's folder, or a run made before the marker existed: that one
still opens and resumes). Whoever claims, resumes or deletes a run holds its lock (``lock.RunLock``)
until it is done.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import time
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Iterator

from ..errors import GantuneError
from .files import read_json_file
from .lock import LOCK, RunLock

MARKER = "gantune-run.json"


class Claims:
    """What a ``RunFolder`` does to own its folder: claim it, lock it, give it back, delete it."""

    path: Path
    config_path: Path
    marker_path: Path
    _replaced: Path | None  # the marker of the run a claim with overwrite is to replace, set aside
    _lock: RunLock | None

    # the one-writer lock -------------------------------------------------------------------------
    def lock(self, doing: str) -> "Claims":
        """Hold this run's lock for a writer that is ``doing`` something; one line naming the holder if another has it."""
        if self._lock is None:
            self._lock = RunLock.take(self.path, doing)
        return self

    def unlock(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    @contextmanager
    def guarded(self, doing: str) -> Iterator[None]:
        """Hold this run's lock while ``doing`` something that reads the run and writes into it (an evaluation), so
        no other job replaces or resumes it meanwhile; a lock this process already holds on it (the lock of the job
        that uses the run: a comparison's reference) covers it."""
        if self._lock is not None or RunLock.held_here(self.path):
            yield
            return
        self.lock(doing)
        try:
            yield
        finally:
            self.unlock()

    # claiming ------------------------------------------------------------------------------------
    def is_marked(self) -> bool:
        """Whether gantune claimed this folder for a run (its marker file is there)."""
        return self.marker_path.is_file()

    def claim(self, overwrite: bool = False) -> "Claims":
        """Make this folder a fresh run's own, atomically, and hold its lock: a new or empty folder is claimed (so is
        a claim whose run never wrote its settings); a run folder gantune made only with ``overwrite`` (its files go
        once the new run starts: ``drop_replaced``; nothing else of the folder's); anything else is refused.
        """
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.mkdir(self.path)
                self.lock("training")
                made = True
            except FileExistsError:
                made = self._take_over(overwrite)
            if not self._mark(made):
                self.unlock()
                raise GantuneError(f"{self.path} was claimed by another run just now; choose another --out")
        except OSError as exc:
            self.unlock()
            raise GantuneError(f"cannot create run folder {self.path}: {exc.strerror}") from exc
        return self

    def _take_over(self, overwrite: bool) -> bool:
        """Ready an existing folder to be claimed, its lock held: empty, a claim that never wrote a run, or a run
        gantune made (only with ``overwrite``: its marker is set aside); anything else is refused. Returns whether
        gantune made the folder itself."""
        if self.path.is_symlink() or not self.path.is_dir():
            raise GantuneError(f"{self.path} exists and is not a folder; choose another --out")
        if self.is_marked():
            self.lock("training (replacing the run there)" if overwrite else "training")
            if not self.config_path.exists() and {p.name for p in self.path.iterdir()} <= {MARKER, LOCK}:
                made = self._made_by_gantune()  # its run was stopped before it wrote anything: the claim is free
                self.marker_path.unlink()
                return made
            if not overwrite:
                self.unlock()
                raise GantuneError(f"{self.path} already holds a run; pass --resume {self.path} to continue it, "
                                   "--overwrite to replace it, or another --out")
            made = self._made_by_gantune()
            taken = self.path / f"{MARKER}.{secrets.token_hex(4)}.replaced"
            os.rename(self.marker_path, taken)
            self._replaced = taken
            return made
        if self.config_path.exists() or self.config_path.is_symlink():
            if _holds_run_settings(self.config_path):
                raise GantuneError(f"{self.path} holds a run made before gantune marked its run folders, so gantune "
                                   f"will not replace it; continue it with --resume {self.path}, or move it aside or "
                                   "choose another --out for a new run")
            raise GantuneError(f"{self.path} is not a gantune run folder; gantune replaces only run folders it made "
                               "— choose another --out")
        if any(p.name != LOCK for p in self.path.iterdir()):
            if self.is_marked():  # another run made and marked it since the check above
                raise GantuneError(f"{self.path} was claimed by another run just now; choose another --out")
            raise GantuneError(f"{self.path} is not a gantune run folder; gantune replaces only run folders it made "
                               "— choose another --out")
        self.lock("training")
        return False

    def _mark(self, made: bool) -> bool:
        """Write the marker, create-exclusive; False when another run marked the folder first."""
        try:
            fd = os.open(self.marker_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump({"run_id": secrets.token_hex(8), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                       "made_folder": made}, fh)
        return True

    def _made_by_gantune(self) -> bool:
        """Whether the marker says gantune made the folder itself (not a user's empty folder it claimed)."""
        try:
            return read_json_file(self.marker_path, self.path).get("made_folder") is True
        except (GantuneError, AttributeError):
            return False

    def _clear(self) -> None:
        """Remove what an earlier run wrote here: gantune's own files only (the folder's other files stay)."""
        for name in ("config.json", "metrics.jsonl", "summary.json", "samples.jsonl", "eval.json"):
            (self.path / name).unlink(missing_ok=True)
        for name in ("adapter", "checkpoint"):
            for d in (self.path / name, self.path / f".{name}.old"):
                if d.is_symlink():
                    d.unlink()
                shutil.rmtree(d, ignore_errors=True)

    def drop_replaced(self) -> None:
        """Remove the files of the run a claim with overwrite replaces, now that the new run starts."""
        if self._replaced is not None:
            self._clear()
            self._replaced.unlink(missing_ok=True)
            self._replaced = None

    def release(self) -> None:
        """Give back a claim nothing was written under (a run refused before its first file): a run it was to
        replace stays as it was; else the marker goes, and the folder too when the claim made it. The lock goes."""
        try:
            if self._replaced is not None:
                os.replace(self._replaced, self.marker_path)
                self._replaced = None
            elif {p.name for p in self.path.iterdir()} <= {MARKER, LOCK}:
                made = self._made_by_gantune()
                self.marker_path.unlink(missing_ok=True)
                (self.path / LOCK).unlink(missing_ok=True)
                if made:
                    self.path.rmdir()
        except OSError:
            pass  # whatever is left is harmless: an empty or marked folder
        finally:
            self.unlock()

    def delete(self, extra: tuple[Path, ...] = ()) -> None:
        """Delete this run as far as gantune can prove it wrote it, unless another job uses it (its lock): the whole
        folder when gantune made it (its marker says so); else gantune's own files (and ``extra``) of a marked folder
        or of a run made before the marker existed (its config.json holds run settings), and the folder when that
        empties it."""
        if not self.is_marked() and not _holds_run_settings(self.config_path):
            raise GantuneError(f"{self.path} was not made by gantune (it holds no gantune run), so gantune will not "
                               "delete it; delete it yourself if you mean to")
        self.lock("deleting the run")
        try:
            if self._made_by_gantune():
                shutil.rmtree(self.path)
                return
            self._clear()
            for f in (self.marker_path, self.path / LOCK, *extra):
                f.unlink(missing_ok=True)
            with suppress(OSError):
                self.path.rmdir()  # what else the folder holds is not gantune's: it stays
        finally:
            self.unlock()


def _holds_run_settings(config_path: Path) -> bool:
    """Whether a config.json is a gantune run's (a JSON object with its ``config`` settings), however damaged they are."""
    try:
        data = read_json_file(config_path, config_path.parent)
    except GantuneError:
        return False
    return isinstance(data, dict) and "config" in data
