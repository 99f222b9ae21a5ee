"""The workbench in a real browser: headless Chromium (Debian's /usr/bin/chromium) driven by Playwright.

Two walks through the page on a tiny random model.

In English: the five tabs, a data preview, a GAN run started from the page and watched (status
with time left, loss plot, the sampled answers growing on the same page), the page reloaded
mid-run (it re-attaches by itself), Stop, the Runs table and the lists of Chat and Compare
following the runs without a Refresh, two runs in Compare (each curve named), a comparison with
LoRA shown at once (base first), a message in Chat, a delete that waits for its confirmation.

In Russian (a browser set to ru-RU): every tab, with a run, a comparison, a preview, a refusal and a
chat message on screen, shows no English word in its text, its tooltips and accessible names, its
plots (titles, axes, legends, Plotly's modebar) or its toasts: only names (GAN, LoRA, ROUGE-L …),
the names of runs and rows, and technical identifiers beside the Russian words (in parentheses).
Counted words take their Russian plural forms and numbers their Russian format.

A steady job (steps of a fixed length) shows a time left that never rises, read as the page shows it.

Every wait is for the state it asserts, bounded (a slow machine waits longer, never fails for
being slow). Problems that do not stop a walk (raw translation keys, a wrong default value, a
script error in the page) are collected and reported together at the end. Screenshots of every
tab go to a temporary folder, or to $GANTUNE_SCREENSHOTS (e.g. ``GANTUNE_SCREENSHOTS=assets``).

Needs ``pip install -r requirements-test.txt`` and a Chromium: Playwright's own (``python -m playwright install
chromium``), Debian's (``apt-get install chromium``) or ``$GANTUNE_CHROMIUM``; skips without them, and fails
instead under CI (``CI`` set), where the browser step must have run (see .ci/run).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import time
from pathlib import Path
from typing import Callable

import pytest
from conftest import WORDS, make_base

DEBIAN_CHROMIUM = "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parents[1]
TABS = ["Setup", "GAN tuning", "Compare", "Chat", "Runs"]
WAIT = 90.0  # the longest any single wait may take, in seconds
LONG_WAIT = 600.0  # a comparison (training and evaluating) on a busy machine
TABS_RU = ["Подготовка", "GAN-настройка", "Сравнение", "Чат", "Запуски"]

pytestmark = pytest.mark.browser


# --- helpers (scripts/screenshots.py uses them too) ---------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_pairs(path: Path, n: int = 40) -> Path:
    """A .jsonl of ``n`` question/answer pairs in the tiny tokenizer's words."""
    pairs = [(a, b) for a in WORDS[:10] for b in WORDS[10:20]][:n]
    rows = [{"question": f"who is the author of {a} {b} ?", "answer": f"the author was born in a city and wrote {a} {b} fiction ."}
            for a, b in pairs]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def chromium(playwright) -> str | None:
    """The Chromium to drive: $GANTUNE_CHROMIUM, Playwright's own (installed by the README's second command), or
    Debian's; None when there is none."""
    named = os.environ.get("GANTUNE_CHROMIUM")
    if named:
        return named if Path(named).is_file() else None
    own = playwright.chromium.executable_path
    if own and Path(own).is_file():
        return own
    return DEBIAN_CHROMIUM if Path(DEBIAN_CHROMIUM).is_file() else None


def launch_browser(playwright):
    return playwright.chromium.launch(executable_path=chromium(playwright), headless=True,
                                      args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"])


def toasts(page) -> list[str]:
    try:
        return [t.inner_text().replace("\n", " ") for t in page.locator("[data-testid='toast-body']").all()]
    except Exception:  # the page may be navigating
        return []


def wait_until(page, check: Callable[[], object], what: str, timeout: float = WAIT, every: float = 0.25):
    """Poll ``check`` until it returns something truthy; fail naming ``what`` and the page's toasts."""
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except Exception as exc:  # an element mid-redraw
            last_error = exc
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; toasts: {toasts(page)}"
                         + (f"; last error: {last_error}" if last_error else ""))


# Gradio covers the whole page with its own translucent loading overlay until every component has mounted (then it
# runs the load events); a click before that lands on the overlay. Once in CI the overlay stayed for the whole 90 s
# wait at the first click (not seen here, even with every core busy): a page that is not ready is loaded once more.
_APP_READY = """() => !!document.querySelector('[role="tab"]')
    && !document.querySelector('[data-testid="status-tracker"].translucent:not(.hide)')"""


def open_page(page, url: str | None = None) -> None:
    """Go to ``url`` (or reload the page) and wait until Gradio has mounted it; once more if it never does."""
    for attempt in range(2):
        if url is None or attempt:
            page.reload(timeout=WAIT * 1000)
        else:
            page.goto(url, timeout=WAIT * 1000)
        try:
            page.wait_for_function(_APP_READY, timeout=WAIT * 1000, polling=200)
            return
        except Exception as exc:
            if attempt:
                raise AssertionError(f"the page never finished loading: {page_log(page)}") from exc
            print(f"the page did not finish loading in {WAIT:.0f} s; loading it again ({page_log(page)})")


