"""The page's words in English and Russian.

Two ways a word reaches the page in the browser's language:

- ``t(key)``: a label, help text, button or static Markdown; Gradio translates it in the browser.
- ``tr(lang, key, **values)``: anything the server writes (status lines, messages, plot titles,
  table headers, choice labels), formatted here in the language of the request
  (``language(request)``, from its Accept-Language header, which the browser sets from the same
  setting Gradio's own translation reads).

The settings' labels and help come from ``TrainConfig``'s fields: English from the field's name and
``help`` metadata, Russian from ``FIELDS_RU`` (a test checks that every field has one). Messages of
the library's own errors (the bad-input catalogue) stay in its words, the same at the CLI and here.
"""

from __future__ import annotations

import dataclasses
import decimal
import re
from typing import Any

import gradio as gr
from babel import Locale
from babel.numbers import format_decimal, format_percent

from gantune.config import TrainConfig

LANGUAGES = ("en", "ru")

EN = {
    # page and tabs
    "title": "gantune — generative adversarial prompt tuning",
    "intro": "Tune a small language model with a GAN-trained adapter, watch it learn, compare it with LoRA, and chat with base and tuned models side by side.",
    "space_hint": "This is a shared hosted workbench with small limits. Duplicate this Space to run bigger jobs on your own hardware.",
    "tab_setup": "Setup", "tab_gan": "GAN tuning", "tab_compare": "Compare", "tab_chat": "Chat", "tab_runs": "Runs",
    # Setup
    "model": "Base model", "model_info": "'default' (offline SmolLM2-135M-Instruct), a hub id, a local folder or a .gguf file",
    "gguf_file": "GGUF file in that folder (optional)", "trust_remote_code": "Trust the model's own code",
    "load_model": "Load model", "data_kind": "Data", "data_offline": "offline TOFU folder", "data_hub": "hub (locuslab/TOFU)",
    "data_upload": "my .jsonl / .json / .csv file", "data_path": "Folder or file", "subset": "TOFU subset",
    "upload": "question/answer pairs (.jsonl, .json or .csv)", "n": "Pairs (train + test) — empty: all", "fraction": "Train share",
    "seed": "Seed", "preview": "Preview data", "pairs": "Pairs",
    "loading": "loading …",
    "loaded": "Loaded **{name}** (architecture `{arch}`, {params}M parameters, {template}) on {device}.",
    "chat_template": "chat template", "no_chat_template": "no chat template (plain Q/A prompts)",
    "preview_counts": "{train} for training / {test} for testing from {source}",
    "no_histogram": "(no token histogram: {error})",
    "hub_offline": "the hub cannot be reached (offline?): choose the offline TOFU folder or upload a file",
    "split_train": "train", "split_test": "test",
    "col_split": "split", "col_question": "question", "col_answer": "answer",
    "error": "Error:",
    "bad_widths": "{name}: whole numbers separated by spaces", "not_finite": "{name} must be a finite number",
    "not_finite_got": "{name} must be a finite number (got {value})",
    "not_a_number": "{name} must be a number (got {value})", "not_whole": "{name} must be a whole number (got {value})",
    "what_n": "pairs (n)", "what_fraction": "train share", "what_seed": "seed", "what_max_new_tokens": "max new tokens",
    "hosted_no_gguf": "this hosted workbench loads hub models only; a GGUF file name is not accepted",
    "hosted_hub_id": "{name} is not a hub model id like 'HuggingFaceTB/SmolLM2-135M-Instruct'; this hosted workbench loads hub models only",
    "unknown_kind": "unknown data kind {kind}; choose offline, hub or upload",
    "hosted_own_data": "this hosted workbench reads only its own data folder; upload a file instead",
    "upload_first": "upload a .jsonl, .json or .csv file of question/answer pairs first",
    "upload_only": "only a file uploaded through the page can be read here",
    "upload_gone": "the uploaded file is gone; upload it again",
    "upload_too_big": "the uploaded file is {size} MB; at most {most} MB is accepted",
    "hosted_max_n": "this hosted workbench allows at most {n} pairs; duplicate the Space for more",
    "hosted_max_epochs": "this hosted workbench allows at most {n} epochs; duplicate the Space for more",
    "hosted_max_tokens": "this hosted workbench allows at most {n} new tokens",
    "hosted_max_seeds": "this hosted workbench allows at most {n} seeds; duplicate the Space for more",
    "hosted_max_setting": "this hosted workbench allows at most {n} for “{name}”; duplicate the Space for more",
    "hosted_step_cost": "these settings make a training step of about {cost} token passes through the model, more than "
                        "the {most} this hosted workbench allows; lower “{name}” (the largest part) or duplicate the "
                        "Space",
    "comparison_damaged": "saved comparison {name} is damaged, so it is not shown: {reason}",
    "no_checkpoint": "{run} has no checkpoint to resume from", "already_complete": "{run} is already complete",
    "unknown_methods": "unknown method(s): {methods}", "seeds_range": "seeds must be between 1 and {most} (got {seeds})",
    "no_such_run": "no such run: {run}", "run_busy": "this run is being written by the running job; stop it first",
    "damaged_run": "run {run} is damaged: {reason}",
    "remote_code_consent": "{run} was tuned from a model that runs its own code ({model}); to allow it, tick “Trust "
                           "the model's own code” in Setup and load that model there (Load model) — only if you trust "
                           "it",
    "remote_code_hosted": "{run} was tuned from a model that runs its own code; this hosted workbench never runs a "
                          "model's own code",
    "no_adapter": "{run} has no adapter yet",
    "chat_max_tokens": "max new tokens must be between 1 and {most} (got {got})",
    "chat_two_models": "the GAN and LoRA runs were tuned from different base models; pick runs of one model",
    "chat_too_long": "the message is {tokens} tokens as a prompt; the chat takes at most {most}",
    # GAN tuning
    "preset": "Preset", "settings": "Every setting", "start": "Start", "stop": "Stop", "status": "Status",
    "samples": "Answers sampled during training",
    "idle": "No job yet. Press Start.", "idle_compare": "No comparison yet: pick a run, then press “Train and evaluate”.",
    "state_starting": "starting", "state_running": "running", "state_stopping": "stopping", "state_completed": "completed",
    "state_stopped": "stopped", "state_failed": "failed",
    "run_label": "run", "step_of": "step {step}/{total}", "step_of_unknown": "step {step}/…",
    "eta": "about {time} left", "eta_first": "first estimate: about {time} (from an earlier run like this one)",
    "first_step": "first step under way, {elapsed} so far: at least {time} in all",
    "stopping_after_step": "stopping after this step",
    "minutes_seconds": "{m} min {s} s", "seconds": "{s} s",
    "slow_steps": "Steps take about {pace} here. For a quicker try: fewer pairs, a smaller batch size or fewer max new tokens (Every setting).",
    "msg_loading_model": "loading model …", "msg_training": "training …", "msg_training_method": "training {method} …",
    "msg_compare_step": "seed {seed}: training {method}, step {step}/{total}",
    "msg_compare_training": "seed {seed}: training {method} …", "msg_compare_evaluating": "seed {seed}: evaluating {method} …",
    "msg_compare_not_evaluated": "seed {seed}: {method} saved no adapter; not evaluated",
    "msg_compare_as_it_stands": "seed {seed}: {method} did not complete its training; evaluated as it stands",
    "msg_compare_done": "done", "msg_compare_stopped": "stopped",
    "title_compare": "compare {run} with {methods}", "title_resume": "resume {run}",
    "other_job": "Another job is running: {title} ({state}); this tab shows its own last job.",
    "kept": "Kept the adapter of step {step}: the best validation {metric} ({score}) of {count} scored adapters.",
    "kept_last": "Kept the adapter of step {step} (no validation pairs: the last one).",
    "samples_none": "No answers sampled yet.",
    "samples_warmup": "No answers sampled yet: the generator samples from its adversarial phase on, after the MLE warm-up ({epochs}).",
    "col_step": "step", "col_sampled": "sampled answer", "col_reference": "reference",
    "collapse_title": "The sampled answers look collapsed",
    "collapse_repetition": "they repeat themselves: {value:.0%} of their 4-word runs repeat an earlier one (references: {reference:.0%})",
    "collapse_diversity": "they are alike: distinct word pairs (distinct-2) {value:.2f} against the references' {reference:.2f}",
    "collapse_length": "{value:.0%} of them run to the token cap ({cap} tokens; references: {reference:.0%})",
    "collapse_made_up": "{value:.0%} of their longer words are not in the model's vocabulary: made-up words (references: {reference:.0%})",
    "collapse_advice": "Stop and start again with a lower {lr} (now {lr_value:g}){more}.",
    "collapse_more": " or a higher {field} (now {value:g})",
    # plots
    "plot_empty": "No run to show yet: press Start, or pick a run in Runs.",
    "plot_empty_compare": "Pick runs in “Runs to show”, or train baselines above.",
    "plot_losses": "Losses", "plot_game": "The adversarial game", "plot_weights": "Weights", "plot_memory": "Memory (MB)",
    "panel_g": "generator loss (policy gradient)", "panel_d": "discriminator loss", "panel_mle": "MLE loss on the reference answers",
    "panel_reward": "mean reward of the sampled answers", "panel_d_acc": "discriminator accuracy",
    "panel_kl": "KL to the untuned model (per token)", "panel_val": "validation {metric} (held-out training pairs)",
    "panel_adapter": "tuned part: L2 norm", "panel_frozen": "frozen LM weights: L2 norm",
    "trace_g": "G loss", "trace_d": "D loss", "trace_mle": "MLE loss (training batch)", "trace_val": "validation {metric} (epoch end)",
    "trace_reward": "mean reward", "trace_acc_real": "D accuracy, real", "trace_acc_fake": "D accuracy, generated",
    "trace_acc_pairs": "pairs with D(real) > D(sample)",
    "objective_table": "What the adversarial objective adds, on each adapter (greedy ROUGE-L)",
    "col_objective": "objective", "objective_mle": "MLE", "objective_explicit": "GAN with a D network",
    "objective_implicit": "GAN with the implicit D",
    "vs_twin": "vs. its MLE twin {diff} [{lo}; {hi}]",
    "panel_margin": "implicit D: β·log-ratio to π_ref", "trace_margin": "margin D(q,r) − D(q,y)",
    "trace_d_real": "D(q, reference)", "trace_d_fake": "D(q, sample)",
    "panel_round": "round (π_ref renewed at its start)", "trace_round": "round",
    "trace_kl": "KL", "trace_adapter": "adapter", "trace_frozen": "frozen LM", "trace_memory": "in use", "trace_peak": "peak",
    "warmup": "MLE warm-up",
    "axis_step": "step", "axis_seconds": "training seconds", "axis_share": "share of training", "axis_tokens": "tokens",
    "axis_count": "answers",
    "plot_tokens": "Token lengths", "trace_prompt_tokens": "prompt tokens", "trace_answer_tokens": "answer tokens",
    "plot_overlay": "{quantity}: the selected runs",
    "plot_bars": "{metric} per run (95% interval)",
    "plot_answer_lengths": "Answer lengths (tokens): references and each run",

    "q_mle_loss": "MLE loss on the reference answers", "q_val_nll": "validation NLL", "q_val_rougeL": "validation ROUGE-L", "q_peak_memory_mb": "peak memory (MB)",
    "q_step_seconds": "seconds per step",
    # Compare
    "reference_run": "Run to compare against", "methods": "Baselines to train on the same data and split",
    "seeds": "Seeds (one training and evaluation each)", "run_compare": "Train and evaluate",
    "compare_runs": "Runs to show", "metrics_table": "Quality", "distribution_table": "Answers against the references",
    "cost_table": "Cost", "overlay_key": "Curve", "bar_metric": "Metric for the chart", "config_diff": "Settings that differ",
    "compare_pick": "Quality is shown for evaluated runs: press “Train and evaluate” beside a run (the runs it makes show here at once), or pick evaluated runs in “Runs to show”.",

    "row_base": "base model", "row_reference": "reference answers",
    "col_run": "run", "col_method": "method", "col_train_s": "training s", "col_peak_mb": "peak MB",
    "col_trainable": "trainable", "col_tokens_s": "tokens/s", "col_time_lora": "time/LoRA", "col_memory_lora": "memory/LoRA",
    "col_setting": "setting", "col_seeds": "seeds",
    "interval_note": "Each number is a mean with its 95% interval (bootstrap over seeds and questions) when there is one.",
    # Chat
    "gan_run": "GAN-tuned run", "lora_run": "LoRA-tuned run", "base": "Base model", "gan": "GAN-tuned", "lora": "LoRA-tuned",
    "message": "Message", "send": "Send", "random_question": "Random TOFU question", "reference": "Reference answer",
    "reference_answer": "**Reference answer:** {answer}", "pick_a_run": "(pick a run)", "type_first": "type a message first",
    "max_new_tokens": "Max new tokens",
    # Runs
    "runs": "Runs", "refresh": "Refresh", "selected_run": "Selected run", "open_run": "Show in GAN tuning", "resume": "Resume from checkpoint",
    "use_in_chat": "Use in Chat", "download": "Download adapter", "delete": "Delete", "confirm_delete": "Yes, delete it",
    "cancel": "Cancel",
    "pick_run_first": "pick a run first", "showing": "showing {run} in GAN tuning and Compare",
    "resuming": "resuming {run} from its last checkpoint: watch it in GAN tuning",
    "in_chat_gan": "{run} is the GAN run in Chat", "in_chat_lora": "{run} is the LoRA run in Chat",
    "chat_needs": "Chat compares GAN and LoRA runs that saved an adapter; pick one of those",
    "delete_question": "Delete {run}? Its folder and adapter go for good.", "deleted": "deleted {run}",
    "col_preset": "preset", "col_status": "status", "col_steps": "steps", "col_seconds": "seconds",
    "col_peak_memory": "peak MB", "col_params": "trainable params", "col_evaluated": "evaluated", "col_adapter": "adapter",
    "col_created": "created", "yes": "yes", "no": "no",
    "status_running": "running", "status_completed": "completed", "status_stopped": "stopped",
    "status_diverged": "diverged", "status_unfinished": "unfinished", "status_damaged": "damaged: {reason}",

    # refusals the library names by kind (GantuneError.key), said with the page's field label
    "warning_title": "Warning", "toast_close": "Close",
    "job_busy": "a job is running ({title}); watch it or stop it first",
    "err_at_least": "{name} must be at least {least} (got {got})",
    "err_in_range": "{name} must be a number above {low} and at most {high} (got {got})",
    "err_finite_at_least": "{name} must be a finite number of at least {low} (got {got})",
    "err_one_of": "{name} must be one of {choices} (got {got})",
    "err_at_most": "{name} must be at most {most} (got {got})",
    "err_between": "{name} must be between {low} and {high} (got {got})",
    "err_between_open": "{name} must lie strictly between {low} and {high} (got {got})",
    "err_too_few_pairs": "need at least 2 pairs (one to train, one to test); have {have}",
    "err_in_interval": "{name} must be a number in {interval} (got {got})",
    "err_finite": "{name} must be a finite number (got {got})",
    "err_n_too_many": "{n} pairs asked for, but only {have} are available",
    "pick_reference_first": "pick a run to compare against first",
    "eta_revised": "taking longer than estimated",
    "eta_plan": "about {time} left (estimated before it began)",
    "first_step_only": "first step under way, {elapsed} so far; the time left follows once it ends",
    "stage_of": "stage {step} of {total}",
    "title_train": "GAN tuning ({preset})",
    "viewing": "showing the run {run}: {state}",
    "viewing_title": "Run",
    # samples
    "samples_never": "This run records no sampled answers (“sample every” is 0).",
    "samples_missed": "No answers were recorded: the adversarial phase ran steps {first}–{last}, and answers are recorded every {every} steps.",
    "samples_no_adversarial": "No answers were recorded: this run never reached its adversarial phase (the generator samples only there).",
    "game_warmup": "The adversarial game starts after the MLE warm-up ({epochs}); the warm-up's losses are on the left.",
    # compare: plan, notes, paired differences
    "plan": "This comparison will take about {time}: {parts}.",
    "plan_train": "training {what} ({time})",
    "plan_eval": "evaluating {models} on {questions} and {retention} ({time})",
    "plan_basis": "Estimated from {basis}; refined while it runs.",
    "basis_steps": "the run's own step times",
    "basis_decode": "a measured decoding rate",
    "basis_guess": "the run's settings (no model loaded yet to measure)",
    "plan_differ": "Settings that differ from {run}: {changes}.",
    "metric_unavailable": "{metric} is not available here:",
    "paired_table": "Paired differences (same questions, same seed): the comparison to read",
    "col_versus": "against", "col_difference": "difference (95% interval)", "col_metric": "metric",
    "paired_note": "A difference whose interval lies wholly above or below 0 is one the data support; otherwise the two are not told apart.",
    "retention_count": "{count} of {n}",
    "row_fallback": "{row}: {method} ({preset}) with {settings}",
    "row_fallback_plain": "{row}: {method} ({preset})",
    "rows_help": "What each row trains",
    # chat: the base got it right, the tuned answer changed
    "chat_forgot": "⚠ {model}: the base model answered this right (“{answer}”); this answer no longer gives it.",
    "chat_kept": "✓ {model} still gives the true answer (“{answer}”).",
    "random_fact": "Random world fact",
    "no_facts": "the data folder has no world facts or real authors (TOFU's retention sets) to ask",
    "true_answer": "**True answer:** {answer}",
    "device_cpu": "the CPU", "device_cuda": "the GPU (CUDA)",
    "arch": "architecture",
    # issue 29
    "kept_few": "Kept the adapter of step {step}, the last one: {count} validation pairs are too few to choose between adapters (at least {least}).",
    "kept_untrained": "Kept the adapter of step 0, the untouched model: training did not beat it on validation ({metric} {score}, the best of {count} scored adapters).",
    "val_short": "The setting asks for {asked} validation pairs, but {train} training pairs allow only {got} (at most a tenth).",
    "chat_cut": "“…” marks an answer cut at the limit of new tokens ({limit}): {models}. Raise “{setting}” above for a longer answer.",
    "push": "Share on the Hub", "push_repo": "Hub repository (OWNER/NAME)",
    "push_token": "Hugging Face token (blank: the one this machine is logged in with)",
    "push_token_space": "Your own Hugging Face token (write access; used for this upload only)",
    "pushed": "{run} is on the Hub, with its model card: {url}",
    "push_running": "{run} is still training: share it once it has ended",
    "err_push_offline": "cannot push: this machine is offline for the hub (HF_HUB_OFFLINE is set); unset it to share",
    "err_push_no_token": "cannot push: no Hugging Face token; log in with `hf auth login` or set HF_TOKEN",
    "err_push_own_token": "cannot push: give your own Hugging Face token (write access)",
    "err_push_unreachable": "cannot push: the hub (huggingface.co) cannot be reached from here",
    "err_push_repo_id": "'{repo}' is not a hub repository id; give it as OWNER/NAME (like 'me/smollm2-tofu-gan')",
    "err_push_no_adapter": "{run} has no adapter to share (the run did not finish or save)",
    "err_push_failed": "could not push to {repo}: {reason}",
}

