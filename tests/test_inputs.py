"""Inputs of the wrong shape at both doors (issue 14): data files, numbers beyond what the libraries take,
settings read back from a run, bench flags, and Stop during a comparison's evaluation.

The doors are tests/test_catalogue.py's: the CLI run in-process (exit 2, one ``gantune: error:`` line)
and the workbench served for real, driven through its API with gradio_client (Setup's preview shows
the error; Start warns or the job fails with it). Sizes that need the model (its context, memory)
are refused after it loads and before a run folder holds anything.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import test_catalogue
from conftest import make_base
from test_catalogue import ROWS, _cli_args, _page_args, assert_one_line, page_refusal, run_cli
from test_ui_app import SETUP_ORDER, WAIT, setup_args, state_of

from gantune.budget import check_settings_fit
from gantune.compare import evaluation as compare
from gantune.config import INT64_MAX, SEED_MAX, TrainConfig, preset_config
from gantune.data import QAPair, load_pairs
from gantune.errors import GantuneError
from gantune.evaluate import EvalSettings, Scorers, Stopped, evaluate
from gantune.runs import RunFolder

world, page = test_catalogue.world, test_catalogue.page  # its fixtures: the files and models, the served workbench
GOOD = ROWS[0]

# --- data files -----------------------------------------------------------------------------------

# (id, file name, content, what the user reads): one row per kind of wrong file.
BAD_FILES = [
    # valid JSON in a shape gantune does not take
    ("jsonl-row-a-list", "list.jsonl", b'["who ?", "me"]\n', "list.jsonl:1: each row needs text fields "
     "'question' and 'answer' (this row is a list, not an object)"),
    ("jsonl-row-a-number", "number.jsonl", b"42\n", "(this row is a number, not an object)"),
    ("jsonl-row-null", "null.jsonl", b"null\n", "(this row is null, not an object)"),
    ("field-an-object", "nested.jsonl", b'{"question": {"text": "who ?"}, "answer": "me"}\n',
     "nested.jsonl:1: each row needs text fields 'question' and 'answer' ('question' is an object)"),
    ("field-a-number", "numbers.jsonl", b'{"question": "who ?", "answer": 3}\n', "('answer' is a number)"),
    ("field-a-list", "lists.jsonl", b'{"question": ["who ?"], "answer": "me"}\n', "('question' is a list)"),
    ("field-null", "nulls.jsonl", b'{"question": "who ?", "answer": null}\n', "('answer' is null)"),
    ("field-missing", "missing.jsonl", b'{"question": "who ?"}\n', "('answer' is missing)"),
    ("json-an-object", "object.json", b'{\n  "name": "pairs",\n  "count": 2\n}\n',
     "object.json holds a JSON object with no lists in it; a .json data file is a list of objects"),
    ("json-a-number", "number.json", b"42\n", "number.json holds a number; a .json data file is a list of objects"),
    ("json-a-list-of-texts", "texts.json", b'["who ?", "me"]', "texts.json item 1: each row needs text fields "
     "'question' and 'answer' (this row is text, not an object)"),
    ("json-line-as-jsonl", "pretty.jsonl", json.dumps([GOOD] * 2, indent=2).encode(),
     "pretty.jsonl:1 is not valid JSON (expected one object per line; the whole file is one JSON document: "
     "name it .json)"),
    ("json-broken", "broken.json", b'[\n  {"question": "who ?",\n   "answer": }\n]\n',
     "broken.json is not valid JSON (Expecting value at line 3 column 14)"),
    # text that is not valid Unicode
    ("bad-utf8", "latin1.jsonl", (json.dumps(GOOD) + "\n").encode() + '{"question": "qui a \u00e9crit ?", '
     '"answer": "moi"}\n'.encode("latin-1"), "latin1.jsonl is not UTF-8 text (line 2 has the byte 0xe9)"),
    ("utf16", "utf16.jsonl", (json.dumps(GOOD) + "\n").encode("utf-16-le"),
     "utf16.jsonl is not UTF-8 text (line 1 holds a NUL character: binary data, or UTF-16?)"),
    ("lone-surrogate", "surrogate.jsonl", b'{"question": "who \\ud800 ?", "answer": "me"}\n',
     "surrogate.jsonl:1: 'question' is not valid Unicode text (a lone surrogate, such as a \\ud800 escape)"),
    ("nul-byte", "nul.csv", b"question,answer\nwho \x00?,me\n", "nul.csv is not UTF-8 text (line 2 holds a NUL"),
    ("nul-escape", "nul.jsonl", b'{"question": "who ?", "answer": "me\\u0000"}\n',
     "nul.jsonl:1: 'answer' holds a NUL character"),
    ("surrogate-in-perturbed", "perturbed.jsonl",
     b'{"question": "who ?", "answer": "me", "perturbed_answer": ["you", "\\udfff"]}\n',
     "perturbed.jsonl:1: 'perturbed_answer' is not valid Unicode text"),
    # pathological structure
    ("deeply-nested-jsonl", "deep.jsonl", b"[" * 100_000 + b"]" * 100_000 + b"\n",
     "deep.jsonl:1 is not valid JSON (expected one object per line): nested too deeply"),
    ("deeply-nested-json", "deep.json", b"[" * 100_000 + b"]" * 100_000, "deep.json is not valid JSON (nested too deeply)"),
    ("a-number-of-5000-digits", "digits.jsonl", b'{"question": ' + b"9" * 5000 + b', "answer": "me"}\n',
     "digits.jsonl:1 is not valid JSON (expected one object per line): a number too long to read"),
    ("empty-strings", "empty.jsonl", b'{"question": "", "answer": ""}\n', "empty.jsonl:1: empty question or answer"),
    ("csv-missing-column", "one-column.csv", b"question\nwho ?\n",
     "one-column.csv:1: each row needs text fields 'question' and 'answer' (the header row names 'question')"),
    ("csv-short-row", "short.csv", b"question,answer\nwho ?,me\nwhat ?\n",
     "short.csv:3 has 1 cell but the header has 2 (a comma in unquoted text? put such text in double quotes)"),
    ("csv-long-row", "long.csv", b"question,answer\nwho wrote it ?,she did, in 1990\n", "long.csv:2 has 3 cells"),
    ("csv-field-over-the-limit", "huge.csv", b'question,answer\n"' + b"x" * 200_000 + b'",me\n',
     "huge.csv:2 is not valid CSV: field larger than field limit (131072)"),
]


@pytest.fixture(scope="module")
def bad_files(world) -> Path:
    folder = world.root / "pairs"
    folder.mkdir(exist_ok=True)
    for _, name, content, _ in BAD_FILES:
        (folder / name).write_bytes(content)
    return folder


@pytest.mark.parametrize(("case", "name", "content", "says"), BAD_FILES, ids=[c[0] for c in BAD_FILES])
def test_a_bad_data_file_is_one_line_at_the_cli(capsys, world, bad_files, tmp_path, case, name, content, says):
    code, err = run_cli(capsys, _cli_args(world, {"data": str(bad_files / name)}, tmp_path / "run"))
    line = assert_one_line(code, err)
    assert says in line and "internal error" not in line
    assert f"{bad_files}/{name}" in line  # the file, named in full
    assert not (tmp_path / "run" / "config.json").exists()


@pytest.mark.parametrize(("case", "name", "content", "says"), BAD_FILES, ids=[c[0] for c in BAD_FILES])
def test_a_bad_data_file_is_shown_by_the_page(world, page, bad_files, case, name, content, says):
    preview = page.client.predict(*setup_args(bad_files / name, model=str(world.model)), api_name="/preview")
    assert preview[0].startswith("**Error:**") and says in preview[0], preview[0]
    assert preview[1]["visible"] is False  # no table beside the error
    assert says in page_refusal(page, _page_args(world, {"data": str(bad_files / name)}))


@pytest.mark.parametrize(("name", "content"), [
    ("pretty.json", json.dumps(ROWS, indent=2)),  # a list over many lines, as json.dump(indent=2) writes it
    ("wrapped.json", json.dumps({"version": 1, "data": ROWS}, indent=2)),  # an object holding one list
    ("lines.json", "".join(json.dumps(r) + "\n" for r in ROWS)),  # JSON Lines named .json (datasets' to_json)
    ("crlf.jsonl", "".join(json.dumps(r) + "\r\n" for r in ROWS)),
    ("bom.jsonl", "\ufeff" + "".join(json.dumps(r) + "\n" for r in ROWS)),
    ("bom.json", "\ufeff" + json.dumps(ROWS)),
    ("quoted.csv", "question,answer\n" + "".join(f'"{r["question"]}","{r["answer"]}"\r\n' for r in ROWS)),
])
def test_every_shape_a_data_file_may_take_reads_the_same_pairs(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content.encode())
    pairs, _ = load_pairs(str(path))
    assert pairs == [QAPair(r["question"], r["answer"]) for r in ROWS]


def test_a_line_separator_inside_a_jsonl_string_stays_in_the_text(tmp_path):
    path = tmp_path / "separators.jsonl"
    path.write_text(json.dumps({"question": "who\u2028wrote it ?", "answer": "she\u0085did"}, ensure_ascii=False)
                    + "\n", encoding="utf-8")
    assert load_pairs(str(path))[0] == [QAPair("who\u2028wrote it ?", "she\u0085did")]


def test_a_pretty_printed_json_file_trains_at_the_cli_and_previews_in_the_page(capsys, world, page, tmp_path):
    data = tmp_path / "pairs.json"
    data.write_text(json.dumps(ROWS, indent=2))
    code, err = run_cli(capsys, _cli_args(world, {"data": str(data)}, tmp_path / "run"))
    assert code == 0, err
    preview = page.client.predict(*setup_args(data, model=str(world.model)), api_name="/preview")
    assert preview[0].startswith(f"6 pairs for training / 6 pairs for testing from {data}"), preview[0]


@pytest.mark.parametrize("source", ["a" * 5000 + ".jsonl", "~no-such-user-here/pairs.jsonl", "pairs\0.jsonl"])
def test_an_impossible_data_path_is_one_line(source):
    with pytest.raises(GantuneError, match="no data file or folder at") as caught:
        load_pairs(source)
    assert len(str(caught.value)) < 250 and "\0" not in str(caught.value)


# --- numbers beyond what the libraries take ---------------------------------------------------------

# (id, settings as TrainConfig names, what the user reads): refused before the model loads
BAD_NUMBERS = [
    ("seed-negative", {"seed": -1}, "--seed must be between 0 and 4294967295, the seeds numpy and torch take (got -1)"),
    ("seed-over-32-bits", {"seed": 2**32}, "--seed must be between 0 and 4294967295"),
    ("epochs-over-int64", {"epochs": 2**63}, f"--epochs must be at most {INT64_MAX} (got {2**63})"),
    ("batch-size-over-int64", {"batch_size": 10**30}, "--batch-size must be at most"),
    ("d-hidden-over-int64", {"d_hidden": f"16 {2**64} 4"}, "--d-hidden must be at most"),
    ("clip-over-float32", {"clip": 1e308}, "--clip must be at most 3.403e+38, the largest float32 (got 1e+308)"),
    ("kl-coef-over-float32", {"kl_coef": 1e39}, "--kl-coef must be at most 3.403e+38"),
]
# refused once the model is loaded (its context, free memory), before the run folder holds anything
TOO_BIG = [
    ("answer-over-the-context", {"max_new_tokens": 1000},
     "--max-prompt-tokens 32 + --max-new-tokens 1000 make 1,032 tokens, more than the model's context of 256; lower them"),
    ("noise-dim-beyond-memory", {"noise_dim": 10**12}, "these settings need at least"),
    ("adapter-widths-beyond-memory", {"adapter_hidden": "1000000 1000000"}, "GB of it for M_tunable's 2,000,075.0M parameters"),
    ("discriminator-beyond-memory", {"d_hidden": "1000000 1000000 4"}, "GB of it for the discriminator's"),
    ("samples-beyond-their-bound", {"samples_per_question": 10**12},
     "--samples-per-question must be at most 64 (got 1000000000000)"),
]


@pytest.mark.parametrize(("case", "change", "says"), BAD_NUMBERS + TOO_BIG, ids=[c[0] for c in BAD_NUMBERS + TOO_BIG])
def test_a_number_beyond_the_libraries_is_one_line_at_the_cli(capsys, world, tmp_path, case, change, says):
    code, err = run_cli(capsys, _cli_args(world, change, tmp_path / "run"))
    line = assert_one_line(code, err)
    assert says in line and "internal error" not in line
    assert not (tmp_path / "run" / "config.json").exists()


@pytest.mark.parametrize(("case", "change", "says"), BAD_NUMBERS + TOO_BIG, ids=[c[0] for c in BAD_NUMBERS + TOO_BIG])
def test_a_number_beyond_the_libraries_is_shown_by_the_page(world, page, case, change, says):
    change = dict(change)
    seed = change.pop("seed", None)
    args = _page_args(world, change)
    if seed is not None:  # the seed is Setup's box
        args[1 + SETUP_ORDER.index("seed")] = seed
    shown = page_refusal(page, args)
    says = PAGE_SAYS.get(case, says)  # the page names the field by its label, its numbers in its locale
    assert says in shown and "Traceback" not in shown
    assert state_of(page.client.predict(api_name="/status")[0]) in ("idle", "failed", "completed")  # it answers


PAGE_SAYS = {
    "seed-negative": "seed must be between 0 and 4,294,967,295 (got -1)",
    "seed-over-32-bits": "seed must be between 0 and 4,294,967,295",
    "epochs-over-int64": "epochs must be at most 9,223,372,036,854,775,807 (got 9,223,372,036,854,775,808)",
    "batch-size-over-int64": "batch size must be at most",
    "d-hidden-over-int64": "d hidden must be at most",
    "clip-over-float32": "clip must be at most 3.403e+38 (got 1e+308)",
    "kl-coef-over-float32": "kl coef must be at most 3.403e+38",
    "samples-beyond-their-bound": "samples per question must be at most 64 (got 1,000,000,000,000)",
}


@pytest.mark.parametrize(("method", "change", "says"), [
    ("lora", {"lora_r": 10**12}, "LoRA's"),
    ("prompt-tuning", {"virtual_tokens": 10**12}, "--virtual-tokens 1000000000000 make"),
    ("prefix-tuning", {"virtual_tokens": 240}, "+ --virtual-tokens 240 make 280 tokens, more than the model's context"),
    ("prefix-tuning", {"virtual_tokens": 200, "max_prompt_tokens": 16, "max_new_tokens": 8}, None),
    ("adapter-mle", {"noise_dim": 10**9}, "lower --batch-size, --noise-dim or --adapter-hidden"),
    ("full", {"batch_size": INT64_MAX}, None),  # a batch is at most the training pairs
])
def test_each_method_s_sizes_are_checked_against_the_model(method, change, says):
    config = preset_config(method, **{"max_prompt_tokens": 32, "max_new_tokens": 8, **change})
    if says is None:
        check_settings_fit(config.validate(), make_base(), 6)
        return
    with pytest.raises(GantuneError) as caught:
        check_settings_fit(config.validate(), make_base(), 6)
    assert says in str(caught.value)


@pytest.mark.parametrize("method", ["gan", "adapter-mle", "lora", "prompt-tuning", "prefix-tuning", "full"])
@pytest.mark.parametrize("preset", ["improved", "thesis"])
def test_the_presets_fit_the_tiny_model(method, preset):
    check_settings_fit(preset_config(method, preset), make_base(), 400)


# --- settings read back from a run (config.json's "config") ------------------------------------------

@pytest.mark.parametrize(("values", "says"), [
    ({"epochs": "three"}, "setting 'epochs' must be a whole number (got 'three')"),
    ({"epochs": 3.5}, "setting 'epochs' must be a whole number (got 3.5)"),
    ({"batch_size": True}, "setting 'batch_size' must be a whole number (got True)"),
    ({"lr": "fast"}, "setting 'lr' must be a number (got 'fast')"),
    ({"lr": None}, "setting 'lr' must be a number (got None)"),
    ({"normalize_advantage": "yes"}, "setting 'normalize_advantage' must be true or false (got 'yes')"),
    ({"normalize_advantage": 1}, "setting 'normalize_advantage' must be true or false (got 1)"),
    ({"method": 7}, "setting 'method' must be text (got 7)"),
    ({"data": ["a"]}, "setting 'data' must be text or null (got ['a'])"),
    ({"n": "all"}, "setting 'n' must be a whole number or null (got 'all')"),
    ({"d_hidden": "16 8 4"}, "setting 'd_hidden' must be a list of whole numbers (got '16 8 4')"),
    ({"adapter_hidden": [16, 8.5]}, "setting 'adapter_hidden' must be a list of whole numbers"),
    ({"lora_targets": ["q_proj", None]}, "setting 'lora_targets' must be a list of texts"),
    ({"lr": 10**400}, "setting 'lr' must be at most 3.403e+38"),
    ({"epochs": 3, "nosuch": 1}, "unknown setting(s): nosuch"),
    ([1, 2], "the settings must be a JSON object of named values (got [1, 2])"),
])
def test_settings_of_the_wrong_type_name_the_setting(values, says):
    with pytest.raises(GantuneError) as caught:
        TrainConfig.from_dict(values)
    assert str(caught.value).startswith(says)


def test_settings_of_the_right_type_read_back_as_written():
    for method in ("gan", "lora", "full"):
        for preset in ("improved", "thesis"):
            config = preset_config(method, preset, out="runs/x", data="pairs.jsonl", n=None)
            assert TrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    read = TrainConfig.from_dict({"lr": 1, "clip": 0})  # a whole number is a number
    assert read.lr == 1.0 and isinstance(read.lr, float) and isinstance(read.clip, float)
    assert read.epochs == TrainConfig().epochs  # what is missing takes its default


# --- bench flags --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("args", "says"), [
    (["--seeds", "0", "-1"], "--seeds must be between 0 and 4294967295, the seeds numpy and torch take (got -1)"),
    (["--seeds", str(SEED_MAX + 1)], "--seeds must be between 0 and 4294967295"),
    (["--temperatures", "0", "1e-300"], "--temperatures must be 0 (greedy) or at least 0.01 (got 1e-300)"),
    (["--temperatures", "-0.5"], "--temperatures must be 0 (greedy) or at least 0.01 (got -0.5)"),
    (["--n", "1"], "--n must be at least 2: one pair to train on and one to test (got 1)"),
    (["--epochs", str(2**63)], f"--epochs must be at most {INT64_MAX}"),
    (["--batch-size", "0"], "--batch-size must be at least 1 (got 0)"),
    (["--max-new-tokens", "1000"], "--max-prompt-tokens 128 + --max-new-tokens 1000 make 1,128 tokens, more than the "
     "model's context of 256"),
])
def test_bad_bench_flags_are_one_line_and_write_nothing(capsys, world, tmp_path, args, says):
    out = tmp_path / "bench"
    code, err = run_cli(capsys, ["bench", "--model", str(world.model), "--data", str(world.data), "--bleurt", "none",
                                 "--methods", "adapter-mle", "--n", "6", "--epochs", "1", "--out",
                                 str(out / "report.json"), *args])
    assert says in assert_one_line(code, err)
    assert not any(out.rglob("*.json"))


# --- Stop during evaluation ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def scorers() -> Scorers:
    return Scorers.load(None)


def test_evaluation_stops_between_the_tokens_it_was_asked_in(scorers):
    base = make_base()
    passes = []
    handle = base.model.register_forward_hook(lambda *_: passes.append(1))
    test = [QAPair(r["question"], r["answer"]) for r in ROWS]
    try:
        with pytest.raises(Stopped):
            evaluate(base, None, test, None, scorers, EvalSettings(max_new_tokens=4),
                     should_stop=lambda: len(passes) >= 2)
        assert passes == [1, 1]  # the prompts' pass and one token, then the stop: no third forward
        assert evaluate(base, None, test, None, scorers, EvalSettings(max_new_tokens=4),
                        should_stop=lambda: False)["generations"]  # not asked to stop: it runs to the end
    finally:
        handle.remove()


def test_a_stopped_run_evaluation_writes_no_eval_json(world, scorers, tmp_path, capsys):
    run = tmp_path / "run"
    assert run_cli(capsys, _cli_args(world, {}, run))[0] == 0
    base = make_base()
    test = [QAPair(r["question"], r["answer"]) for r in ROWS]
    with pytest.raises(Stopped):
        compare.evaluate_run(run, base, test, None, scorers, EvalSettings(max_new_tokens=4),
                             should_stop=lambda: True)
    assert not RunFolder(run).eval_path.exists()


def test_stop_during_a_comparison_s_evaluation_ends_the_job(world, page, monkeypatch):
    page.client.predict(*_page_args(world, {}), api_name="/start")
    trained = page.engine.jobs.wait(WAIT)
    assert trained.state == "completed", trained.error
    run_id = Path(trained.run).name
    page.client.predict(api_name="/refresh_lists")  # the run joins the Compare tab's choices

    real, calls = compare.evaluate, []

    def press_stop_at_the_run_s_evaluation(*args, **kwargs):  # base is evaluated first, then the run
        calls.append(args)
        if len(calls) == 2:
            page.client.predict(api_name="/stop_compare")
        return real(*args, **kwargs)

    monkeypatch.setattr(compare, "evaluate", press_stop_at_the_run_s_evaluation)
    page.client.predict(run_id, ["lora"], 1, api_name="/compare")
    status = page.engine.jobs.wait(WAIT)
    assert status.state == "stopped" and len(calls) == 2, status
    assert [row["method"] for row in status.result["rows"]] == ["base"]  # the run's evaluation was cut short
    assert not RunFolder(trained.run).eval_path.exists()  # and left nothing behind
    assert state_of(page.client.predict([], api_name="/compare_status")[0]) == "stopped"
