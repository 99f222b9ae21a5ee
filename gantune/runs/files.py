"""Files as a run writes and reads them: whole or not at all, and only regular files of the run's own folder.

Files are replaced whole (written beside, then renamed over); folders are swapped in by two renames:
a reader reads the last complete copy (``last_complete``) and changes nothing, and a crash between
them is undone by the next writer, who holds the run's lock (``recover_dir``). A failed write (disk full,
folder deleted or read-only) is one GantuneError line (``saving``); what was saved before stays as
it was. A file is read only when it is a regular file (never a symbolic link, FIFO or device: reading
one never blocks) lying inside the folder it belongs to (``read_regular``).
"""

from __future__ import annotations

import errno
import glob
import json
import os
import re
import shutil
import stat
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from safetensors import SafetensorError, safe_open

from ..errors import GantuneError, write_error


def _written(path: Path, text: str) -> str:
    """``text`` written whole, and flushed to the disk, to a new temporary file beside ``path``: its name."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return tmp


def write_text_atomic(path: Path, text: str) -> None:
    """Write text to a temporary file beside ``path``, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _written(path, text)
    try:
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON atomically (see ``write_text_atomic``)."""
    write_text_atomic(path, json.dumps(obj, indent=2))


def write_text_new(path: Path, text: str) -> None:
    """Write a new file, whole, where nothing is: FileExistsError when ``path`` exists (it is never replaced)."""
    path = Path(path)
    tmp = _written(path, text)
    try:
        os.link(tmp, path)  # fails, leaving ``path`` as it was, when something is there
    finally:
        Path(tmp).unlink(missing_ok=True)


def replace_dir_atomic(path: Path, fill: Callable[[Path], None]) -> None:
    """Fill a fresh temporary folder, then swap it in for ``path`` (the old one survives a failure)."""
    recover_dir(path)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        fill(tmp)
        old = path.with_name(f".{path.name}.old")
        if path.exists() or path.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
        os.replace(tmp, path)  # a crash just before this leaves only .old: recover_dir puts it back
        if old.is_symlink():
            old.unlink()
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def recover_dir(path: Path) -> None:
    """Undo a swap cut short by a crash: bring ``.name.old`` back when ``name`` is missing; drop stale temps.

    Only the holder of the run's lock calls this (a temporary folder may be another writer's, still filling); a
    reader without the lock reads ``last_complete`` and changes nothing."""
    old = path.with_name(f".{path.name}.old")
    if old.is_dir() and not old.is_symlink() and not path.exists():
        os.replace(old, path)
    if path.parent.is_dir():
        for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
            shutil.rmtree(stale, ignore_errors=True)


def last_complete(path: Path) -> Path:
    """The last complete copy of a folder that ``replace_dir_atomic`` swaps, as a reader without the run's lock reads
    it (nothing is repaired or deleted): ``path``, or the copy a swap cut short set aside (``.name.old``)."""
    old = path.with_name(f".{path.name}.old")
    if not (path.exists() or path.is_symlink()) and old.is_dir() and not old.is_symlink():
        return old
    return path


def identity(path: Path) -> tuple[int, int] | None:
    """What tells one folder from the next one swapped in at ``path`` (its device and inode); None when gone."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


@contextmanager
def saving(what: str, where: object) -> Iterator[None]:
    """Turn a failed write (disk full, folder gone, read-only) into one clear GantuneError line.

    safetensors reports its own failed writes as a SafetensorError naming the OS error's code.
    """
    try:
        yield
    except OSError as exc:
        raise write_error(exc, what, where) from exc
    except SafetensorError as exc:
        code = re.search(r"(?:os error |code: )(\d+)", str(exc))  # "… No space left on device (os error 28)"
        if code is None:
            raise
        number = int(code.group(1))
        raise write_error(OSError(number, os.strerror(number)), what, where) from exc


def read_regular(path: Path, inside: Path | None = None) -> bytes:
    """A file's bytes, when it is a regular file (a symbolic link, FIFO or device is refused, without blocking) lying
    inside the folder ``inside``; FileNotFoundError when there is none."""
    path = Path(path)
    if inside is not None and not _is_inside(path, inside):
        raise GantuneError(f"{path} lies outside {inside} (through a symbolic link); gantune reads only the files "
                           "inside it")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise GantuneError(f"{path} is a symbolic link; gantune reads only regular files") from None
        if isinstance(exc, FileNotFoundError):
            raise
        raise GantuneError(f"{path} cannot be read: {exc.strerror or type(exc).__name__}") from None
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise GantuneError(f"{path} is not a regular file (a folder, FIFO or device); gantune reads only regular "
                               "files")
        try:
            return fh.read()
        except OSError as exc:
            raise GantuneError(f"{path} cannot be read: {exc.strerror or type(exc).__name__}") from None


