"""A run's folder and everything that keeps it safe: what a run produces, written so that a crash never
leaves a torn file, by one writer at a time, and read back checked.

    config.json        settings, resolved model/data sources, the split, seed, the command that repeats it
    metrics.jsonl      one JSON object per step (appended line by line; a torn last line is skipped)
    adapter/           the tuned part: safetensors + JSON config (loadable without this run's objects)
    checkpoint/        weights + optimiser state (safetensors) + trainer state (JSON), for --resume
    summary.json       written at the end: steps, seconds, peak memory, where the adapter is
    gantune-run.json   the marker: written when a run claims the folder (JSON: a random id, when)
    gantune-run.lock   the one-writer lock (and a note of who holds it)

Where each part lives:

    folder.py    ``RunFolder``: each file's place, its writer and its checked reader
    files.py     whole-or-nothing writes, a failed write as one line, reads of regular files inside the folder only
    claims.py    the marker and claims: whose folder it is, what gantune may replace or delete
    lock.py      the one-writer lock (an OS lock that dies with its process)
    readers.py   the validating readers: config.json, trainer_state.json, eval.json, a comparison report
    summary.py   summary.json: ``RunSummary`` and its reader
"""

from .claims import MARKER
from .files import read_json_file, replace_dir_atomic, saving, write_json_atomic, write_text_atomic, write_text_new
from .folder import RunFolder, claim_unused, new_run_dir
from .lock import LOCK
from .summary import STATUSES, RunSummary

__all__ = ["LOCK", "MARKER", "STATUSES", "RunFolder", "RunSummary", "claim_unused", "new_run_dir", "read_json_file",
           "replace_dir_atomic", "saving", "write_json_atomic", "write_text_atomic", "write_text_new"]