RU = {
    "title": "gantune — состязательная настройка промптов",
    "intro": "Настройте небольшую языковую модель адаптером, обученным как GAN, следите за обучением, сравните с LoRA и поговорите с исходной и настроенной моделями рядом.",
    "space_hint": "Это общий демонстрационный стенд с небольшими ограничениями. Сделайте копию Space, чтобы запускать большие задачи на своём оборудовании.",
    "tab_setup": "Подготовка", "tab_gan": "GAN-настройка", "tab_compare": "Сравнение", "tab_chat": "Чат", "tab_runs": "Запуски",
    "model": "Базовая модель", "model_info": "«по умолчанию» (default, офлайн SmolLM2-135M-Instruct), имя на хабе, локальная папка или файл (.gguf)",
    "gguf_file": "Файл GGUF в этой папке (необязательно)", "trust_remote_code": "Доверять коду модели",
    "load_model": "Загрузить модель", "data_kind": "Данные", "data_offline": "офлайн-папка TOFU", "data_hub": "хаб (locuslab/TOFU)",
    "data_upload": "мой файл (.jsonl, .json, .csv)", "data_path": "Папка или файл", "subset": "Подмножество TOFU",
    "upload": "пары вопрос/ответ (.jsonl, .json, .csv)", "n": "Пар (обучение + тест) — пусто: все", "fraction": "Доля обучения",
    "seed": "Зерно случайности", "preview": "Просмотр данных", "pairs": "Пары",
    "loading": "загрузка …",
    "loaded": "Загружена **{name}** (архитектура `{arch}`, {params} млн параметров, {template}); устройство: {device}.",
    "chat_template": "есть шаблон чата", "no_chat_template": "нет шаблона чата (простые промпты «вопрос/ответ»)",
    "preview_counts": "{train} для обучения / {test} для теста из {source}",
    "no_histogram": "(без гистограммы токенов: {error})",
    "hub_offline": "хаб недоступен (нет сети?): выберите офлайн-папку TOFU или загрузите файл",
    "split_train": "обучение", "split_test": "тест",
    "col_split": "часть", "col_question": "вопрос", "col_answer": "ответ",
    "error": "Ошибка:",
    "bad_widths": "{name}: целые числа через пробел", "not_finite": "{name}: нужно конечное число",
    "not_finite_got": "{name}: нужно конечное число (получено {value})",
    "not_a_number": "{name}: нужно число (получено {value})", "not_whole": "{name}: нужно целое число (получено {value})",
    "what_n": "число пар (n)", "what_fraction": "доля обучения", "what_seed": "зерно", "what_max_new_tokens": "макс. новых токенов",
    "hosted_no_gguf": "этот общий стенд загружает только модели с хаба; имя файла GGUF не принимается",
    "hosted_hub_id": "{name} — не имя модели на хабе вида «HuggingFaceTB/SmolLM2-135M-Instruct»; этот общий стенд загружает только модели с хаба",
    "unknown_kind": "неизвестный вид данных {kind}; выберите офлайн-папку (offline), хаб (hub) или свой файл (upload)",
    "hosted_own_data": "этот общий стенд читает только свою папку данных; загрузите файл",
    "upload_first": "сначала загрузите файл пар вопрос/ответ (.jsonl, .json, .csv)",
    "upload_only": "здесь читается только файл, загруженный через страницу",
    "upload_gone": "загруженный файл пропал; загрузите его снова",
    "upload_too_big": "загруженный файл весит {size} МБ; принимается не больше {most} МБ",
    "hosted_max_n": "этот общий стенд разрешает не больше {n} пар; сделайте копию Space для большего",
    "hosted_max_epochs": "этот общий стенд разрешает не больше {n} эпох; сделайте копию Space для большего",
    "hosted_max_tokens": "этот общий стенд разрешает не больше {n} новых токенов",
    "hosted_max_seeds": "этот общий стенд разрешает не больше {n} зёрен; сделайте копию Space для большего",
    "hosted_max_setting": "этот общий стенд разрешает для «{name}» не больше {n}; сделайте копию Space для большего",
    "hosted_step_cost": "с этими параметрами шаг обучения — около {cost} проходов токенов через модель, больше "
                        "{most}, которые разрешает этот общий стенд; уменьшите «{name}» (самая большая часть) или "
                        "сделайте копию Space",
    "comparison_damaged": "сохранённое сравнение {name} повреждено и не показано: {reason}",
    "no_checkpoint": "у {run} нет контрольной точки, чтобы продолжить", "already_complete": "{run} уже завершён",
    "unknown_methods": "неизвестные методы: {methods}", "seeds_range": "зёрен должно быть от 1 до {most} (получено {seeds})",
    "no_such_run": "нет такого запуска: {run}", "run_busy": "в этот запуск сейчас пишет идущая задача; сначала остановите её",
    "damaged_run": "запуск {run} повреждён: {reason}",
    "remote_code_consent": "{run} настроен от модели, которая выполняет собственный код ({model}); чтобы разрешить это, "
                           "отметьте «Доверять коду модели» на вкладке «Подготовка» и загрузите там эту модель — только если вы ей "
                           "доверяете",
    "remote_code_hosted": "{run} настроен от модели, которая выполняет собственный код; этот общий стенд никогда не "
                          "выполняет код модели",
    "no_adapter": "у {run} пока нет адаптера",
    "chat_max_tokens": "макс. новых токенов должно быть от 1 до {most} (получено {got})",
    "chat_two_models": "запуски GAN и LoRA настроены от разных базовых моделей; выберите запуски одной модели",
    "chat_too_long": "сообщение занимает {tokens} токенов как промпт; чат принимает не больше {most}",
    "preset": "Пресет", "settings": "Все параметры", "start": "Старт", "stop": "Стоп", "status": "Состояние",
    "samples": "Ответы, сгенерированные при обучении",
    "idle": "Задач пока не было. Нажмите «Старт».", "idle_compare": "Сравнений пока не было: выберите запуск и нажмите «Обучить и оценить».",
    "state_starting": "запускается", "state_running": "идёт", "state_stopping": "останавливается", "state_completed": "завершено",
    "state_stopped": "остановлено", "state_failed": "ошибка",
    "run_label": "запуск", "step_of": "шаг {step}/{total}", "step_of_unknown": "шаг {step}/…",
    "eta": "осталось около {time}", "eta_first": "первая оценка: около {time} (по прошлому похожему запуску)",
    "first_step": "идёт первый шаг, прошло {elapsed}: всего не меньше {time}",
    "stopping_after_step": "остановка после этого шага",
    "minutes_seconds": "{m} мин {s} с", "seconds": "{s} с",
    "slow_steps": "Шаг занимает около {pace}. Для быстрой пробы: меньше пар, меньший размер батча или меньше новых токенов (Все параметры).",
    "msg_loading_model": "загрузка модели …", "msg_training": "обучение …", "msg_training_method": "обучение {method} …",
    "msg_compare_step": "зерно {seed}: обучение {method}, шаг {step}/{total}",
    "msg_compare_training": "зерно {seed}: обучение {method} …", "msg_compare_evaluating": "зерно {seed}: оценка {method} …",
    "msg_compare_not_evaluated": "зерно {seed}: {method} не сохранил адаптер; не оценён",
    "msg_compare_as_it_stands": "зерно {seed}: {method} не завершил обучение; оценён как есть",
    "msg_compare_done": "готово", "msg_compare_stopped": "остановлено",
    "title_compare": "сравнение {run} с {methods}", "title_resume": "продолжение {run}",
    "other_job": "Сейчас идёт другая задача: {title} ({state}); эта вкладка показывает свою последнюю задачу.",
    "kept": "Сохранён адаптер шага {step}: лучший {metric} на валидации ({score}) из {count} оценённых адаптеров.",
    "kept_last": "Сохранён адаптер шага {step} (валидационных пар нет: последний).",
    "samples_none": "Ответов пока нет.",
    "samples_warmup": "Ответов пока нет: генератор сэмплирует ответы с начала состязательной фазы, после MLE-разогрева ({epochs}).",
    "col_step": "шаг", "col_sampled": "сгенерированный ответ", "col_reference": "эталон",
    "collapse_title": "Похоже, генерация выродилась",
    "collapse_repetition": "ответы повторяют себя: {value:.0%} их 4-словных фрагментов повторяют более ранние (у эталонов {reference:.0%})",
    "collapse_diversity": "ответы однообразны: доля различных пар слов (distinct-2) {value:.2f} против {reference:.2f} у эталонов",
    "collapse_length": "{value:.0%} ответов упираются в предел длины ({cap} токенов; у эталонов {reference:.0%})",
    "collapse_made_up": "{value:.0%} их длинных слов нет в словаре модели: слова выдуманы (у эталонов {reference:.0%})",
    "collapse_advice": "Остановите и запустите заново с меньшим значением «{lr}» (сейчас {lr_value:g}){more}.",
    "collapse_more": " или с большим «{field}» (сейчас {value:g})",
    "plot_empty": "Пока нечего показать: нажмите «Старт» или выберите запуск во вкладке «Запуски».",
    "plot_empty_compare": "Выберите запуски в списке «Показать запуски» или обучите базовые методы выше.",
    "plot_losses": "Функции потерь", "plot_game": "Состязательная игра", "plot_weights": "Веса", "plot_memory": "Память (МБ)",
    "panel_g": "потери генератора (градиент политики)", "panel_d": "потери дискриминатора",
    "panel_mle": "MLE-потери на эталонных ответах",
    "panel_reward": "средняя награда сгенерированных ответов", "panel_d_acc": "точность дискриминатора",
    "panel_kl": "KL к ненастроенной модели (на токен)", "panel_val": "{metric} на валидации (отложенные обучающие пары)",
    "panel_adapter": "настраиваемая часть: норма L2", "panel_frozen": "замороженные веса LM: норма L2",
    "trace_g": "потери G", "trace_d": "потери D", "trace_mle": "MLE-потери (обучающий батч)",
    "trace_val": "{metric} на валидации (конец эпохи)",
    "trace_reward": "средняя награда", "trace_acc_real": "точность D, настоящие", "trace_acc_fake": "точность D, сгенерированные",
    "trace_acc_pairs": "пары с D(эталон) > D(сэмпл)",
    "objective_table": "Что добавляет состязательная цель на каждом адаптере (ROUGE-L жадных ответов)",
    "col_objective": "цель обучения", "objective_mle": "MLE", "objective_explicit": "GAN с сетью D",
    "objective_implicit": "GAN с неявным D",
    "vs_twin": "против MLE-двойника {diff} [{lo}; {hi}]",
    "panel_margin": "неявный D: β·логарифм отношения к π_ref", "trace_margin": "разрыв D(q,r) − D(q,y)",
    "trace_d_real": "D(q, эталон)", "trace_d_fake": "D(q, сэмпл)",
    "panel_round": "раунд (π_ref обновляется в его начале)", "trace_round": "раунд",
    "trace_kl": "KL", "trace_adapter": "адаптер", "trace_frozen": "замороженная LM", "trace_memory": "занято", "trace_peak": "пик",
    "warmup": "MLE-разогрев",
    "axis_step": "шаг", "axis_seconds": "секунды обучения", "axis_share": "доля обучения", "axis_tokens": "токены",
    "axis_count": "ответы",
    "plot_tokens": "Длины в токенах", "trace_prompt_tokens": "токены промпта", "trace_answer_tokens": "токены ответа",
    "plot_overlay": "{quantity}: выбранные запуски",
    "plot_bars": "{metric} по запускам (95% интервал)",
    "plot_answer_lengths": "Длины ответов (токены): эталоны и каждый запуск",

    "q_mle_loss": "MLE-потери на эталонных ответах", "q_val_nll": "NLL на валидации", "q_val_rougeL": "ROUGE-L на валидации", "q_peak_memory_mb": "пиковая память (МБ)",
    "q_step_seconds": "секунды на шаг",
    "reference_run": "Запуск для сравнения", "methods": "Базовые методы на тех же данных и разбиении",
    "seeds": "Зёрна (по обучению и оценке на каждое)", "run_compare": "Обучить и оценить",
    "compare_runs": "Показать запуски", "metrics_table": "Качество", "distribution_table": "Ответы против эталонов",
    "cost_table": "Затраты", "overlay_key": "Кривая", "bar_metric": "Метрика для диаграммы", "config_diff": "Различающиеся параметры",
    "compare_pick": "Качество показано для оценённых запусков: нажмите «Обучить и оценить» рядом с запуском (его запуски сразу появятся здесь) или выберите оценённые запуски в списке «Показать запуски».",

    "row_base": "базовая модель", "row_reference": "эталонные ответы",
    "col_run": "запуск", "col_method": "метод", "col_train_s": "обучение, с", "col_peak_mb": "пик, МБ",
    "col_trainable": "обучаемых", "col_tokens_s": "токенов/с", "col_time_lora": "время/LoRA", "col_memory_lora": "память/LoRA",
    "col_setting": "параметр", "col_seeds": "зёрна",
    "interval_note": "Каждое число — среднее с 95% интервалом (бутстреп по зёрнам и вопросам), когда он есть.",
    "gan_run": "Запуск GAN", "lora_run": "Запуск LoRA", "base": "Базовая модель", "gan": "После GAN", "lora": "После LoRA",
    "message": "Сообщение", "send": "Отправить", "random_question": "Случайный вопрос TOFU", "reference": "Эталонный ответ",
    "reference_answer": "**Эталонный ответ:** {answer}", "pick_a_run": "(выберите запуск)", "type_first": "сначала напишите сообщение",
    "max_new_tokens": "Макс. новых токенов",
    "runs": "Запуски", "refresh": "Обновить", "selected_run": "Выбранный запуск", "open_run": "Показать в GAN-настройке",
    "resume": "Продолжить с контрольной точки",
    "use_in_chat": "Открыть в чате", "download": "Скачать адаптер", "delete": "Удалить", "confirm_delete": "Да, удалить",
    "cancel": "Отмена",
    "pick_run_first": "сначала выберите запуск", "showing": "{run} показан в GAN-настройке и в сравнении",
    "resuming": "{run} продолжается с последней контрольной точки: следите во вкладке GAN-настройки",
    "in_chat_gan": "{run} — запуск GAN в чате", "in_chat_lora": "{run} — запуск LoRA в чате",
    "chat_needs": "Чат сравнивает запуски GAN и LoRA с сохранённым адаптером; выберите такой",
    "delete_question": "Удалить {run}? Папка запуска и адаптер удаляются безвозвратно.", "deleted": "{run} удалён",
    "col_preset": "пресет", "col_status": "состояние", "col_steps": "шаги", "col_seconds": "секунды",
    "col_peak_memory": "пик, МБ", "col_params": "параметры", "col_evaluated": "оценён", "col_adapter": "адаптер",
    "col_created": "создан", "yes": "да", "no": "нет",
    "status_running": "идёт", "status_completed": "завершён", "status_stopped": "остановлен",
    "status_diverged": "разошёлся", "status_unfinished": "не завершён", "status_damaged": "повреждён: {reason}",

    "warning_title": "Предупреждение", "toast_close": "Закрыть",
    "job_busy": "уже идёт задача ({title}); следите за ней или сначала остановите её",
    "err_at_least": "{name}: нужно не меньше {least} (получено {got})",
    "err_in_range": "{name}: нужно число больше {low} и не больше {high} (получено {got})",
    "err_finite_at_least": "{name}: нужно конечное число не меньше {low} (получено {got})",
    "err_one_of": "{name}: допустимо одно из значений {choices} (получено {got})",
    "err_at_most": "{name}: нужно не больше {most} (получено {got})",
    "err_between": "{name}: нужно число от {low} до {high} (получено {got})",
    "err_between_open": "{name}: нужно число строго между {low} и {high} (получено {got})",
    "err_too_few_pairs": "нужно хотя бы 2 пары (одна для обучения, одна для теста); есть {have}",
    "err_in_interval": "{name}: нужно число в промежутке {interval} (получено {got})",
    "err_finite": "{name}: нужно конечное число (получено {got})",
    "err_n_too_many": "запрошено пар: {n}, а доступно только {have}",
    "pick_reference_first": "сначала выберите запуск для сравнения",
    "eta_revised": "дольше, чем ожидалось",
    "eta_plan": "осталось около {time} (оценка до начала)",
    "first_step_only": "идёт первый шаг, прошло {elapsed}; оставшееся время станет известно после него",
    "stage_of": "этап {step} из {total}",
    "title_train": "GAN-настройка ({preset})",
    "viewing": "показан запуск {run}: {state}",
    "viewing_title": "Запуск",
    "samples_never": "Этот запуск не записывает сгенерированные ответы (параметр «ответы каждые» равен 0).",
    "samples_missed": "Ответы не записаны: состязательная фаза шла на шагах {first}–{last}, а ответы записываются каждые {every} шагов.",
    "samples_no_adversarial": "Ответы не записаны: запуск не дошёл до состязательной фазы (генератор сэмплирует ответы только в ней).",
    "game_warmup": "Состязательная игра начнётся после MLE-разогрева ({epochs}); потери разогрева — на графике слева.",
    "plan": "Сравнение займёт около {time}: {parts}.",
    "plan_train": "обучение: {what} ({time})",
    "plan_eval": "оценка: {models} на {questions} и {retention} ({time})",
    "plan_basis": "Оценка по {basis}; уточняется по ходу.",
    "basis_steps": "времени шагов самого запуска",
    "basis_decode": "измеренной скорости генерации",
    "basis_guess": "параметрам запуска (модель ещё не загружена, измерить нечем)",
    "plan_differ": "Параметры, отличающиеся от {run}: {changes}.",
    "metric_unavailable": "{metric} здесь недоступен:",
    "paired_table": "Попарные разности (те же вопросы, то же зерно): главное сравнение",
    "col_versus": "против", "col_difference": "разность (95% интервал)", "col_metric": "метрика",
    "paired_note": "Если интервал разности целиком выше или ниже 0, данные различают два метода; иначе их не отличить.",
    "retention_count": "{count} из {n}",
    "row_fallback": "{row}: метод {method} (пресет {preset}) с {settings}",
    "row_fallback_plain": "{row}: метод {method} (пресет {preset})",
    "rows_help": "Что обучает каждая строка",
    "chat_forgot": "⚠ {model}: базовая модель ответила верно («{answer}»); этот ответ его больше не даёт.",
    "chat_kept": "✓ {model}: верный ответ сохранился («{answer}»).",
    "random_fact": "Случайный факт о мире",
    "no_facts": "в папке данных нет фактов о мире и реальных авторах (наборов TOFU на сохранение знаний)",
    "true_answer": "**Верный ответ:** {answer}",
    "device_cpu": "процессор (CPU)", "device_cuda": "видеокарта (CUDA)",
    "arch": "архитектура",
    # issue 29
    "kept_few": "Сохранён адаптер шага {step}, последний: валидационных пар слишком мало, чтобы выбирать между адаптерами ({count}, нужно не меньше {least}).",
    "kept_untrained": "Сохранён адаптер шага 0 — нетронутая модель: обучение не превзошло её на валидации ({metric} {score}, лучший из оценённых адаптеров: {count}).",
    "val_short": "В настройке указано валидационных пар: {asked}, но из {train} обучающих пар можно отложить только {got} (не больше десятой части).",
    "chat_cut": "«…» отмечает ответ, обрезанный на пределе новых токенов ({limit}): {models}. Увеличьте «{setting}» выше, чтобы ответ был длиннее.",
    "push": "Опубликовать на Hub", "push_repo": "Репозиторий на Hub (ВЛАДЕЛЕЦ/ИМЯ)",
    "push_token": "Токен Hugging Face (пусто: токен, с которым на этой машине выполнен вход)",
    "push_token_space": "Ваш собственный токен Hugging Face (с правом записи; только для этой загрузки)",
    "pushed": "{run} опубликован на Hub вместе с карточкой модели: {url}",
    "push_running": "{run} ещё обучается: опубликуйте его, когда обучение закончится",
    "err_push_offline": "нельзя опубликовать: эта машина работает без Hub (задан HF_HUB_OFFLINE); снимите его, чтобы публиковать",
    "err_push_no_token": "нельзя опубликовать: нет токена Hugging Face; войдите командой `hf auth login` или задайте HF_TOKEN",
    "err_push_own_token": "нельзя опубликовать: укажите свой токен Hugging Face (с правом записи)",
    "err_push_unreachable": "нельзя опубликовать: Hub (huggingface.co) отсюда недоступен",
    "err_push_repo_id": "«{repo}» — не идентификатор репозитория на Hub; укажите его как ВЛАДЕЛЕЦ/ИМЯ (например, «me/smollm2-tofu-gan»)",
    "err_push_no_adapter": "у запуска {run} нет адаптера, которым можно поделиться (запуск не завершился или не сохранил его)",
    "err_push_failed": "не удалось опубликовать в {repo}: {reason}",
}

