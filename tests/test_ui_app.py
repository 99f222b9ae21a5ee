"""The workbench served for real (ui/app.py) and driven through its API with gradio_client.

One server for the module, on a free loopback port, over an engine whose model loader builds the
tiny random Llama. The client is what a script (or the page) sees: endpoints, return values, and
gr.Warning messages, which reach an API client as log messages of the call.
"""

from __future__ import annotations

import dataclasses
import html
import json
import re
import socket
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
import torch
from conftest import WORDS, make_base
from gradio_client import Client, handle_file

from gantune.inference import load_method, stream_reply
from gantune.runs import RunFolder
from ui.app import launch
from ui.engine import Engine, Settings
from ui.i18n import CONFIG_FIELDS, EN, FIELDS_RU, RU, language
from ui.tabs.chat import cut_note
from ui.tabs.runs import GAN_TAB
from ui.tabs.setup import SetupInputs
from ui.tabs.tuning import FIELDS, _preset_values

WAIT = 60.0  # generous bound for anything the tiny model does
ENDPOINTS = {"/start", "/stop", "/status", "/list_runs", "/refresh_lists", "/chat", "/preview", "/random_question",
             "/compare", "/stop_compare", "/delete_run", "/load_model"}

# The positional arguments of /start: the preset, then the Setup tab's widgets, then one per FIELDS entry.
SETUP_ORDER = SetupInputs(*(f.name for f in dataclasses.fields(SetupInputs))).as_list()  # the names, in API order
TINY = {"epochs": 1, "batch_size": 2, "max_new_tokens": 8, "max_prompt_tokens": 32, "noise_dim": 8,
        "d_hidden": "16 8 4", "sample_every": 1}  # 6 training pairs, batch 2 -> 3 steps an epoch


def setup_args(data: Path, **changes) -> list:
    values = {"model": "default", "gguf_file": "", "trust_remote_code": False, "data_kind": "offline",
              "data_path": str(data), "upload": None, "subset": "forget10", "n": 12, "fraction": 0.5, "seed": 3}
    values.update(changes)
    return [values[name] for name in SETUP_ORDER]


def start_args(data: Path, preset: str = "improved", setup: dict | None = None, **settings) -> list:
    values = dict(zip(FIELDS, _preset_values(preset)))
    values.update(TINY)
    values.update(settings)
    return [preset, *setup_args(data, **(setup or {})), *(values[name] for name in FIELDS)]


def talkative_base():
    """The tiny model, with the <unk> embedding zeroed: greedy answers are words (not all <unk>, which decode to '')."""
    base = make_base(seed=1)
    with torch.no_grad():
        base.model.get_input_embeddings().weight[0].zero_()
    return base


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    root = tmp_path_factory.mktemp("workbench")
    rows = [{"question": f"who is the author of {w} ?", "answer": f"the author was born in a city and wrote {w} fiction ."}
            for w in WORDS[:12]]
    data = root / "pairs.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    engine = Engine(Settings(runs_dir=root / "runs"), load_model=lambda *a: talkative_base())
    demo, url, _ = launch(engine, prevent_thread_lock=True, server_name="127.0.0.1", server_port=free_port(),
                          quiet=True)
    try:
        yield SimpleNamespace(engine=engine, url=url, data=data, demo=demo)
    finally:
        engine.jobs.stop()
        engine.jobs.wait(WAIT)
        demo.close()


@pytest.fixture
def client(app):
    c = Client(app.url, verbose=False)
    yield c
    app.engine.jobs.stop()  # no test leaves a job running for the next
    assert not app.engine.jobs.wait(WAIT).active


# --- helpers --------------------------------------------------------------------------------------

def state_of(status_html: str) -> str:
    match = re.search(r"data-state='(\w+)'", status_html)
    return match.group(1) if match else "idle"


def progress(status_html: str) -> tuple[int, int] | None:
    match = re.search(r"step (\d+)/(\d+)", status_html)
    return (int(match.group(1)), int(match.group(2))) if match else None


