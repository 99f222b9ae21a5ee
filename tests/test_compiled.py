"""The compiled decode step (``gantune.compiled``): the eager loop's tokens and log-probabilities in fp32, with and
without M_tunable's hook (changed without a recompile), one graph for prompts of one bucket, Stop between tokens;
which models decode eagerly and why; when ``auto`` compiles; a failed compile said and decoded eagerly."""

from __future__ import annotations

import shutil
from contextlib import nullcontext

import pytest
import torch
from conftest import make_arch_base, make_base
from test_decoding import QUESTIONS, _lively, _prompts, _tuned

from gantune import compiled
from gantune.generation import Stopped, decode

_compiler = pytest.mark.skipif(not (shutil.which("g++") or shutil.which("c++")), reason="inductor needs a C++ compiler")


def needs_compiler(test):
    """A test that compiles a graph: slow (~6-20 s a model), skipped without a C++ compiler."""
    return pytest.mark.slow(_compiler(test))


@pytest.fixture
def decoding():
    """Set the decode mode for a test; put the process' setting back after it."""
    before = compiled.mode()
    yield compiled.set_mode
    compiled.set_mode(before)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A lively tiny base with an adapter-mle method on it (M_tunable hooked on its embeddings when enabled), and
    inductor's caches in a folder of the test's own."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path_factory.mktemp("inductor")))
        base = _lively(make_base(1))
        yield base, _tuned("adapter-mle", base)


def _both(base, tuned, decoding, questions, temperature=0.0, seed=3):
    """Eager and compiled answers to ``questions`` (8 rows: one graph), the tuned model's when ``tuned``."""
    enc, ids, mask = _prompts(base, questions)
    out = {}
    for mode in ("eager", "compiled"):
        decoding(mode)
        with tuned.enabled(len(ids)) if tuned else nullcontext(base.model) as model:
            torch.manual_seed(seed)
            out[mode] = decode(model, ids, mask, base.eos_id, enc.pad_id, 10, temperature)
    return out["eager"], out["compiled"]


@needs_compiler
@pytest.mark.parametrize("temperature", [0.0, 1.0])
@pytest.mark.parametrize("adapter", [False, True])
def test_the_compiled_step_decodes_what_the_eager_loop_decodes(tiny, decoding, adapter, temperature):
    base, tuned = tiny
    eager, graph = _both(base, tuned if adapter else None, decoding, QUESTIONS * 2, temperature)
    assert eager.ids.shape[1] >= 3, "the test needs answers of several tokens"
    assert torch.equal(eager.ids, graph.ids) and torch.equal(eager.mask, graph.mask)
    assert torch.allclose(eager.logp, graph.logp, atol=1e-4)
    assert compiled._STATE[base.model].shapes == {(8, 64)}  # every question of a bucket, one graph


@needs_compiler
@pytest.mark.parametrize("arch", ["gpt2", "gemma"])
def test_embeddings_the_model_changes_itself_are_changed_once(decoding, arch, tmp_path, monkeypatch):
    """GPT-2 adds its position embeddings to the token embeddings, Gemma scales them: both inside the model, so the
    compiled step, handed the token embeddings, must give the eager loop's answers (M_tunable hooked on them)."""
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    base = _lively(make_arch_base(arch))
    eager, graph = _both(base, _tuned("adapter-mle", base), decoding, QUESTIONS * 2)
    assert eager.ids.shape[1] >= 3 and torch.equal(eager.ids, graph.ids)
    assert torch.allclose(eager.logp, graph.logp, atol=1e-4)


@needs_compiler
def test_a_changed_adapter_changes_the_answers_without_a_new_graph(tiny, decoding):
    base, tuned = tiny
    _both(base, tuned, decoding, QUESTIONS * 2)  # the graph made, if no test made it yet
    graphs, spent = set(compiled._STATE[base.model].shapes), compiled.compile_seconds(base.model)
    before = _both(base, tuned, decoding, QUESTIONS * 2)[1]
    saved = [p.detach().clone() for p in tuned.trainable_parameters()]
    try:
        with torch.no_grad():
            for p in tuned.trainable_parameters():
                p.add_(torch.randn_like(p))
        eager, graph = _both(base, tuned, decoding, QUESTIONS * 2)
    finally:
        with torch.no_grad():
            for p, s in zip(tuned.trainable_parameters(), saved):
                p.copy_(s)
    assert not torch.equal(graph.ids, before.ids), "the changed adapter should change some answer"
    assert torch.equal(eager.ids, graph.ids)
    assert compiled._STATE[base.model].shapes == graphs and compiled.compile_seconds(base.model) == spent


