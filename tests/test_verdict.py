"""Who won, from the paired intervals (gantune.compare.verdict): a pure function of the report's paired entries."""

from __future__ import annotations

from gantune.compare import Finding, verdict


def pair(method: str, versus: str, mean: float, lo: float, hi: float, **extra) -> dict:
    return {"method": method, "versus": versus, "temperature": 0.0, "seeds": [0],
            "rougeL": {"mean": mean, "ci": [lo, hi]}, "semantic": None, **extra}


def test_an_interval_wholly_on_one_side_names_the_better_row_and_a_straddling_one_a_tie():
    paired = [pair("gan", "lora", -0.03, -0.05, -0.01), pair("gan", "base", 0.004, -0.01, 0.02),
              pair("lora", "base", 0.05, 0.02, 0.08)]
    found = verdict(paired, 40)
    assert found == [Finding("lora", "base", "rougeL", 0.05, (0.02, 0.08), True, 40),
                     Finding("lora", "gan", "rougeL", 0.03, (0.01, 0.05), True, 40),  # turned round: lora is better
                     Finding("gan", "base", "rougeL", 0.004, (-0.01, 0.02), False, 40)]


def test_each_pair_once_greedy_only_and_semantic_when_rouge_is_missing():
    paired = [pair("gan", "lora", 0.01, -0.01, 0.03), pair("lora", "gan", -0.01, -0.03, 0.01),
              pair("gan@0.7", "lora@0.7", 0.2, 0.1, 0.3, temperature=0.7),
              {"method": "prompt", "versus": "base", "temperature": 0.0, "seeds": [0, 1], "rougeL": None,
               "semantic": {"mean": 0.1, "ci": [0.05, 0.15]}}]
    found = verdict(paired, 10)
    assert [(f.better, f.worse, f.metric, f.questions) for f in found] == [("prompt", "base", "semantic", 20),
                                                                           ("gan", "lora", "rougeL", 10)]
    assert verdict([], 40) == []
