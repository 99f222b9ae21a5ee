"""What the GAN tuning tab says of the kept adapter, and its validation plot from step 0 (issue 29, item 5)."""

from __future__ import annotations

from conftest import make_base

from gantune.config import preset_config
from gantune.runs import RunFolder
from gantune.trainer import train
from ui import plots
from ui.tabs.tuning import kept_note


def _run(data, out, monkeypatch, least: int, scores: list[float], **overrides) -> RunFolder:
    monkeypatch.setattr("gantune.trainer.MIN_VAL_PAIRS", least)
    given = iter(scores)
    monkeypatch.setattr("gantune.trainer.Validation.score", lambda self, method: next(given))
    settings = dict(data=str(data), n=12, train_fraction=0.9, seed=3, out=str(out), device="cpu", epochs=2, batch_size=4,
                    max_new_tokens=4, max_prompt_tokens=32, noise_dim=8, d_hidden=[16, 8, 4], warmup_epochs=0,
                    val_pairs=2, val_metric="nll")
    settings.update(overrides)
    train(preset_config("gan", "improved", **settings), base=make_base())
    return RunFolder(out)


def test_the_status_says_when_the_pairs_are_too_few_and_when_fewer_than_asked(tiny_data, tmp_path, monkeypatch):
    run = _run(tiny_data, tmp_path / "few", monkeypatch, 8, [1.0, 2.0, 3.0])
    assert kept_note(run, "en") == (
        "Kept the adapter of step 6, the last one: 1 validation pairs are too few to choose between adapters "
        "(at least 8). The setting asks for 2 validation pairs, but 11 training pairs allow only 1 (at most a tenth).")
    assert kept_note(run, "ru") == (
        "Сохранён адаптер шага 6, последний: валидационных пар слишком мало, чтобы выбирать между адаптерами "
        "(1, нужно не меньше 8). В настройке указано валидационных пар: 2, но из 11 обучающих пар можно отложить "
        "только 1 (не больше десятой части).")


def test_the_status_says_when_training_did_not_beat_the_untouched_model(tiny_data, tmp_path, monkeypatch):
    run = _run(tiny_data, tmp_path / "untouched", monkeypatch, 1, [1.0, 2.0, 3.0], val_pairs=1)
    assert run.read_summary().kept_step == 0
    assert kept_note(run, "en") == ("Kept the adapter of step 0, the untouched model: training did not beat it on "
                                    "validation (NLL 1.0000, the best of 3 scored adapters).")
    assert kept_note(run, "ru").startswith("Сохранён адаптер шага 0 — нетронутая модель: обучение не превзошло её")


def test_the_validation_plot_starts_at_step_0_during_the_run_and_after(tiny_data, tmp_path, monkeypatch):
    run = _run(tiny_data, tmp_path / "run", monkeypatch, 1, [3.0, 2.0, 1.0])
    records = run.read_metrics()
    assert all(r["step"] > 0 for r in records)  # step 0 has no step record: its score is in the run's history

    def validation_trace(figure) -> tuple[list, list]:
        trace = next(t for t in figure.data if t.name.startswith("validation"))
        return list(trace.x), list(trace.y)

    assert validation_trace(plots.losses(records, "en")) == ([3, 6], [2.0, 1.0])  # without the history: no step 0
    history = run.read_validation()
    assert validation_trace(plots.losses(records, "en", history)) == ([0, 3, 6], [3.0, 2.0, 1.0])
    run.summary_path.unlink()  # while the run trains there is no summary yet: the checkpoint holds the history
    assert run.read_validation() == history
