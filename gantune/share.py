"""Share a run: its adapter folder's model card (README.md, the Hub's YAML header), and the upload to the Hub.

The card names the base model, the data, the library and tags in its header; its text gives the method in two
sentences, the measured metrics (eval.json, each with its 95% bootstrap interval over the test questions when the
per-question scores are there), how the adapter was kept, how to load it, and the command and settings that repeat
the run, with no local path in them. ``train`` writes it when a run ends; ``push`` writes it again (the metrics an
evaluation added since) and uploads the folder with ``huggingface_hub`` and the user's own token. PEFT adapters
(lora, prompt-tuning, prefix-tuning, and a GAN's generator of those kinds) load with ``peft.PeftModel.from_pretrained``
alone: ``adapter_config.json`` names the base model's hub id when it has one.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from .config import TrainConfig
from .data import HUB_DATASET
from .errors import GantuneError, first_line
from .models import DEFAULT_GGUF, DEFAULT_HUB_ID, hub_reachable
from .runs import RunFolder
from .runs.files import write_text_atomic
from .stats import mean_interval

CARD = "README.md"
PEFT_ADAPTERS = ("lora", "prompt-tuning", "prefix-tuning")
# the metrics a card shows, in this order: eval.json's key and what the card calls it
CARD_METRICS = (("rougeL", "ROUGE-L"), ("rouge1", "ROUGE-1"), ("semantic", "semantic similarity (MiniLM cosine)"),
                ("bleurt", "BLEURT"), ("retention", "retention (world facts, real authors)"),
                ("truncated", "answers cut at the token limit"))
KIND_NAMES = {"m-tunable": "M_tunable", "lora": "LoRA", "prompt-tuning": "prompt-tuning", "prefix-tuning": "prefix-tuning",
              "full": "full fine-tuning"}
ADAPTER_WORDS = {
    "m-tunable": "M_tunable, a small network between the frozen model's embedding layer and its transformer blocks",
    "lora": "a LoRA adapter on the frozen model's linear layers",
    "prompt-tuning": "virtual prompt tokens before each question (prompt tuning), the model frozen",
    "prefix-tuning": "trained key/value prefixes in every attention layer (prefix tuning), the model frozen",
}


def adapter_kind(config: TrainConfig) -> str:
    """What the run trains: m-tunable, lora, prompt-tuning, prefix-tuning or full."""
    if config.method == "gan":
        return config.adapter
    return "m-tunable" if config.method == "adapter-mle" else config.method


def method_sentences(config: TrainConfig) -> str:
    """The run's method in two sentences."""
    kind = adapter_kind(config)
    if config.method == "full":
        return ("Every weight of the base model is fine-tuned by maximum likelihood on the reference answers. "
                "It is the costliest baseline gantune compares the adapters with.")
    if config.method != "gan":
        return (f"The tuned part is {ADAPTER_WORDS[kind]}, trained by maximum likelihood (cross-entropy) on the "
                "reference answers. It is the supervised baseline the adversarial runs are compared with.")
    judge = ("an implicit discriminator, the tuned model's own log-likelihood ratio against the untouched model "
             "(SPIN-style)" if config.discriminator == "implicit" else "a discriminator")
    return (f"The generator is {ADAPTER_WORDS[kind]}; after a maximum-likelihood warm-up, {judge} learns to tell the "
            "data's answers from the generator's. The generator then learns by policy gradient (REINFORCE, SeqGAN-style) "
            "to give answers the discriminator takes for real (generative adversarial prompt tuning).")


def base_model_id(resolved: dict[str, Any]) -> str | None:
    """The base model's hub id, when it has one (the offline default is SmolLM2's GGUF); None for a local model."""
    model = resolved.get("model") if isinstance(resolved.get("model"), dict) else {}
    if model.get("kind") == "hub":
        return model.get("name")
    if model.get("kind") == "gguf" and model.get("gguf_file") == DEFAULT_GGUF:
        return DEFAULT_HUB_ID
    return None


def dataset_id(config: TrainConfig, resolved: dict[str, Any]) -> str | None:
    """The data's hub id: TOFU's for its offline folder and the hub's, None for a file of one's own."""
    data = str(resolved.get("data") or "")
    if data.startswith("hub:"):
        return data.removeprefix("hub:").rsplit("/", 1)[0]
    if config.data is None or Path(data.split(" (")[0]).parent.name.lower() == "tofu":
        return HUB_DATASET
    return None