def poll_status(client: Client, until, what: str, timeout: float = WAIT) -> tuple:
    """Call /status (what the page's 2 s timer calls) until ``until(outputs)``; returns those outputs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        outputs = client.predict(api_name="/status")
        if until(outputs):
            return outputs
        time.sleep(0.1)
    raise AssertionError(f"/status never showed {what} in {timeout:.0f} s; last: {outputs[0]}")


def trace_points(plot, name: str) -> list:
    """The x values of one trace of a gr.Plot output (None when the plot was not redrawn)."""
    if not isinstance(plot, dict) or "plot" not in plot:
        return []
    figure = json.loads(plot["plot"])
    return next((t.get("x", []) for t in figure["data"] if t.get("name") == name), [])


RUSSIAN = {"Accept-Language": "ru-RU,ru;q=0.9,en-US;q=0.8,en;q=0.7"}  # what a Russian browser sends


def english_left(text: str) -> list[str]:
    """The English catalogue strings (or the fixed parts of formatted ones) found in ``text``.

    A string that reads the same in Russian (a name: MLE, KL, M_tunable) is not counted, nor are
    parts shorter than 4 characters.
    """
    found = set()
    for key, english in EN.items():
        if RU.get(key) == english:
            continue
        for part in re.split(r"\{[^}]*\}", english):
            part = part.strip(" .,:;()·—-*“”'")
            if len(part) < 4 or not re.search(r"[A-Za-z]", part) or part in RU[key]:
                continue
            if re.search(r"(?<![\w-])" + re.escape(part) + r"(?![\w-])", text):
                found.add(part)
    return sorted(found)


def visible_text(page_html: str) -> str:
    """The words of the page's own HTML: no tags, no job title, run name or table body (the data's words)."""
    words = re.sub(r"<b>[^<]*</b>|<code>[^<]*</code>|<tbody>.*?</tbody>", " ", page_html, flags=re.S)
    return re.sub(r"<[^>]+>", " ", words)


def figure_texts(plot) -> str:
    """Every text a plotly figure shows: titles, axis titles, annotations, trace names."""
    if not isinstance(plot, dict) or "plot" not in plot:
        return ""
    figure = json.loads(plot["plot"])
    texts = [t.get("name") or "" for t in figure["data"]]

    def walk(node):
        if isinstance(node, dict):
            for k, v in node.items():
                if k == "text" and isinstance(v, str):
                    texts.append(v)
                else:
                    walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(figure["layout"])
    return "\n".join(texts)


def value_of(output):
    """An output's value, whether it came as a value or as an update (value and visibility)."""
    return output["value"] if isinstance(output, dict) and output.get("__type__") == "update" else output


def sample_steps(samples_html: str) -> list[int]:
    """The step column of the samples table (HTML), top to bottom."""
    return [int(step) for step in re.findall(r"<tr><td>(\d+)</td>", samples_html)]


def warnings_of(job) -> list[str]:
    """gr.Warning messages of a finished call: the client receives them as 'log' updates (level warning)."""
    updates = job.communicator.updates
    logs = []
    while not updates.empty():
        update = updates.get_nowait()
        if getattr(update, "log", None) and update.log[1] == "warning":
            logs.append(update.log[0])
    return logs


def texts(history: list[dict]) -> list[tuple[str, str]]:
    """(role, text) of each chatbot message (Gradio 6 sends content as a list of parts)."""
    out = []
    for message in history:
        content = message["content"]
        text = content if isinstance(content, str) else "".join(p.get("text", "") for p in content)
        out.append((message["role"], text))
    return out


def trained_run(app, **settings) -> str:
    """A finished GAN run made through /start (a fresh client session); returns its id."""
    c = Client(app.url, verbose=False)
    c.predict(*start_args(app.data, **settings), api_name="/start")
    status = app.engine.jobs.wait(WAIT)
    assert status.state == "completed", status
    return Path(status.run).name


# --- the app's shape ------------------------------------------------------------------------------

def test_five_tabs_in_order_and_the_named_endpoints(app, client):
    config = httpx.get(app.url + "config", timeout=30).json()
    labels = [c["props"]["label"] for c in config["components"] if c["type"] == "tabitem"]
    keys = [json.loads(label.removeprefix("__i18n__"))["key"] for label in labels]  # labels are i18n keys
    assert [EN[k] for k in keys] == ["Setup", "GAN tuning", "Compare", "Chat", "Runs"]

    api = client.view_api(return_format="dict", print_info=False)
    assert ENDPOINTS <= set(api["named_endpoints"])
    start_params = api["named_endpoints"]["/start"]["parameters"]
    assert len(start_params) == 1 + len(SETUP_ORDER) + len(FIELDS) == len(start_args(app.data))


def test_a_loading_page_refreshes_the_status_and_every_list_of_runs(app):
    """The wiring that re-attaches a page: /status runs on a 2 s timer and on the page's load; the lists of
    runs (Compare, Chat, the Runs table, whose built-in values date from the app's start) on load and on a
    2 s timer that redraws them when the runs changed (a job started or ended, a run deleted)."""
    config = httpx.get(app.url + "config", timeout=30).json()
    components = {c["id"]: c for c in config["components"]}
    deps = {d.get("api_name"): d for d in config["dependencies"]}
    for name in ("status", "refresh_lists"):
        events = [event for _, event in deps[name]["targets"]]
        assert sorted(events) == ["load", "tick"], name
        timer = next(components[i] for i, event in deps[name]["targets"] if event == "tick")
        assert timer["type"] == "timer" and timer["props"]["value"] == 2.0


