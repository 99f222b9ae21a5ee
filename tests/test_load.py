"""Load: 20 gradio_client clients drive the launched workbench at once for about a minute.

The server (tests/load_server.py, the tiny talkative Llama) runs in a process of its own on a
loopback port, so the clients here do not share its GIL and psutil reads its memory alone. The 20
clients connect (each its own session), then, together and with a short think time between calls,
mix /status polls (most often: a page's 2 s timer), /list_runs, /chat (8 new tokens) and /start
presses. Client 0 starts one GAN job first; the others press Start while it runs and must get the
"a job is running" warning, never a second job. Presses end when the job is a few steps from its
end (a late press that still started a job is stopped at once and reported). The load lasts
$GANTUNE_LOAD_SECONDS (default 60), longer only while the job still runs.

Asserted, whatever the machine's speed: no error response (an exception, a timeout, a malformed
result, a warning other than the busy one): every poll answered; the job completed (its summary.json
and /list_runs); the server's RSS, once the clients have left, is steady and within a bound of its
level before. Timings are figures, not asserted: printed (``pytest -s`` or ``-rA``) and written as
JSON to $GANTUNE_LOAD_REPORT when set; benchmarks/load_latency.py runs this test and checks /status's
p95 against a bound. Every wait is bounded.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import math
import os
import queue
import random
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
from gradio_client import Client
from test_ui_app import progress, start_args, state_of, warnings_of

pytestmark = pytest.mark.load

SERVER = Path(__file__).resolve().parent / "load_server.py"
CLIENTS = 20
SECONDS = float(os.environ.get("GANTUNE_LOAD_SECONDS", "60"))
EPOCHS = max(2, round(SECONDS * 2 / 3))  # 3 steps an epoch: 120 steps at 60 s, most of the load
THINK = (0.5, 1.5)  # seconds between one client's calls: ~1 call/s each, status every ~2 s like a page
MIX = {"/status": 0.55, "/list_runs": 0.15, "/chat": 0.15, "/start": 0.15}  # /start: a status poll once closed
LAST_PRESS_MARGIN = 8  # steps: no Start press once the job is this close to its end
CALL_TIMEOUT = 60.0  # any single call
SERVER_START = 120.0  # the server's URL line
CONNECT = 120.0  # all clients connected
JOB_GRACE = 90.0  # how long past SECONDS the load may go on while the job still runs
SETTLE = 10.0  # seconds of RSS sampling once the clients have left
RSS_SLACK_MB = 150.0  # after <= baseline + max(this, 25 % of baseline)
RSS_STEADY_MB = 20.0  # and no longer moving: the spread of the settle samples
BUSY = "a job is running"
QUESTION = "who is the author of a book ?"


@dataclasses.dataclass
class Call:
    endpoint: str  # an api name, or "connect" (a Client made: config and API info fetched)
    seconds: float
    error: str | None = None
    busy: bool = False  # a Start press answered with the busy warning
    at: float = dataclasses.field(default_factory=time.monotonic)  # when it ended


class Shared:
    """What the clients learn together: the job (from the first Start and every status poll) and every call."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: list[Call] = []
        self.load_start = 0.0  # set when every client has connected
        self.run: str | None = None  # the job's run id
        self.open = threading.Event()  # Start presses allowed (the job runs, not near its end)
        self.done = threading.Event()  # the job ended
        self.final_state: str | None = None
        self.job_ended_at: float | None = None  # when a status poll first saw the job's end
        self.late_jobs: list[str] = []  # runs a late press started (stopped at once)

    def record(self, call: Call) -> None:
        with self.lock:
            self.calls.append(call)

    def observe(self, status_html: str) -> None:
        state, steps, run = state_of(status_html), progress(status_html), _run_of(status_html)
        with self.lock:
            if self.run is None or run != self.run:
                return  # not (yet) the job: a late job is handled by its presser
            if state in ("completed", "stopped", "failed"):
                self.final_state = state
                self.job_ended_at = self.job_ended_at or time.monotonic()
                self.open.clear()
                self.done.set()
            elif steps and steps[1] - steps[0] <= LAST_PRESS_MARGIN:
                self.open.clear()


def _run_of(status_html: str) -> str | None:
    match = re.search(r"run <code>([^<]+)</code>", status_html)
    return match.group(1) if match else None


def _texts(history: list[dict]) -> list[str]:
    out = []
    for message in history or []:
        content = message["content"]
        out.append(content if isinstance(content, str) else "".join(p.get("text", "") for p in content))
    return out


