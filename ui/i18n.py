"""The page's words in English and Russian; Gradio picks by the browser's language."""

from __future__ import annotations

import gradio as gr

EN = {
    "title": "gantune — generative adversarial prompt tuning",
    "intro": "Tune a small language model with a GAN-trained adapter, watch it learn, compare it with LoRA, and chat with base and tuned models side by side.",
    "space_hint": "This is a shared hosted workbench with small limits. Duplicate this Space to run bigger jobs on your own hardware.",
    "tab_setup": "Setup", "tab_gan": "GAN tuning", "tab_compare": "Compare", "tab_chat": "Chat", "tab_runs": "Runs",
    "model": "Base model", "model_info": "'default' (offline SmolLM2-135M-Instruct), a hub id, a local folder or a .gguf file",
    "gguf_file": "GGUF file in that folder (optional)", "trust_remote_code": "Trust the model's own code",
    "load_model": "Load model", "data_kind": "Data", "data_offline": "offline TOFU folder", "data_hub": "hub (locuslab/TOFU)",
    "data_upload": "my file (.jsonl / .csv)", "data_path": "Folder or file", "subset": "TOFU subset",
    "upload": "question/answer pairs (.jsonl, .json or .csv)", "n": "Pairs (train + test) — empty: all", "fraction": "Train share",
    "seed": "Seed", "preview": "Preview data", "pairs": "Pairs", "preset": "Preset", "settings": "Every setting",
    "start": "Start", "stop": "Stop", "status": "Status", "samples": "Answers sampled during training",
    "reference_run": "Run to compare against", "methods": "Baselines to train on the same data and split",
    "run_compare": "Train and evaluate", "compare_runs": "Runs to show", "metrics_table": "Quality",
    "cost_table": "Cost", "overlay_key": "Curve", "config_diff": "Settings that differ",
    "gan_run": "GAN-tuned run", "lora_run": "LoRA-tuned run", "base": "Base model", "gan": "GAN-tuned", "lora": "LoRA-tuned",
    "message": "Message", "send": "Send", "random_question": "Random TOFU question", "reference": "Reference answer",
    "runs": "Runs", "refresh": "Refresh", "selected_run": "Selected run", "open_run": "Show in GAN tuning", "resume": "Resume from checkpoint",
    "use_in_chat": "Use in Chat", "download": "Download adapter", "delete": "Delete", "confirm_delete": "Yes, delete it",
    "cancel": "Cancel", "max_new_tokens": "Max new tokens",
}

RU = {
    "title": "gantune — состязательная настройка промптов",
    "intro": "Настройте небольшую языковую модель адаптером, обученным как GAN, следите за обучением, сравните с LoRA и поговорите с исходной и настроенной моделями рядом.",
    "space_hint": "Это общий демонстрационный стенд с небольшими ограничениями. Сделайте копию Space, чтобы запускать большие задачи на своём оборудовании.",
    "tab_setup": "Подготовка", "tab_gan": "GAN-настройка", "tab_compare": "Сравнение", "tab_chat": "Чат", "tab_runs": "Запуски",
    "model": "Базовая модель", "model_info": "'default' (офлайн SmolLM2-135M-Instruct), id на хабе, локальная папка или файл .gguf",
    "gguf_file": "Файл GGUF в этой папке (необязательно)", "trust_remote_code": "Доверять коду модели",
    "load_model": "Загрузить модель", "data_kind": "Данные", "data_offline": "офлайн-папка TOFU", "data_hub": "хаб (locuslab/TOFU)",
    "data_upload": "мой файл (.jsonl / .csv)", "data_path": "Папка или файл", "subset": "Подмножество TOFU",
    "upload": "пары вопрос/ответ (.jsonl, .json или .csv)", "n": "Пар (обучение + тест) — пусто: все", "fraction": "Доля обучения",
    "seed": "Seed", "preview": "Просмотр данных", "pairs": "Пары", "preset": "Пресет", "settings": "Все параметры",
    "start": "Старт", "stop": "Стоп", "status": "Состояние", "samples": "Ответы, сгенерированные при обучении",
    "reference_run": "Запуск для сравнения", "methods": "Базовые методы на тех же данных и разбиении",
    "run_compare": "Обучить и оценить", "compare_runs": "Показать запуски", "metrics_table": "Качество",
    "cost_table": "Затраты", "overlay_key": "Кривая", "config_diff": "Различающиеся параметры",
    "gan_run": "Запуск GAN", "lora_run": "Запуск LoRA", "base": "Базовая модель", "gan": "После GAN", "lora": "После LoRA",
    "message": "Сообщение", "send": "Отправить", "random_question": "Случайный вопрос TOFU", "reference": "Эталонный ответ",
    "runs": "Запуски", "refresh": "Обновить", "selected_run": "Выбранный запуск", "open_run": "Показать в GAN-настройке", "resume": "Продолжить с контрольной точки",
    "use_in_chat": "Открыть в чате", "download": "Скачать адаптер", "delete": "Удалить", "confirm_delete": "Да, удалить",
    "cancel": "Отмена", "max_new_tokens": "Макс. новых токенов",
}

I18N = gr.I18n(en=EN, ru=RU)


def t(key: str) -> gr.i18n.I18nData:
    """A label that the browser shows in its language."""
    return I18N(key)