def test_every_setting_has_a_russian_label_and_help():
    """Labels and help of the settings come from TrainConfig's fields; a field added there needs its Russian here."""
    missing = sorted(set(CONFIG_FIELDS) - set(FIELDS_RU))
    assert not missing, f"add these TrainConfig fields to ui/locales/ru.json 'fields' (label, help): {missing}"
    assert not set(FIELDS_RU) - set(CONFIG_FIELDS), "FIELDS_RU names fields TrainConfig no longer has"
    for name, (label, help_text) in FIELDS_RU.items():
        assert re.search("[а-я]", label) and re.search("[а-я]", help_text), name
        assert EN[f"help_{name}"] == CONFIG_FIELDS[name].metadata["help"]  # English from the field itself


def test_the_russian_catalogue_has_every_key_with_the_same_placeholders():
    assert set(RU) == set(EN)
    for key, english in EN.items():
        assert set(re.findall(r"\{(\w+)", RU[key])) == set(re.findall(r"\{(\w+)", english)), key


@pytest.mark.parametrize(("header", "lang"), [
    ("ru-RU,ru;q=0.9,en-US;q=0.8", "ru"), ("en-US,en;q=0.9,ru;q=0.8", "en"), ("de-DE,ru;q=0.5", "ru"),
    ("fr-FR", "en"), ("", "en"), ("ru;q=0.1, en;q=0.9", "en"), ("RU", "ru"), ("ru;q=abc", "ru"),
])
def test_the_language_of_a_request_is_its_first_spoken_tag(header, lang):
    assert language(SimpleNamespace(headers={"accept-language": header})) == lang
    assert language(None) == "en"


def test_no_starlette_deprecation_warning_on_queued_calls(app, recwarn):
    """Gradio reads starlette's renamed HTTP_422 constant on every call: the app keeps that out of its log."""
    launched = launch(app.engine, prevent_thread_lock=True, server_name="127.0.0.1", server_port=free_port(),
                      quiet=True)
    try:
        Client(launched[1], verbose=False).predict(api_name="/status")
    finally:
        launched[0].close()
    assert not [w for w in recwarn.list if "HTTP_422" in str(w.message)]


# --- Setup ----------------------------------------------------------------------------------------

def test_preview_and_random_question(app, client):
    status, table, histogram = map(value_of, client.predict(*setup_args(app.data), api_name="/preview"))
    assert status.startswith("6 pairs for training / 6 pairs for testing from ") and str(app.data.name) in status
    assert [row[0] for row in table["data"]] == ["train"] * 5 + ["test"] * 5
    figure = json.loads(histogram["plot"])
    assert figure["layout"]["title"]["text"] == "Token lengths"
    prompt_bins, answer_bins = (trace["xbins"] for trace in figure["data"])  # one bin width for both
    assert prompt_bins == answer_bins and prompt_bins["size"] >= 1

    _, test, _ = app.engine.pairs(str(app.data), "forget10", 12, 0.5, 3)
    answers = {p.question: p.answer for p in test}
    for _ in range(3):
        question, reference = client.predict(*setup_args(app.data), api_name="/random_question")
        assert question in answers
        assert reference == f"**Reference answer:** {answers[question]}"

    status, table, _ = client.predict(*setup_args(app.data, data_path=str(app.data) + ".missing"), api_name="/preview")
    assert table["visible"] is False  # no table of an earlier preview beside the error
    assert status.startswith("**Error:**") and "no data file or folder" in status

    # "my file": an uploaded .jsonl (the client sends it as a FileData; the server reads its own copy)
    upload = setup_args(app.data, data_kind="upload", data_path="", upload=handle_file(app.data))
    status, table, _ = map(value_of, client.predict(*upload, api_name="/preview"))
    assert status.startswith("6 pairs for training / 6 pairs for testing from ") and str(app.data) not in status
    assert len(table["data"]) == 10
    status, _, _ = client.predict(*setup_args(app.data, data_kind="upload"), api_name="/preview")
    assert status == "**Error:** upload a .jsonl, .json or .csv file of question/answer pairs first"


# --- GAN tuning -----------------------------------------------------------------------------------

def test_start_shows_progress_then_completion_and_a_new_page_reattaches(app, client):
    refusal, first = client.predict(*start_args(app.data, epochs=3), api_name="/start")
    assert refusal == "" and state_of(first) in ("starting", "running", "completed") and "GAN tuning (improved)" in first
    run_id = re.search(r"run <code>([^<]+)</code>", first).group(1)  # the run is named at once
    assert run_id.startswith("gan-improved-")

    done = poll_status(client, lambda o: state_of(o[0]) == "completed", "completion")
    assert progress(done[0]) == (9, 9) and run_id in done[0] and "Error" not in done[0]

    # a page opened afterwards (a new session) finds the job, its run and its curves
    reloaded = Client(app.url, verbose=False).predict(api_name="/status")
    status_html, losses, game, weights, memory, samples, collapse = reloaded
    assert state_of(status_html) == "completed" and run_id in status_html
    run = RunFolder(app.engine.settings.runs_dir / run_id)
    records = run.read_metrics()
    adversarial = [r["step"] for r in records if "reward_mean" in r]
    assert trace_points(losses, "G loss") == adversarial != []  # the policy-gradient loss: the adversarial phase
    assert trace_points(game, "mean reward") == adversarial != []
    assert len(trace_points(memory, "peak")) == 9
    # the answers sampled in training, newest first, each beside its question and reference
    sampled = run.read_samples()
    assert sampled and sample_steps(samples) == [s["step"] for s in reversed(sampled)][:10]
    assert html.escape(sampled[-1]["reference"]) in samples
    summary = json.loads(run.summary_path.read_text())
    assert summary["status"] == "completed" and summary["steps"] == 9
    assert f"Kept the adapter of step {summary['kept_step']}" in status_html