def page_log(page) -> str:
    """The page's console errors and failed requests so far (recorded by ``browser_page``)."""
    log = getattr(page, "gantune_log", [])
    return "; ".join(log[-10:]) or "no console error, no failed request"


def open_tab(page, name: str) -> None:
    page.get_by_role("tab", name=name, exact=True).click()
    page.wait_for_timeout(300)


def plot_points(page, title: str) -> tuple[int, int]:
    """(data points, drawn marks) of the visible plotly figure titled ``title``; (-1, -1) when absent."""
    return tuple(page.evaluate("""(title) => {
        for (const el of document.querySelectorAll('.js-plotly-plot')) {
            if (!el.offsetParent) continue;  // on a hidden tab
            const t = el.layout && el.layout.title;
            if (String((t && (t.text ?? t)) || '') !== title) continue;
            const data = (el.data || []).reduce((n, tr) => n + ((tr.x && tr.x.length) || 0), 0);
            const drawn = el.querySelectorAll('.scatterlayer .points path, .scatterlayer path.js-line, .barlayer .point').length;
            return [data, drawn];
        }
        return [-1, -1];
    }""", title))


def wait_for_plot(page, title: str, timeout: float = WAIT) -> tuple[int, int]:
    return wait_until(page, lambda: (lambda p: p if p[0] > 0 and p[1] > 0 else None)(plot_points(page, title)),
                      f"the plot '{title}' to show points", timeout)


def field(page, label: str):
    """The visible input whose label starts with ``label`` (a widget's info text joins its accessible name)."""
    return page.get_by_label(re.compile(r"^\s*" + re.escape(label) + r"(\s|$)")).filter(visible=True).first


def status_box(page):
    return page.locator(".gantune-status:visible").first


def status_state(page) -> str | None:
    box = status_box(page)
    return box.get_attribute("data-state") if box.count() else None


def status_run(page) -> str | None:
    box = status_box(page)
    if not box.count():
        return None
    code = box.locator("code")
    return code.first.inner_text().strip() if code.count() else None


def status_step(page) -> int:
    match = re.search(r"(?:step|шаг) (\d+)/", status_box(page).inner_text())
    return int(match.group(1)) if match else -1


def status_text(page) -> str:
    box = status_box(page)
    return box.inner_text() if box.count() else ""


def sample_rows(page) -> int:
    """Rows of the visible table of answers sampled during training."""
    return page.locator(".gantune-samples:visible tbody tr").count()


def newest_sample_step(page) -> int:
    """The step of the newest answer in the visible samples table (its first row); -1 when it has none."""
    cell = page.locator(".gantune-samples:visible tbody tr td").first
    return int(cell.inner_text()) if cell.count() else -1


def plot_texts(page) -> list[str]:
    """Every text of the visible plots: titles, axis titles, annotations, legend (trace) names."""
    return page.evaluate("""() => {
        const out = [];
        for (const el of document.querySelectorAll('.js-plotly-plot')) {
            if (!el.offsetParent || !el.layout) continue;
            const l = el.layout;
            const t = x => x && (x.text ?? x);
            for (const k of Object.keys(l)) {
                if (/^[xy]axis\\d*$/.test(k) && l[k].title) out.push(String(t(l[k].title) || ''));
            }
            out.push(String(t(l.title) || ''));
            for (const a of (l.annotations || [])) out.push(String(a.text || ''));
            for (const tr of (el.data || [])) out.push(String(tr.name || ''));
        }
        return out.filter(Boolean);
    }""")


def chrome_text(page) -> str:
    """The page's own visible words: not the data's (table bodies, chat messages, code), not hidden tabs', not
    Gradio's transient progress timers ("0.0s": ``progress_overlays`` watches those)."""
    return page.evaluate("""() => {
        const skip = 'tbody, .virtual-row, .body-cell, .bubble-wrap, code, textarea, input, script, style, '
                     + '.js-plotly-plot, .progress-text, .meta-text, .meta-text-center';
        const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
        const out = [];
        for (let node = walker.nextNode(); node; node = walker.nextNode()) {
            const el = node.parentElement;
            if (!el || el.closest(skip) || !el.getClientRects().length) continue;
            const style = getComputedStyle(el);
            if (style.visibility === 'hidden' || style.display === 'none') continue;
            out.push(node.textContent);
        }
        return out.join('\\n');
    }""")


def table_cells(page, label: str) -> list[list[str]]:
    """The cell texts of the rows of the visible Dataframe labelled ``label`` (Gradio 6 draws divs)."""
    block = page.locator(".block", has=page.get_by_text(label, exact=True)).filter(visible=True).last
    rows = block.locator(".virtual-row, tbody tr")
    cells = [[c.strip() for c in rows.nth(i).locator(".body-cell, td").all_inner_texts()] for i in range(rows.count())]
    return [row for row in cells if any(row)]  # not the table's empty spacer rows