def connect(url: str) -> Client:
    """A client session. ``ssl_verify=False``: the URL is plain http on loopback (no TLS either way), but
    gradio_client opens a fresh httpx client for each request, and with verification on each one loads
    the CA bundle (~45 ms of CPU under the GIL): 20 clients in one process then measured themselves."""
    return Client(url, verbose=False, download_files=False, ssl_verify=False, httpx_kwargs={"timeout": CALL_TIMEOUT})


def call(client: Client, shared: Shared, endpoint: str, *args) -> tuple:
    """One call, timed; returns (outputs, warnings) or (None, None) after recording an error."""
    started = time.monotonic()
    job = client.submit(*args, api_name=endpoint)
    try:
        outputs = job.result(timeout=CALL_TIMEOUT)
    except Exception as exc:  # noqa: BLE001 - every failure is a figure
        job.cancel()
        shared.record(Call(endpoint, time.monotonic() - started, f"{type(exc).__name__}: {exc}"[:300]))
        return None, None
    elapsed = time.monotonic() - started
    if endpoint == "/start" and outputs is not None:
        outputs = outputs[1]  # (the refusal line above the status, the status)
    warnings = warnings_of(job)
    busy = endpoint == "/start" and any(BUSY in w for w in warnings)
    unexpected = [w for w in warnings if not (busy and BUSY in w)]
    shared.record(Call(endpoint, elapsed, f"warning: {unexpected}" if unexpected else None, busy))
    return (None, None) if unexpected else (outputs, warnings)


def check(shared: Shared, endpoint: str, ok: bool, what: str) -> None:
    if not ok:
        shared.record(Call(endpoint, 0.0, f"malformed result: {what}"[:300]))


def client_loop(index: int, url: str, data: Path, shared: Shared, ready: threading.Barrier, clients: list) -> None:
    rng = random.Random(index)
    started = time.monotonic()
    try:
        client = connect(url)
    except Exception as exc:  # noqa: BLE001
        client = None
        shared.record(Call("connect", time.monotonic() - started, f"{type(exc).__name__}: {exc}"[:300]))
    else:
        shared.record(Call("connect", time.monotonic() - started))
        clients.append(client)
    try:
        ready.wait(timeout=CONNECT)  # the load starts with every client connected
    except threading.BrokenBarrierError:
        if client is not None:
            shared.record(Call("connect", 0.0, "the other clients did not all connect"))
        return
    if client is None:
        return
    end, hard_end = shared.load_start + SECONDS, shared.load_start + SECONDS + JOB_GRACE
    if index == 0:  # the job everyone else presses Start against
        outputs, _ = call(client, shared, "/start", *start_args(data, epochs=EPOCHS))
        run = _run_of(outputs) if outputs is not None else None
        if outputs is not None:
            check(shared, "/start", run is not None and state_of(outputs) in ("starting", "running"),
                  f"first Start: {outputs!r:.200}")
        with shared.lock:
            shared.run = run
        (shared.open if run else shared.done).set()  # no job: the load ends on time, the asserts say why
    else:
        time.sleep(rng.uniform(0, THINK[1]))  # users are not in step: the first calls spread over a think time
    while True:
        now = time.monotonic()
        if now >= hard_end or (now >= end and shared.done.is_set()):
            break
        endpoint = rng.choices(list(MIX), weights=list(MIX.values()))[0]
        if endpoint == "/start" and not shared.open.is_set():
            endpoint = "/status"
        if endpoint == "/status":
            outputs, _ = call(client, shared, "/status")
            if outputs is not None:
                check(shared, endpoint, len(outputs) == 7 and "gantune-status" in outputs[0], f"{outputs!r:.200}")
                shared.observe(outputs[0])
        elif endpoint == "/list_runs":
            outputs, _ = call(client, shared, "/list_runs")
            if outputs is not None:
                check(shared, endpoint, len(outputs) == 2 and "data" in outputs[0], f"{outputs!r:.200}")
        elif endpoint == "/chat":
            outputs, _ = call(client, shared, "/chat", QUESTION, None, None, 8, "default", [], [], [])
            if outputs is not None:
                base, _, lora, message, _ = outputs
                check(shared, endpoint, _texts(base)[:1] == [QUESTION] and len(_texts(base)) == 2
                      and _texts(lora)[-1:] == ["(pick a run)"] and message == "", f"{outputs!r:.200}")
        else:
            outputs, warnings = call(client, shared, "/start", *start_args(data, epochs=EPOCHS))
            if outputs is not None and not any(BUSY in w for w in warnings):
                run = _run_of(outputs)
                if run and run != shared.run:  # a press that came too late: not silently kept
                    with shared.lock:
                        shared.late_jobs.append(run)
                        shared.open.clear()  # the job has ended (a new one started): no more presses
                    call(client, shared, "/stop")
                else:
                    check(shared, endpoint, False, f"Start neither warned nor started a job: {outputs!r:.200}")
        time.sleep(rng.uniform(*THINK))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)] if ordered else float("nan")