def test_second_start_while_running_warns_and_stop_stops(app, client):
    runs_before = set(p.name for p in app.engine.settings.runs_dir.iterdir())
    client.predict(*start_args(app.data, epochs=200), api_name="/start")  # 600 steps: Stop ends it
    running = poll_status(client, lambda o: (progress(o[0]) or (0, 0))[0] >= 2
                          and len(trace_points(o[1], "G loss")) >= 2, "two steps plotted")
    assert state_of(running[0]) == "running" and progress(running[0])[1] == 600
    assert re.search(r"about (\d+ min )?\d+ s left", running[0]), running[0]
    run_id = re.search(r"run <code>([^<]+)</code>", running[0]).group(1)

    # a second Start: no second job; the call returns the running job's status and warns
    job = client.submit(*start_args(app.data), api_name="/start")
    refusal, busy = job.result(timeout=WAIT)
    assert state_of(busy) in ("running", "stopping") and run_id in busy
    said = "a job is running (GAN tuning (improved)); watch it or stop it first"
    assert said in refusal and any(said in w for w in warnings_of(job)), warnings_of(job)
    assert set(p.name for p in app.engine.settings.runs_dir.iterdir()) - runs_before == {run_id}

    stopping = client.predict(api_name="/stop")
    assert state_of(stopping) == "stopping" and "stopping after this step" in stopping and " left" not in stopping
    stopped = poll_status(client, lambda o: state_of(o[0]) == "stopped", "stopped")
    step, total = progress(stopped[0])
    assert 2 <= step < total == 600
    summary = json.loads(RunFolder(app.engine.settings.runs_dir / run_id).summary_path.read_text())
    assert summary["status"] == "stopped" and summary["steps"] == step
    assert (app.engine.settings.runs_dir / run_id / "adapter" / "adapter_model.safetensors").is_file()


def test_a_bad_setting_warns_and_starts_nothing(app, client):
    before = app.engine.jobs.status()
    job = client.submit(*start_args(app.data, d_hidden="sixteen"), api_name="/start")
    job.result(timeout=WAIT)
    assert any("d hidden: whole numbers" in w for w in warnings_of(job)), warnings_of(job)
    assert app.engine.jobs.status() == before


def test_a_refused_start_stays_above_the_status_named_by_the_pages_field(app, client):
    """The refusal is a toast and a line of its own above the status (the 2 s status timer never writes it), in the
    page's language, naming the field as the page labels it."""
    before = app.engine.jobs.status()
    job = client.submit(*start_args(app.data, epochs=0), api_name="/start")
    refusal, _ = job.result(timeout=WAIT)
    assert "epochs must be at least 1 (got 0)" in refusal and "--epochs" not in refusal
    assert warnings_of(job) == ["epochs must be at least 1 (got 0)"]
    assert app.engine.jobs.status() == before
    ru = Client(app.url, verbose=False, headers=RUSSIAN)
    refusal, _ = ru.predict(*start_args(app.data, epochs=0), api_name="/start")
    assert "«эпохи» (--epochs): нужно не меньше 1 (получено 0)" in refusal
    config = httpx.get(app.url + "config", timeout=30).json()
    deps = {d.get("api_name"): d for d in config["dependencies"]}
    refusal_id = deps["start"]["outputs"][0]
    assert refusal_id not in deps["status"]["outputs"]  # the timer redraws the status, never the refusal