# Every TrainConfig field: (label, help) in Russian. English comes from the field itself.
FIELDS_RU: dict[str, tuple[str, str]] = {
    "method": ("метод", "метод настройки"),
    "preset": ("пресет", "именованный пресет, от которого берутся остальные значения"),
    "model": ("модель", "базовая модель: «по умолчанию» (default, офлайн SmolLM2-135M-Instruct), имя на хабе, папка или файл (.gguf)"),
    "gguf_file": ("файл GGUF", "имя файла GGUF в папке модели"),
    "trust_remote_code": ("доверять коду модели", "разрешить собственный Python-код модели (выключено, пока вы ему не доверяете)"),
    "data": ("данные", "данные: папка файлов (.jsonl), как shared/tofu, один файл (.jsonl, .json, .csv) или имя набора на хабе"),
    "subset": ("подмножество", "конфигурация TOFU / имя файла в папке данных (forget05/forget01 входят в forget10)"),
    "n": ("число пар", "сколько пар взять (обучение + тест) после перемешивания с зерном; пусто — все пары"),
    "train_fraction": ("доля обучения", "доля из n пар для обучения, остальные отложены для теста"),
    "seed": ("зерно", "зерно для разбиения, шума, сэмплирования и инициализации"),
    "out": ("папка запуска", "папка запуска (по умолчанию runs/<метод>-<пресет>-<время>)"),
    "device": ("устройство", "автоматически (auto): видеокарта (CUDA), если она есть, иначе процессор (CPU)"),
    "precision": ("точность вычислений", "автоматически (auto): bf16, где процессор считает в нём быстро (видеокарта CUDA "
                  "или процессор с AMX либо AVX512-BF16), иначе fp32; bf16: проходы языковой модели в bf16 (на процессоре — "
                  "и её замороженные веса), а логарифмы вероятностей, потери, настраиваемые веса, дискриминатор и "
                  "оптимизаторы — в fp32"),
    "adapter": ("адаптер генератора", "что настраивает генератор: M_tunable из диссертации (m-tunable), между эмбеддингами "
                "и блоками, или адаптер PEFT, который строится, сохраняется и загружается так же, как у методов LoRA "
                "(lora), настройки промпта (prompt-tuning) и настройки префикса (prefix-tuning); их настройки — ранг "
                "LoRA, виртуальные токены; скорости обучения задайте под него, например 5e-4 у LoRA"),
    "implicit_loss": ("потеря неявного D", "потеря неявного дискриминатора на эталоне r и сэмпле y: DDO (ddo): "
                      "−log σ(D(q,r)) − log(1 − σ(D(q,y))), по статье 2025 года; SPIN (spin): −log σ(D(q,r) − D(q,y)), по "
                      "статье 2024 года"),
    "implicit_beta": ("β неявного D", "β неявного дискриминатора D(q,y) = β · (log π(y|q) − log π_ref(y|q)); логарифмы "
                      "правдоподобия суммируются по токенам ответа"),
    "round_epochs": ("эпох в раунде", "неявный дискриминатор: состязательных эпох в раунде; каждый раунд замораживает "
                     "π_ref (генератор, каким он был тогда) и один раз сэмплирует из него y для каждого обучающего вопроса"),
    "init_from": ("начать с запуска", "завершённый запуск, с сохранённого адаптера которого начинается этот (его "
                  "MLE-разогрев: та же модель и адаптер того же вида и формы); оптимизатор начинает заново"),
    "patience": ("терпение", "остановиться, когда оценка на валидации не улучшалась столько эпох (MLE до плато; число "
                 "эпох — предел); 0: все эпохи"),
    "epochs": ("эпохи", "проходы по обучающим парам"),
    "batch_size": ("размер батча", "пар на шаг"),
    "lr": ("скорость обучения", "скорость обучения настраиваемой части (у GAN — на MLE-разогреве)"),
    "max_grad_norm": ("предел нормы градиента", "градиенты каждого шага обрезаются до этой L2-нормы (0: без обрезки)"),
    "d_lr": ("скорость обучения D", "скорость обучения дискриминатора"),
    "max_new_tokens": ("макс. новых токенов", "больше всего токенов в сгенерированном ответе (ограничивает и эталонные ответы)"),
    "max_prompt_tokens": ("макс. токенов промпта", "больше всего токенов в промпте (длинные обрезаются слева)"),
    "checkpoint_every": ("контрольная точка каждые", "шагов между контрольными точками (0: в конце каждой эпохи)"),
    "sample_every": ("ответы каждые", "шагов между ответами, записываемыми в файл ответов (samples.jsonl; 0: никогда)"),
    "noise_dim": ("размер шума", "размер вектора шума N(0,1), подаваемого в M_tunable"),
    "adapter_hidden": ("скрытые слои адаптера", "две ширины скрытых слоёв M_tunable (пусто: ширина эмбеддинга /2 и /4)"),
    "adapter_init": ("инициализация адаптера", "нулевая (zero): последний слой начинается с 0, и G начинается как базовая LM; стандартная (default): инициализация PyTorch"),
    "eval_noise": ("шум при генерации", "шум для M_tunable при генерации после обучения"),
    "val_metric": ("метрика валидации", "как оценивается адаптер на отложенных парах: ROUGE-L его жадных ответов (rougeL; больше — лучше) или NLL эталонных ответов (nll; меньше — лучше)"),
    "val_tolerance": ("допуск валидации", "оставить последний адаптер, если его оценка на валидации хуже лучшей не больше чем на эту величину (4 пары дают шумную оценку)"),
    "val_pairs": ("валидационные пары", "обучающие пары, отложенные для оценки адаптера каждой эпохи (и шага 0), чтобы сохранить лучший; 0: сохранить последний"),
    "warmup_epochs": ("эпохи разогрева", "эпохи MLE на эталонных ответах перед состязательной фазой (не больше числа эпох минус одна)"),
    "adv_lr": ("скорость обучения в игре", "скорость обучения M_tunable в состязательной фазе (на MLE-разогреве — «скорость обучения»)"),
    "rollout": ("сэмплирование", "по эпохе (epoch): ответы на все вопросы эпохи одним вызовом; по шагам (batch): на каждом шаге, как в SeqGAN"),
    "rollout_temperature": ("температура сэмплирования", "температура сэмплирования ответов; ниже 1 — «холодные» ответы, ближе к жадным, которые читает оценка (ColdGANs); градиент политики, отношение PPO и KL берут то же распределение"),
    "samples_per_question": ("ответов на вопрос", "сколько ответов сэмплировать на вопрос (с базовой линией «все, кроме одного» (loo) — не меньше 2)"),
    "discriminator": ("дискриминатор", "скрытые состояния (hidden): последние скрытые состояния замороженной LM для ответа при данном вопросе; эмбеддинги (embedding): замороженные входные эмбеддинги, усреднённые; как в диссертации (thesis): номера токенов как числа; неявный (implicit): без сети D, D(q,y) = β · (log π(y|q) − log π_ref(y|q)), где π_ref — генератор, замороженный в начале раунда, а y сэмплируется из него раз за раунд (DDO, SPIN): каждый шаг — два прохода с учителем, без сэмплирования"),
    "d_loss": ("потери D", "относительные (relativistic): D учится ставить эталон выше сгенерированного ответа, награда — разность их оценок; бинарная кросс-энтропия (bce): настоящие → 1, сгенерированные → 0, награда — вероятность «настоящий»"),
    "d_hidden": ("скрытые слои D", "три убывающие ширины скрытых слоёв дискриминатора"),
    "d_dropout": ("дропаут D", "дропаут внутри дискриминатора (не даёт ему подавить G)"),
    "d_weight_decay": ("затухание весов D", "затухание весов в оптимизаторе дискриминатора (AdamW)"),
    "d_steps": ("шаги D", "шагов дискриминатора на шаг генератора"),
    "label_smoothing": ("сглаживание меток", "метка настоящих ответов для BCE дискриминатора равна 1 минус это значение"),
    "reward": ("награда", "за ответ (sequence): одна награда на ответ — оценка D всего ответа; плотная (dense): D учится и на каждом префиксе, а преимущество токена — итоговая оценка ответа минус оценка префикса перед ним (D как критик: пошаговые награды ScratchGAN без Монте-Карло)"),
    "kl_coef": ("коэффициент KL", "штраф за KL к ненастроенной модели (без адаптера) на сэмплированных токенах, вычитается из награды"),
    "baseline": ("базовая линия", "базовая линия награды: среднее по батчу (mean), «все, кроме одного» по ответам вопроса (loo) или нет (none)"),
    "normalize_advantage": ("нормировать преимущество", "делить преимущества на стандартное отклонение по батчу"),
    "clip": ("обрезка PPO", "обрезка отношения вероятностей новой и сэмплировавшей политики (как в PPO) для ответов, сэмплированных раньше в эпохе (0: обычный REINFORCE)"),
    "ppo_epochs": ("эпохи PPO", "шагов генератора на каждой части сэмплированных ответов (эпохи PPO; больше 1 — только с обрезкой PPO)"),
    "pg_estimator": ("оценка градиента", "по траектории (trajectory): точные лог-вероятности сэмплированных токенов за один проход; как в диссертации (thesis): пересэмплирование по позициям"),
    "mle_weight": ("вес MLE", "вес MLE-слагаемого на эталонных ответах в состязательной фазе (в том же проходе)"),
    "resample_for_g": ("второе сэмплирование для G", "сэмплировать второй раз для шага генератора (так было в диссертации; нужно сэмплирование по шагам (batch))"),
    "lora_r": ("ранг LoRA", "ранг LoRA"),
    "lora_alpha": ("альфа LoRA", "коэффициент масштаба LoRA"),
    "lora_targets": ("модули LoRA", "имена модулей, которые адаптирует LoRA"),
    "virtual_tokens": ("виртуальные токены", "виртуальных токенов в настройке промпта (prompt-tuning) и префикса (prefix-tuning)"),
}

