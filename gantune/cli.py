"""``python -m gantune``: train, generate and bench from the command line.

Every TrainConfig field is a flag; flags the user types override the preset. Problems are one line
on stderr and a non-zero exit, never a traceback (GANTUNE_DEBUG=1 shows it for bugs). torch,
transformers and the library's heavy modules are imported only once a command runs, so ``--help``
and a refused flag answer at once.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import os
import shlex
import signal
import sys
import threading
import typing
from typing import Any, Callable, Iterator, Sequence

from .config import PRESETS, SECTIONS, SEED_MAX, TrainConfig, preset_config
from .errors import OUT_OF_MEMORY, GantuneError, first_line
from .methods import METHODS


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> typing.NoReturn:  # one line, not usage + error
        self.exit(2, f"gantune: error: {message} (see --help)\n")


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field, grouped by settings section (and the methods that read it)."""
    hints = typing.get_type_hints(TrainConfig)
    groups = {}
    for section in SECTIONS:
        users = [name for name, spec in METHODS.items() if section in spec.sections]
        title = section.__doc__.strip().splitlines()[0].rstrip(".")
        group = parser.add_argument_group(f"{title} ({', '.join(users)})" if users else title)
        groups.update({f.name: group for f in dataclasses.fields(section)})
    for f in dataclasses.fields(TrainConfig):
        flag, hint = "--" + f.name.replace("_", "-"), hints[f.name]
        values = {name: _show(getattr(preset_config(preset=name), f.name)) for name in PRESETS}
        shown = "; ".join(f"{k}: {v}" for k, v in values.items()) if len(set(values.values())) > 1 else f"default: {values['improved']}"
        help_text = f.metadata["help"] if values["improved"] == "None" and len(set(values.values())) == 1 else f"{f.metadata['help']} ({shown})"
        if f.name == "preset":
            help_text = _preset_help(f.metadata["help"])
        kwargs: dict[str, Any] = {"default": argparse.SUPPRESS, "help": help_text}
        if "choices" in f.metadata:
            kwargs["choices"] = f.metadata["choices"]
        if hint is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(hint) is list:
            item = typing.get_args(hint)[0]
            kwargs.update(nargs="*", type=item, metavar="N" if item is int else "NAME")
        else:
            base_type = next(a for a in typing.get_args(hint) or (hint,) if a is not type(None))
            kwargs["type"] = {float: _finite, int: _count_or_all if f.name == "n" else int,
                              str: _text}.get(base_type, base_type)
        groups[f.name].add_argument(flag, **kwargs)