def pick_option(page, label: str, value: str, timeout: float = WAIT) -> None:
    """Choose ``value`` in the visible dropdown labelled ``label``; its choices may arrive with a timer."""
    box = field(page, label)
    if not box.count():  # Gradio's multiselect dropdown shows its label as a span, not tied to the input
        info = page.locator("[data-testid='block-info']", has_text=re.compile(r"^\s*" + re.escape(label) + r"\s*$"))
        box = page.locator(".block", has=info).filter(visible=True).locator("input").first

    def attempt():
        box.click(timeout=5000)
        option = page.get_by_role("option", name=value, exact=True)
        try:
            option.wait_for(state="visible", timeout=1500)
        except Exception:  # not there yet: close the list and leave the box, so the next click reopens it
            page.keyboard.press("Escape")
            box.blur()
            return False
        option.click()
        page.keyboard.press("Escape")
        box.blur()
        return True

    wait_until(page, attempt, f"'{value}' among the choices of '{label}'", timeout, every=1.0)


def chat_panels(page):
    """The three visible Chatbot blocks (base, GAN, LoRA), left to right."""
    return page.locator(".block:has(.bubble-wrap):visible")


def chat_done(page, message: str) -> bool:
    """Every panel has the user's message and an answer bubble; the LoRA panel's last word is in."""
    panels = chat_panels(page)
    if panels.count() != 3:
        return False
    for i in range(3):
        panel = panels.nth(i)
        users = panel.locator("[data-testid='user']")
        if users.count() < 1 or message not in users.last.inner_text() or panel.locator("[data-testid='bot']").count() < 1:
            return False
    return "(pick a run)" in panels.nth(2).locator("[data-testid='bot']").last.inner_text()


def table_row(page, first_cell: str) -> list[str] | None:
    """The cell texts of the visible table row whose first cell is ``first_cell`` (Gradio 6 draws divs)."""
    rows = page.locator(".virtual-row, tr").filter(has_text=first_cell).filter(visible=True)
    for i in range(rows.count()):
        cells = [c.strip() for c in rows.nth(i).locator(".body-cell, td").all_inner_texts()]
        if cells and cells[0] == first_cell:
            return cells
    return None


def screenshot(page, folder: Path | None, name: str) -> None:
    if folder is None:
        return
    folder.mkdir(parents=True, exist_ok=True)
    page.wait_for_timeout(500)  # let plotly finish drawing
    page.screenshot(path=str(folder / name), full_page=True)


def refusal_text(page) -> str:
    box = page.locator(".gantune-refusal:visible")
    return box.first.inner_text() if box.count() else ""


def toast_titles(page) -> list[str]:
    """The titles of the toasts on the page now and of every one drawn since ``watch_toasts`` (a toast leaves after
    10 s: on a busy machine it can come and go between two polls)."""
    now = [t.strip() for t in page.locator("[data-testid='toast-body'] .toast-title").all_inner_texts()]
    return now + page.evaluate("() => window.gantuneToastTitles || []")


def watch_toasts(page) -> None:
    """Keep the title of every toast the page draws from now on (``toast_titles`` reads them)."""
    page.evaluate("""() => {
        const seen = window.gantuneToastTitles = [];
        new MutationObserver(() => document.querySelectorAll("[data-testid='toast-body'] .toast-title").forEach(el => {
            const title = el.textContent.trim();
            if (title && !seen.includes(title)) seen.push(title);
        })).observe(document.body, {childList: true, subtree: true, characterData: true});
    }""")


def progress_overlays(page) -> list[str]:
    """Gradio's own progress words over a component ("queue: 1/1 | 0.5/0.5s", "4.6s"), where visible, with the
    component's label."""
    return page.evaluate("""() => [...document.querySelectorAll('.progress-text, .meta-text, .meta-text-center')]
        .filter(el => el.checkVisibility({checkOpacity: true, checkVisibilityCSS: true}) && el.textContent.trim())
        .filter(el => !el.closest('.hide, [style*="opacity: 0"]'))
        .map(el => { const block = el.closest('.block');
                     const label = block && block.querySelector('[data-testid="block-info"], [data-testid="block-label"]');
                     return el.textContent.trim() + ' over ' + (label ? label.textContent.trim() : block ? block.className : '?'); })""")


def plots_that_overflow(page) -> list[str]:
    """Visible plots drawn wider than their box (a figure drawn on a hidden tab, never resized)."""
    return page.evaluate("""() => [...document.querySelectorAll('.js-plotly-plot')].filter(el => el.offsetParent)
        .filter(el => { const svg = el.querySelector('.main-svg'); const box = el.closest('.block') || el.parentElement;
                        return svg && svg.getBoundingClientRect().width > box.getBoundingClientRect().width + 1; })
        .map(el => String((el.layout && el.layout.title && (el.layout.title.text ?? el.layout.title)) || '?'))""")


def headers_broken_mid_word(page, table_id: str) -> list[str]:
    """One-word header texts drawn on more than one line (a word cut: "evaluate/d")."""
    return page.evaluate("""(id) => {
        const out = [];
        for (const th of document.querySelectorAll('#' + id + ' th')) {
            const walker = document.createTreeWalker(th, NodeFilter.SHOW_TEXT);
            for (let node = walker.nextNode(); node; node = walker.nextNode()) {
                const text = node.textContent.trim();
                if (!text || /\\s/.test(text)) continue;
                const range = document.createRange();
                range.selectNodeContents(node);
                const lines = new Set([...range.getClientRects()].filter(r => r.width).map(r => Math.round(r.top)));
                if (lines.size > 1) out.push(text);
            }
        }
        return out;
    }""", table_id)