CONFIG_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}


def field_label(name: str) -> str:
    """The catalogue key of a setting's label."""
    return f"field_{name}"


def field_help(name: str) -> str:
    """The catalogue key of a setting's help text."""
    return f"help_{name}"


for _name, _field in CONFIG_FIELDS.items():
    EN[field_label(_name)] = _name.replace("_", " ")
    EN[field_help(_name)] = _field.metadata.get("help", "")
    _label, _help = FIELDS_RU.get(_name, (EN[field_label(_name)], EN[field_help(_name)]))  # a test names any missing
    RU[field_label(_name)], RU[field_help(_name)] = _label, _help

# The values a setting with choices takes, in Russian (a choice reads "word (value)"; English shows the value).
CHOICES_RU: dict[str, dict[str, str]] = {
    "method": {"gan": "GAN", "adapter-mle": "адаптер, только MLE", "lora": "LoRA", "prompt-tuning": "настройка промпта",
               "prefix-tuning": "настройка префикса", "full": "все веса"},
    "preset": {"improved": "улучшенный", "thesis": "как в диссертации"},
    "device": {"auto": "автоматически", "cpu": "процессор", "cuda": "видеокарта"},
    "precision": {"auto": "автоматически", "fp32": "одинарная точность", "bf16": "половинная точность"},
    "adapter": {"m-tunable": "адаптер M_tunable", "lora": "LoRA", "prompt-tuning": "настройка промпта",
                "prefix-tuning": "настройка префикса"},
    "implicit_loss": {"ddo": "DDO: каждая сторона отдельно", "spin": "SPIN: разность двух оценок"},
    "val_metric": {"rougeL": "ROUGE-L ответов", "nll": "NLL эталонов"},
    "adapter_init": {"zero": "нулевая", "default": "стандартная"},
    "eval_noise": {"zeros": "нулевой", "sample": "случайный"},
    "rollout": {"epoch": "по эпохе", "batch": "по шагам"},
    "discriminator": {"hidden": "скрытые состояния", "embedding": "эмбеддинги", "thesis": "как в диссертации",
                      "implicit": "неявный"},
    "d_loss": {"relativistic": "относительные", "bce": "бинарная кросс-энтропия"},
    "reward": {"sequence": "за ответ", "dense": "плотная"},
    "baseline": {"mean": "среднее по батчу", "loo": "все, кроме одного", "none": "нет"},
    "pg_estimator": {"trajectory": "по траектории", "thesis": "как в диссертации"},
}