def _preset_help(text: str) -> str:
    """What each preset sets, compared with the defaults (the first few settings, then a count)."""
    default = TrainConfig()
    parts = []
    for name in PRESETS:
        config = preset_config(preset=name)
        changed = [f"--{f.name.replace('_', '-')} {_show(getattr(config, f.name))}" for f in dataclasses.fields(TrainConfig)
                   if f.name not in ("preset", "method") and getattr(config, f.name) != getattr(default, f.name)]
        shown = ", ".join(changed[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5 else "")
        parts.append(f"{name}: " + (f"sets {shown}" if changed else "the defaults"))
    return f"{text} ({'; '.join(parts)}; each flag's help shows every preset's value)"


def _show(value: Any) -> str:
    return " ".join(map(str, value)) if isinstance(value, list) else str(value)


def _count_or_all(text: str) -> int | None:
    if text == "all":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number or 'all'") from None


def _text(text: str) -> str:
    """A flag's text, refused when it says nothing (empty or spaces: a folder, file or name left blank)."""
    if not text.strip():
        raise argparse.ArgumentTypeError(f"{text!r} says nothing; give a value or leave the flag out")
    return text


def _finite(text: str) -> float:
    value = float(text)
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m gantune", description="Generative adversarial prompt tuning of small LMs.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    train = sub.add_parser("train", help="tune a model and write a run folder",
                           description="Tune a model; preset values are defaults that any flag below overrides.")
    _add_config_flags(train)
    train.add_argument("--resume", metavar="RUN", type=_text, help="continue RUN from its last checkpoint; it keeps its settings, "
                       "but for more --epochs or another --checkpoint-every")
    train.add_argument("--overwrite", action="store_true", help="replace the run already in --out")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    gen = sub.add_parser("generate", help="answer questions with a tuned run's model")
    gen.add_argument("--run", required=True, type=_text, help="run folder written by train")
    gen.add_argument("--question", action="append", required=True, type=_text, help="a question (repeat for several)")
    gen.add_argument("--max-new-tokens", type=int, default=None, help="most answer tokens (default: the run's)")
    gen.add_argument("--base", action="store_true", help="also print the base model's answer")
    gen.add_argument("--trust-remote-code", action="store_true",
                     help="allow the run's base model to run its own code (only for a model you trust)")
    bench = sub.add_parser("bench", help="base + each method on one split: metrics, time, memory → report",
                           description="Train and evaluate base and each method side by side in one process.")
    bench.add_argument("--preset", default="quick", choices=["quick", "thesis", "plateau"],
                       help="quick: 40/40 pairs, 3 epochs, batch 8 (CPU); thesis: the thesis' experiment, base, its "
                            "GAN and LoRA on 50/50 pairs, 30 epochs, batch 1 (~1 h on a 2-core CPU in bf16); plateau: "
                            "120/120 pairs, MLE to its plateau then 3 epochs of each objective from it, on M_tunable, "
                            "LoRA and prompt tuning, greedy and at temperature 1 (~3 h for three seeds on a 2-core CPU)")
    bench.add_argument("--methods", nargs="+", metavar="NAME",
                       help="rows to run besides base (default: the preset's; gan gan-no-mle gan-seqgan gan-rloo gan-adv2 gan-ppo4 "
                            "gan-cold gan-t07 gan-dense gan-thesis gan-lora gan-prompt gan-prefix gan-implicit gan-spin "
                            "gan-lora-implicit gan-prompt-implicit gan-prefix-implicit adapter-mle lora prompt-tuning "
                            "prefix-tuning full)")
    bench.add_argument("--data", default=None, type=_text, help="as for train (default: ../shared/tofu when present, else the hub)")
    bench.add_argument("--subset", default="forget10", type=_text, help="TOFU config / file name inside --data")
    bench.add_argument("--model", default="default", type=_text, help="as for train")
    bench.add_argument("--out", default="report.json", type=_text, help="report file; report.md, generations.jsonl and <stem>_runs/ go "
                       "beside it (bench never replaces a file: it refuses an --out where one of them is, but for "
                       "the same bench again at the --out of one stopped or failed: that continues it)")
    bench.add_argument("--bleurt", default="lucadiliello/BLEURT-20-D12", help="BLEURT checkpoint path or hub id; 'none' to skip")
    bench.add_argument("--seeds", type=int, nargs="+", default=[0], metavar="SEED",
                       help="train and evaluate every method once per seed, each on that seed's split; the report "
                            "gives means with 95%% intervals (default: 0)")
    bench.add_argument("--temperatures", type=_finite, nargs="+", default=[0.0], metavar="T",
                       help="also score answers sampled at each temperature (0: greedy, always scored; e.g. 0 0.7 1.0)")
    for flag, kind in (("--n", int), ("--epochs", int), ("--batch-size", int), ("--max-new-tokens", int)):
        bench.add_argument(flag, type=kind, default=argparse.SUPPRESS, help="override the bench preset's value")
    bench.add_argument("--eval-noise", choices=["zeros", "sample"], default=argparse.SUPPRESS,
                       help="noise fed to M_tunable when answering (gan, adapter-mle; default: zeros)")
    bench.add_argument("--precision", choices=["auto", "fp32", "bf16"], default=argparse.SUPPRESS,
                       help="as for train (default: auto, bf16 where the chip computes it fast)")
    for command in (train, gen, bench):
        command.add_argument("--decode", choices=["auto", "eager", "compiled"], default=argparse.SUPPRESS,
                             help="decode steps on the CPU compiled by torch.compile (1.3-1.4x faster a step at one "
                                  "row, slower at 8 and more; ~1 min of compiling each shape): auto compiles a shape "
                                  "of 1-2 rows once 2 min have gone into decoding it (a long run's rollouts), compiled "
                                  "every shape at once, eager never (default: $GANTUNE_DECODE, else eager)")
    push = sub.add_parser("push", help="upload a run's adapter (with its model card) to the Hugging Face Hub",
                          description="Upload RUN's adapter folder, with a fresh model card (README.md), to the Hub "
                                      "repository REPO_ID with your token (HF_TOKEN, or `hf auth login`).")
    push.add_argument("run", metavar="RUN", help="run folder written by train")
    push.add_argument("repo_id", metavar="REPO_ID", help="the Hub repository, OWNER/NAME (made when missing)")
    push.add_argument("--private", action="store_true", help="make the repository private when it is new")
    return parser


def _push(args: argparse.Namespace) -> None:
    from .share import push

    print(f"pushed {args.run} to {push(args.run, args.repo_id, private=args.private)}")


def _bench(args: argparse.Namespace) -> int | None:
    from .bench import run_bench
    from .evaluate import check_temperature

    overrides = {k: getattr(args, k) for k in ("n", "epochs", "batch_size", "max_new_tokens", "eval_noise", "precision")
                 if hasattr(args, k)}
    TrainConfig(**overrides).validate()  # the ranges (and words) of train's flags, before anything loads
    bad = [s for s in args.seeds if not 0 <= s <= SEED_MAX]
    if bad:
        raise GantuneError(f"--seeds must be between 0 and {SEED_MAX}, the seeds numpy and torch take (got {bad[0]})")
    for t in args.temperatures:
        check_temperature(t, "--temperatures")
    with _stop_on_interrupt("gantune: stopping after this stage; the report keeps the rows finished so far "
                            "(Ctrl-C again to quit at once)") as interrupted:
        report = run_bench(args.preset, args.out, data=args.data, subset=args.subset, model=args.model,
                           methods=args.methods, bleurt=None if args.bleurt.lower() == "none" else args.bleurt,
                           seeds=args.seeds, temperatures=args.temperatures, overrides=overrides,
                           should_stop=interrupted)
    if report.get("status") == "stopped":
        print(f"gantune: stopped: {args.out} keeps the {len(report['rows'])} rows finished (status \"stopped\"); "
              "the same bench command again continues it", file=sys.stderr)
        return 130
    return None


def _train(args: argparse.Namespace) -> int | None:
    from accelerate import PartialState

    from .inference import remote_code_refusal
    from .runs import RunFolder
    from .trainer import diverged_message, train

    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if hasattr(args, f.name)}
    if args.resume:
        out = given.pop("out", args.resume)
        if os.path.abspath(out) != os.path.abspath(args.resume):
            raise GantuneError("--resume continues a run in its own folder; leave out --out")
        config, _ = RunFolder(args.resume).read_config()
        if config.trust_remote_code and "trust_remote_code" not in given:  # only this command's flag allows it
            raise remote_code_refusal(args.resume)
        config = dataclasses.replace(config, **given, out=args.resume)
    else:
        method = given.pop("method", "gan")
        _check_applies(method, given)
        config = preset_config(method, given.pop("preset", "improved"), **given)
    with _stop_on_interrupt() as interrupted:  # train validates the settings
        summary = train(config, progress=not args.quiet, resume=bool(args.resume), overwrite=args.overwrite,
                        should_stop=interrupted)
    if not PartialState().is_main_process:  # under accelerate/torchrun only the main process reports
        return None
    if summary.adapter and summary.kept_reason and summary.status != "diverged":  # (its error line says which)
        print(f"kept: {summary.kept_reason}", file=sys.stderr)
    print(
        f"{summary.status}: {summary.steps}/{summary.total_steps} steps in {summary.seconds:.1f} s, "
        f"peak memory {summary.peak_memory_mb:.0f} MB ({summary.memory_kind}), "
        f"{summary.trainable_params:,} trainable params, adapter: {summary.adapter or 'not saved'}"
    )
    if summary.status == "diverged":
        raise GantuneError(diverged_message(summary))
    if summary.status == "stopped":
        print(f"continue it with: python -m gantune train --resume {shlex.quote(summary.run)}")
        return 130
    return None