def _metrics(evaluation: dict[str, Any] | None) -> list[str]:
    """The card's metric rows: mean and 95% interval over the test questions (bootstrap), when eval.json has them."""
    if not evaluation:
        return ["Not evaluated yet: `python -m gantune bench`, or Compare in the workbench, measures it."]
    per_question = evaluation.get("per_question") or {}
    n = len(evaluation.get("generations") or []) or None
    rows = ["| metric | mean | 95% interval |", "|---|---|---|"]
    for key, name in CARD_METRICS:
        value = evaluation.get(key)
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        scores = per_question.get(key)
        interval = "—"
        if isinstance(scores, list) and len(scores) > 1 and all(isinstance(s, (int, float)) for s in scores):
            _, (low, high) = mean_interval([[float(s) for s in scores]])
            interval = f"[{low:.3f}, {high:.3f}]"
        rows.append(f"| {name} | {value:.3f} | {interval} |")
    said = f"on {n} held-out test questions" if n else "on the held-out test questions"
    temperature = evaluation.get("temperature")
    decoding = "greedy answers" if not temperature else f"answers sampled at temperature {temperature:g}"
    return [f"Measured {said} ({decoding}; intervals: a percentile bootstrap over the questions):", "", *rows]


def _shareable(config: TrainConfig, run: RunFolder, base_id: str | None) -> TrainConfig:
    """The settings with no local path in them: the run's folder name, the data file's name, the model's hub id."""
    model = base_id or (Path(config.model).name if config.model else config.model)
    data = Path(config.data).name if config.data and Path(config.data).expanduser().exists() else config.data
    return replace(config, out=run.path.name, data=data, model=model)


def model_card(run: RunFolder) -> str:
    """The run's model card: the Hub's YAML header, then the method, metrics, loading and the run's settings."""
    from huggingface_hub import ModelCardData

    config, resolved = run.read_config()
    summary = run.read_summary()
    try:
        evaluation = run.read_eval()
    except GantuneError:  # a damaged eval.json: the card says no metrics rather than none at all
        evaluation = None
    kind = adapter_kind(config)
    base_id, data_id = base_model_id(resolved), dataset_id(config, resolved)
    peft = kind in PEFT_ADAPTERS
    header = ModelCardData(base_model=base_id, datasets=[data_id] if data_id else None,
                           library_name="peft" if peft else "transformers" if kind == "full" else "gantune",
                           pipeline_tag="text-generation",
                           tags=list(dict.fromkeys(["gantune", config.method, kind,
                                                    *(["adversarial"] if config.method == "gan" else [])])))
    shown = _shareable(config, run, base_id)
    base_words = f"`{base_id}`" if base_id else "a local model"
    if base_id == DEFAULT_HUB_ID and resolved["model"].get("kind") == "gguf":
        base_words += f" (trained on its GGUF, `{DEFAULT_GGUF}`, de-quantised)"
    if peft:
        load = ["```python", "from peft import PeftModel", "from transformers import AutoModelForCausalLM", "",
                f"base = AutoModelForCausalLM.from_pretrained({json.dumps(base_id or 'BASE_MODEL')})",
                'model = PeftModel.from_pretrained(base, "REPO_ID")  # this repository', "```"]
    elif kind == "full":
        load = ["```python", "from transformers import AutoModelForCausalLM", "",
                'model = AutoModelForCausalLM.from_pretrained("REPO_ID")  # this repository', "```"]
    else:
        load = ["M_tunable is gantune's own adapter: `pip install gantune`, then "
                "`python -m gantune generate --run FOLDER --question \"…\"` on a download of this repository."]
    kept = summary.kept_reason if summary and summary.kept_reason else "the last step's adapter"
    steps = f"{summary.steps} of {summary.total_steps} steps ({summary.status})" if summary else "unfinished"
    settings = json.dumps(shown.to_dict(), indent=2, ensure_ascii=False)
    lines = [
        header.to_yaml().join(["---\n", "\n---"]), "",
        f"# {run.path.name}: {config.method}{f' ({kind})' if kind != config.method else ''} on "
        f"{base_id or 'a local model'}", "",
        f"{'Weights' if kind == 'full' else f'A {KIND_NAMES[kind]} adapter'} for {base_words}, trained with gantune on "
        f"{f'`{data_id}`' if data_id else 'question/answer pairs of its own'}"
        f" (subset `{config.subset}`, {resolved.get('n_train', '?')} training pairs); {steps}.", "",
        "## Method", "", method_sentences(config), "",
        "## Metrics", "", *_metrics(evaluation), "",
        "## The kept adapter", "", f"{kept[0].upper()}{kept[1:]}.", "",
        "## Use", "", *load, "",
        "## Training", "", "The command that repeats the run:", "", "```bash", shown.command_preview(), "```", "",
        "<details><summary>Every setting</summary>", "", "```json", settings, "```", "", "</details>", "",
    ]
    return "\n".join(lines)