# Compare's method rows (gantune.compare.ROWS), what each trains: a row without one shows its settings instead.
ROW_DESCRIPTIONS: dict[str, dict[str, str]] = {
    "en": {
        "gan": "GAN, the improved preset: MLE warm-up, then the adversarial game",
        "gan-no-mle": "the GAN without the MLE term in its adversarial epochs",
        "gan-seqgan": "the plain SeqGAN step: no warm-up, token-embedding D, BCE, no KL, no PPO clip",
        "gan-rloo": "the GAN with 4 sampled answers a question and a leave-one-out baseline (RLOO)",
        "gan-adv2": "the GAN with two adversarial epochs (one warm-up epoch)",
        "gan-ppo4": "the GAN with 4 generator updates on each rollout (PPO epochs)",
        "gan-cold": "the GAN sampling cold (temperature 0.7) with 4 updates a rollout",
        "gan-t07": "the GAN sampling cold (temperature 0.7)",
        "gan-dense": "the GAN with dense rewards: D scores every prefix (per-token advantages)",
        "gan-thesis": "the GAN with the thesis' settings",
        "gan-lora": "the GAN's game on a LoRA adapter instead of M_tunable (its twin: lora)",
        "gan-prompt": "the GAN's game on prompt tuning's virtual tokens (its twin: prompt-tuning)",
        "gan-prefix": "the GAN's game on prefix tuning's keys and values (its twin: prefix-tuning)",
        "gan-implicit": "an implicit discriminator (DDO): D = β·(log π − log π_ref), no D network, no sampling in a step",
        "gan-spin": "the implicit discriminator with SPIN's loss: the reference ranked above the model's own sample",
        "gan-lora-implicit": "the implicit discriminator (DDO) on a LoRA adapter",
        "gan-prompt-implicit": "the implicit discriminator (DDO) on prompt tuning's virtual tokens",
        "gan-prefix-implicit": "the implicit discriminator (DDO) on prefix tuning's keys and values",
        "adapter-mle": "the same adapter trained by MLE only: what the adversarial part adds",
        "lora": "LoRA, rank 8 on the attention projections, MLE",
        "prompt-tuning": "prompt tuning: 20 trained virtual tokens, MLE",
        "prefix-tuning": "prefix tuning: 20 trained virtual keys and values, MLE",
        "full": "every weight of the model, MLE (on a copy)",
    },
    "ru": {
        "gan": "GAN, улучшенный пресет: MLE-разогрев, затем состязательная игра",
        "gan-no-mle": "GAN без MLE-слагаемого в состязательных эпохах",
        "gan-seqgan": "простой шаг SeqGAN: без разогрева, D на эмбеддингах токенов, бинарная кросс-энтропия, без KL и обрезки PPO",
        "gan-rloo": "GAN с 4 ответами на вопрос и базовой линией «все, кроме одного» (RLOO)",
        "gan-adv2": "GAN с двумя состязательными эпохами (одна эпоха разогрева)",
        "gan-ppo4": "GAN с 4 шагами генератора на каждое сэмплирование (эпохи PPO)",
        "gan-cold": "GAN с «холодным» сэмплированием (температура 0,7) и 4 шагами на сэмплирование",
        "gan-t07": "GAN с «холодным» сэмплированием (температура 0,7)",
        "gan-dense": "GAN с плотной наградой: D оценивает каждый префикс (преимущество на токен)",
        "gan-thesis": "GAN с параметрами диссертации",
        "gan-lora": "игра GAN на адаптере LoRA вместо M_tunable (её двойник — LoRA)",
        "gan-prompt": "игра GAN на виртуальных токенах настройки промпта (её двойник — настройка промпта)",
        "gan-prefix": "игра GAN на ключах и значениях настройки префикса (её двойник — настройка префикса)",
        "gan-implicit": "неявный дискриминатор (DDO): D = β·(log π − log π_ref), без сети D и без сэмплирования в шаге",
        "gan-spin": "неявный дискриминатор с потерей SPIN: эталон ставится выше собственного ответа модели",
        "gan-lora-implicit": "неявный дискриминатор (DDO) на адаптере LoRA",
        "gan-prompt-implicit": "неявный дискриминатор (DDO) на виртуальных токенах настройки промпта",
        "gan-prefix-implicit": "неявный дискриминатор (DDO) на ключах и значениях настройки префикса",
        "adapter-mle": "тот же адаптер, обученный только MLE: что добавляет состязательная часть",
        "lora": "LoRA ранга 8 на проекциях внимания, MLE",
        "prompt-tuning": "настройка промпта: 20 обучаемых виртуальных токенов, MLE",
        "prefix-tuning": "настройка префикса: 20 обучаемых виртуальных ключей и значений, MLE",
        "full": "все веса модели, MLE (на копии)",
    },
}