def _check_applies(method: str, given: dict[str, Any]) -> None:
    """Refuse a flag typed for a method that does not read it (``--method lora --adapter prompt-tuning``)."""
    if method not in METHODS:
        return  # named as unknown by the settings' check
    for f in dataclasses.fields(TrainConfig):
        if f.name not in given:
            continue
        section = next(s for s in SECTIONS if f.name in {g.name for g in dataclasses.fields(s)})
        users = [name for name, spec in METHODS.items() if section in spec.sections]
        if users and method not in users:
            raise GantuneError(f"--{f.name.replace('_', '-')} does not apply to --method {method} (only to "
                               f"--method {' / '.join(users)}); leave it out")


@contextlib.contextmanager
def _stop_on_interrupt(says: str = "gantune: stopping after this step and saving (Ctrl-C again to quit at once)"
                       ) -> Iterator[Callable[[], bool]]:
    """The first Ctrl-C asks the run to stop after its current step (it still saves; it ``says`` so); a second one
    quits."""
    asked = threading.Event()

    def on_interrupt(signum: int, frame: Any) -> None:
        if asked.is_set():
            raise KeyboardInterrupt
        asked.set()
        print(f"\n{says}", file=sys.stderr)

    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield asked.is_set
        return
    previous = signal.signal(signal.SIGINT, on_interrupt)
    try:
        yield asked.is_set
    finally:
        signal.signal(signal.SIGINT, previous)


