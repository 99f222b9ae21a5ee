"""What the tabs talk to: the workbench's jobs (train, resume, compare), each checked once at its door.

A job's door checks the request (its settings, the hosted rules, consent to a model's own code) and claims or locks
what it writes (a run another process writes is refused there); the job manager then runs it in the background, and
the job gives its locks back when it ends. The work itself is the library's. The tabs use the parts for everything
else: ``policy`` (``ui.policy``), ``models`` (``ui.models``), ``runs`` (``ui.catalogue``) and ``jobs``. What a hosted
page says names no server path (``Engine.shown``).
"""

from __future__ import annotations

import dataclasses
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from gantune.compare import ComparisonFailed, Progress, answer_lengths, baseline_config, compare_with_run
from gantune.config import TrainConfig
from gantune.data import QAPair, load_pairs, split_pairs
from gantune.errors import GantuneError
from gantune.models import BaseModel
from gantune.runs import RunFolder, claim_unused, new_run_dir
from gantune.trainer import diverged_message, train

from .catalogue import Catalogue, planned_steps
from .estimate import StageClock, plan_comparison
from .jobs import JobManager, JobStatus
from .models import ModelLoader, Models
from .policy import PageError, Policy, Settings


class Engine:
    def __init__(self, settings: Settings | None = None, load_model: ModelLoader | None = None):
        self.settings = settings or Settings()
        self.settings.runs_dir.mkdir(parents=True, exist_ok=True)
        self.policy = Policy(self.settings)
        self.models = Models(load_model, local=not self.settings.space)
        self.jobs = JobManager()
        self.runs = Catalogue(self.settings.runs_dir, self.jobs)

    def model(self, name: str, gguf_file: str | None = None, trust_remote_code: bool = False,
              slot: str = "train") -> BaseModel:
        """A base model for the page (Setup's Load and preview, Chat), admitted by the hosted rules, loaded once;
        ``trust_remote_code``: Setup's box, or a run the person allowed (``Policy.run_trust``)."""
        with self.shown():
            self.policy.check_model(name, gguf_file)
            return self.models.get(name, gguf_file, self.policy.trust(name, gguf_file, trust_remote_code), slot)

    def pairs(self, data: str | None, subset: str, n: int | None, fraction: float, seed: int
              ) -> tuple[list[QAPair], list[QAPair], str]:
        """The train and test pairs of a data source as a run would split them, and the source's description."""
        with self.shown():
            pairs, source = load_pairs(data if data is not None else self.settings.data, subset)
            train_pairs, test_pairs = split_pairs(pairs, n, fraction, seed)
        return train_pairs, test_pairs, self.policy.shown(source)

    @contextmanager
    def shown(self) -> Iterator[None]:
        """A refusal as the page shows it: hosted, with no server path in it (``Policy.shown``)."""
        try:
            yield
        except GantuneError as exc:
            if not self.settings.space:
                raise
            if isinstance(exc, PageError):
                raise PageError(exc.key, **{k: self.policy.shown(v) if isinstance(v, str) else v
                                            for k, v in exc.values.items()}) from exc
            raise GantuneError(self.policy.shown(str(exc))) from exc

    # --- training ----------------------------------------------------------------------------------
    def start_training(self, config: TrainConfig) -> JobStatus:
        """Train a new run in the background: the door of a Start click, where its settings are checked (once:
        ``TrainConfig.validate``, then the hosted rules); its folder is claimed at once so the page can plot it."""
        with self.shown():
            config.validate()
            trust = self.policy.admit(config)
            # claimed (and locked) at once, a new name when two starts share a second: the page plots it from the start
            run = claim_unused(new_run_dir(self.settings.runs_dir, config.method, config.preset))
            config.out = str(run.path)
            return self._start_train_job(config, trust, f"{config.method} ({config.preset})", run,
                                         title_key="title_train", title_args={"preset": config.preset})

    def resume_training(self, run_id: str) -> JobStatus:
        """Continue a stopped or crashed run from its last checkpoint, in its own folder (locked here: refused if busy)."""
        with self.shown():
            run = self.runs.folder(run_id)
            config, _ = run.read_config()  # checked as a new run's settings are
            if not run.has_checkpoint():
                raise PageError("no_checkpoint", run=run.path.name)
            summary = run.read_summary()
            if summary is not None and summary.complete:
                raise PageError("already_complete", run=run.path.name)
            trust = self.policy.admit(config, run=run.path.name)
            run.lock("resuming the run")
            config.out = str(run.path)
            state, total = run.checkpoint_state(), planned_steps(run)  # progress starts there (12/18, not 0/18)
            return self._start_train_job(config, trust, f"resume {run.path.name}", run, resume=True,
                                         title_key="title_resume", title_args={"run": run.path.name},
                                         at={"step": state["step"], "total": total} if state and total else {})

    def _start_train_job(self, config: TrainConfig, trust: bool, title: str, run: RunFolder, resume: bool = False,
                         title_key: str = "", title_args: dict[str, Any] | None = None,
                         at: dict[str, int] | None = None) -> JobStatus:
        """Train ``config`` (validated and admitted) as the background job; ``trust``: its model may run its own code;
        ``run``: its folder, claimed (a new run: given back if the job fails before writing to it) or locked (a resume),
        given back when training ends; ``at``: where a resumed run's progress starts (its checkpoint's step, total)."""
        def give_back() -> None:
            run.unlock() if resume else run.release()

        def body(report, should_stop):
            with self.shown():
                try:
                    report(message="loading_model", **(at or {}))
                    base = self.models.get(config.model, config.gguf_file, trust, precision=config.precision)
                    report(message="training", steps_begin=True, pace_hint=self.runs.pace_hint(config, besides=run))
                    summary = train(config, base=base, should_stop=should_stop, resume=resume, claimed=run,
                                    validated=True, on_step=lambda r: report(
                                        step=r["step"], total=r["total_steps"], phase=r.get("phase"),
                                        period=round(r["step"] / r["epoch"]) if r.get("epoch") else None))
                except BaseException:
                    give_back()
                    raise
                if (pace := self.jobs.status().pace) is not None:
                    self.runs.note_pace(config, pace)
                if summary.status == "diverged":
                    raise GantuneError(diverged_message(summary))
                return summary

        try:
            return self.jobs.start("train", title, body, run=config.out, title_key=title_key, title_args=title_args)
        except BaseException:
            give_back()
            raise

    # --- comparison --------------------------------------------------------------------------------
    def start_comparison(self, run_id: str, methods: list[str], seeds: int = 1) -> JobStatus:
        """Train ``methods`` beside a run on its data, split and schedule over ``seeds`` seeds from its own, and evaluate
        them, it and base (``gantune.compare.compare_with_run``); the report, kept in ``<runs>/comparisons/``, is the result."""
        with self.shown():
            reference = self.runs.folder(run_id)
            ref_config, _ = reference.read_config()
            name = reference.path.name
            self.policy.check_comparison(methods, seeds)
            if seeds > 1:  # the runs at the further seeds: checked here, not in the job
                dataclasses.replace(ref_config, seed=ref_config.seed + seeds - 1).validate()
            self.policy.check_model(ref_config.model, ref_config.gguf_file)
            for row in methods:  # each row it trains: within a Space's caps and step budget too
                self.policy.check_limits(baseline_config(ref_config, row, ref_config.out))
            self.policy.check_plan(plan_comparison(reference, methods, seeds, self.settings.retention_n, self.models.loaded(
                ref_config.model, ref_config.gguf_file), self.runs.pace_hint, eval_pace=self.runs.eval_pace_hint(
                ref_config)).seconds)  # hosted: the whole job's time too
            trust = self.policy.run_trust(ref_config, name)
            reference.lock("comparing it with other methods")  # read, and its eval.json written, by this job
        stamp = time.strftime("%Y%m%d-%H%M%S")

        def using(run: str | Path | None) -> None:
            if run:
                self.runs.in_use.add(Path(run).resolve())  # no run this job reads or writes may be deleted meanwhile

        def body(report, should_stop):
            using(reference.path)
            try:
                with self.shown():
                    base = self.models.get(ref_config.model, ref_config.gguf_file, trust, precision=ref_config.precision)
                    plan = plan_comparison(reference, methods, seeds, self.settings.retention_n, base, self.runs.pace_hint,
                                           eval_pace=self.runs.eval_pace_hint(ref_config))
                    report(step=0, plan=plan.as_report(), steps_begin=True)
                    clock = StageClock()

                    def told(p: Progress) -> None:
                        clock.tell(p.done, p.kind)
                        using(p.run)
                        report(step=p.done, run=p.run, **progress_message(p))

                    try:
                        result = compare_with_run(
                            base, reference.path, methods, seeds, self.models.scorers(), self.settings.runs_dir,
                            self.settings.retention_n, run_suffix=f"-{stamp}", new_folders=True, should_stop=should_stop,
                            progress=told)
                    except ComparisonFailed as exc:  # the rows finished before the one that failed are kept
                        self._keep_comparison(exc.report, base, stamp)
                        raise GantuneError(f"{exc} (the comparison's report keeps the rows finished before it)") from exc
                    pace = clock.evaluation_pace(plan)
                    if pace:  # the next plan prices its evaluations at it (this process's, and a restarted one's)
                        result["evaluation_pace"] = self.runs.note_eval_pace(ref_config, pace)
                    return self._keep_comparison(result, base, stamp) if result["rows"] else None  # none finished
            finally:
                reference.unlock()
                self.runs.in_use.clear()

        try:
            return self.jobs.start("compare", f"compare {name} with {', '.join(methods)}", body, run=str(reference.path),
                                   title_key="title_compare", title_args={"run": name, "methods": ", ".join(methods)})
        except BaseException:
            reference.unlock()
            raise

    def _keep_comparison(self, result: dict[str, Any], base: BaseModel, stamp: str) -> dict[str, Any]:
        """The report, with every row's answer lengths in tokens (the page's histogram), saved under comparisons/."""
        runs = [r for row in result["rows"] for r in row.get("runs") or [] if r]
        result.update(lengths=answer_lengths(result, base.tokenizer), runs=runs, created=stamp)
        result.pop("generations", None)
        self.runs.save_comparison(result, stamp)
        return result


def progress_message(progress: Progress) -> dict[str, Any]:
    """A comparison's stage as the job's message: a catalogue key (``compare_<kind>``; an evaluation's batch says
    it evaluates) and its values; with the stage's share done and its share done once its batch or step ends."""
    step, steps = progress.step or (None, None)
    if progress.share is not None:
        fraction, upto = progress.share
    else:
        fraction, upto = (step / steps, min(step + 1, steps) / steps) if steps else (0.0, 1.0)
    kind = "evaluating" if progress.kind == "batch" else progress.kind
    return {"message": f"compare_{kind}", "fraction": fraction, "upto": upto,
            "args": {"seed": progress.seed, "method": progress.method, "step": step, "total": steps}}