def write_model_card(run: RunFolder) -> Path | None:
    """Write the card into the run's adapter folder (None when it has none); a PEFT adapter's adapter_config.json
    is given the base model's hub id, so that ``PeftModel``/``AutoPeftModelForCausalLM`` find it."""
    if not run.adapter_dir.is_dir():
        return None
    config, resolved = run.read_config()
    base_id = base_model_id(resolved)
    peft_config = run.adapter_dir / "adapter_config.json"
    if base_id and adapter_kind(config) in PEFT_ADAPTERS and peft_config.is_file():
        settings = json.loads(peft_config.read_text(encoding="utf-8"))
        if settings.get("base_model_name_or_path") != base_id:
            write_text_atomic(peft_config, json.dumps({**settings, "base_model_name_or_path": base_id}, indent=2))
    card = run.adapter_dir / CARD
    write_text_atomic(card, model_card(run))
    return card


def offline() -> bool:
    """Whether this process is told to stay off the hub (HF_HUB_OFFLINE, read now as well as at import)."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def push(run_path: str | Path, repo_id: str, token: str | None = None, stored_token: bool = True,
         private: bool = False) -> str:
    """Upload a run's adapter folder, with a fresh model card, to the Hub repository ``repo_id``; returns its URL.

    ``token``: the user's Hugging Face token; without one, the token this machine is logged in with, unless
    ``stored_token`` is False (a hosted page: only the visitor's own token). Refused in one line, before anything
    is sent, when offline, without a token, with a bad repository id or a run without an adapter.
    """
    from huggingface_hub import HfApi, get_token
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    run = RunFolder(run_path)
    config, _ = run.read_config()
    if not run.adapter_dir.is_dir():
        raise GantuneError(f"{run.path} has no adapter to share (the run did not finish or save)", key="push_no_adapter",
                           run=run.path.name)
    run.checked_adapter()  # regular files inside the run, safetensors and text only
    try:
        validate_repo_id(repo_id)
        if "/" not in repo_id:
            raise HFValidationError("it names no owner")
    except HFValidationError:
        raise GantuneError(f"{repo_id!r} is not a hub repository id; give it as OWNER/NAME (like "
                           "'me/smollm2-tofu-gan')", key="push_repo_id", repo=repo_id) from None
    if offline():
        raise GantuneError("cannot push: this machine is offline for the hub (HF_HUB_OFFLINE is set); unset it to share",
                           key="push_offline")
    token = (token or "").strip() or (get_token() if stored_token else None)
    if not token:
        raise GantuneError("cannot push: no Hugging Face token; log in with `hf auth login` or set HF_TOKEN"
                           if stored_token else "cannot push: give your own Hugging Face token (write access)",
                           key="push_no_token" if stored_token else "push_own_token")
    if not hub_reachable():
        raise GantuneError("cannot push: the hub (huggingface.co) cannot be reached from here", key="push_unreachable")
    api = HfApi(token=token)
    with run.guarded("sharing it on the Hub"):  # the card is written into the run: only by the run's lock holder
        write_model_card(run)
        try:
            api.create_repo(repo_id, private=private, exist_ok=True)
            api.upload_folder(folder_path=str(run.adapter_dir), repo_id=repo_id,
                              commit_message=f"gantune: {config.method} run {run.path.name}")
        except Exception as exc:  # noqa: BLE001 - the hub's errors (auth, rate, network) become one line
            raise GantuneError(f"could not push to {repo_id}: {first_line(exc)}", key="push_failed", repo=repo_id,
                               reason=first_line(exc)) from None
    return f"https://huggingface.co/{repo_id}"