def test_the_tab_follows_what_it_shows_a_deleted_run_leaves_it_and_a_reload_shows_the_jobs_settings(app, client):
    from ui.tabs.tuning import status_html

    shown = trained_run(app)
    latest = trained_run(app)
    status = app.engine.jobs.status("train")
    assert Path(status.run).name == latest
    # a run picked in Runs ("Show in GAN tuning"): the status speaks of that run, as the plots do
    picked = status_html(app.engine, status, "en", viewed=shown)
    assert f"<code>{shown}</code>" in picked and latest not in picked and "step 3/3" in picked
    # the job's run deleted: the tab no longer speaks of it
    client.predict(api_name="/list_runs")  # the page's run picker, as on page load
    client.predict(latest, api_name="/delete_run")
    assert "No job yet" in client.predict(api_name="/status")[0]
    # a page opened while a job trains shows that job's settings, not the preset's
    client.predict(*start_args(app.data, epochs=200, noise_dim=8, kl_coef=0.2), api_name="/start")
    form = Client(app.url, verbose=False).predict(api_name="/settings_form")
    values = dict(zip(FIELDS, [value_of(v) for v in form[1:]]))
    assert value_of(form[0]) == "improved" and values["epochs"] == 200 and values["kl_coef"] == 0.2
    assert values["d_hidden"] == "16 8 4"
    russian = Client(app.url, verbose=False, headers=RUSSIAN).predict(api_name="/settings_form")
    assert ["улучшенный (improved)", "improved"] in russian[0]["choices"]


def test_a_failed_job_shows_its_error_in_the_status(app, client):
    missing = app.data.with_name("missing <pairs>.jsonl")
    client.predict(*start_args(app.data, setup={"data_path": str(missing)}), api_name="/start")
    failed = poll_status(client, lambda o: state_of(o[0]) == "failed", "the failure")
    assert "<b>Error:</b> no data file or folder at" in failed[0]
    assert "missing &lt;pairs&gt;.jsonl" in failed[0]  # escaped, not markup
    assert failed[0].count("no data file or folder") == 1


# --- Runs and Chat --------------------------------------------------------------------------------

def test_list_runs_and_chat_with_base_and_gan(app, client):
    run_id = trained_run(app)
    table, choices = client.predict(api_name="/list_runs")
    row = next(r for r in table["data"] if r[0] == run_id)
    assert row[1:4] == ["gan", "improved", "completed"]
    assert [run_id, run_id] in choices["choices"]

    # the Chat tab's dropdowns learn new runs when a page loads and when the runs change (another page here) …
    _, _, gan_choices, lora_choices, _, _ = Client(app.url, verbose=False).predict(api_name="/refresh_lists")
    assert [run_id, run_id] in gan_choices["choices"] and lora_choices["choices"] == []
    # … and from the Runs tab's "Use in Chat", at once: Send right after it must not be refused
    gan_pick, lora_pick, note = client.predict(run_id, api_name="/on_chat")
    assert gan_pick["value"] == run_id and [run_id, run_id] in gan_pick["choices"]
    assert note == f"{run_id} is the GAN run in Chat"

    question = "who is the author of a book ?"
    job = client.submit(question, run_id, None, 8, "default", [], [], [], api_name="/chat")
    base_history, gan_history, lora_history, message, flags = job.result(timeout=WAIT)
    assert len(job.outputs()) > 3  # the answers streamed in, piece by piece
    assert message == ""  # the message box is cleared

    def streamed(**method) -> tuple[str, bool]:  # an answer cut at the limit ends with "…"
        text, cut = list(stream_reply(base, question, 8, **method))[-1]
        return text + "…" * cut, cut

    base = talkative_base()
    expected_base, base_cut = streamed()
    tuned = load_method(str(app.engine.runs.folder(run_id).path), base=base)
    try:
        expected_gan, gan_cut = streamed(method=tuned)
    finally:
        tuned.close()
    # not a question with a known short answer: the only note is of the answers the limit cut, if any
    assert flags == cut_note([base_cut, gan_cut, False], 8, "en")
    assert expected_base  # the talkative model says something
    assert texts(base_history) == [("user", question), ("assistant", expected_base)]
    assert texts(gan_history) == [("user", question), ("assistant", expected_gan)]
    assert texts(lora_history) == [("user", question), ("assistant", "(pick a run)")]

    # a second message keeps the first exchange
    histories = client.predict("what is a novel ?", run_id, None, 8, "default", base_history, gan_history,
                               lora_history, api_name="/chat")
    for history in histories[:3]:
        assert [role for role, _ in texts(history)] == ["user", "assistant", "user", "assistant"]
        assert texts(history)[2] == ("user", "what is a novel ?")


@pytest.mark.filterwarnings("ignore:The value passed into gr.Dropdown:UserWarning")  # a made-up run id
def test_selecting_a_row_of_the_runs_table_picks_that_run(app):
    """The Dataframe's select handler, fed a select event as the page sends it (raw queue call)."""
    config = httpx.get(app.url + "config", timeout=30).json()
    dep = next(d for d in config["dependencies"] if d.get("api_name") == "on_row")
    session = uuid.uuid4().hex
    event = {"index": [0, 2], "value": "improved", "row_value": ["gan-improved-x", "gan", "improved"]}
    with httpx.Client(base_url=app.url, timeout=WAIT) as http:
        http.post("gradio_api/queue/join", json={"data": [], "event_data": event, "fn_index": dep["id"],
                                                 "trigger_id": dep["targets"][0][0], "session_hash": session}
                  ).raise_for_status()
        with http.stream("GET", "gradio_api/queue/data", params={"session_hash": session}) as stream:
            for line in stream.iter_lines():
                message = json.loads(line[5:]) if line.startswith("data:") else {}
                if message.get("msg") == "process_completed":
                    break
    assert message["success"] and message["output"]["data"][0] == "gan-improved-x"