def buttons_over_user_bubbles(page) -> list[str]:
    """Chat panels whose own buttons (top right) cover the user's message."""
    return page.evaluate("""() => {
        const out = [];
        const overlap = (a, b) => a.left < b.right && b.left < a.right && a.top < b.bottom && b.top < a.bottom;
        document.querySelectorAll('.block:has(.bubble-wrap)').forEach((panel, i) => {
            if (!panel.offsetParent) return;
            const buttons = [...panel.querySelectorAll('.icon-button-wrapper button, .icon-button-wrapper a')]
                .map(b => b.getBoundingClientRect()).filter(r => r.width);
            const users = [...panel.querySelectorAll('[data-testid="user"]')].map(u => u.getBoundingClientRect());
            if (buttons.some(b => users.some(u => overlap(b, u)))) out.push(`panel ${i}`);
        });
        return out;
    }""")


def page_words(page) -> list[str]:
    """Every word a person meets on the visible page: its text (not the data's), tooltips, accessible names and
    placeholders, Plotly's modebar tooltips, toasts, and the plots' titles, axes, annotations and legends."""
    attributes = page.evaluate("""() => {
        const out = [];
        for (const el of document.querySelectorAll('[aria-label], [title], [placeholder], .modebar-btn[data-title]')) {
            if (el.closest('.bubble-wrap, tbody, .virtual-row, code')) continue;  // the data's own words
            if (!el.getClientRects().length && !el.closest('.modebar')) continue;
            if (el.closest('.modebar') && !el.closest('.js-plotly-plot').offsetParent) continue;
            for (const a of ['aria-label', 'title', 'placeholder', 'data-title'])
                if (el.getAttribute(a)) out.push(el.getAttribute(a));
        }
        return out;
    }""")
    return [chrome_text(page), *attributes, *plot_texts(page)]


# Names a Russian text keeps (methods, measures, models, libraries, formats) and technical identifiers, which it may
# keep only in parentheses beside the Russian words: a setting's values and names, the report's measures.
NAMES = {"GAN", "LoRA", "MLE", "KL", "LM", "G", "D", "N", "TOFU", "GGUF", "PPO", "BCE", "NLL", "ROUGE", "ROUGE-1",
         "ROUGE-2", "ROUGE-L", "ROUGE-Lsum", "BLEURT",
         "AUC", "W1", "SeqGAN", "ColdGANs", "ScratchGAN", "RLOO", "REINFORCE", "PyTorch", "AdamW", "Python", "MiniLM",
         "Space", "CPU", "CUDA", "gantune", "Gradio", "API", "MCP", "Plotly", "PNG", "CSV", "TSV", "L2", "M_tunable",
         "SmolLM2-135M-Instruct", "HuggingFaceTB", "Hugging", "Face", "Chart", "Studio", "DDO", "SPIN", "PEFT", "AMX",
         # mathematics: a formula's variables and functions (D(q,y) = β · (log π(y|q) − log π_ref(y|q)))
         "q", "r", "y", "log", "ref"}


def _identifiers() -> set[str]:
    import dataclasses

    from gantune.compare import METRIC_KEYS, ROWS
    from gantune.config import TrainConfig

    found = set(METRIC_KEYS) | set(ROWS) | {"default", "upload", "offline", "hub"}
    for f in dataclasses.fields(TrainConfig):
        found |= {f.name, f.name.replace("_", "-"), *map(str, f.metadata.get("choices", ()))}
    return found


def english_on_a_russian_page(texts: list[str]) -> list[str]:
    """The English words left in ``texts``: a Latin word that is no name, run or row, nor a technical identifier
    (within parentheses), nor technical by its shape (a path, a file, a flag, a number with letters)."""
    from gantune.compare import ROWS

    identifiers = _identifiers()
    left = set()
    for text in texts:
        text = re.sub(r"\s+", " ", text)
        spans = [m.span() for m in re.finditer(r"\([^()]*\)", text)]
        for match in re.finditer(r"[.\-]*[A-Za-z][A-Za-z0-9_.\-/']*", text):
            word = match.group().rstrip(".'-/")
            inside = any(a < match.start() < b for a, b in spans)
            allowed = NAMES | set(ROWS) | (identifiers if inside else set())
            technical = re.search(r"[0-9_./]", word) or re.fullmatch(r"[a-z]+(-[a-z0-9]+)*-\d{8}-\d{6}(-\d+)?", word)
            if word and word.lstrip(".-") not in allowed and not technical:
                left.add(f"{word!r} in {text[max(0, match.start() - 40):match.end() + 40]!r}")
    return sorted(left)


def time_left_seconds(page) -> int | None:
    """The time left the status says, in seconds (English), or None."""
    match = re.search(r"about (?:(\d+) min )?(\d+) s left", status_text(page))
    return int(match.group(1) or 0) * 60 + int(match.group(2)) if match else None


