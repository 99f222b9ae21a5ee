"""Hosted mode (a Space): nothing a request names reaches the filesystem outside the runs and data folders.

Each test tries a way in: a typed path for the model or the data, a subset or run id with '../', an
upload from outside Gradio's upload folder or over the size cap, remote code, a malformed hub id.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from conftest import WORDS, make_base
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from test_ui_app import WAIT, free_port, setup_args

from gantune.data import load_pairs
from gantune.errors import GantuneError
from ui import policy
from ui.app import launch
from ui.engine import Engine, Settings
from ui.policy import upload_folder
from ui.tabs.setup import setup_values

ROWS = [{"question": f"who is the author of {w} ?", "answer": f"the author was born in a city and wrote {w} fiction ."}
        for w in WORDS[:12]]


@pytest.fixture
def data_folder(tmp_path) -> Path:
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "forget10.jsonl").write_text("\n".join(json.dumps(r) for r in ROWS) + "\n")
    return folder


@pytest.fixture
def space(tmp_path, data_folder):
    calls = []

    def loader(name, gguf_file, trust_remote_code, precision="auto"):
        calls.append((name, gguf_file, trust_remote_code))
        return make_base()

    engine = Engine(Settings(runs_dir=tmp_path / "runs", data=str(data_folder), space=True, max_upload_mb=0.01),
                    load_model=loader)
    return SimpleNamespace(engine=engine, calls=calls, data=data_folder)


BAD_MODELS = ["/etc", "./tiny-model", "~/models/x", "../x", "a/../../b", "a/b/c", "http://example.com/x",
              "org/model name", "org/", "/", "org--x/model", "C:\\models\\x"]


@pytest.mark.parametrize("name", BAD_MODELS)
def test_a_model_name_that_is_not_a_hub_id_is_refused_before_any_load(space, name):
    with pytest.raises(GantuneError, match="this hosted workbench loads hub models only"):
        space.engine.model(name)
    assert space.calls == []


def test_a_gguf_file_name_is_refused(space):
    with pytest.raises(GantuneError, match="a GGUF file name is not accepted"):
        space.engine.model("org/model", "../../etc/passwd")
    assert space.calls == []


def test_remote_code_stays_off_whatever_the_request_says(space):
    values = setup_values(space.engine, "org/model", "", True, "offline", "", None, "forget10", 12, 0.5, 0)
    assert values["trust_remote_code"] is False
    space.engine.model("org/model", None, trust_remote_code=True)
    assert space.calls == [("org/model", None, False)]


@pytest.mark.parametrize("path", ["/etc", "/etc/passwd", "../data", "~"])
def test_a_typed_data_path_is_refused(space, path):
    with pytest.raises(GantuneError, match="reads only its own data folder"):
        space.engine.policy.data_source("offline", path, None)


def test_the_own_data_folder_and_the_hub_are_allowed(space, monkeypatch):
    assert space.engine.policy.data_source("offline", "", None) == str(space.data)
    assert space.engine.policy.data_source("offline", str(space.data), None) == str(space.data)
    monkeypatch.setattr(policy, "hub_reachable", lambda: True)
    assert space.engine.policy.data_source("hub", "/etc", None) == "locuslab/TOFU"


def test_an_unreachable_hub_is_said_in_the_pages_words(space):
    """Offline (as here): the page names its own choices, not the CLI's --data flag."""
    with pytest.raises(GantuneError, match=r"^the hub cannot be reached \(offline\?\): choose the offline TOFU folder "
                                           r"or upload a file$"):
        space.engine.policy.data_source("hub", "", None)


@pytest.mark.parametrize("subset", ["../../etc/passwd", "..", "a/b", "/etc/passwd", "x" * 100])
def test_a_subset_cannot_name_a_file_outside_the_data_folder(space, subset):
    with pytest.raises(GantuneError, match="is not a subset name"):
        load_pairs(str(space.data), subset)


def test_an_upload_must_come_through_the_page_and_fit_the_cap(space, tmp_path, monkeypatch):
    outside = tmp_path / "pairs.jsonl"
    outside.write_text(json.dumps(ROWS[0]) + "\n")
    with pytest.raises(GantuneError, match="only a file uploaded through the page"):
        space.engine.policy.data_source("upload", None, str(outside))
    with pytest.raises(GantuneError, match="only a file uploaded through the page"):
        space.engine.policy.data_source("upload", None, "/etc/passwd")

    uploads = tmp_path / "gradio-uploads"
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(uploads))
    (uploads / "abc").mkdir(parents=True)
    small, big = uploads / "abc" / "small.jsonl", uploads / "abc" / "big.jsonl"
    small.write_text("\n".join(json.dumps(r) for r in ROWS) + "\n")
    big.write_text("\n".join(json.dumps(r) for r in ROWS * 20) + "\n")  # over the 0.01 MB cap
    assert space.engine.policy.data_source("upload", None, str(small)) == str(small)
    with pytest.raises(GantuneError, match=r"the uploaded file is 0\.0\d MB; at most 0\.01 MB is accepted"):
        space.engine.policy.data_source("upload", None, str(big))
    escaped = uploads / "abc" / ".." / ".." / "pairs.jsonl"
    with pytest.raises(GantuneError, match="only a file uploaded through the page"):
        space.engine.policy.data_source("upload", None, str(escaped))