# Compare's numbers: what each is, in words (the report's field names stay the identifiers)
METRICS: dict[str, dict[str, str]] = {
    "en": {"rouge1": "ROUGE-1", "rouge2": "ROUGE-2", "rougeL": "ROUGE-L", "rougeLsum": "ROUGE-Lsum", "bleurt": "BLEURT",
           "semantic": "semantic similarity", "retention": "retention (likelihood)",
           "retention_rougeL": "retention (ROUGE-L)", "retention_answered": "facts still answered right",
           "length_mean": "mean length (tokens)", "length_w1": "length distance (W1)", "truncated": "cut at the limit",
           "distinct1": "distinct words", "distinct2": "distinct word pairs",
           "real_vs_generated_auc": "told from the references (AUC)", "nll": "NLL"},
    "ru": {"rouge1": "ROUGE-1", "rouge2": "ROUGE-2", "rougeL": "ROUGE-L", "rougeLsum": "ROUGE-Lsum", "bleurt": "BLEURT",
           "semantic": "смысловое сходство", "retention": "сохранение знаний (правдоподобие)",
           "retention_rougeL": "сохранение знаний (ROUGE-L)", "retention_answered": "факты, всё ещё названные верно",
           "length_mean": "средняя длина (токены)", "length_w1": "отличие длин (W1)", "truncated": "обрезано лимитом",
           "distinct1": "различные слова", "distinct2": "различные пары слов",
           "real_vs_generated_auc": "отличимость от эталонов (AUC)", "nll": "NLL"},
}