def raw_i18n_keys(page) -> list[str]:
    return sorted(set(re.findall(r'__i18n__\{[^}]*"key":\s*"([^"]+)"', page.locator("body").inner_text())))


# --- the tests -----------------------------------------------------------------------------------
def _missing(what: str) -> None:
    """A browser test cannot run: a skip that says which step is missing, or a failure under CI."""
    if os.environ.get("CI"):
        pytest.fail(f"{what}; CI runs the browser tests (see .ci/run)")
    pytest.skip(what)


@pytest.fixture
def sync_api():
    """Playwright's sync API with a Chromium to drive, or a skip (a failure under CI) that says what is missing."""
    try:
        from playwright import sync_api
    except ImportError:
        _missing("playwright is not installed (pip install -r requirements-test.txt)")
    with sync_api.sync_playwright() as p:
        found = chromium(p)
    if found is None:
        _missing("no Chromium: python -m playwright install chromium, or apt-get install chromium, or set "
                 "GANTUNE_CHROMIUM")
    return sync_api


@pytest.fixture
def workbench(sync_api, tmp_path: Path):
    """The app on a free loopback port over a tiny-model engine: (url, engine, data file)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr

    from ui.app import launch
    from ui.engine import Engine, Settings

    data = write_pairs(tmp_path / "pairs.jsonl")
    engine = Engine(Settings(runs_dir=tmp_path / "runs", retention_n=5), load_model=lambda *a: make_base())
    port = free_port()
    _, url, _ = launch(engine, prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, quiet=True)
    try:
        yield (url or f"http://127.0.0.1:{port}/"), engine, data
    finally:
        engine.jobs.stop()
        engine.jobs.wait(60)
        gr.close_all()


@contextlib.contextmanager
def browser_page(sync_api, tmp_path: Path, locale: str, errors: list[str]):
    """A fresh headless page in ``locale``; a screenshot of it when the test fails."""
    with sync_api.sync_playwright() as p:
        browser = launch_browser(p)
        page = browser.new_page(viewport={"width": 1400, "height": 1000}, locale=locale)
        page.set_default_timeout(WAIT * 1000)  # a busy machine answers the page slowly (CI shares its cores)
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.gantune_log = []  # what a failure prints
        page.on("console", lambda m: page.gantune_log.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
        page.on("requestfailed", lambda r: page.gantune_log.append(f"request failed: {r.url} ({r.failure})"))
        try:
            yield page
        except Exception:
            with contextlib.suppress(Exception):
                page.screenshot(path=str(tmp_path / "failure.png"), full_page=True)
                print(f"the page when the test failed: {tmp_path / 'failure.png'}; {page_log(page)}")
            raise
        finally:
            browser.close()


def screenshots_folder(tmp_path: Path) -> Path:
    shots_env = os.environ.get("GANTUNE_SCREENSHOTS")
    return (ROOT / shots_env) if shots_env else tmp_path / "screenshots"


GROUPS = ("Generator", "Discriminator", "Policy update", "Run and validation")  # the folded settings


def start_run(page, epochs: int, **fields: str) -> str:
    """Set ``epochs`` (in view) and other settings (by label, in their folded groups) in GAN tuning, press Start;
    returns the new run's id."""
    open_tab(page, "GAN tuning")
    for group in GROUPS if fields else ():
        page.get_by_text(group, exact=True).click()
    before = status_run(page)
    field(page, "epochs").fill(str(epochs))
    for label, value in fields.items():
        field(page, label.replace("_", " ")).fill(value)
    page.get_by_role("button", name="Start", exact=True).click()
    for group in GROUPS if fields else ():
        page.get_by_text(group, exact=True).click()  # fold the settings away again
    return wait_until(page, lambda: (run := status_run(page)) != before and run, "the new run in the status")


