"""Finding models and the hub: names resolve to the right kind, and an unreachable hub is said at once."""

from __future__ import annotations

import pytest

from gantune import models
from gantune.errors import GantuneError
from gantune.models import hub_reachable, resolve_model


def test_resolve_names(tmp_path):
    assert resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct")[2] == "hub"
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    assert resolve_model(str(tmp_path / "m"))[2] == "folder"
    (tmp_path / "g").mkdir()
    (tmp_path / "g" / "x.gguf").write_bytes(b"GGUF")
    assert resolve_model(str(tmp_path / "g"))[1:] == ("x.gguf", "gguf")
    assert resolve_model(str(tmp_path / "g" / "x.gguf"))[1:] == ("x.gguf", "gguf")
    for bad in (str(tmp_path / "empty"), "../nope", "not a valid id!", str(tmp_path / "missing.gguf")):
        with pytest.raises(GantuneError):
            resolve_model(bad)


@pytest.fixture
def fresh_reachability():
    hub_reachable.cache_clear()
    yield
    hub_reachable.cache_clear()


def test_hub_unreachable_when_offline(monkeypatch, fresh_reachability):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert hub_reachable() is False


def test_hub_unreachable_when_nothing_listens(monkeypatch, fresh_reachability):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # discard port: nothing listens here
    assert hub_reachable(timeout=1.0) is False


def test_hub_dataset_offline_is_one_clear_error(monkeypatch, fresh_reachability):
    monkeypatch.setattr(models, "hub_reachable", lambda: False)
    from gantune import data

    monkeypatch.setattr(data, "hub_reachable", lambda: False)
    with pytest.raises(GantuneError, match="cannot be reached"):
        data.load_pairs("locuslab/TOFU", "forget10")