# Counted words: Babel's plural rule of the language picks the form (CLDR categories one, few, many, other)
PLURALS: dict[str, dict[str, dict[str, str]]] = {
    "en": {"pairs": {"one": "{n} pair", "other": "{n} pairs"},
           "epochs": {"one": "{n} epoch", "other": "{n} epochs"},
           "questions": {"one": "{n} test question", "other": "{n} test questions"},
           "retention_questions": {"one": "{n} retention question", "other": "{n} retention questions"},
           "steps": {"one": "{n} step", "other": "{n} steps"},
           "runs": {"one": "{n} run", "other": "{n} runs"},
           "models": {"one": "{n} model", "other": "{n} models"}},
    "ru": {"pairs": {"one": "{n} пара", "few": "{n} пары", "many": "{n} пар", "other": "{n} пары"},
           "epochs": {"one": "{n} эпоха", "few": "{n} эпохи", "many": "{n} эпох", "other": "{n} эпохи"},
           "questions": {"one": "{n} тестовом вопросе", "few": "{n} тестовых вопросах", "many": "{n} тестовых вопросах",
                         "other": "{n} тестовых вопроса"},
           "retention_questions": {"one": "{n} вопросе на сохранение знаний", "few": "{n} вопросах на сохранение знаний",
                                   "many": "{n} вопросах на сохранение знаний",
                                   "other": "{n} вопроса на сохранение знаний"},
           "steps": {"one": "{n} шаг", "few": "{n} шага", "many": "{n} шагов", "other": "{n} шага"},
           "runs": {"one": "{n} запуск", "few": "{n} запуска", "many": "{n} запусков", "other": "{n} запуска"},
           "models": {"one": "{n} модель", "few": "{n} модели", "many": "{n} моделей", "other": "{n} модели"}},
}