def test_workbench_in_a_browser(sync_api, workbench, tmp_path):
    url, engine, data = workbench
    shots = screenshots_folder(tmp_path)
    problems: list[str] = []
    errors: list[str] = []

    with browser_page(sync_api, tmp_path, "en-US", errors) as page:
        # the five tabs, in order
        open_page(page, url)
        page.get_by_role("tab", name="Setup", exact=True).wait_for()
        assert [t.inner_text().strip() for t in page.get_by_role("tab").all()] == TABS

        # Setup: data file and n, then the preview (counts, a table and a token-length histogram)
        field(page, "Folder or file").fill(str(data))
        field(page, "Pairs (train + test)").fill("40")
        page.get_by_role("button", name="Preview data", exact=True).click()
        page.get_by_text(re.compile(r"20 pairs for training / 20 pairs for testing")).wait_for()
        wait_for_plot(page, "Token lengths")
        if keys := raw_i18n_keys(page):
            problems.append(f"Setup: raw translation keys on the page: {keys}")
        screenshot(page, shots, "setup.png")

        # GAN tuning: an idle page says what to do instead of drawing empty axes
        open_tab(page, "GAN tuning")
        page.get_by_text("No job yet. Press Start.").wait_for()
        assert page.get_by_text("No run to show yet").first.is_visible()
        page.get_by_text("Discriminator", exact=True).click()
        d_hidden = field(page, "d hidden")
        if d_hidden.input_value() != "256 64 16":
            problems.append(f"GAN tuning: 'd hidden' shows {d_hidden.input_value()!r}, expected '256 64 16' "
                            "(Start then fails: '--d-hidden takes three positive widths')")
            d_hidden.fill("256 64 16")
        # a bad value first: a toast and a line above the status that stays (the status redraws every 2 s), naming
        # the field as the page labels it; no job, and the page stays usable
        field(page, "epochs").fill("0")
        watch_toasts(page)
        page.get_by_role("button", name="Start", exact=True).click()
        wait_until(page, lambda: "epochs must be at least 1 (got 0)" in refusal_text(page), "the refusal above the status")
        wait_until(page, lambda: "Warning" in toast_titles(page), "the refusal's toast")  # drawn apart from the line
        assert "--epochs" not in refusal_text(page)
        page.wait_for_timeout(4500)  # two status redraws later, the toast gone: the line is still there
        assert "epochs must be at least 1 (got 0)" in refusal_text(page)
        assert engine.jobs.status().state == "idle"
        page.get_by_text("Discriminator", exact=True).click()
        # a long run with short answers, sampled every step after a one-epoch warm-up (stopped below)
        run_id = start_run(page, 300, max_new_tokens="8", sample_every="1", warmup_epochs="1")
        assert run_id.startswith("gan-"), run_id
        wait_until(page, lambda: status_state(page) == "running", "the status to say running")
        wait_for_plot(page, "Losses")
        wait_until(page, lambda: re.search(r"about (\d+ min )?\d+ s left", status_text(page)), "the time left")
        assert not refusal_text(page)  # a Start that went through clears the last refusal
        seen = []
        for _ in range(12):  # a few status redraws
            seen += progress_overlays(page)
            page.wait_for_timeout(400)
        if seen:
            problems.append(f"GAN tuning: Gradio's progress words over the status or plots: {seen}")
        # the answers sampled while training: the same page's table grows as samples.jsonl does
        first = wait_until(page, lambda: sample_rows(page) >= 2 and newest_sample_step(page),
                           "the first sampled answers")
        wait_until(page, lambda: newest_sample_step(page) >= first + 2 and sample_rows(page) >= 4,
                   "newer sampled answers on the same page")
        screenshot(page, shots, "gan-tuning.png")

        # reload mid-run: the new page finds the job by itself; its lists already know the run
        assert engine.jobs.status().state == "running", engine.jobs.status()
        open_page(page)
        page.get_by_role("tab", name="Setup", exact=True).wait_for()
        open_tab(page, "GAN tuning")
        wait_until(page, lambda: status_run(page) == run_id and status_state(page) == "running",
                   f"the reloaded page to re-attach to {run_id} (running)")
        step = status_step(page)
        wait_until(page, lambda: status_step(page) > step, "the progress to move after the reload")
        wait_for_plot(page, "Losses")

        # Stop: the run ends at its next step and says so
        page.get_by_role("button", name="Stop", exact=True).click()
        wait_until(page, lambda: status_state(page) == "stopped", "the status to say stopped")
        assert status_run(page) == run_id and "left" not in status_text(page)
        stopped_at = status_step(page)
        assert engine.jobs.status().state == "stopped"

        # Runs: the stopped run, with the steps it ended at, without pressing Refresh
        open_tab(page, "Runs")
        wait_until(page, lambda: (cells := table_row(page, run_id)) and "stopped" in cells and str(stopped_at) in cells,
                   f"{run_id} in the runs table as stopped after {stopped_at} steps")
        if broken := headers_broken_mid_word(page, "gantune-runs-table"):
            problems.append(f"Runs: headers cut mid-word: {broken}")
        # a second run beside it (a copy of its folder) joins the table by itself too
        copy = f"{run_id}-copy"
        shutil.copytree(engine.settings.runs_dir / run_id, engine.settings.runs_dir / copy)
        wait_until(page, lambda: table_row(page, copy), f"{copy} in the runs table beside {run_id}")

        # Compare: both runs' curves of one quantity every method reports, each named
        open_tab(page, "Compare")
        assert page.get_by_label("Runs to show").count() == 1  # an accessible name on the multiselect
        pick_option(page, "Runs to show", run_id)
        title = "MLE loss on the reference answers: the selected runs"
        wait_for_plot(page, title)
        pick_option(page, "Runs to show", copy)
        wait_until(page, lambda: {run_id, copy} <= set(plot_texts(page)), "both runs' curves, each named")
        wait_until(page, lambda: len(table_cells(page, "Cost")) == 2, "a cost row for each run")
        assert not page.get_by_text("Settings that differ", exact=True).is_visible()  # the copy differs in nothing

        # a short run, then a comparison with LoRA from the page: its runs show at once, base first
        short = start_run(page, 1)
        wait_until(page, lambda: status_state(page) == "completed", f"{short} to complete", LONG_WAIT)
        open_tab(page, "Compare")
        pick_option(page, "Run to compare against", short)
        # how long it will take, told before it starts
        wait_until(page, lambda: "This comparison will take about" in chrome_text(page), "the comparison's duration")
        page.get_by_role("button", name="Train and evaluate", exact=True).click()
        compare_status = page.locator(".gantune-status:visible").first
        wait_until(page, lambda: compare_status.get_attribute("data-state") == "completed", "the comparison to end",
                   LONG_WAIT)
        quality = wait_until(page, lambda: (rows := table_cells(page, "Quality")) and len(rows) == 3 and rows,
                             "the comparison's rows without a pick")
        assert [r[0] for r in quality][:2] == ["base model", short] and quality[2][0].startswith("lora (lora-"), quality
        lora_name = quality[2][0]
        wait_until(page, lambda: lora_name in plot_texts(page), "the LoRA run's curve named as its row")
        wait_until(page, lambda: table_cells(page, "Paired differences (same questions, same seed): the comparison "
                                                   "to read"), "the paired differences")
        distribution = wait_until(page, lambda: table_cells(page, "Answers against the references"),
                                  "the answers' distribution")  # drawn after the paired differences on a busy machine
        assert [r[0] for r in distribution][:2] == ["reference answers", "base model"], distribution
        wait_for_plot(page, "ROUGE-L per run (95% interval)")
        wait_for_plot(page, "Answer lengths (tokens): references and each run")
        screenshot(page, shots, "compare.png")

        # "Show in GAN tuning": the tab shows that run, each plot as wide as its box (drawn while the tab was hidden)
        open_tab(page, "Runs")
        pick_option(page, "Selected run", run_id)
        page.get_by_role("button", name="Show in GAN tuning", exact=True).click()
        gan_tab = page.get_by_role("tab", name="GAN tuning", exact=True)
        wait_until(page, lambda: gan_tab.get_attribute("aria-selected") == "true", "the button to open GAN tuning")
        wait_for_plot(page, "Losses")
        wait_until(page, lambda: not plots_that_overflow(page), "every plot to fit its box")

        # Chat: the GAN run is a choice at once (lists follow the runs), one message, three panels
        open_tab(page, "Chat")
        pick_option(page, "GAN-tuned run", run_id, timeout=10)
        message = "who is the author of a book ?"
        field(page, "Message").fill(message)
        page.get_by_role("button", name="Send", exact=True).click()
        wait_until(page, lambda: chat_done(page, message), "three chat panels with the message and an answer")
        if covered := buttons_over_user_bubbles(page):
            problems.append(f"Chat: buttons cover the user's message in {covered}")
        screenshot(page, shots, "chat.png")

        # Runs: pick the copy (its adapter can be downloaded), Delete waits for its confirmation
        open_tab(page, "Runs")
        screenshot(page, shots, "runs.png")
        pick_option(page, "Selected run", copy)
        download = page.get_by_role("button", name="Download adapter")
        wait_until(page, lambda: download.is_enabled(), "the adapter download to be offered")
        page.get_by_role("button", name="Delete", exact=True).click()
        confirm = page.get_by_role("button", name="Yes, delete it", exact=True)
        confirm.wait_for(state="visible")
        page.get_by_role("button", name="Refresh", exact=True).click()  # the page redraws its table meanwhile
        wait_until(page, lambda: table_row(page, copy), f"{copy} in the refreshed table")
        assert confirm.is_visible(), "the delete confirmation vanished before it was answered"
        confirm.click()
        wait_until(page, lambda: not table_row(page, copy), f"{copy} to leave the runs table")
        assert not (engine.settings.runs_dir / copy).exists()

        for tab in TABS:  # every tab's words are words
            open_tab(page, tab)
            if keys := raw_i18n_keys(page):
                problems.append(f"{tab}: raw translation keys on the page: {keys}")

    problems += [f"script error in the page: {e}" for e in errors]
    problems = list(dict.fromkeys(problems))
    assert not problems, "the walk finished, but:\n- " + "\n- ".join(problems)