def check_regular(path: Path, inside: Path | None = None) -> None:
    """Refuse what ``read_regular`` refuses, for a file a library opens itself (safetensors)."""
    path = Path(path)
    if inside is not None and not _is_inside(path, inside):
        raise GantuneError(f"{path} lies outside {inside} (through a symbolic link); gantune reads only the files "
                           "inside it")
    mode = path.lstat().st_mode
    if not stat.S_ISREG(mode):
        raise GantuneError(f"{path} is not a regular file (a symbolic link, folder, FIFO or device); gantune reads "
                           "only regular files")


def check_tree(folder: Path, inside: Path) -> None:
    """Refuse a folder (an adapter, a checkpoint) that is a symbolic link, lies outside ``inside`` or holds anything
    but folders and regular files."""
    if folder.is_symlink() or not _is_inside(folder, inside):
        raise GantuneError(f"{folder} is a symbolic link or lies outside {inside}; gantune reads only what is inside it")
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            mode = os.lstat(os.path.join(root, name)).st_mode
            if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
                raise GantuneError(f"{os.path.join(root, name)} is not a regular file (a symbolic link, FIFO or "
                                   "device); gantune reads only regular files")


# what a saved adapter may hold: tensors as safetensors, settings and tokenizer files as text;
# anything else (pickles: .bin, .pt, .pkl; code: .py) could run code when loaded
DATA_SUFFIXES = {".safetensors", ".json", ".jinja", ".txt", ".md", ".model"}


def check_data_only(folder: Path) -> None:
    """Refuse an adapter folder that holds anything but safetensors and text (nothing in it may run)."""
    others = sorted(p.name for p in folder.rglob("*") if p.is_file() and p.suffix.lower() not in DATA_SUFFIXES)
    if others:
        raise GantuneError(f"{folder} holds {others[0]}, which is not safetensors or JSON; "
                           "gantune loads only those (nothing in a run may run code)")


def check_finite(folder: Path) -> None:
    """Refuse a folder whose safetensors hold a NaN or infinite weight (its files already checked: ``check_tree``)."""
    for path in sorted(folder.rglob("*.safetensors")):
        try:
            with safe_open(path, framework="pt") as tensors:
                for name in tensors.keys():
                    value = tensors.get_tensor(name)
                    if value.is_floating_point() and not torch.isfinite(value).all():
                        raise GantuneError(f"{folder}: the weight '{name}' in {path.name} holds NaN or infinite "
                                           "values (the adapter is damaged); train the run again or choose another")
        except (OSError, SafetensorError) as exc:
            raise GantuneError(f"{folder}: {path.name} is not a safetensors file gantune reads ({exc})") from exc


def _is_inside(path: Path, folder: Path) -> bool:
    return Path(path).resolve().is_relative_to(Path(folder).resolve())


def read_json_file(path: Path, inside: Path | None = None) -> Any:
    """A JSON file's value (a regular file, inside ``inside``); one GantuneError line naming the file when it is
    missing, not UTF-8, not JSON or unreadable."""
    try:
        return json.loads(read_regular(path, inside).decode("utf-8"))
    except UnicodeDecodeError:
        raise GantuneError(f"{path} is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise GantuneError(f"{path} is not valid JSON (line {exc.lineno}: {exc.msg})") from None
    except RecursionError:
        raise GantuneError(f"{path} is not a JSON file gantune reads (nested too deeply)") from None
    except OSError as exc:
        raise GantuneError(f"{path} cannot be read: {exc.strerror or type(exc).__name__}") from None


def append_line(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON line in one write to a regular file; a line torn by an earlier crash is closed off first."""
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK
                 | getattr(os, "O_CLOEXEC", 0), 0o644)
    with os.fdopen(fd, "r+b", buffering=0) as fh:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise GantuneError(f"{path} is not a regular file (a FIFO or device); gantune writes only regular files")
        end = os.lseek(fd, 0, os.SEEK_END)
        torn = end > 0 and os.pread(fd, 1, end - 1) != b"\n"
        fh.write((b"\n" if torn else b"") + (json.dumps(record) + "\n").encode("utf-8"))


def read_lines(path: Path, inside: Path | None = None) -> list[dict[str, Any]]:
    """The JSON objects of a JSON Lines file; a line torn by a crash, not UTF-8, or not an object is skipped."""
    try:
        raw = read_regular(path, inside)
    except FileNotFoundError:
        return []
    records = []
    for line in raw.splitlines():
        try:
            record = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            continue
        if isinstance(record, dict):
            records.append(record)
    return records
