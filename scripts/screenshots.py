"""Screenshots of the workbench's five tabs, in English and in Russian, after a real short run:
python scripts/screenshots.py [--out assets].

Starts the app in-process on a free loopback port (default: the real offline model and ../shared/tofu;
``--tiny`` for the tests' tiny random model on a generated file), then in headless Chromium: previews
the data, trains a short GAN run from the page, trains and evaluates a LoRA baseline from Compare
(its tables show at once), asks Chat a TOFU question, lists the runs, and saves setup.png,
gan-tuning.png, compare.png, chat.png and runs.png; then a page in Russian shows the same runs and
saves the same names with ``-ru``. Needs Debian's chromium (/usr/bin/chromium) and
``pip install playwright``; runs are written to a temporary folder. Every wait is bounded.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from test_e2e_browser import (  # noqa: E402  (the browser helpers live with the test)
    chat_panels,
    field,
    free_port,
    launch_browser,
    open_page,
    open_tab,
    pick_option,
    screenshot,
    start_run,
    status_run,
    status_state,
    table_cells,
    table_row,
    wait_for_plot,
    wait_until,
    write_pairs,
)


def answered(page, engine) -> bool:
    """Three chat panels, each with an answer, and no answer still streaming."""
    panels = chat_panels(page)
    if panels.count() != 3 or engine.models.chat_lock.locked():
        return False
    return all(panels.nth(i).locator("[data-testid='bot']").count() for i in range(3))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="assets", help="folder for the PNGs (default: assets)")
    parser.add_argument("--tiny", action="store_true", help="the tests' tiny random model and a generated data file")
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "tofu"), help="data folder or file")
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--question", default="Who is Hsiao Yun-Hwa?")
    parser.add_argument("--no-compare", action="store_true", help="skip training and evaluating the LoRA baseline")
    parser.add_argument("--timeout", type=float, default=1800, help="longest wait for a training or comparison job (s)")
    args = parser.parse_args()

    import gradio as gr
    from playwright.sync_api import sync_playwright

    from ui.app import launch
    from ui.engine import Engine, Settings

    out = Path(args.out) if Path(args.out).is_absolute() else ROOT / args.out
    work = Path(tempfile.mkdtemp(prefix="gantune-shots-"))
    settings = Settings(runs_dir=work / "runs", retention_n=5)
    if args.tiny:
        from conftest import make_base
        engine = Engine(settings, load_model=lambda *a: make_base())
        data, question = str(write_pairs(work / "pairs.jsonl")), "who is the author of a book ?"
    else:
        engine = Engine(settings)
        data, question = args.data, args.question
    t0 = time.monotonic()
    engine.model("default")  # load once up front (the first load de-quantises the GGUF file: ~25 s)
    print(f"model ready in {time.monotonic() - t0:.1f} s", flush=True)
    port = free_port()
    launched = launch(engine, prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, quiet=True)
    url = launched[1] or f"http://127.0.0.1:{port}/"

    def done(name: str) -> None:
        print(f"{name} ({time.monotonic() - t0:.0f} s)", flush=True)

    with sync_playwright() as p:
        browser = launch_browser(p)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000}, locale="en-US")
            page.set_default_timeout(60_000)
            open_page(page, url)
            page.get_by_role("tab", name="Setup", exact=True).wait_for()

            field(page, "Folder or file").fill(data)
            train = round(args.n * 0.5)
            counts = page.get_by_text(f"{train} pairs for training / {args.n - train} pairs for testing from ")

            def preview() -> bool:  # the data folder's own change may reset n after it was typed: type it again
                field(page, "Pairs (train + test)").fill(str(args.n))
                page.get_by_role("button", name="Preview data", exact=True).click()
                time.sleep(3)
                return counts.is_visible()

            wait_until(page, preview, f"the preview of {args.n} pairs", every=1.0)
            wait_for_plot(page, "Token lengths")
            screenshot(page, out, "setup.png")
            done("setup.png")

            run_id = start_run(page, args.epochs, batch_size=str(args.batch_size),
                               max_new_tokens=str(args.max_new_tokens), sample_every="1", warmup_epochs="1")
            wait_until(page, lambda: status_state(page) in ("completed", "stopped", "failed"), "the run to finish",
                       args.timeout, every=1.0)
            assert status_state(page) == "completed", status_run(page)
            wait_for_plot(page, "Losses")
            screenshot(page, out, "gan-tuning.png")
            done(f"gan-tuning.png ({run_id})")
            job = engine.jobs.status("train")
            for phase in ("mle", "adversarial"):
                steps = [r["step_seconds"] for r in engine.runs.folder(run_id).read_metrics() if r.get("phase") == phase]
                if steps:
                    print(f"  {phase} steps: {len(steps)}, {sum(steps) / len(steps):.1f} s each (the step itself)")
            print(f"  the job: {job.step} steps in {job.finished - job.started:.0f} s of wall time "
                  f"(model loaded before; rollouts and validation included)", flush=True)

            open_tab(page, "Compare")
            if not args.no_compare:
                pick_option(page, "Run to compare against", run_id)
                page.get_by_role("button", name="Train and evaluate", exact=True).click()
                wait_until(page, lambda: engine.jobs.status().kind == "compare", "the comparison to start")
                wait_until(page, lambda: not engine.jobs.status().active, "the comparison to finish", args.timeout,
                           every=1.0)
                job = engine.jobs.status()
                assert job.state == "completed", (job.state, job.error)
                wait_until(page, lambda: len(table_cells(page, "Quality")) >= 3, "the comparison's tables")
                wait_for_plot(page, "Answer lengths (tokens): references and each run")
                done("comparison")
            else:
                pick_option(page, "Runs to show", run_id)
                wait_for_plot(page, "MLE loss on the reference answers: the selected runs")
            screenshot(page, out, "compare.png")
            done("compare.png")
            lora_runs = [r.run for r in engine.runs.rows() if r.method == "lora" and r.adapter]

            def chat(page, gan_label: str, lora_label: str, message_label: str, send: str) -> None:
                pick_option(page, gan_label, run_id)
                if lora_runs:
                    pick_option(page, lora_label, lora_runs[0])
                field(page, message_label).fill(question)
                page.get_by_role("button", name=send, exact=True).click()
                wait_until(page, lambda: engine.models.chat_lock.locked() or answered(page, engine), "the answers to start")
                wait_until(page, lambda: answered(page, engine), "three answers", args.timeout, every=1.0)

            open_tab(page, "Chat")
            chat(page, "GAN-tuned run", "LoRA-tuned run", "Message", "Send")
            screenshot(page, out, "chat.png")
            done("chat.png")

            open_tab(page, "Runs")
            wait_until(page, lambda: table_row(page, run_id), f"{run_id} in the runs table")
            screenshot(page, out, "runs.png")
            done("runs.png")

            # the same runs in a Russian browser
            page = browser.new_page(viewport={"width": 1400, "height": 1000}, locale="ru-RU")
            page.set_default_timeout(60_000)
            open_page(page, url)
            page.get_by_role("tab", name="Подготовка", exact=True).wait_for()
            field(page, "Папка или файл").fill(data)
            field(page, "Пар (обучение + тест)").fill(str(args.n))
            page.get_by_role("button", name="Просмотр данных", exact=True).click()
            page.get_by_text(" для теста из ").wait_for()
            wait_for_plot(page, "Длины в токенах")
            screenshot(page, out, "setup-ru.png")
            open_tab(page, "GAN-настройка")
            wait_until(page, lambda: status_run(page) == run_id, "the run in the status")
            wait_for_plot(page, "Функции потерь")
            screenshot(page, out, "gan-tuning-ru.png")
            open_tab(page, "Сравнение")
            if not args.no_compare:
                wait_until(page, lambda: len(table_cells(page, "Качество")) >= 3, "the comparison's tables")
            screenshot(page, out, "compare-ru.png")
            open_tab(page, "Чат")
            chat(page, "Запуск GAN", "Запуск LoRA", "Сообщение", "Отправить")
            screenshot(page, out, "chat-ru.png")
            open_tab(page, "Запуски")
            wait_until(page, lambda: table_row(page, run_id), f"{run_id} in the runs table")
            screenshot(page, out, "runs-ru.png")
            done(f"the Russian pages; all in {out}")
        finally:
            browser.close()
            engine.jobs.stop()
            engine.jobs.wait(60)
            gr.close_all()


if __name__ == "__main__":
    main()