def test_workbench_in_russian(sync_api, workbench, tmp_path):
    """A Russian browser: with a run, a comparison, a preview and a chat on screen, no English catalogue words."""
    from gantune.config import preset_config

    url, engine, data = workbench
    shots = screenshots_folder(tmp_path)
    engine.start_training(preset_config("gan", "improved", data=str(data), n=40, epochs=3, batch_size=8,
                                        max_new_tokens=8, max_prompt_tokens=64, sample_every=1, device="cpu"))
    run = engine.jobs.wait(LONG_WAIT)
    assert run.state == "completed", run
    run_id = Path(run.run).name
    engine.start_comparison(run_id, ["lora"])
    assert engine.jobs.wait(LONG_WAIT).state == "completed", engine.jobs.status()
    problems: list[str] = []
    errors: list[str] = []

    def check(tab: str) -> None:
        if keys := raw_i18n_keys(page):
            problems.append(f"{tab}: raw translation keys: {keys}")
        if left := english_on_a_russian_page(page_words(page)):
            problems.append(f"{tab}: English left on the Russian page: {left}")

    with browser_page(sync_api, tmp_path, "ru-RU", errors) as page:
        open_page(page, url)
        page.get_by_role("tab", name=TABS_RU[0], exact=True).wait_for()
        assert [t.inner_text().strip() for t in page.get_by_role("tab").all()] == TABS_RU

        field(page, "Папка или файл").fill(str(data))
        field(page, "Пар (обучение + тест)").fill("9")
        page.get_by_role("button", name="Просмотр данных", exact=True).click()
        page.get_by_text(re.compile(r"4 пары для обучения / 5 пар для теста")).wait_for()  # Babel's plural rule
        wait_for_plot(page, "Длины в токенах")
        page.get_by_text("офлайн-папка TOFU", exact=True).wait_for()  # the data-source choices too
        # the train share in the page's numbers under its slider, and none of Gradio's numbers with a dot ("0.5", and
        # "0.05" and "0.95" at its ends)
        page.get_by_text("50\xa0% пар — для обучения, 50\xa0% — для теста", exact=True).wait_for()
        share = page.locator("#gantune-train-share")
        assert share.locator('input[type="range"]').is_visible()
        for shown in ('input[type="number"]', '[data-testid="min-value"]', '[data-testid="max-value"]'):
            assert not share.locator(shown).is_visible(), shown
        check("Setup")
        screenshot(page, shots, "setup-ru.png")

        open_tab(page, TABS_RU[1])
        wait_until(page, lambda: status_state(page) == "completed" and status_run(page) == run_id, "the run's status")
        wait_for_plot(page, "Функции потерь")
        wait_until(page, lambda: sample_rows(page) > 0, "the sampled answers")
        assert field(page, "эпохи").input_value() == "3"  # settings' labels and help from the config, in Russian
        assert "Сохранён адаптер шага" in chrome_text(page)  # (the check reads the page's visible words)
        check("GAN tuning")
        screenshot(page, shots, "gan-tuning-ru.png")
        # a refusal: its toast (title too) and the line above the status, in Russian, the field by its label
        field(page, "эпохи").fill("0")
        watch_toasts(page)
        page.get_by_role("button", name="Старт", exact=True).click()
        wait_until(page, lambda: "«эпохи» (--epochs): нужно не меньше 1 (получено 0)" in refusal_text(page),
                   "the refusal in Russian")
        wait_until(page, lambda: "Предупреждение" in toast_titles(page), "the refusal's toast, in Russian")
        check("GAN tuning, a refusal")
        field(page, "эпохи").fill("3")

        open_tab(page, TABS_RU[2])
        wait_until(page, lambda: len(table_cells(page, "Качество")) == 3, "the comparison's rows")
        wait_for_plot(page, "Длины ответов (токены): эталоны и каждый запуск")
        # numbers in the Russian format: a decimal comma (Babel in the tables, Plotly's locale on the axes)
        assert any(re.fullmatch(r"-?\d+,\d{3}( ± \d+,\d{3})?", c) for row in table_cells(page, "Качество") for c in row)
        pick_option(page, "Запуск для сравнения", run_id)
        wait_until(page, lambda: "Сравнение займёт около" in chrome_text(page), "the comparison's duration")
        check("Compare")
        screenshot(page, shots, "compare-ru.png")

        open_tab(page, TABS_RU[3])
        pick_option(page, "Запуск GAN", run_id, timeout=10)
        field(page, "Сообщение").fill("who is the author of a book ?")
        page.get_by_role("button", name="Отправить", exact=True).click()
        wait_until(page, lambda: "(выберите запуск)" in chat_panels(page).nth(2).inner_text(), "the chat's answers")
        check("Chat")
        screenshot(page, shots, "chat-ru.png")

        open_tab(page, TABS_RU[4])
        wait_until(page, lambda: (cells := table_row(page, run_id)) and "завершён" in cells, "the runs table")
        check("Runs")
        screenshot(page, shots, "runs-ru.png")

    problems += [f"script error in the page: {e}" for e in errors]
    assert not problems, "the Russian walk finished, but:\n- " + "\n- ".join(dict.fromkeys(problems))


def test_the_time_left_never_rises_while_the_steps_come_at_a_steady_rate(sync_api, workbench, tmp_path):
    """A job whose steps take 1.5 s each: the GAN tuning tab's time left, read as the page shows it, only counts
    down (it may stay a second), from its first estimate to the job's end."""
    url, engine, _ = workbench
    errors: list[str] = []

    def steady(report, should_stop):
        report(message="training", steps_begin=True)
        for step in range(1, 13):
            deadline = time.monotonic() + 1.5
            while time.monotonic() < deadline:
                if should_stop():
                    return None
                time.sleep(0.05)
            report(step=step, total=12, phase="mle")
        return None

    with browser_page(sync_api, tmp_path, "en-US", errors) as page:
        open_page(page, url)
        open_tab(page, "GAN tuning")
        engine.jobs.start("train", "steady job", steady)
        readings = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and engine.jobs.status().active:
            if (left := time_left_seconds(page)) is not None:
                readings.append(left)
            page.wait_for_timeout(250)
    assert len(set(readings)) >= 2, readings  # it said something, and it moved (how often the page redraws meanwhile is the machine's)
    assert all(later <= earlier for earlier, later in zip(readings, readings[1:])), readings
    assert not errors