def latencies(calls: list[Call]) -> dict:
    times = [c.seconds for c in calls if not c.error]
    return {"n": len(times), "p50": round(percentile(times, 0.5), 3), "p95": round(percentile(times, 0.95), 3),
            "max": round(max(times, default=float("nan")), 3)}


def rss_mb(process: psutil.Process) -> float:
    return process.memory_info().rss / 2**20


def rss_samples(process: psutil.Process, seconds: float) -> list[float]:
    """The server's RSS once a second for ``seconds``."""
    samples, deadline = [], time.monotonic() + seconds
    while time.monotonic() < deadline:
        samples.append(rss_mb(process))
        time.sleep(1.0)
    return samples


def close_all(clients: list[Client]) -> None:
    """Client.close() waits up to 1 s for its heartbeat thread: close them side by side."""
    closers = [threading.Thread(target=c.close, daemon=True) for c in clients]
    for closer in closers:
        closer.start()
    for closer in closers:
        closer.join(timeout=10)


@pytest.fixture
def server(tmp_path):
    """The workbench in its own process; yields (url, data path, runs dir, psutil.Process)."""
    log = (tmp_path / "server.log").open("w")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, str(SERVER), str(tmp_path / "runs")], cwd=tmp_path, env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()  # drains stdout
    try:
        try:
            first = lines.get(timeout=SERVER_START)
        except queue.Empty:
            first = ""
        match = re.fullmatch(r"URL (\S+) DATA (.+)", first.strip())
        if not match:
            log.flush()
            pytest.fail(f"the server printed no URL in {SERVER_START:.0f} s ({first!r}); its log:\n"
                        f"{(tmp_path / 'server.log').read_text()[-3000:]}")
        yield match.group(1), Path(match.group(2)), tmp_path / "runs", psutil.Process(proc.pid)
    finally:
        try:
            proc.stdin.close()  # the server stops its job and closes
            proc.wait(timeout=30)
        except (subprocess.TimeoutExpired, OSError):
            proc.kill()
            proc.wait(timeout=30)
        log.close()