def test_an_idle_server_polls_its_queue_slowly(app):
    """Gradio's queue looks for work every 1 ms (its progress every 10 ms) by default: an idle server used ~5 % of a
    core with no page open. The launched workbench polls at 50 ms and 100 ms (benchmarks/idle_cpu.py measures it)."""
    from ui.app import PROGRESS_IDLE_POLL, QUEUE_IDLE_POLL

    queue = app.demo._queue
    assert (queue.sleep_when_free, queue.progress_update_sleep_when_free) == (QUEUE_IDLE_POLL, PROGRESS_IDLE_POLL)


def test_the_train_share_is_written_under_its_slider_in_the_pages_numbers(app):
    """Gradio writes the slider's own number as JavaScript does ("0.5" on a Russian page too): the page says the
    share again under it, in its own numbers, whenever it moves."""
    on_share = next(f for f in app.demo.fns.values() if f.name == "on_share")
    slider = app.demo.blocks[on_share.outputs[0]._id]
    assert [block for block, event in on_share.targets] == [slider._id, app.demo._id] and slider.minimum == 0.05
    russian = SimpleNamespace(headers={"accept-language": RUSSIAN["Accept-Language"]})
    assert on_share.fn(0.35, russian)["info"] == "35\xa0% пар — для обучения, 65\xa0% — для теста"  # CLDR's space
    assert on_share.fn(0.5, None)["info"] == "50% of the pairs for training, 50% for testing"


def test_show_in_gan_tuning_switches_to_that_tab(app):
    run_id = trained_run(app)
    on_open = next(f for f in app.demo.fns.values() if f.name == "on_open")
    shown, compared, note, tab = on_open.fn(run_id, [], None)
    assert shown == run_id and compared["value"] == [run_id] and note == f"showing {run_id} in GAN tuning and Compare"
    assert tab.selected == GAN_TAB  # the Tabs' update: the GAN tuning tab is the one shown
    config = httpx.get(app.url + "config", timeout=30).json()
    components = {c["id"]: c for c in config["components"]}
    assert components[on_open.outputs[3]._id]["type"] == "tabs"
    gan = [c for c in components.values() if c["type"] == "tabitem" and c["props"].get("id") == GAN_TAB]
    assert len(gan) == 1 and "tab_gan" in json.dumps(gan[0]["props"]["label"])


def test_delete_run_with_confirm(app, client):
    run_id = trained_run(app)
    client.predict(api_name="/list_runs")  # the page's table and its run picker, as on page load
    text, table, picker, download = client.predict(run_id, api_name="/delete_run")
    assert text == f"deleted {run_id}"
    assert not (app.engine.settings.runs_dir / run_id).exists()
    assert run_id not in [r[0] for r in table["data"]]
    assert [run_id, run_id] not in picker["choices"] and picker["value"] is None


# --- the page's language --------------------------------------------------------------------------

def test_a_russian_page_reads_russian_everywhere_the_server_writes(app):
    """What the server writes (status, messages, plot titles, axes and legends, table headers, choices) comes
    in the request's language: nothing of the English catalogue is left (names of runs and methods aside)."""
    run_id = trained_run(app, epochs=3)  # an MLE warm-up, then the adversarial phase
    ru = Client(app.url, verbose=False, headers=RUSSIAN)
    status_html, *figures, samples, collapse = ru.predict(api_name="/status")
    shown = [visible_text(status_html + samples), *(figure_texts(f) for f in figures)]
    assert "завершено" in status_html and "Сохранён адаптер шага" in status_html
    assert "Функции потерь" in shown[1] and "MLE-разогрев" in shown[1] + shown[2]
    assert english_left("\n".join(shown)) == []

    status, table, histogram = map(value_of, ru.predict(*setup_args(app.data), api_name="/preview"))
    assert status.startswith("6 пар для обучения / 6 пар для теста из ")
    assert table["headers"] == ["часть", "вопрос", "ответ"] and {r[0] for r in table["data"]} == {"обучение", "тест"}
    assert english_left(status.split(" из ")[0] + "\n" + figure_texts(histogram)) == []

    table, _ = ru.predict(api_name="/list_runs")
    row = next(r for r in table["data"] if r[0] == run_id)
    assert row[3] == "завершён" and "да" in row
    assert english_left("\n".join(table["headers"])) == []

    _, reference = ru.predict(*setup_args(app.data), api_name="/random_question")
    assert reference.startswith("**Эталонный ответ:** ")
    base, gan, lora, _, _ = ru.predict("who is a writer ?", None, None, 8, "default", [], [], [], api_name="/chat")
    assert texts(lora)[-1] == ("assistant", "(выберите запуск)")
    loaded = ru.predict("default", "", False, api_name="/load_model")
    assert loaded.startswith("Загружена **tiny-random-llama**") and "шаблон чата" in loaded

    # the same calls from an English browser read English
    en = Client(app.url, verbose=False, headers={"Accept-Language": "en-US,en;q=0.9"})
    assert "completed" in en.predict(api_name="/status")[0]