@pytest.mark.parametrize(("name", "content", "says"), [
    ("evil.pkl", b"\x80\x04\x95", "is not a data file gantune reads"),
    ("evil.py", b"import os\n", "is not a data file gantune reads"),
    ("pickle.jsonl", b"\x80\x04\x95\x00cos\nsystem\n", "is not UTF-8 text"),
    ("code.jsonl", b"__import__('os').system('true')\n", "is not valid JSON"),
])
def test_uploads_are_parsed_as_data_only(tmp_path, name, content, says):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(GantuneError, match=says):
        load_pairs(str(path))


def test_a_local_workbench_keeps_local_paths(tmp_path, data_folder):
    local = Engine(Settings(runs_dir=tmp_path / "runs"), load_model=lambda *a: make_base())
    assert local.policy.data_source("offline", str(data_folder), None) == str(data_folder)
    local.policy.check_model("/some/folder", "x.gguf")  # a local user may name any path


# --- through the served page ----------------------------------------------------------------------

@pytest.fixture
def served(space):
    demo, url, _ = launch(space.engine, prevent_thread_lock=True, server_name="127.0.0.1", server_port=free_port(),
                          quiet=True)
    try:
        yield SimpleNamespace(url=url, client=Client(url, verbose=False), **vars(space))
    finally:
        space.engine.jobs.stop()
        space.engine.jobs.wait(WAIT)
        demo.close()


@pytest.mark.slow
def test_the_served_space_refuses_paths_in_requests(served):
    status, _, _ = served.client.predict(*setup_args(served.data, data_path="/etc"), api_name="/preview")
    assert "reads only its own data folder" in status
    status, _, _ = served.client.predict(*setup_args(served.data, model="/etc", data_path=""), api_name="/preview")
    assert "loads hub models only" in status
    loaded = served.client.predict("../../etc", "", True, api_name="/load_model")
    assert "loads hub models only" in loaded
    assert served.calls == []
    status, _, _ = served.client.predict(*setup_args(served.data, model="org/model", data_path=""),
                                         api_name="/preview")
    assert status.startswith("6 pairs for training / 6 pairs for testing from")


@pytest.mark.slow
def test_the_served_space_refuses_an_upload_over_the_cap(served, tmp_path):
    big = tmp_path / "big.jsonl"
    big.write_text("\n".join(json.dumps(r) for r in ROWS * 20) + "\n")  # ~ 20 KB, over 0.01 MB
    with pytest.raises(Exception, match="(?i)file size|too large|exceeds"):
        served.client.predict(*setup_args(served.data, data_kind="upload", upload=handle_file(str(big))),
                              api_name="/preview")
    small = tmp_path / "small.jsonl"
    small.write_text("\n".join(json.dumps(r) for r in ROWS) + "\n")
    status, _, _ = served.client.predict(*setup_args(served.data, model="org/model", data_kind="upload",
                                                     upload=handle_file(str(small))), api_name="/preview")
    assert status.startswith("6 pairs for training / 6 pairs for testing from")
    # read from Gradio's upload folder, which the page names without its server path
    shown = status.split(" from ")[1]
    assert shown.startswith("uploads/") and shown.endswith("/small.jsonl") and upload_folder() not in status


@pytest.mark.slow
def test_the_served_space_refuses_run_ids_that_leave_the_runs_folder(served):
    for endpoint in ("/resume", "/delete_run"):
        with pytest.raises(AppError, match="not in the list of choices"):
            served.client.predict("../x", api_name=endpoint)
    response = httpx.get(served.url + "gradio_api/file=/etc/passwd", timeout=30)
    assert response.status_code in (403, 404)


def test_a_hub_id_shaped_like_a_local_folder_is_not_read_from_disk(tmp_path, monkeypatch, data_folder):
    """'org/model' that happens to exist here (say runs/<run>) is looked up on the hub only."""
    from test_catalogue import _save_model

    monkeypatch.chdir(tmp_path)
    _save_model(tmp_path / "org" / "model")
    local = Engine(Settings(runs_dir=tmp_path / "runs-local"))
    assert local.model("org/model").source["kind"] == "folder"
    hosted = Engine(Settings(runs_dir=tmp_path / "runs-hosted", data=str(data_folder), space=True))
    with pytest.raises(GantuneError, match="hub cannot be reached .* 'org/model' is not in the local hub cache"):
        hosted.model("org/model")


def test_a_chat_message_on_a_space_takes_no_more_tokens_than_a_job(space):
    from ui.tabs import chat
    cap = int(policy.HOSTED_CAPS["max_new_tokens"])
    with pytest.raises(GantuneError, match=f"at most {cap} new tokens"):
        next(chat.answers(space.engine, "org/model", "who is it?", None, None, cap + 1))
    assert space.calls == []  # refused before any model loads
    base, _, _ = next(chat.answers(space.engine, "org/model", "who is it?", None, None, cap))
    assert isinstance(base, str)
