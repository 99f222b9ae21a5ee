"""The training loop: epochs of batches through a method, each step recorded in the run folder.

The loop knows nothing of any method's insides. Each step's record goes to ``metrics.jsonl`` and
to the ``on_step`` callback (the CLI's progress bar, the workbench's job); ``should_stop`` is asked
before every step and, by the method, inside a step's long loops, and a stopped run still saves its
adapter. The process that trains or resumes a run holds the run folder's lock to its end. Runs
under ``accelerate launch`` too: each process takes its share of the batches and gradients are
averaged; only the main one writes (and locks) the run folder.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list, set_seed
from tqdm.auto import tqdm

from .budget import check_settings_fit
from .config import TrainConfig, resumed_config
from .data import Encoder, QAPair, load_pairs, split_pairs
from .errors import OUT_OF_MEMORY, GantuneError, first_line
from .init_from import init_adapter, start_from
from .memory import MemoryMonitor
from .methods import get_method
from .methods.base import StepInterrupted
from .models import (
    BaseModel,
    frozen_norm,
    load_base_model,
    make_accelerator,
    pick_device,
    resolve_precision,
)
from .runs import RunFolder, RunSummary, claim_unused, new_run_dir
from .share import write_model_card
from .validation import MIN_VAL_PAIRS, Validation, split_validation

StepCallback = Callable[[dict[str, Any]], None]


@dataclass
class Prepared:
    """What a run needs before its first step; the workbench reuses the loaded model across runs."""

    config: TrainConfig
    base: BaseModel
    accelerator: Accelerator
    train: list[QAPair]
    test: list[QAPair]
    data_source: str
    run: RunFolder
    changed: dict[str, Any] = field(default_factory=dict)  # a resume's: what it changes, {setting: [was, now]}
    resumes: list[dict[str, Any]] = field(default_factory=list)  # the run's earlier resumes, as config.json says
    start: RunFolder | None = None  # the run whose adapter this one starts from (--init-from), checked


def prepare(config: TrainConfig, base: BaseModel | None = None, fresh: bool = True, overwrite: bool = False,
            split: tuple[list[QAPair], list[QAPair]] | None = None, claimed: RunFolder | None = None,
            validated: bool = False) -> Prepared:
    """Validate settings (unless the caller did: ``validated``), claim the run folder, load model and data, and split.

    ``split`` (train, test) replaces reading and splitting the data (a comparison on a recorded split).
    A fresh run claims its folder first (``RunFolder.claim``: a run folder gantune made is replaced
    only with ``overwrite``; a folder it did not make, never), or takes the one ``claimed`` for it
    (``runs.claim_unused``); a claim that nothing was written under is given back when preparing fails.
    A resume locks its run (or takes it ``claimed``, locked) and goes on with the run's own settings and
    split: only what extends it may differ (``config.resumed_config``). The main process holds the run's lock
    from here to the run's end.
    """
    if not validated:
        config.validate()
    get_method(config.method)
    device = pick_device(config.device)
    # "auto" takes a given model's precision (the workbench and the bench load one for every run); the run
    # records what it ran in
    precision = base.precision if base is not None and config.precision == "auto" else \
        resolve_precision(config.precision, device)
    config.precision = precision
    accelerator = make_accelerator(device, precision)
    try:
        start = init_adapter(config) if config.init_from and fresh else None  # checked before a folder is claimed
    except BaseException:
        if claimed is not None and accelerator.is_main_process:
            claimed.release()  # the folder claimed for it stays as it was before
        raise
    run = _run_folder(config, accelerator, fresh, overwrite, claimed)
    try:
        changed, resolved = {}, {}
        if not fresh:
            config, changed, resolved = _resumed(config, run)
            split = split or _recorded_split(resolved)
        if split is None:
            pairs, data_source = load_pairs(config.data, config.subset)
            train, test = split_pairs(pairs, config.n, config.train_fraction, config.seed)
        else:
            (train, test), data_source = split, str(config.data)
        if base is None:
            base = load_base_model(config.model, config.gguf_file, accelerator.device, config.trust_remote_code,
                                   precision=precision)
        elif base.precision != precision:
            raise GantuneError(f"the loaded model is held in {base.precision} but this run asks for --precision "
                               f"{precision}; load the model again in that precision")
        else:
            base.model.to(accelerator.device)
        check_prompt_lengths(Encoder(base.tokenizer, base.eos_id, config.max_prompt_tokens, config.max_new_tokens),
                             train + test)
        check_settings_fit(config, base, len(train))
    except BaseException:
        if fresh and accelerator.is_main_process:
            run.release()
        run.unlock()
        raise
    return Prepared(config, base, accelerator, train, test, data_source, run, changed, resolved.get("resumes", []),
                    start)


def _run_folder(config: TrainConfig, accelerator: Accelerator, fresh: bool, overwrite: bool,
                claimed: RunFolder | None) -> RunFolder:
    """The run's folder: for a fresh run, claimed by the main process (``config.out``, or a new default
    name), its path and any refusal shared with the other processes; for a resume, the run's own, locked
    by the main process."""
    if not fresh:
        run = claimed or RunFolder(config.out)
        if not run.has_checkpoint():
            raise GantuneError(f"{run.path} has no checkpoint to resume from")
        if accelerator.is_main_process:
            run.lock("resuming the run")
        return run
    run, claim = claimed, [config.out if claimed is None else str(claimed.path), None]  # (the folder, or the refusal)
    if accelerator.is_main_process and claimed is None:
        try:
            run = claim_unused(new_run_dir("runs", config.method, config.preset)) if config.out is None \
                else RunFolder(config.out).claim(overwrite)
            claim[0] = str(run.path)
        except GantuneError as exc:
            claim[1] = str(exc)
    if accelerator.num_processes > 1:
        broadcast_object_list(claim)
    if claim[1] is not None:
        raise GantuneError(claim[1])
    config.out = claim[0]
    return run or RunFolder(config.out)


def _resumed(config: TrainConfig, run: RunFolder) -> tuple[TrainConfig, dict[str, Any], dict[str, Any]]:
    """What a resume goes on with: the run's own settings (refused when ``config`` differs in what defines the
    run), what it changes ({setting: [was, now]}) and what the run resolved (its split among it)."""
    saved, resolved = run.read_config()
    config, changed = resumed_config(saved, config)
    return config, changed, resolved


def _recorded_split(resolved: dict[str, Any]) -> tuple[list[QAPair], list[QAPair]] | None:
    """The split a run recorded in its config.json (None for a run that recorded none)."""
    if "split" not in resolved:
        return None
    train, test = ([QAPair(p["question"], p["answer"], tuple(p.get("perturbed") or ())) for p in resolved["split"][part]]
                   for part in ("train", "test"))
    return train, test


def train(
    config: TrainConfig,
    *,
    base: BaseModel | None = None,
    on_step: StepCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
    progress: bool = False,
    resume: bool = False,
    overwrite: bool = False,
    split: tuple[list[QAPair], list[QAPair]] | None = None,
    claimed: RunFolder | None = None,
    validated: bool = False,
) -> RunSummary:
    """Run one training job to its end (or a stop) and return its summary (also its summary.json).

    ``split``, ``claimed``, ``validated`` as for ``prepare``; the run's lock is given back at the end.
    ``should_stop`` is asked before every step and, through the method, inside a step's long loops: a step
    stopped inside leaves the method as it was before it (``StepInterrupted``), so the run ends stopped
    after its last whole step and a resume goes on as if it never stopped.
    """
    p = prepare(config, base, fresh=not resume, overwrite=overwrite, split=split, claimed=claimed,
                validated=validated)
    try:
        return _train(p, on_step, should_stop, progress, resume)
    finally:
        p.run.unlock()


def _train(p: Prepared, on_step: StepCallback | None, should_stop: Callable[[], bool] | None, progress: bool,
           resume: bool) -> RunSummary:
    cfg, run, acc = p.config, p.run, p.accelerator
    try:
        set_seed(cfg.seed)
        encoder = Encoder(p.base.tokenizer, p.base.eos_id, cfg.max_prompt_tokens, cfg.max_new_tokens)
        fit, val = split_validation(p.train, cfg.val_pairs)
        items = encoder.encode(fit)
        validation = Validation(p.base, encoder, val, cfg.val_metric, acc.device) if val else None
        if cfg.patience and validation is None:
            raise GantuneError(f"--patience needs validation pairs, but {len(p.train)} training pairs hold none "
                               "(--val-pairs takes at most a tenth of them)")
        method = get_method(cfg.method)(p.base, cfg, acc)
        if should_stop is not None:
            method.should_stop = should_stop
        if p.start is not None:
            try:
                start_from(method, p.start, cfg.init_from)
            except BaseException:
                method.close()
                raise
    except BaseException:
        if not resume and acc.is_main_process:
            run.release()  # refused before the run's first file
        raise
    try:
        steps_per_epoch = math.ceil(len(items) / cfg.batch_size)
        if acc.num_processes > 1:  # processes move in lockstep: each takes whole rounds of batches
            steps_per_epoch //= acc.num_processes
            if steps_per_epoch == 0:
                raise GantuneError(f"{len(items)} training pairs are too few for {acc.num_processes} processes")
        total = steps_per_epoch * cfg.epochs
        step, elapsed = 0, 0.0
        history: list[dict[str, float]] = []  # validation score of the adapter at step 0 and each epoch's end
        best: dict[str, float] | None = None  # the best of them: its adapter is the one in adapter/
        if resume:
            saved = run.load_checkpoint(total)
            if saved is None:
                raise GantuneError(f"{run.path} has no checkpoint to resume from")
            tensors, state = saved
            try:
                method.load_state_tensors(tensors)
                _set_rng_state(tensors)
                if not all(torch.isfinite(t).all() for t in method.trainable_parameters()):
                    raise GantuneError("the checkpoint's weights hold NaN or infinite values (it is damaged); "
                                       "start the run again")
            except GantuneError as exc:
                raise GantuneError(f"{run.checkpoint_dir}: {exc}") from exc
            except (KeyError, RuntimeError, ValueError, TypeError, IndexError) as exc:
                raise GantuneError(f"{run.checkpoint_dir}: the checkpoint does not fit this run's {cfg.method} "
                                   f"settings ({first_line(exc)})") from exc
            step, elapsed = state["step"], state["seconds"]
            history, best = state.get("validation", []), state.get("best")
        if acc.is_main_process:  # the run starts now: only from here are its files changed
            resumes = p.resumes
            if resume:
                run.keep_records_until(step)  # steps after the checkpoint are redone
                run.drop_summary()  # it ends again, and says how then
                resumes = [*resumes, {"step": step, "changed": p.changed, "when": time.strftime("%Y-%m-%d %H:%M:%S")}]
            else:
                run.drop_replaced()  # the run this one replaces (--overwrite) goes only now that this one starts
            run.write_config(cfg, {
                "model": p.base.source, "data": p.data_source, "device": str(acc.device),
                "processes": acc.num_processes, "n_train": len(fit), "n_val": len(val), "n_test": len(p.test),
                "split": {"train": [vars(x) for x in p.train], "test": [vars(x) for x in p.test]},
                **({"resumes": resumes} if resumes else {}),
            })

        def checkpoint() -> None:
            if not acc.is_main_process:
                return
            tensors = {**method.state_tensors(), **_rng_state()}
            run.save_checkpoint(tensors, {"step": step, "seconds": elapsed, "validation": history, "best": best})

        choosing = len(val) >= MIN_VAL_PAIRS  # enough validation pairs to choose an adapter by its score

        def validate() -> float:
            """Score the adapter as it is now on the validation pairs; keep it in adapter/ when it is the best yet."""
            nonlocal best
            key = f"val_{cfg.val_metric}"
            score = validation.score(method)
            history.append({"step": step, key: score})
            if best is None or validation.better(score, best[key]):
                best = {"step": step, key: score}
                if choosing and acc.is_main_process:
                    run.save_adapter(method.save_pretrained)
            return score

        if validation is not None and not history:
            validate()  # step 0: the untouched model is a candidate too

        status, tokens, start_seconds = "completed", 0.0, elapsed  # tokens/s counts this session's steps
        plateau = None  # the epoch after which --patience stopped the run
        good_step = step if resume else None  # the step of the last checkpoint (None: none yet)
        bar = tqdm(total=total, initial=step, disable=not (progress and acc.is_main_process), unit="step", dynamic_ncols=True)
        with MemoryMonitor(acc.device) as memory:
            started = False
            while step < total and status == "completed":
                epoch, index = divmod(step, steps_per_epoch)
                epoch_rows = _epoch_batches(len(items), cfg.batch_size, cfg.seed, epoch, acc)
                batch_rows = epoch_rows[index]
                if should_stop is not None and should_stop():
                    status = "stopped"
                    break
                t0 = time.perf_counter()  # an epoch's rollout (start_epoch) counts in its first step's time
                rng = _rng_state()
                try:
                    if index == 0 or not started:  # an epoch begins (or a resumed run picks one up midway)
                        method.start_epoch(epoch, [encoder.collate([items[i] for i in rows]).to(acc.device)
                                                   for rows in epoch_rows[index:]])
                        started = True
                    batch = encoder.collate([items[i] for i in batch_rows]).to(acc.device)
                    stats = method.train_step(batch)
                except StepInterrupted:  # stopped inside the step: the method is as it was before it
                    _set_rng_state(rng)
                    status = "stopped"
                    break
                except (MemoryError, torch.OutOfMemoryError):
                    raise GantuneError(f"{OUT_OF_MEMORY}; the run's last checkpoint is kept") from None
                dt = time.perf_counter() - t0
                elapsed += dt
                n_tokens = float(batch.prompt_mask.sum() + batch.answer_mask.sum())
                tokens += n_tokens
                step += 1
                norm = method.adapter_norm()
                numbers = [v for v in stats.values() if isinstance(v, float)]
                if not all(math.isfinite(v) for v in [*numbers, norm]):
                    status = "diverged"
                at_epoch_end = step % steps_per_epoch == 0
                if at_epoch_end and validation is not None and status == "completed":
                    stats[f"val_{cfg.val_metric}"] = validate()
                record = {
                    "step": step, "total_steps": total, "epoch": step / steps_per_epoch, **stats,
                    "adapter_norm": norm, "frozen_norm": frozen_norm(p.base.model),
                    "tokens_per_s": n_tokens / dt,
                    "step_seconds": dt, "seconds": elapsed, "memory_mb": memory.current_mb(), "peak_memory_mb": memory.peak_mb(),
                }
                if acc.is_main_process:
                    run.append_metrics(record)
                    # every `sample every` steps, and always at the first, each epoch's end and the last
                    if cfg.sample_every and (step % cfg.sample_every == 0 or step in (1, total) or at_epoch_end):
                        for row, answer in zip(batch_rows[:2], method.sampled_answers()):
                            run.append_sample({"step": step, "question": fit[row].question,
                                               "reference": fit[row].answer, "answer": answer})
                if on_step is not None:
                    on_step(record)
                bar.set_postfix(progress_postfix(stats))
                bar.update(1)
                if status == "completed" and (at_epoch_end if cfg.checkpoint_every == 0 else step % cfg.checkpoint_every == 0):
                    checkpoint()
                    good_step = step
                if (at_epoch_end and cfg.patience and best is not None and status == "completed"
                        and step - best["step"] >= cfg.patience * steps_per_epoch):
                    plateau = step // steps_per_epoch  # no better validation score for --patience epochs: stop here
                    break
            peak = memory.peak_mb()
        bar.close()

        if status != "diverged" and validation is not None and history[-1]["step"] != step:
            validate()  # stopped between epochs: the last adapter is a candidate too
        key = f"val_{cfg.val_metric}"
        # the last adapter stays unless the best one beats it by more than the tolerance (4 pairs are noisy), or
        # always when the pairs are too few to choose
        keep_last = best is not None and status != "diverged" and (not choosing or not validation.better(
            best[key], history[-1][key] + (-cfg.val_tolerance if cfg.val_metric == "nll" else cfg.val_tolerance)))
        if acc.is_main_process:
            if status != "diverged":
                checkpoint()
                if best is None or not choosing or (keep_last and best["step"] != step):
                    run.save_adapter(method.save_pretrained)
            elif (best is None or not choosing) and good_step is not None:  # the weights went bad: the last checkpoint's
                method.load_state_tensors(run.load_checkpoint()[0])
                run.save_adapter(method.save_pretrained)
        if keep_last and not choosing:
            kept_step = step
            kept_reason = (f"the last adapter: too few validation pairs ({len(val)}) to choose between adapters (at least "
                           f"{MIN_VAL_PAIRS}), so their scores are only recorded")
        elif keep_last:
            kept_step = step
            kept_reason = (f"the last adapter: its validation {cfg.val_metric} ({history[-1][key]:.4f}) is within "
                           f"{cfg.val_tolerance} of the best ({best[key]:.4f}, step {best['step']}) on {len(val)} "
                           "held-out training pairs")
        elif best is not None and choosing:
            kept_step = best["step"]
            kept_reason = (f"the best validation {cfg.val_metric} ({best[key]:.4f}) on {len(val)} held-out training "
                           f"pairs, of {len(history)} scored adapters (step 0 included)")
            if status != "diverged":
                kept_reason += f"; the last one's ({history[-1][key]:.4f}) was worse by more than {cfg.val_tolerance}"
            if kept_step == 0:
                kept_reason += "; training did not beat the untouched model on validation"
        else:
            kept_step = step if status != "diverged" else good_step
            kept_reason = "the last step's adapter (no validation pairs)" if status != "diverged" else \
                "the last checkpoint's adapter (training diverged)"
        if cfg.val_pairs > len(val):
            kept_reason += (f"; --val-pairs asks for {cfg.val_pairs} validation pairs, but {len(p.train)} training pairs "
                            f"allow {len(val)} (at most a tenth)")
        if plateau is not None:
            kept_reason += (f"; training stopped after epoch {plateau} of at most {cfg.epochs}: the validation "
                            f"{cfg.val_metric} had not improved for {cfg.patience} epoch{'s' * (cfg.patience != 1)} (the plateau)")
        summary = RunSummary(
            status=status, method=cfg.method, preset=cfg.preset, steps=step, total_steps=total,
            adapter_step=kept_step, kept_step=kept_step, kept_reason=kept_reason, validation=history,
            seconds=round(elapsed, 3), tokens_per_s=round(tokens / max(elapsed - start_seconds, 1e-9), 1),
            peak_memory_mb=round(peak, 1), memory_kind=memory.kind,
            trainable_params=sum(p.numel() for p in method.trainable_parameters()),
            n_train=len(fit), n_val=len(val), n_test=len(p.test), device=str(acc.device),
            adapter=str(run.adapter_dir) if run.adapter_dir.is_dir() else None, run=str(run.path),
        )
        if acc.is_main_process:
            run.write_summary(summary)
            write_model_card(run)  # the adapter folder, ready to share (gantune.share)
        return summary
    finally:
        method.close()  # the base model is shared (workbench, bench): leave it as it was


def progress_postfix(stats: dict[str, Any]) -> dict[str, str]:
    """What the progress bar shows of a step: only what the step has. An MLE step (LoRA, prompt tuning, a GAN's
    warm-up) its loss; an adversarial one G's and D's losses, the mean reward and the MLE term, those it has."""
    if stats.get("phase") == "adversarial":
        shown = (("g", "g_loss", ".3f"), ("d", "d_loss", ".3f"), ("r", "reward_mean", ".2f"), ("mle", "mle_loss", ".3f"))
    else:
        shown = (("loss", "g_loss", ".3f"),)
    return {name: format(stats[key], fmt) for name, key, fmt in shown
            if isinstance(stats.get(key), (int, float)) and not isinstance(stats[key], bool)}


def _rng_state() -> dict[str, torch.Tensor]:
    """torch's random state (CPU, and CUDA's when present), as a checkpoint keeps it."""
    state = {"rng.cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["rng.cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(state["rng.cpu"])
    if torch.cuda.is_available() and "rng.cuda" in state:
        torch.cuda.set_rng_state(state["rng.cuda"])


def diverged_message(summary: RunSummary) -> str:
    """What a user reads when a loss became NaN/inf: where it stopped and which adapter was kept."""
    kept = (f"the adapter of step {summary.adapter_step} (the last checkpoint) was kept"
            if summary.adapter_step is not None else "no checkpoint had been reached, so no adapter was saved")
    return f"training diverged at step {summary.steps} (a loss became NaN/inf); {kept} — lower the learning rate"


def _epoch_batches(n: int, batch_size: int, seed: int, epoch: int, acc: Accelerator) -> list[list[int]]:
    """This process's batches of one epoch: a seeded shuffle, so a resumed run sees the same order."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch)).tolist()
    batches = [order[i : i + batch_size] for i in range(0, n, batch_size)]
    if acc.num_processes > 1:
        rounds = len(batches) // acc.num_processes
        batches = batches[acc.process_index : rounds * acc.num_processes : acc.num_processes]
    return batches


def check_prompt_lengths(encoder: Encoder, pairs: list[QAPair]) -> None:
    """Refuse a question whose prompt would not fit ``max_prompt_tokens`` (cutting it would change the question)."""
    for pair in pairs:
        n = encoder.prompt_length(pair.question)
        if n > encoder.max_prompt:
            shown = pair.question if len(pair.question) <= 60 else pair.question[:57] + "..."
            raise GantuneError(f"the question {shown!r} is {n} tokens as a prompt, over the limit of "
                               f"{encoder.max_prompt} (--max-prompt-tokens): raise the limit or shorten it")