def test_a_collapsing_run_shows_a_warning_with_the_settings_to_change(app):
    run_id = trained_run(app)
    run = RunFolder(app.engine.settings.runs_dir / run_id)
    shown = Client(app.url, verbose=False).predict(api_name="/status")
    assert shown[-1] == ""  # the tiny model's answers raise nothing
    for step in (10, 11, 12, 13):  # then the sampled answers collapse (what a GAN run answered in Chat)
        for row in range(2):
            run.append_sample({"step": step, "question": f"who is writer {row} ?", "answer": "E-WIN-" + "I-N-" * 20,
                               "reference": f"the writer {row} was born in a city and wrote {WORDS[row]} fiction ."})
    config = run.read_config()[0]
    english = ["look collapsed", "repeat themselves", "distinct-2", f"lower adv lr (now {config.adv_lr:g})",
               f"higher kl coef (now {config.kl_coef:g})"]
    for headers, words in ((None, english),
                           (RUSSIAN, ["выродилась", "повторяют себя", "меньшим значением «скорость обучения в игре»"])):
        warning = Client(app.url, verbose=False, **({"headers": headers} if headers else {})).predict(
            api_name="/status")[-1]
        assert "role='alert'" in warning
        for word in words:
            assert word in warning, (word, warning)


def test_compare_shows_its_own_job_and_its_runs_at_once_base_first(app, client):
    run_id = trained_run(app, epochs=3)  # its MLE warm-up reports the MLE loss every method reports
    client.predict(api_name="/refresh_lists")  # what a page's load does: the run is among the choices
    # before it starts: how long it will take, from the run's own step times and the loaded model's timed decoding,
    # and what differs from the run
    plan = client.predict(run_id, ["lora"], 1, api_name="/compare_plan")
    assert plan.startswith("This comparison will take about ") and "training lora (" in plan
    assert "evaluating 3 models on 6 test questions and" in plan
    assert "the run's own step times + a measured decoding rate" in plan
    assert f"Settings that differ from {run_id}: lora: method lora" in plan
    # no run picked: a refusal in words, not "no such run: None"
    job = client.submit(None, ["lora"], 1, api_name="/compare")
    job.result(timeout=WAIT)
    assert warnings_of(job) == ["pick a run to compare against first"]

    client.predict(run_id, ["lora"], 1, api_name="/compare")
    status = app.engine.jobs.wait(WAIT)
    assert status.state == "completed", status.error
    lora = next(Path(r).name for r in status.result["runs"] if Path(r).name != run_id)
    lora_name = f"lora ({lora})"  # the name a row goes by, in every table and chart

    # the GAN tuning tab keeps showing its own (training) job, not the comparison's
    gan_status = client.predict(api_name="/status")[0]
    assert "GAN tuning (improved)" in gan_status and run_id in gan_status and "compare" not in gan_status
    # the Compare tab: its job (one counter: its share done), and the runs it compared are shown without a pick
    compare_status, picked = client.predict([], api_name="/compare_status")
    assert state_of(compare_status) == "completed" and f"compare {run_id} with lora" in compare_status
    assert "100%" in compare_status and "step" not in compare_status
    assert picked["value"] == [run_id, lora] and [lora, lora] in picked["choices"]

    notes, quality, unavailable, paired, objectives, distribution, cost, bars, lengths, overlay, diff, winner, \
        retention = map(value_of, client.predict([run_id, lora], "rougeL", "mle_loss", api_name="/compare_view"))
    # the objective × adapter table: the GAN run (explicit D on M_tunable) and LoRA (MLE) in their cells
    assert objectives["headers"] == ["objective", "m-tunable", "lora"]
    assert [r[0] for r in objectives["data"]] == ["MLE", "GAN with a D network"]
    assert [r[0] for r in quality["data"]] == ["base model", run_id, lora_name]  # base first
    assert quality["headers"][2:5] == ["ROUGE-1", "ROUGE-2", "ROUGE-L"] and "facts still answered right" in quality["headers"]
    assert [r[0] for r in distribution["data"]] == ["reference answers", "base model", run_id, lora_name]
    assert [r[0] for r in cost["data"]] == [run_id, lora_name] and cost["data"][1][-2] == "1.00×"
    assert "95% interval" in notes and "the data support" in notes
    assert winner.startswith("**Who won:** ") and "lora" in winner  # in words, from the paired intervals
    assert quality["data"][1][1] == "1" and retention["headers"][1:] == ["facts still answered right",
                                                                         "retention (likelihood)", "retention (ROUGE-L)"]
    # the paired differences the README says to read: each row against lora and base, per question
    pairs = {(r[0], r[1], r[2]) for r in paired["data"]}
    assert (run_id, lora_name, "ROUGE-L") in pairs and (lora_name, "base model", "ROUGE-L") in pairs
    assert all(re.fullmatch(r"-?\d\.\d{3} \[-?\d\.\d{3}; -?\d\.\d{3}\]", r[3]) for r in paired["data"])
    # BLEURT shows "—": why, from the comparison's notes (no checkpoint offline)
    assert "BLEURT is not available here:" in unavailable and "unavailable" in unavailable
    bar_figure = json.loads(bars["plot"])
    assert bar_figure["data"][0]["x"] == ["base model", run_id, lora_name]
    assert {t["name"] for t in json.loads(lengths["plot"])["data"]} == {"reference answers", "base model", run_id,
                                                                         lora_name}
    curves = json.loads(overlay["plot"])
    assert {t["name"] for t in curves["data"]} == {run_id, lora_name}  # named as in the tables
    assert curves["layout"]["showlegend"] is True and "MLE loss" in curves["layout"]["title"]["text"]
    assert curves["config"]["locale"] == "en" and curves["config"]["displaylogo"] is False
    assert diff["headers"][0] == "setting" and "method" in [r[0] for r in diff["data"]]

    # one run alone: its curve still carries its name; no settings diff (nothing to differ)
    shown = client.predict([run_id], "rougeL", "mle_loss", api_name="/compare_view")
    assert [t["name"] for t in json.loads(shown[9]["plot"])["data"]] == [run_id]
    assert shown[10]["visible"] is False


