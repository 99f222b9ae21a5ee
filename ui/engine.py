"""What the page talks to: settings, loaded models, the job manager, and the runs folder.

The UI calls only this and ``gantune``. Two model slots keep training and chat apart: a training
job may inject adapters into its copy, while chat switches adapters on its own copy.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import re
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from gantune.compare import ROWS, Progress, compare_methods, recorded_split, seeded_splits, shared_settings
from gantune.config import TrainConfig
from gantune.data import HUB_DATASET, QAPair, default_data_source, load_pairs, split_pairs
from gantune.errors import GantuneError
from gantune.evaluate import EvalSettings, Scorers, load_retention_sets
from gantune.metrics import token_lengths
from gantune.models import BaseModel, hub_reachable, load_base_model, pick_device, resolve_model
from gantune.runs import RunFolder, new_run_dir, saving, write_json_atomic
from gantune.trainer import diverged_message, train

from .i18n import tr
from .jobs import JobManager, JobStatus

ModelLoader = Callable[[str, "str | None", bool], BaseModel]
COMPARISONS = "comparisons"  # the folder of saved comparison reports, inside the runs folder
MAX_SEEDS = 5
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
# settings that set how long a training step takes: runs alike in these give the first time estimate
_PACE_SETTINGS = ("method", "model", "gguf_file", "batch_size", "max_new_tokens", "max_prompt_tokens", "rollout",
                  "samples_per_question", "discriminator", "epochs", "warmup_epochs")


class PageError(GantuneError):
    """A refusal worded for the page: its catalogue key and values (``str()`` is the English text).

    A value named ``<name>_key`` is itself a catalogue key, said in the page's language as ``<name>``.
    """

    def __init__(self, key: str, **values: Any):
        self.key, self.values = key, values
        super().__init__(self.text("en"))

    def text(self, lang: str) -> str:
        """The refusal in ``lang``."""
        values = {k.removesuffix("_key"): tr(lang, v) if k.endswith("_key") else v for k, v in self.values.items()}
        return tr(lang, self.key, **values)


def upload_folder() -> str:
    """Where Gradio keeps uploaded files (its GRADIO_TEMP_DIR rule)."""
    return os.environ.get("GRADIO_TEMP_DIR") or str(Path(tempfile.gettempdir()) / "gradio")


@dataclass
class Settings:
    runs_dir: Path = Path("runs")
    data: str | None = None  # default data source (None: ../shared/tofu when present, else the hub)
    space: bool = False  # hosted mode: caps, no local paths, no remote code
    max_n: int = 40
    max_epochs: int = 3
    max_new_tokens: int = 48
    max_upload_mb: float = 20.0  # an uploaded data file larger than this is refused (also enforced by Gradio)
    retention_n: int = 20  # retention questions per set in the page's evaluations
    max_seeds: int = 2  # hosted mode: seeds a comparison may take

    @classmethod
    def from_env(cls, **overrides: Any) -> "Settings":
        return cls(space=bool(os.environ.get("SPACE_ID")), **overrides)


class Engine:
    def __init__(self, settings: Settings | None = None, load_model: ModelLoader | None = None):
        self.settings = settings or Settings()
        self.settings.runs_dir.mkdir(parents=True, exist_ok=True)
        self.jobs = JobManager()
        self._load_model = load_model or self._load_base_model
        self._models: dict[str, tuple[tuple, BaseModel]] = {}
        self._model_lock = threading.Lock()
        self.chat_lock = threading.Lock()
        self._scorers: Scorers | None = None
        self._tokenizers: dict[tuple, Any] = {}  # the page's own copies (loaded_tokenizer)
        self._paces: dict[tuple, float] = {}  # seconds per step of jobs finished in this process, by _pace_key

    # --- models --------------------------------------------------------------------------------
    def model(self, name: str, gguf_file: str | None = None, trust_remote_code: bool = False,
              slot: str = "train") -> BaseModel:
        """The base model for a slot, loaded once per name."""
        self.check_model(name, gguf_file)
        if self.settings.space:
            trust_remote_code = False
        key = (name, gguf_file, trust_remote_code)
        with self._model_lock:
            held = self._models.get(slot)
            if held is None or held[0] != key:
                self._models.pop(slot, None)
                self._models[slot] = (key, self._load_model(name, gguf_file, trust_remote_code))
            return self._models[slot][1]

    def loaded_tokenizer(self, name: str, gguf_file: str | None) -> Any | None:
        """A copy of the tokenizer of ``name`` when a slot holds that model already (nothing is loaded for it).

        A copy: the page counts tokens while a training thread encodes with the original, and a fast
        tokenizer's settings are not safe to share between threads.
        """
        with self._model_lock:
            if (name, gguf_file) not in self._tokenizers:
                found = next((model.tokenizer for key, model in self._models.values() if key[:2] == (name, gguf_file)),
                             None)
                if found is None:
                    return None
                self._tokenizers[(name, gguf_file)] = copy.deepcopy(found)
            return self._tokenizers[(name, gguf_file)]

    def _load_base_model(self, name: str, gguf_file: str | None, trust_remote_code: bool) -> BaseModel:
        # hosted: a name is a hub id, never a path (even one shaped like "org/name" that exists here)
        return load_base_model(name, gguf_file, pick_device("auto"), trust_remote_code, local=not self.settings.space)

    def scorers(self) -> Scorers:
        if self._scorers is None:
            self._scorers = Scorers.load(device=str(pick_device("auto")))
        return self._scorers

    def check_model(self, name: str, gguf_file: str | None) -> None:
        """Hosted mode loads 'default' or a hub id only: nothing typed reaches the filesystem."""
        if not self.settings.space:
            return
        if gguf_file:
            raise PageError("hosted_no_gguf")
        try:
            valid = name == "default" or resolve_model(name, local=False)[2] == "hub"
        except GantuneError:  # not a valid hub id
            valid = False
        if not valid:
            raise PageError("hosted_hub_id", name=repr(name))

    # --- data ----------------------------------------------------------------------------------
    def data_source(self, kind: str, path: str | None, upload: str | None) -> str:
        """The data argument for gantune from the Setup widgets (offline folder, hub, or an upload).

        Hosted mode reads only its own data folder and Gradio's upload folder, whatever a request says.
        """
        default = self.settings.data or default_data_source()
        if kind == "upload":
            return self._checked_upload(upload)
        if kind == "hub":
            if not hub_reachable():  # said in the page's words, before a job starts
                raise PageError("hub_offline")
            return HUB_DATASET
        if kind != "offline":
            raise PageError("unknown_kind", kind=repr(kind))
        path = (path or "").strip()
        if self.settings.space:
            if path and Path(path).resolve() != Path(default).resolve():
                raise PageError("hosted_own_data")
            return default
        return path or default

    def _checked_upload(self, upload: str | None) -> str:
        if not upload:
            raise PageError("upload_first")
        path = Path(upload)
        if self.settings.space and not path.resolve().is_relative_to(Path(upload_folder()).resolve()):
            raise PageError("upload_only")
        if not path.is_file():
            raise PageError("upload_gone")
        size_mb = path.stat().st_size / 2**20
        if size_mb > self.settings.max_upload_mb:
            raise PageError("upload_too_big", size=f"{size_mb:.2f}", most=f"{self.settings.max_upload_mb:g}")
        return str(path)

    def pairs(self, data: str | None, subset: str, n: int | None, fraction: float, seed: int
              ) -> tuple[list[QAPair], list[QAPair], str]:
        pairs, source = load_pairs(data if data is not None else self.settings.data, subset)
        train_pairs, test_pairs = split_pairs(pairs, n, fraction, seed)
        return train_pairs, test_pairs, source

    # --- jobs ----------------------------------------------------------------------------------
    def check_limits(self, config: TrainConfig) -> None:
        s = self.settings
        if not s.space:
            return
        if config.n is None or config.n > s.max_n:
            raise PageError("hosted_max_n", n=s.max_n)
        if config.epochs > s.max_epochs:
            raise PageError("hosted_max_epochs", n=s.max_epochs)
        if config.max_new_tokens > s.max_new_tokens:
            raise PageError("hosted_max_tokens", n=s.max_new_tokens)

    def start_training(self, config: TrainConfig) -> JobStatus:
        """Train one run in the background; its folder is known at once so the page can plot it."""
        config.validate()
        self.check_limits(config)
        self.check_model(config.model, config.gguf_file)
        config.out = str(_unused(new_run_dir(self.settings.runs_dir, config.method, config.preset)))
        return self._start_train_job(config, f"{config.method} ({config.preset})", resume=False)

    def resume_training(self, run_id: str) -> JobStatus:
        """Continue a stopped or crashed run from its last checkpoint, in its own folder."""
        run = self.run_folder(run_id)
        config, _ = run.read_config()
        if not run.has_checkpoint():
            raise PageError("no_checkpoint", run=run.path.name)
        summary = read_json(run.summary_path) or {}
        if summary.get("status") == "completed" and summary.get("steps") == summary.get("total_steps"):
            raise PageError("already_complete", run=run.path.name)
        self.check_limits(config)
        self.check_model(config.model, config.gguf_file)
        config.out = str(run.path)
        return self._start_train_job(config, f"resume {run.path.name}", resume=True, title_key="title_resume",
                                     title_args={"run": run.path.name})

    def _start_train_job(self, config: TrainConfig, title: str, resume: bool, title_key: str = "",
                         title_args: dict[str, Any] | None = None) -> JobStatus:
        key = _pace_key(config)

        def body(report, should_stop):
            report(message="loading_model")
            base = self.model(config.model, config.gguf_file, config.trust_remote_code)
            report(message="training", steps_begin=True, pace_hint=self._pace_hint(key, config.out))
            summary = train(config, base=base, should_stop=should_stop, resume=resume,
                            on_step=lambda r: report(step=r["step"], total=r["total_steps"]))
            if (pace := self.jobs.status().pace) is not None:
                self._paces[key] = pace
            if summary["status"] == "diverged":
                raise GantuneError(diverged_message(summary))
            return summary

        return self.jobs.start("train", title, body, run=config.out, title_key=title_key, title_args=title_args)

    def start_comparison(self, reference_run: str, methods: list[str], seeds: int = 1) -> JobStatus:
        """Train ``methods`` beside a run, on its data, split and schedule, and evaluate them, it and base.

        ``seeds``: how many seeds, from the run's own: each further seed has its own split, on which
        the run's settings are trained again, then every method; the report gives means over the
        seeds with 95% intervals (``gantune.compare.compare_methods``, as the bench). The report is
        kept in ``<runs>/comparisons/`` and is the job's result.
        """
        reference = self.run_folder(reference_run)
        ref_config, _ = reference.read_config()
        unknown = [m for m in methods if m not in ROWS]
        if unknown:
            raise PageError("unknown_methods", methods=", ".join(unknown))
        if not 1 <= seeds <= MAX_SEEDS:
            raise PageError("seeds_range", most=MAX_SEEDS, seeds=seeds)
        if self.settings.space and seeds > self.settings.max_seeds:
            raise PageError("hosted_max_seeds", n=self.settings.max_seeds)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        seed_list = [ref_config.seed + i for i in range(seeds)]
        name = reference.path.name

        def body(report, should_stop):
            base = self.model(ref_config.model, ref_config.gguf_file, ref_config.trust_remote_code)
            splits = [recorded_split(reference.path)]
            if seeds > 1:
                splits += seeded_splits(ref_config.data, ref_config.subset, ref_config.n, ref_config.train_fraction,
                                        seed_list[1:])[0]
            trained = {name: {ref_config.seed: str(reference.path)}}
            stages = len(seed_list) - 1 + len(seed_list) * (2 + 2 * len(methods))
            report(step=0, total=stages, steps_begin=True)
            for i, seed in enumerate(seed_list[1:]):  # the run's own settings at the further seeds
                if should_stop():
                    return None
                out = _unused(self.settings.runs_dir / f"{name}-seed{seed}")
                report(step=i, run=str(out), message="training_method", args={"method": f"{name} (seed {seed})"})
                config = dataclasses.replace(ref_config, seed=seed, out=str(out))
                summary = train(config, base=base, should_stop=should_stop)
                if summary["status"] != "completed":
                    return None
                trained[name][seed] = str(out)
            offset = len(seed_list) - 1
            settings = EvalSettings(max_new_tokens=ref_config.max_new_tokens,
                                    max_prompt_tokens=ref_config.max_prompt_tokens,
                                    retention_n=self.settings.retention_n, seed=ref_config.seed)
            result = compare_methods(
                base, methods, splits, shared_settings(ref_config), self.settings.runs_dir, self.scorers(), settings,
                retention=load_retention_sets(ref_config.data, settings.retention_n, settings.seed), trained=trained,
                run_suffix=f"-{stamp}", should_stop=should_stop,
                progress=lambda p: report(step=offset + p.done, run=p.run, **progress_message(p)))
            return self._keep_comparison(result, base, stamp)

        return self.jobs.start("compare", f"compare {name} with {', '.join(methods)}", body, run=str(reference.path),
                               title_key="title_compare", title_args={"run": name, "methods": ", ".join(methods)})

    def _keep_comparison(self, result: dict[str, Any], base: BaseModel, stamp: str) -> dict[str, Any]:
        """The report, with every row's answer lengths in tokens (the page's histogram), saved under comparisons/."""
        generations = result.pop("generations", [])
        labels = [row["method"] for row in result["rows"]]
        result["lengths"] = {label: token_lengths(base.tokenizer, [g["answers"][label] for g in generations
                                                                   if label in g["answers"]]) for label in labels}
        result["lengths"]["reference"] = token_lengths(base.tokenizer, [g["reference"] for g in generations])
        result["runs"] = [r for row in result["rows"] for r in row.get("runs") or [] if r]
        result["created"] = stamp
        folder = self.settings.runs_dir / COMPARISONS
        with saving("the comparison", self.settings.runs_dir):
            folder.mkdir(exist_ok=True)
            write_json_atomic(folder / f"{stamp}.json", result)
        return result

    def comparisons(self) -> list[dict[str, Any]]:
        """The saved comparison reports, newest first."""
        folder = self.settings.runs_dir / COMPARISONS
        found = [read_json(p) for p in sorted(folder.glob("*.json"), reverse=True)] if folder.is_dir() else []
        return [r for r in found if r and isinstance(r.get("rows"), list)]

    # --- runs ----------------------------------------------------------------------------------
    def run_folder(self, run_id: str) -> RunFolder:
        """A run of the runs folder by its id (its folder name); nothing outside it is reachable."""
        name = str(run_id) if run_id else ""
        if not _RUN_ID.fullmatch(name):  # a bare folder name: no separators, no "..", no absolute path
            raise PageError("no_such_run", run=repr(run_id))
        path = (self.settings.runs_dir / name).resolve()
        if path.parent != self.settings.runs_dir.resolve() or not (path / "config.json").is_file():
            raise PageError("no_such_run", run=repr(run_id))
        return RunFolder(path)

    def runs_signature(self) -> tuple:
        """Changes whenever the runs list may have: a run folder made or deleted, a job started or ended."""
        try:
            folder = self.settings.runs_dir.stat().st_mtime_ns
        except OSError:
            folder = None
        job = self.jobs.status()
        return folder, job.kind, job.run, job.state, job.started, job.finished

    def planned_steps(self, run: str | Path) -> int | None:
        """The steps a training run will take, from what its config.json says (None before it is written)."""
        try:
            config, resolved = RunFolder(run).read_config()
        except GantuneError:
            return None
        n_train = resolved.get("n_train")
        return math.ceil(n_train / config.batch_size) * config.epochs if n_train else None

    def _pace_hint(self, key: tuple, out: str | None) -> float | None:
        """Seconds per step of a run alike in ``_PACE_SETTINGS``: one finished in this process, else a saved one."""
        if key in self._paces:
            return self._paces[key]
        for row in self.list_runs():
            if out and row["run"] == Path(out).name or not row["steps"] or not row["seconds"]:
                continue
            try:
                config, _ = self.run_folder(row["run"]).read_config()
            except GantuneError:
                continue
            if _pace_key(config) == key:
                return row["seconds"] / row["steps"]
        return None

    def list_runs(self) -> list[dict[str, Any]]:
        """Every run folder, newest first, with what its files say."""
        # ordered by when config.json was written (a run's start): the folder's own mtime moves whenever
        # a file lands in it (eval.json, the adapter .zip), which would reshuffle old runs to the top
        found = []
        for path in self.settings.runs_dir.iterdir():
            try:
                found.append(((path / "config.json").stat().st_mtime, path))
            except OSError:  # not a run folder, or deleted meanwhile
                continue
        status = self.jobs.status()
        rows = []
        for started, path in sorted(found, reverse=True):
            run = RunFolder(path)
            try:
                config, _ = run.read_config()
            except GantuneError:
                continue
            summary = read_json(run.summary_path) or {}
            live = status.active and status.run and Path(status.run).resolve() == path.resolve()
            rows.append({
                "run": path.name, "method": config.method, "preset": config.preset,
                "status": "running" if live else summary.get("status", "unfinished"),
                "steps": summary["steps"] if "steps" in summary else len(run.read_metrics()),
                "seconds": summary.get("seconds"),
                "peak_memory_mb": summary.get("peak_memory_mb"), "trainable_params": summary.get("trainable_params"),
                "evaluated": run.eval_path.is_file(), "adapter": run.adapter_dir.is_dir(),
                "created": time.strftime("%Y-%m-%d %H:%M", time.localtime(started)),
            })
        return rows

    def delete_run(self, run_id: str) -> None:
        run = self.run_folder(run_id)
        status = self.jobs.status()
        if status.active and status.run and Path(status.run).resolve() == run.path.resolve():
            raise PageError("run_busy")
        shutil.rmtree(run.path)

    def adapter_archive(self, run_id: str) -> Path:
        """A .zip of the run's adapter folder (safetensors + JSON config), made in the run folder."""
        run = self.run_folder(run_id)
        if not run.adapter_dir.is_dir():
            raise PageError("no_adapter", run=run.path.name)
        archive = run.path / f"{run.path.name}-adapter.zip"
        with saving("the adapter archive", run.path), tempfile.TemporaryDirectory(dir=run.path) as tmp:
            made = shutil.make_archive(str(Path(tmp) / "adapter"), "zip", run.adapter_dir)
            os.replace(made, archive)  # whole or not at all: a download never gets a torn .zip
        return archive


def progress_message(progress: Progress) -> dict[str, Any]:
    """A comparison's stage as the job's message: a catalogue key (``compare_<kind>``) and its values."""
    step, steps = progress.step or (None, None)
    return {"message": f"compare_{progress.kind}",
            "args": {"seed": progress.seed, "method": progress.method, "step": step, "total": steps}}


def _pace_key(config: TrainConfig) -> tuple:
    return tuple(json.dumps(getattr(config, name, None)) for name in _PACE_SETTINGS)


def _unused(path: Path) -> Path:
    """``path``, or ``path-2``, ``path-3`` … when a run already took that name (two starts in one second)."""
    candidate, i = path, 2
    while candidate.exists():
        candidate, i = path.with_name(f"{path.name}-{i}"), i + 1
    return candidate


def read_json(path: Path) -> dict | None:
    """A JSON file's object, or None when it is missing or torn."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