CATALOGUES = {"en": EN, "ru": RU}
I18N = gr.I18n(en=EN, ru=RU)


def t(key: str) -> gr.i18n.I18nData:
    """A label, help text or button that the browser shows in its language."""
    return I18N(key)


def language(request: gr.Request | None) -> str:
    """The page's language for a request: the first of its Accept-Language tags that we speak (else English)."""
    header = ""
    if request is not None:
        header = (getattr(request, "headers", None) or {}).get("accept-language", "") or ""
    ranked = []
    for i, part in enumerate(header.split(",")):
        tag, _, params = part.strip().partition(";")
        match = re.search(r"q=([0-9.]+)", params)
        try:
            q = float(match.group(1)) if match else 1.0
        except ValueError:
            q = 0.0
        ranked.append((-q, i, tag.strip().lower().split("-")[0]))
    return next((code for _, _, code in sorted(ranked) if code in LANGUAGES), "en")


def tr(lang: str, key: str, **values) -> str:
    """The catalogue's text for ``key`` in ``lang`` (English when the language has none), filled with ``values``."""
    text = CATALOGUES.get(lang, EN).get(key) or EN[key]
    return text.format(**values) if values else text


def number(lang: str, value: float, digits: int | None = None) -> str:
    """``value`` in the page's locale (Babel, CLDR): ``2,714.5`` in English, ``2 714,5`` in Russian.

    ``digits``: fixed decimals; None: as many as the value has (up to 3).
    """
    if isinstance(value, int) and digits is None:
        digits = 0
    pattern = "#,##0" + ("." + "0" * digits if digits else "" if digits == 0 else ".###")
    try:
        return format_decimal(value, format=pattern, locale=lang)
    except decimal.InvalidOperation:  # past Decimal's 28 digits with decimals: written as Python writes it
        return str(value)


def plural(lang: str, key: str, n: int) -> str:
    """``n`` with its counted word in the form the language's plural rule picks (``4 пары``, ``5 пар``)."""
    forms = PLURALS.get(lang, PLURALS["en"])[key]
    return forms.get(Locale.parse(lang).plural_form(n), forms["other"]).format(n=number(lang, n, 0))


def choice_label(lang: str, field: str, value: str) -> str:
    """A setting's value as the page says it: ``value`` in English, ``слово (value)`` in Russian."""
    word = CHOICES_RU.get(field, {}).get(value) if lang == "ru" else None
    return f"{word} ({value})" if word else str(value)


def choices(lang: str, field: str, values: list[str] | tuple[str, ...]) -> list[tuple[str, str]]:
    """(label, value) pairs for a dropdown or radio of ``field``'s values."""
    return [(choice_label(lang, field, v), v) for v in values]


def setting_name(lang: str, name: str) -> str:
    """A setting as a person reads it: its label in the page's language (with its flag, ``--epochs``, in Russian)."""
    label = tr(lang, field_label(name))
    return f"«{label}» (--{name.replace('_', '-')})" if lang != "en" else label


def metric_label(lang: str, key: str) -> str:
    return METRICS.get(lang, METRICS["en"]).get(key) or METRICS["en"].get(key, key)


def row_description(lang: str, row: str) -> str | None:
    """What a Compare row trains, in the page's language; None when the catalogue has no words for it yet."""
    return ROW_DESCRIPTIONS.get(lang, ROW_DESCRIPTIONS["en"]).get(row)


def error_text(exc: Exception, lang: str) -> str:
    """A refusal in the page's words: a page's own (``text``), a library one by its kind (``key``) with the field's
    label, or else the library's one line as it is."""
    text = getattr(exc, "text", None)
    if callable(text):
        return text(lang)
    key = getattr(exc, "key", None)
    if key and f"err_{key}" in EN:
        values = {k: number(lang, v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v
                  for k, v in getattr(exc, "values", {}).items()}
        setting = getattr(exc, "setting", None)
        if setting in CONFIG_FIELDS:
            values["name"] = setting_name(lang, setting)
        try:
            return tr(lang, f"err_{key}", **values)
        except (KeyError, IndexError):  # a kind whose values this catalogue does not know: the library's words
            pass
    if key and key in EN:
        return tr(lang, key, **getattr(exc, "values", {}))
    return str(exc)


def percent(lang: str, share: float) -> str:
    """``0.5`` as ``50%`` (English) or ``50 %`` (Russian)."""
    return format_percent(share, locale=lang)


def title_text(status: Any, lang: str) -> str:
    """A job's title in the page's language (a setting's value among its values said as the page says it)."""
    if not status.title_key:
        return status.title
    args = {k: choice_label(lang, k, v) if k in CHOICES_RU else v for k, v in status.title_args.items()}
    return tr(lang, status.title_key, **args)
