"""Starting a run from another run's adapter (``--init-from``): the source checked as every reader checks a run
(regular files inside it, safetensors and JSON only, nothing repaired), then its weights loaded into the method."""

from __future__ import annotations

from pathlib import Path

import torch

from .config import TrainConfig
from .errors import GantuneError, first_line
from .methods import ADAPTER_SHAPE, adapter_kind
from .methods.base import TuningMethod
from .runs import RunFolder
from .settings import flag


def init_adapter(config: TrainConfig) -> RunFolder:
    """The run ``--init-from`` names, once its adapter is known to fit ``config``: a finished run's adapter of the
    same model, the same kind of adapter and the same shape, read as every reader reads a run (regular files inside
    it, safetensors and JSON only; nothing in it repaired or deleted)."""
    source = RunFolder(config.init_from)
    where = f"--init-from {config.init_from}"
    if config.out is not None and source.path.resolve() == Path(config.out).resolve():
        raise GantuneError(f"{where} names this run's own folder; start from another run")
    try:
        theirs, _ = source.read_config()
    except GantuneError as exc:
        raise GantuneError(f"{where}: {exc}") from exc
    mine_kind, their_kind = adapter_kind(config.method, config.adapter), adapter_kind(theirs.method, theirs.adapter)
    if mine_kind not in ADAPTER_SHAPE:
        raise GantuneError(f"{where}: --method {config.method} trains no adapter to start from another run's")
    if their_kind != mine_kind:
        raise GantuneError(f"{where} holds a {their_kind} adapter (--method {theirs.method}) but this run tunes "
                           f"{mine_kind}; start from a run of the same kind of adapter")
    if not _same_model(theirs.model, config.model) or theirs.gguf_file != config.gguf_file:
        raise GantuneError(f"{where} tuned the model {theirs.model!r}, not this run's {config.model!r}")
    for name in ADAPTER_SHAPE[mine_kind]:
        if getattr(theirs, name) != getattr(config, name):
            raise GantuneError(f"{where} has --{flag(name)} {getattr(theirs, name)}, this run "
                               f"{getattr(config, name)}: the adapters differ in shape; use the same value")
    try:
        source.checked_adapter()
    except GantuneError as exc:
        raise GantuneError(f"{where}: {exc}") from exc
    return source


def _same_model(a: str, b: str) -> bool:
    """Whether two --model values name one model: the same text, or one local folder however written."""
    if a == b:
        return True
    pa, pb = Path(a).expanduser(), Path(b).expanduser()
    return pa.exists() and pb.exists() and pa.resolve() == pb.resolve()


def start_from(method: TuningMethod, source: RunFolder, where: str) -> None:
    """Load another run's adapter into ``method`` (its optimiser fresh), leaving the run's random stream as it was."""
    def load(folder: Path) -> None:
        try:
            with torch.random.fork_rng(devices=[]):
                method.init_from(folder)
        except GantuneError:
            raise
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
            raise GantuneError(f"the adapter in {folder} does not fit this run ({first_line(exc)})") from exc

    try:
        source.read_adapter(load)
    except GantuneError as exc:
        raise GantuneError(f"--init-from {where}: {exc}") from exc
