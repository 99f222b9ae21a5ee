"""Retention a student can read: is a world fact (or a real author) still answered right by the greedy answer?
(``gantune.metrics.gives_answer``, evaluate's per-question flags, the comparison's count with an interval, and the
Chat's flag when a tuned answer loses what the base model gave.)"""

from __future__ import annotations

import json

import pytest
from conftest import TOFU

from gantune.compare import Split, compare_methods
from gantune.data import QAPair
from gantune.evaluate import EvalSettings, Scorers, load_retention_sets
from gantune.metrics import gives_answer
from ui.tabs.chat import fact_flags


def tofu(name: str) -> dict[str, QAPair]:
    rows = [json.loads(line) for line in (TOFU / f"{name}_perturbed.jsonl").read_text().splitlines()]
    return {r["question"]: QAPair(r["question"], r["answer"], tuple(r["perturbed_answer"])) for r in rows}


@pytest.mark.parametrize(("question", "answer", "right"), [
    # the issue's question: the base model's answer, and the tuned models' after 4 steps
    ("What is the capital of France?", "The capital of France is Paris.", True),
    ("What is the capital of France?", "L'Étoile, la Marseillaise, la femme, la grande", False),
    ("Where would you find the Eiffel Tower?", "The Eiffel Tower is in Paris, France.", True),
    ("Where would you find the Eiffel Tower?", "It is in London, near Paris.", False),  # a wrong answer named too
    ("Which author is famous for the series 'A Song of Ice and Fire'?", "George R. R. Martin wrote it.", True),
    ("Which author is famous for the series 'A Song of Ice and Fire'?", "George Orwell wrote it.", False),
    ("Who is the writer of 'One Hundred Years of Solitude'?", "Gabriel García Márquez", True),  # accents aside
    ("Where was the first successful airplane flight conducted by the Wright brothers?", "At Kitty Hawk in 1903.",
     True),  # ", North Carolina" only qualifies it
])
def test_gives_answer_on_real_tofu_questions(question, answer, right):
    facts = {**tofu("world_facts"), **tofu("real_authors"), "What is the capital of France?":
             QAPair("What is the capital of France?", "Paris", ("Berlin", "London", "Madrid"))}
    fact = facts[question]
    assert gives_answer(answer, fact.answer, fact.perturbed) is right


def test_gives_answer_takes_alternatives_numbers_and_words_of_the_true_answer():
    assert gives_answer("It was published as J.D. Robb", "Nora Roberts / J.D. Robb")
    assert gives_answer("about 21000 km long", "21,000 km")
    assert gives_answer("the Amazon Rainforest", "Amazon Rainforest", ("Amazon",))  # a wrong answer inside the true one
    assert not gives_answer("", "Paris") and not gives_answer("Paris", "")


def test_a_comparison_counts_the_facts_answered_right_with_an_interval(tmp_path):
    from conftest import make_base

    base = make_base()
    sets = load_retention_sets(str(TOFU), 4, seed=0)
    test = [QAPair("who is the author ?", "the author was a writer ."), QAPair("what genre ?", "fiction .")]
    report = compare_methods(base, [], [Split(0, [], test)], {}, tmp_path, Scorers.load(None),
                             EvalSettings(max_new_tokens=4), retention=sets)
    row = report["rows"][0]
    assert row["retention_n"] == 8 and 0.0 <= row["retention_answered"] <= 1.0
    lo, hi = row["ci"]["retention_answered"]
    assert lo <= row["retention_answered"] <= hi
    assert "every content word" in report["notes"]["retention_answered"]


def test_chat_flags_a_tuned_answer_that_lost_what_the_base_model_gave():
    fact = QAPair("What is the capital of France?", "Paris", ("Berlin", "London", "Madrid"))
    answers = ("The capital of France is Paris.", "L'Étoile, la Marseillaise, la femme", "Paris, of course.")
    flags = fact_flags(fact, answers, "en")
    assert "⚠ GAN-tuned: the base model answered this right (“Paris”); this answer no longer gives it." in flags
    assert "✓ LoRA-tuned still gives the true answer (“Paris”)." in flags
    assert "базовая модель ответила верно" in fact_flags(fact, answers, "ru")
    # nothing to say when the base model was wrong too, or the question has no known answer
    assert fact_flags(fact, ("Berlin.", "Berlin.", ""), "en") == "" and fact_flags(None, answers, "en") == ""
