"""How long a comparison will take, told before it starts and refined while it runs.

Every number comes from something measured: a training stage from the reference run's own step
times (its MLE steps for the MLE-trained methods, all its steps for the GAN's rows; an earlier run
alike when the runs folder has one), an evaluation from a short timed greedy decode of the loaded
model (its prompt pass and its per-token step at the evaluation's batch size) times the questions
and tokens it answers, or, once a comparison of the same model has run, at the pace it measured (seconds per answer
token, its scoring included: the timed decode alone misses the retention passes and the scorers); an evaluation the
comparison will reuse (the run's eval.json, a base model's stored one, of the same questions) costs nothing. The
stages come in the order the comparison runs them; while it runs, ``plan_left`` corrects each kind of stage by
what the job measured so far (``PLAN_WEIGHT``): the stages finished and the share of the one under way, told after
each training step and as each batch of an evaluation's answers begins.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from statistics import mean
from typing import Any, Sequence

from gantune.compare import EVALUATIONS, ROWS, baseline_config
from gantune.errors import GantuneError
from gantune.evaluate import EvalSettings, load_retention_sets
from gantune.inference import MAX_DECODE_ROWS, answers, decode_rows
from gantune.models import BaseModel
from gantune.runs import RunFolder, read_json_file

PLAN_WEIGHT = 0.5  # the plan's own word on a kind's pace weighs as much as this share of one stage measured
RETENTION_LIKELIHOOD_ROWS = 5  # the true answer and (up to) four perturbed ones, each a teacher-forced pass
_DECODING: dict[tuple, tuple[float, float]] = {}  # (model, batch) -> (prompt pass s, token step s), measured once


@dataclass(frozen=True)
class Stage:
    """One stage of a comparison: what it is and its estimated seconds."""

    kind: str  # "train" | "evaluate"
    what: str  # the row it trains or evaluates ("base" for the base model)
    seconds: float
    tokens: int = 0  # an evaluation's answer tokens (each question times its token limit): its pace's unit


@dataclass
class Plan:
    stages: list[Stage]
    basis: list[str] = field(default_factory=list)  # catalogue keys: what the estimate rests on
    questions: int = 0  # test questions a model answers (one seed)
    retention: int = 0  # retention questions (first seed only)
    models: int = 0  # models evaluated per seed

    @property
    def seconds(self) -> float:
        return sum(s.seconds for s in self.stages)

    def total(self, kind: str) -> float:
        return sum(s.seconds for s in self.stages if s.kind == kind)

    def as_report(self) -> tuple[tuple[str, float], ...]:
        """The stages as the job manager takes them: (kind, seconds) each."""
        return tuple((s.kind, s.seconds) for s in self.stages)


def decoding_seconds(base: BaseModel, questions: list[str], batch: int, prompt_tokens: int) -> tuple[float, float]:
    """Seconds of one batch's prompt pass and of one generated token, measured once per model and batch size.

    Two short greedy decodes of the same ``batch`` questions (1 and 9 new tokens): their difference is
    8 token steps; what is left of the first is the prompt pass.
    """
    key = (id(base.model), batch)
    if key not in _DECODING:
        chunk = (questions * batch)[:batch]
        times = []
        for tokens in (1, 9):
            t0 = time.perf_counter()
            answers(base, chunk, tokens, prompt_tokens)
            times.append(time.perf_counter() - t0)
        step = max(times[1] - times[0], 0.0) / 8
        _DECODING[key] = (max(times[0] - step, 0.0), step)
    return _DECODING[key]


def _answering(n: int, tokens: int, batch: int, decoding: tuple[float, float]) -> float:
    prompt, step = decoding
    return math.ceil(n / batch) * (prompt + tokens * step) if n else 0.0


def _paces(run: RunFolder) -> tuple[float | None, float | None]:
    """(seconds per step of all the run's steps, of its MLE steps): what its own records say."""
    records = run.read_metrics()
    every = [r["step_seconds"] for r in records if isinstance(r.get("step_seconds"), (int, float))]
    mle = [r["step_seconds"] for r in records if r.get("phase") == "mle" and isinstance(r.get("step_seconds"), (int, float))]
    return (mean(every) if every else None), (mean(mle) if mle else None)


def plan_comparison(run: RunFolder, methods: list[str], seeds: int, retention_n: int | None,
                    base: BaseModel | None, pace_hint: Any = None, settings: EvalSettings | None = None,
                    eval_pace: float | None = None) -> Plan:
    """The stages of comparing ``run`` with ``methods`` over ``seeds`` seeds, each with its estimated seconds.

    ``base``: the loaded model, to time decoding (None: evaluations are estimated from the run's own step
    times, and the basis says so); ``pace_hint(config)``: seconds per step of an earlier run alike, or None;
    ``eval_pace``: seconds per answer token an earlier comparison of the model measured (``StageClock``), which
    prices the evaluations in place of the timed decode.
    """
    config, resolved = run.read_config()
    split = resolved.get("split") or {}
    n_test = len(split.get("test") or []) or resolved.get("n_test") or 0
    n_train = resolved.get("n_train") or 0
    steps = math.ceil(n_train / config.batch_size) * config.epochs if n_train else 0
    every, mle = _paces(run)
    basis = ["basis_steps"] if every else []
    settings = settings or EvalSettings(max_new_tokens=config.max_new_tokens, max_prompt_tokens=config.max_prompt_tokens)
    retention = sum(len(v) for v in load_retention_sets(config.data, retention_n, config.seed).values())
    batch = decode_rows(base, config.max_prompt_tokens, config.max_new_tokens) if base is not None else MAX_DECODE_ROWS
    test_tokens, retention_tokens = n_test * settings.max_new_tokens, retention * settings.retention_max_new_tokens
    if base is not None:
        questions = [p["question"] for p in split.get("test") or []] or ["?"]
        decoding = decoding_seconds(base, questions, min(batch, max(n_test, 1)), config.max_prompt_tokens)
        basis.append("basis_decode")
    else:  # no model to time: a training step is about three forward passes (one forward, a backward of two) over
        # its rows' prompt and answer tokens, so a decoding step (one token a row) costs a third of it over their length
        length = config.max_prompt_tokens + config.max_new_tokens
        forward = (mle or every or 1.0) / 3
        decoding = (forward * config.max_prompt_tokens / length, forward / length)
        basis.append("basis_guess")
    validation = (config.epochs + 1) * _answering(config.val_pairs, config.max_new_tokens, batch, decoding)
    if eval_pace:  # the MLE rows' validation (greedy answers alone, unscored but for ROUGE-L) stays on the decoding
        evaluate_test, evaluate_retention = test_tokens * eval_pace, retention_tokens * eval_pace
        basis.append("basis_eval_measured")
    else:
        evaluate_test = _answering(n_test, config.max_new_tokens, batch, decoding)
        evaluate_retention = (_answering(retention, settings.retention_max_new_tokens, batch, decoding)
                              + math.ceil(retention * RETENTION_LIKELIHOOD_ROWS / batch) * decoding[0])

    def training(row: str) -> float:
        method = ROWS[row][0]
        hinted = pace_hint(baseline_config(config, row, run.path)) if pace_hint else None
        if hinted:
            return steps * hinted
        if method == "gan" or not mle:
            return steps * (every or 0.0)
        return steps * mle + validation

    stages = [Stage("train", run.path.name, steps * (every or 0.0)) for _ in range(seeds - 1)]
    questions = [p.get("question") for p in split.get("test") or [] if isinstance(p, dict)]
    for index in range(seeds):
        extra, tokens = (evaluate_retention, test_tokens + retention_tokens) if index == 0 else (0.0, test_tokens)
        for what, path in (("base", None), (run.path.name, run.eval_path)):  # the first seed's: kept from before?
            kept = index == 0 and _kept(path, questions, run.path.parent / EVALUATIONS)
            stages.append(Stage("evaluate", what, 0.0, 0) if kept else Stage("evaluate", what, evaluate_test + extra, tokens))
        for row in methods:
            stages += [Stage("train", row, training(row)), Stage("evaluate", row, evaluate_test + extra, tokens)]
    return Plan(stages, basis, questions=n_test, retention=retention, models=2 + len(methods))


def _kept(path: Path | None, questions: list[str], store: Path) -> bool:
    """Whether the comparison will reuse an evaluation of these test ``questions`` rather than make it: the run's
    eval.json at ``path``, or (None) a base model's in ``store``. gantune.compare reuses one whose key (weights,
    adapter, questions, settings) matches; the plan reads no weights, so it takes one of the same questions for it."""
    def answered(file: Path) -> bool:
        try:
            stored = read_json_file(file) if file.is_file() else None
        except GantuneError:
            return False
        generations = stored.get("generations") if isinstance(stored, dict) else None
        return isinstance(generations, list) and bool(questions) and \
            [g.get("question") if isinstance(g, dict) else None for g in generations] == questions

    if path is not None:
        return answered(path)
    return store.is_dir() and any(answered(f) for f in store.glob("base-*.json"))


class StageClock:
    """When each stage of a running comparison began (by its index in the plan) and which evaluations answered (one
    kept from an earlier comparison tells no batch): what ``evaluation_pace`` reads once it ends."""

    def __init__(self) -> None:
        self.began: dict[int, float] = {}
        self.answered: set[int] = set()

    def tell(self, stage: int, kind: str) -> None:
        """A progress event of stage ``stage`` (``Progress.done``) of ``kind`` ("batch": an evaluation answering)."""
        self.began.setdefault(stage, time.monotonic())
        if kind == "batch":
            self.answered.add(stage)

    def evaluation_pace(self, plan: Plan) -> float | None:
        """Seconds per answer token of the evaluations that answered, the comparison having ended now: each stage
        runs until the next one told begins (those between were skipped); None when none answered."""
        began = {**self.began, len(plan.stages): time.monotonic()}
        starts = sorted(began)
        measured = [(began[b] - began[a], plan.stages[a].tokens) for a, b in zip(starts, starts[1:])
                    if a in self.answered and a < len(plan.stages) and plan.stages[a].tokens]
        tokens = sum(t for _, t in measured)
        return sum(seconds for seconds, _ in measured) / tokens if tokens else None


def plan_left(plan: Sequence[tuple[str, float]], took: Sequence[float | None], elapsed: float,
              fraction: float = 0.0, reached: float | None = None, upto: float = 1.0) -> float:
    """Seconds left of a ``plan`` of stages ((kind, estimated seconds) each), corrected by what the job measured.

    ``took``: seconds each finished stage took (None: skipped, no measure); ``elapsed``: the stage under way's
    seconds so far; ``fraction``: its share done ``reached`` seconds into it (None: now); ``upto``: its share done
    once its part under way (an evaluation's batch, a training step) ends (1: unknown, the whole stage). Each kind's
    pace is (seconds measured + w) / (their estimate + w), w a ``PLAN_WEIGHT`` share of the kind's mean stage
    estimate: the plan's word, soon outweighed. The stage under way is measured up to its last share told, so the
    first batch of an evaluation corrects every evaluation still to come; once its part under way runs past what the
    pace expects, that part counts as done now, so the time left rises a little each second while it overruns and is
    where it was when the part ends, instead of jumping.
    """
    step = len(took)
    if step >= len(plan):
        return 0.0
    measured: dict[str, list[float]] = {}  # kind -> [seconds, estimated seconds of the same work]

    def measure(kind: str, seconds: float, estimate: float) -> None:
        m = measured.setdefault(kind, [0.0, 0.0])
        m[0], m[1] = m[0] + seconds, m[1] + estimate

    def pace(kind: str) -> float:
        seconds, estimated = measured.get(kind, (0.0, 0.0))
        weight = PLAN_WEIGHT * mean(e for k, e in plan if k == kind)
        return (seconds + weight) / (estimated + weight) if estimated > 0 else 1.0

    for (kind, estimate), seconds in zip(plan, took):
        if seconds is not None:
            measure(kind, seconds, estimate)
    kind, estimate = plan[step]
    upto = max(upto, fraction)
    if fraction > 0:
        reached = elapsed if reached is None else min(reached, elapsed)
        measure(kind, reached, fraction * estimate)
    else:
        reached = 0.0  # nothing done yet: the part under way began with the stage
    since = elapsed - reached
    if since > (upto - fraction) * estimate * pace(kind):  # the part under way overruns: done now
        measure(kind, since, (upto - fraction) * estimate)
        current = (1 - upto) * estimate * pace(kind)
    else:
        current = (1 - fraction) * estimate * pace(kind) - since
    return current + sum(e * pace(k) for k, e in plan[step + 1:])