def test_compare_puts_plan_start_and_status_first_and_the_rows_in_the_objective_by_adapter_grid(app):
    from ui.tabs.compare import ADAPTERS, BASELINES, OBJECTIVES, chosen_methods, method_grid

    components = app.demo.config["components"]
    where = {c["props"].get("elem_id"): i for i, c in enumerate(components) if c["props"].get("elem_id")}
    cells = [(i, c) for i, c in enumerate(components) if "gantune-cell" in (c["props"].get("elem_classes") or [])]
    assert where["gantune-compare-plan"] < cells[0][0]  # what one acts on and watches comes before the choice
    status = next(i for i, c in enumerate(components) if c["type"] == "html" and i > where["gantune-compare-plan"])
    assert status < cells[0][0]
    grid = method_grid()
    assert len(cells) == sum(bool(rows) for rows in grid.values()) and len(grid) == len(OBJECTIVES) * len(ADAPTERS)
    shown = [[choice[1] for choice in c["props"]["choices"]] for _, c in cells]
    assert sorted(row for cell in shown for row in cell) == sorted(BASELINES)
    assert grid[("mle", "lora")] == ["lora"] and grid[("implicit", "lora")] == ["gan-lora-implicit"]
    assert grid[("mle", "full")] == ["full"] and not grid[("explicit", "full")]
    assert chosen_methods(["gan-lora"], None, ["lora"]) == ["lora", "gan-lora"]  # the API's list, in BASELINES' order


def test_gan_tuning_keeps_the_few_settings_a_student_changes_in_view_and_folds_the_rest_by_what_they_act_on(app):
    from ui.tabs.tuning import FIELDS, IN_VIEW, settings_groups

    groups = settings_groups()
    assert groups["main"] == list(IN_VIEW) and list(groups)[1:] == ["generator", "discriminator", "policy", "run"]
    assert sorted(n for names in groups.values() for n in names) == sorted(FIELDS)  # each setting in one place
    assert "d_loss" in groups["discriminator"] and "pg_estimator" in groups["policy"]
    components = {c["id"]: c for c in app.demo.config["components"]}

    def folds(node: dict, inside: tuple = ()) -> dict[str, tuple]:
        """Each setting's label key → the titles of the accordions it sits in."""
        me = components.get(node["id"], {})
        here = inside + ((me["props"].get("label"),) if me.get("type") == "accordion" else ())
        key = re.search(r'"key": "(field_\w+)"', str(me.get("props", {}).get("label")))  # a label Gradio translates
        found = {key.group(1): here} if key and me.get("type") != "accordion" else {}
        for child in node.get("children", []):
            found.update(folds(child, here))
        return found

    placed = folds(app.demo.config["layout"])
    assert all(placed[f"field_{name}"] == () for name in IN_VIEW)
    assert all(len(placed[f"field_{name}"]) == 1 for group in ("generator", "discriminator", "policy", "run")
               for name in groups[group])


def test_no_settings_link_to_gradios_english_only_panels(app):
    assert app.demo.config["footer_links"] == ["api", "gradio"]  # theme, Screen Studio, PWA: Gradio's, untranslated