def _generate(args: argparse.Namespace) -> None:
    from .inference import answer_questions, load_method

    if args.max_new_tokens is not None and args.max_new_tokens < 1:
        raise GantuneError(f"--max-new-tokens must be at least 1 (got {args.max_new_tokens})")
    method = load_method(args.run, trust_remote_code=args.trust_remote_code)
    cfg, base_model = method.config, method.base
    limit = args.max_new_tokens or cfg.max_new_tokens
    try:
        tuned = answer_questions(base_model, args.question, limit, cfg.max_prompt_tokens, method=method)
    finally:
        method.close()  # LoRA / full change the base model itself: undo before asking it
    base = answer_questions(base_model, args.question, limit, cfg.max_prompt_tokens) if args.base else None
    for i, question in enumerate(args.question):
        if len(args.question) > 1 or base:
            print(f"Q: {question}")
        if base:
            print(f"base:  {base[i]}")
            print(f"tuned: {tuned[i]}")
        else:
            print(tuned[i])


def main(argv: Sequence[str] | None = None) -> int:
    for stream in (sys.stdout, sys.stderr):  # a name or answer the terminal's encoding lacks is escaped, not fatal
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="backslashreplace")
    args = build_parser().parse_args(argv)
    import torch
    import transformers

    from . import compiled
    from .cpu import keep_freed_pages

    keep_freed_pages()
    if hasattr(args, "decode"):
        compiled.set_mode(args.decode)
    transformers.utils.logging.set_verbosity_error()  # its notices about GGUF tokenizers and flags are noise here
    try:
        code = {"train": _train, "generate": _generate, "bench": _bench, "push": _push}[args.command](args)
    except GantuneError as exc:
        print(f"gantune: error: {exc}", file=sys.stderr)
        return 2
    except (MemoryError, torch.OutOfMemoryError):
        print(f"gantune: error: {OUT_OF_MEMORY}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("gantune: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug, not bad input: still one line unless asked for the traceback
        if os.environ.get("GANTUNE_DEBUG"):
            raise
        message = first_line(exc)
        print(f"gantune: internal error: {type(exc).__name__}: {message} (GANTUNE_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 1
    return code or 0
