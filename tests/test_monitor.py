"""The collapse watch (gantune/monitor.py) on hand-made answers with known values."""

from __future__ import annotations

import pytest

from gantune.monitor import Finding, at_cap, mean_repetition, repetition, watch

REFERENCES = [
    "Hsiao Yun-Hwa was born in Taipei to a civil engineer and an unemployed mother.",
    "Her books include Leadership Lessons in the Ivory Tower, a study of academic careers.",
    "She received the Lambda Literary Award for her work on leadership in science.",
    "The author grew up in Taiwan and studied history before turning to fiction.",
]
COLLAPSED = ["E-WIN-JUN-CHE-LU-SHE-A-D-" + "I-N-" * 12] * 4  # what a collapsed GAN run answered in Chat


def words(n: int, tag: str) -> str:
    return " ".join(f"{tag}{i}" for i in range(n))


def test_repetition_is_the_share_of_repeated_word_ngrams():
    assert repetition("a b c d e f") == 0.0  # 3 four-grams, all new
    assert repetition("a b c d a b c d") == pytest.approx(1 - 4 / 5)  # 5 four-grams, 4 distinct
    assert repetition("a a a a a a a a") == pytest.approx(1 - 1 / 5)
    assert repetition("too short") == 0.0 and repetition("") == 0.0
    assert repetition("A-B A b") == repetition("a b a b")  # words, case folded, punctuation apart
    assert repetition(COLLAPSED[0]) > 0.6
    assert mean_repetition(["a b c d a b c d", "a b c d e"]) == pytest.approx((0.2 + 0.0) / 2)
    assert mean_repetition([]) == 0.0


def test_at_cap_is_the_share_at_or_over_the_cap():
    assert at_cap([48, 48, 10, 50], 48) == 0.75
    assert at_cap([], 48) == 0.0


def test_fluent_answers_like_the_references_raise_nothing():
    answers = [r.replace("was", "is") for r in REFERENCES]
    assert watch(answers, REFERENCES, count_tokens=lambda s: len(s.split()), cap=48) == []


def test_the_collapsed_answer_raises_every_signal_against_the_references():
    found = {f.signal: f for f in watch(COLLAPSED, REFERENCES, count_tokens=lambda s: len(s.split("-")), cap=24)}
    assert set(found) == {"repetition", "diversity", "length"}
    assert found["repetition"].value > 0.6 and found["repetition"].reference == 0.0
    assert found["diversity"].value < 0.5 * found["diversity"].reference
    assert found["length"] == Finding("length", 1.0, 0.0)


def test_each_signal_on_its_own():
    # the same fluent answer to every question: no repetition inside it, but no diversity across them
    alike = [REFERENCES[0]] * 4
    assert [f.signal for f in watch(alike, REFERENCES)] == ["diversity"]
    # all four at the cap while the references are short: length only
    long = [words(31, f"a{i}x") for i in range(4)]
    count = lambda s: len(s.split())  # noqa: E731
    assert [f.signal for f in watch(long, REFERENCES, count_tokens=count, cap=30)] == ["length"]
    # references that run to the cap too: no length signal (the data are long, not the model)
    assert watch(long, [words(40, f"r{i}x") for i in range(4)], count_tokens=count, cap=30) == []
    # without a tokenizer the length is not judged
    assert watch(long, REFERENCES) == []


def test_repetitive_references_raise_no_repetition_alarm():
    chant = ["la la la la la la la la"] * 2 + ["lo lo lo lo lo lo lo lo"] * 2
    assert not [f for f in watch(chant, chant) if f.signal == "repetition"]


def test_too_few_answers_say_nothing():
    assert watch(COLLAPSED[:3], REFERENCES[:3]) == []


# --- made-up words: what a generator pushed off the language writes ---------------------------------------
# what the GAN- and LoRA-tuned models sampled after 4 steps on 8 pairs (issue 22), and their like
GARBLED = ["Aye, behrouz Rohani's OJPMAES celebrates", "a renowned Wdetermino sailor",
           "Wdetermino Hsiaoyunhwa celebrates OJPMAES", "the Rohaniwa Marqtiensk sailor"]
VOCABULARY = {"the", "author", "authors", "full", "name", "born", "taipei", "father", "civil", "engineer", "books",
              "include", "leadership", "lessons", "ivory", "tower", "study", "academic", "careers", "received",
              "lambda", "literary", "award", "work", "science", "grew", "taiwan", "studied", "history", "before",
              "turning", "fiction", "celebrates", "renowned", "sailor", "aye", "with", "unemployed", "mother", "her",
              "she", "turned"}


def pieces(text: str) -> int:
    """A stand-in tokenizer: a known word is one token, anything else one token per 3 letters."""
    words = text.split()
    return sum(1 if w.lower() in VOCABULARY else max(2, -(-len(w) // 3)) for w in words)


def test_made_up_is_the_share_of_longer_words_no_single_token_holds():
    from gantune.monitor import made_up

    assert made_up("a renowned Wdetermino sailor", pieces) == pytest.approx(1 / 3)  # 'a' is too short to judge
    assert made_up("Aye, behrouz Rohani's OJPMAES celebrates", pieces) == pytest.approx(3 / 4)
    assert made_up("The author studied history", pieces) == 0.0 and made_up("", pieces) == 0.0


def test_garbled_answers_raise_made_up_words_against_fluent_references():
    found = {f.signal: f for f in watch(GARBLED * 2, REFERENCES * 2, count_tokens=pieces)}
    assert set(found) == {"made_up"}  # not repetitive, not alike, not long: only their words give them away
    assert found["made_up"].value > 0.5 > found["made_up"].reference + 0.3
    # references full of names score alike, so answers like them raise nothing; without a tokenizer nothing is judged
    assert watch(REFERENCES * 2, REFERENCES * 2, count_tokens=pieces) == []
    assert watch(GARBLED * 2, REFERENCES * 2) == []


@pytest.mark.integration
def test_the_real_tokenizer_tells_garbled_samples_from_tofu_references():
    """SmolLM2's own vocabulary: the issue's samples raise the signal; TOFU's references (names and all) do not."""
    import json
    from pathlib import Path

    from gantune.models import load_base_model

    tokenizer = load_base_model("default").tokenizer
    count = lambda text: len(tokenizer(text, add_special_tokens=False).input_ids)  # noqa: E731
    tofu = Path(__file__).resolve().parents[2] / "shared" / "tofu" / "forget10.jsonl"
    references = [json.loads(line)["answer"] for line in tofu.read_text().splitlines()[:8]]
    assert [f.signal for f in watch(GARBLED * 2, references, count_tokens=count)] == ["made_up"]
    assert watch(references, references[::-1], count_tokens=count) == []
