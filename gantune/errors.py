"""The one exception type a user sees: a clear, one-line reason, never a traceback."""

from __future__ import annotations

import errno
from typing import Any

OUT_OF_MEMORY = ("out of memory; lower the batch size (--batch-size), the answer length (--max-new-tokens) "
                 "or the prompt length (--max-prompt-tokens)")


class GantuneError(Exception):
    """A problem with the user's input or environment, worded for the user.

    A refusal a page may say in its own words also names its kind (``key``, with its ``values``) and the
    setting it concerns (``setting``, a field of TrainConfig); the message stays the CLI's.
    """

    key: str | None = None
    setting: str | None = None
    values: dict[str, Any] = {}

    def __init__(self, *args: Any, key: str | None = None, setting: str | None = None, **values: Any):
        super().__init__(*args)
        if key is not None:
            self.key, self.values = key, values
        if setting is not None:
            self.setting = setting


def first_line(exc: BaseException) -> str:
    """An exception's first line of text (its type's name when it has none), for a one-line message."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def write_error(exc: OSError, what: str, where: object) -> GantuneError:
    """A failed write of ``what`` in ``where`` (a run folder, a report) as one line that says what to do (what was
    saved before stays: every write goes beside, then is renamed into place)."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        reason = "the disk is full; the previous copy is kept — free some space, then resume"
    elif exc.errno == errno.EFBIG:
        reason = ("a file grew past the size this process may write (ulimit -f, a quota); the previous copy is kept "
                  "— raise the limit, then resume")
    elif exc.errno == errno.ELOOP:
        reason = "a file there is a symbolic link; gantune writes only regular files of its run folder"
    elif exc.errno == errno.ENOENT:
        reason = "the folder was deleted or moved while writing"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        reason = "the folder cannot be written (permission denied or read-only)"
    else:
        reason = exc.strerror or type(exc).__name__
    return GantuneError(f"could not save {what} in {where}: {reason}")
