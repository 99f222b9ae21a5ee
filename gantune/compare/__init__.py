"""Methods side by side: the comparison the bench and the workbench's Compare tab both run.

    rows.py         the registry of rows: each row's method, preset and settings; its adapter, objective and twin
    protocol.py     ``compare_methods``: train the rows (and a given run's settings at further seeds) on each
                    seed's split, evaluate them beside base
    evaluation.py   a run's and the base model's evaluation, each made once and reused by key
    report.py       the report, a pure function of the evaluations: means, intervals, paired differences
    verdict.py      who won, from the paired intervals: findings the page says in words
"""

from .evaluation import EVALUATIONS, evaluate_base, evaluate_run
from .protocol import (
    ComparisonFailed,
    Continuation,
    Progress,
    Split,
    compare_methods,
    compare_with_run,
    recorded_split,
    seeded_splits,
)
from .report import METRIC_KEYS, NOTES, answer_lengths
from .rows import ROWS, baseline_config, row_adapter, row_config, shared_settings, twin
from .verdict import Finding, verdict

__all__ = ["EVALUATIONS", "METRIC_KEYS", "NOTES", "ROWS", "ComparisonFailed", "Continuation", "Finding", "Progress", "Split",
           "answer_lengths", "baseline_config", "compare_methods", "compare_with_run", "evaluate_base", "evaluate_run", "recorded_split", "row_adapter",
           "row_config", "seeded_splits", "shared_settings", "twin", "verdict"]