@needs_compiler
def test_a_stop_is_honoured_between_compiled_tokens(tiny, decoding):
    base, _ = tiny
    enc, ids, mask = _prompts(base, QUESTIONS * 2)
    decoding("compiled")
    asked = iter(range(10))  # asked before each forward; the fourth answer is yes
    with pytest.raises(Stopped):
        decode(base.model, ids, mask, base.eos_id, enc.pad_id, 10, should_stop=lambda: next(asked) == 3)
    assert next(asked) == 4  # the prompt's pass and two compiled steps, stopped before the third


def test_models_that_are_not_the_frozen_lm_alone_decode_eagerly(decoding, capsys, monkeypatch):
    monkeypatch.setattr(compiled, "_said", set())
    decoding("compiled")
    base = make_base(2)
    lora = _tuned("lora", base)
    with lora.enabled(4) as model:
        assert compiled.decoder(model, 4, 40) is None
    assert "a peft model" in capsys.readouterr().err
    handle = base.model.model.layers[0].register_forward_hook(lambda *_: None)
    assert compiled.decoder(base.model, 4, 40) is None
    assert "a hook on LlamaDecoderLayer" in capsys.readouterr().err
    handle.remove()
    base.model.lm_head.weight.requires_grad_(True)
    assert compiled.decoder(base.model, 4, 40) is None
    assert "weights are being trained" in capsys.readouterr().err
    base.model.lm_head.weight.requires_grad_(False)
    step = compiled.decoder(base.model, 4, 40)
    assert step is not None  # the head's own contiguous-input hook is allowed
    assert compiled.decoder(base.model, 4, 40) is None  # its one cache is in use until the decode is over
    step.release()
    compiled.decoder(base.model, 4, 40).release()
    decoding("eager")
    assert compiled.decoder(base.model, 4, 40) is None


def test_auto_compiles_one_rows_shape_once_its_eager_decoding_has_taken_long_enough(decoding, monkeypatch):
    decoding("auto")
    monkeypatch.setattr(compiled, "AUTO_AFTER_S", 1e-9)
    base = _lively(make_base(3))
    monkeypatch.setattr(compiled.torch, "compile", lambda fn, **_: fn)  # the graph itself is not what this tests
    lengths = {}
    for rows in (1, 4):
        enc, ids, mask = _prompts(base, QUESTIONS[:rows])
        lengths[rows] = ids.shape[1] + 10
        assert compiled.decoder(base.model, rows, lengths[rows]) is None  # nothing decoded yet
        decode(base.model, ids, mask, base.eos_id, enc.pad_id, 10)  # eager: its seconds are counted
    compiled.decoder(base.model, 1, lengths[1]).release()
    assert compiled.decoder(base.model, 1, lengths[1], may_compile=False) is None  # not compiled yet
    assert compiled.decoder(base.model, 1, lengths[1] + compiled.BUCKET) is None  # another shape: nothing counted
    assert compiled.decoder(base.model, 4, lengths[4]) is None  # four rows: slower compiled on this CPU, never in auto
    with pytest.raises(ValueError, match="--decode must be one of"):
        compiled.set_mode("fast")


def test_a_failed_compile_is_said_once_and_the_model_decodes_eagerly(decoding, monkeypatch, capsys):
    base = _lively(make_base(1))
    enc, ids, mask = _prompts(base, QUESTIONS * 2)
    decoding("eager")
    eager = decode(base.model, ids, mask, base.eos_id, enc.pad_id, 10)

    def no_compiler(fn, **_):
        def fails(*args, **kwargs):
            raise RuntimeError("no C++ compiler found\nmore text")
        return fails

    monkeypatch.setattr(compiled.torch, "compile", no_compiler)
    decoding("compiled")
    graph = decode(base.model, ids, mask, base.eos_id, enc.pad_id, 10)
    assert torch.equal(eager.ids, graph.ids) and torch.allclose(eager.logp, graph.logp, atol=1e-5)
    err = capsys.readouterr().err
    assert err.count("decoding eagerly from now on") == 1 and "no C++ compiler found" in err
    assert compiled.decoder(base.model, 8, ids.shape[1] + 10) is None


def test_weights_changed_after_the_compile_are_never_answered_from_the_old_graph(decoding, monkeypatch, capsys):
    """A frozen graph holds the weights it was made from: once the LM's weights change in place, that model decodes
    eagerly (and says why, once)."""
    monkeypatch.setattr(compiled.torch, "compile", lambda fn, **_: fn)  # the bookkeeping, not the graph, is tested
    decoding("compiled")
    base = _lively(make_base(4))
    enc, ids, mask = _prompts(base)
    decode(base.model, ids, mask, base.eos_id, enc.pad_id, 4)
    assert compiled._STATE[base.model].shapes  # decoded by the (here uncompiled) graph path
    with torch.no_grad():
        base.model.model.layers[0].mlp.up_proj.weight.mul_(2.0)
    for _ in range(2):
        assert compiled.decoder(base.model, 4, ids.shape[1] + 4) is None
    assert capsys.readouterr().err.count("weights changed after its decode step was compiled") == 1