def test_twenty_clients_for_a_minute(server, monkeypatch):
    monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", "False")  # the clients' telemetry thread: loopback only
    url, data, runs_dir, process = server
    began = time.monotonic()

    # warm up (lazy imports, the chat model, the first plots), then the memory baseline
    warm = connect(url)
    warm.predict(QUESTION, None, None, 8, "default", [], [], [], api_name="/chat")
    warm.predict(api_name="/list_runs")
    warm.predict(api_name="/status")
    close_all([warm])
    gc.collect()
    baseline = min(rss_samples(process, 3.0))

    # the load: 20 clients connect, then call together until the time is up and the job has ended
    shared, clients, peak, sampling = Shared(), [], [baseline], threading.Event()

    def sample() -> None:
        while not sampling.wait(0.25):
            peak.append(rss_mb(process))

    def begin() -> None:  # the barrier's action, once every client has connected
        shared.load_start = time.monotonic()

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    me = psutil.Process()
    cpu_before = (sum(process.cpu_times()[:2]), sum(me.cpu_times()[:2]))
    ready = threading.Barrier(CLIENTS, action=begin)
    threads = [threading.Thread(target=client_loop, args=(i, url, data, shared, ready, clients), daemon=True,
                                name=f"load-client-{i}") for i in range(CLIENTS)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + CONNECT + SECONDS + JOB_GRACE + CALL_TIMEOUT + 30
    for thread in threads:
        thread.join(timeout=max(1.0, deadline - time.monotonic()))
    load_seconds = time.monotonic() - (shared.load_start or time.monotonic())
    cpu = (sum(process.cpu_times()[:2]) - cpu_before[0], sum(me.cpu_times()[:2]) - cpu_before[1])
    stuck = [t.name for t in threads if t.is_alive()]

    # the clients leave; the server's memory settles
    close_all(clients)
    clients.clear()
    gc.collect()
    sampling.set()
    sampler.join(timeout=5)
    settle = rss_samples(process, SETTLE)
    after = min(settle)

    # the job: its summary.json and its row in the Runs table
    summary_path = runs_dir / (shared.run or "-") / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    last = connect(url)
    try:
        table, _ = last.predict(api_name="/list_runs")
    finally:
        close_all([last])
    rows = {row[0]: row for row in table["data"]}
    listed = rows.get(shared.run, [None, None, None, "missing"])[3]
    late = [(run, rows.get(run, [run, "", "", "missing"])[3]) for run in shared.late_jobs]

    # the figures
    calls = list(shared.calls)
    errors = [c for c in calls if c.error]
    polls = [c for c in calls if c.endpoint == "/status"]
    ended = shared.job_ended_at or math.inf
    windows: dict[int, list[Call]] = {}  # /status p95 in each 5 s of the load: where the slow polls were
    for c in polls:
        windows.setdefault(int((c.at - shared.load_start) // 5), []).append(c)
    figures = {
        "clients": CLIENTS, "load_seconds": round(load_seconds, 1), "requests": len(calls), "errors": len(errors),
        "busy_warnings": sum(c.busy for c in calls), "late_jobs": late,
        "endpoints": {e: latencies([c for c in calls if c.endpoint == e]) for e in ("connect", *MIX)},
        "status_while_job_ran": latencies([c for c in polls if c.at <= ended]),
        "status_after_job": latencies([c for c in polls if c.at > ended]),
        "status_p95_by_5s": [latencies(windows.get(i, []))["p95"] for i in range(max(windows, default=-1) + 1)],
        "job": {"run": shared.run, "state": shared.final_state, "summary_status": summary.get("status"),
                "steps": summary.get("steps"), "seconds": summary.get("seconds"), "epochs": EPOCHS,
                "ended_at_s": round(ended - shared.load_start, 1) if shared.job_ended_at else None},
        "rss_mb": {"baseline": round(baseline, 1), "peak": round(max(peak), 1), "after": round(after, 1),
                   "settle": [round(s, 1) for s in settle]},
        "cpu_seconds": {"server": round(cpu[0], 1), "clients": round(cpu[1], 1)},
        "test_seconds": round(time.monotonic() - began, 1),
    }
    endpoints = " | ".join(f"{e} n={f['n']} p50={f['p50']:.3f} p95={f['p95']:.3f} max={f['max']:.3f}"
                           for e, f in figures["endpoints"].items())
    print(f"\nload figures: {CLIENTS} clients, {figures['load_seconds']} s, {len(calls)} requests, "
          f"{len(errors)} errors, {figures['busy_warnings']} busy warnings, late jobs {late}, "
          f"CPU s server {cpu[0]:.0f} / clients {cpu[1]:.0f}\n"
          f"  {endpoints}\n"
          f"  /status while the job ran {figures['status_while_job_ran']}, after {figures['status_after_job']}, "
          f"p95 by 5 s {figures['status_p95_by_5s']}\n"
          f"  job {figures['job']}\n"
          f"  server RSS MB: baseline {baseline:.1f}, peak {max(peak):.1f}, after {after:.1f}; "
          f"test {figures['test_seconds']} s")
    if os.environ.get("GANTUNE_LOAD_REPORT"):
        Path(os.environ["GANTUNE_LOAD_REPORT"]).write_text(json.dumps(figures, indent=2))

    assert not stuck, f"client threads still running: {stuck}"
    assert not errors, f"{len(errors)} error responses, e.g. {[(c.endpoint, c.error) for c in errors[:5]]}"
    assert figures["busy_warnings"] > 0, "no Start press met the running job"
    # the job's end as /status said it, or, when a late press started the next job before a poll saw the end, as
    # the runs list says it (the status shows the newest job)
    final_state = shared.final_state or (listed if shared.late_jobs else None)
    assert (final_state, summary.get("status"), listed) == ("completed",) * 3, (shared.final_state, summary, listed)
    assert all(state == "stopped" for _, state in late), late
    # the polls happened, while the job ran too, and each one was answered (an unanswered one is an error above)
    assert figures["status_while_job_ran"]["n"] > 0 and all(c.error is None for c in polls), figures["endpoints"]
    assert max(settle) - min(settle) <= RSS_STEADY_MB, f"server RSS still moving after the load: {settle}"
    bound = baseline + max(RSS_SLACK_MB, 0.25 * baseline)
    assert after <= bound, f"server RSS {after:.0f} MB after the load; baseline {baseline:.0f} MB, bound {bound:.0f} MB"
