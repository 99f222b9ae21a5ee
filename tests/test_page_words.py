"""The page in its language, to the last word: refusals by the field's label, choices, plurals and numbers by a
library's rule (Babel), Plotly's own locale bundle, what each Compare row trains, and what the GAN tuning tab says
when there is nothing to plot or sample yet (ui/i18n.py, ui/plots.py, ui/tabs/*).
"""

from __future__ import annotations

import json
import re

import pytest

from gantune.compare import ROWS
from gantune.config import preset_config
from gantune.data import QAPair, split_pairs
from gantune.errors import GantuneError
from ui import plots
from ui.i18n import EN, METRICS, PLURALS, ROW_DESCRIPTIONS, RU, choice_label, error_text, number, plural
from ui.jobs import JobBusy, JobStatus
from ui.tabs.compare import BASELINES, describe_row, method_choices
from ui.tabs.tuning import samples_html


def refusal(**settings) -> GantuneError:
    with pytest.raises(GantuneError) as caught:
        preset_config("gan", "improved", **settings).validate()
    return caught.value


@pytest.mark.parametrize(("settings", "english", "russian"), [
    ({"epochs": 0}, "epochs must be at least 1 (got 0)", "«эпохи» (--epochs): нужно не меньше 1 (получено 0)"),
    ({"lr": 1e9}, "lr must be a number above 0 and at most 1 (got 1,000,000,000)",
     "«скорость обучения» (--lr): нужно число больше 0 и не больше 1 (получено 1\xa0000\xa0000\xa0000)"),
    ({"batch_size": 0}, "batch size must be at least 1 (got 0)", "«размер батча» (--batch-size): нужно не меньше 1"),
    ({"rollout": "sometimes"}, "rollout must be one of epoch, batch (got 'sometimes')",
     "«сэмплирование» (--rollout): допустимо одно из значений epoch, batch"),
    ({"seed": -1}, "seed must be between 0 and 4,294,967,295 (got -1)",
     "«зерно» (--seed): нужно число от 0 до 4\xa0294\xa0967\xa0295"),
    ({"train_fraction": 1.5}, "train fraction must lie strictly between 0 and 1 (got 1.5)",
     "«доля обучения» (--train-fraction): нужно число строго между 0 и 1"),
])
def test_a_refused_setting_is_named_by_the_pages_field_in_the_pages_language(settings, english, russian):
    exc = refusal(**settings)
    assert str(exc).startswith("--")  # the CLI keeps its flag
    assert error_text(exc, "en").startswith(english)
    assert error_text(exc, "ru").startswith(russian)


def test_the_librarys_refusals_about_pairs_and_a_busy_manager_read_russian_too():
    with pytest.raises(GantuneError) as caught:
        split_pairs([QAPair("q", "a")], None, 0.5, 0)
    assert error_text(caught.value, "ru") == "нужно хотя бы 2 пары (одна для обучения, одна для теста); есть 1"
    with pytest.raises(GantuneError) as caught:
        split_pairs([QAPair("q", "a")] * 12, 40, 0.5, 0)
    assert error_text(caught.value, "en") == "40 pairs asked for, but only 12 are available"
    busy = JobBusy(JobStatus(state="running", kind="train", title="gan (improved)", title_key="title_train",
                             title_args={"preset": "improved"}))
    assert str(busy) == "a job is running (gan (improved)); watch it or stop it first"
    assert error_text(busy, "ru") == ("уже идёт задача (GAN-настройка (улучшенный (improved))); следите за ней или "
                                      "сначала остановите её")
    assert error_text(GantuneError("something the page has no words for"), "ru") == "something the page has no words for"


def test_counted_words_take_the_form_babels_plural_rule_picks():
    assert [plural("ru", "pairs", n) for n in (1, 2, 4, 5, 11, 21, 22, 25)] == [
        "1 пара", "2 пары", "4 пары", "5 пар", "11 пар", "21 пара", "22 пары", "25 пар"]
    assert [plural("en", "pairs", n) for n in (1, 4)] == ["1 pair", "4 pairs"]
    assert plural("ru", "epochs", 1) == "1 эпоха" and plural("ru", "epochs", 2) == "2 эпохи"
    for lang, words in PLURALS.items():  # every counted word has the forms its language's rule can ask for
        needed = {"one", "other"} if lang == "en" else {"one", "few", "many", "other"}
        assert all(set(forms) == needed for forms in words.values()), lang


def test_numbers_are_written_in_the_pages_locale():
    assert number("en", 2714.5, 1) == "2,714.5"
    assert number("ru", 2714.5, 1) == "2\xa0714,5"  # CLDR's Russian: a no-break space between thousands, a comma
    assert number("ru", 0.3125, 3) == "0,312" and number("ru", 135, 0) == "135"


def test_every_choice_of_every_setting_has_russian_words_beside_its_value():
    import dataclasses

    from gantune.config import TrainConfig

    for f in dataclasses.fields(TrainConfig):
        for value in f.metadata.get("choices", ()):
            label = choice_label("ru", f.name, value)
            words = label.removesuffix(f" ({value})")
            assert words != label and (re.search("[а-яё]", words) or words in ("GAN", "LoRA")), (f.name, value, label)
            assert choice_label("en", f.name, value) == value


def test_every_compare_row_says_what_it_trains_in_both_languages():
    missing = {lang: sorted(set(ROWS) - set(words)) for lang, words in ROW_DESCRIPTIONS.items()}
    assert missing == {"en": [], "ru": []}, f"add these rows of gantune.compare.ROWS to ui/locales/*.json 'rows': {missing}"
    assert [value for _, value in method_choices("ru")] == BASELINES
    assert all(re.search("[а-яё]", label) for label, _ in method_choices("ru"))


def test_a_row_without_words_yet_shows_its_method_preset_and_settings(monkeypatch):
    monkeypatch.setitem(ROWS, "gan-new", ("gan", "improved", {"kl_coef": 0.1, "rollout": "batch"}))
    assert describe_row("en", "gan-new") == "gan-new: gan (improved) with kl coef = 0.1, rollout = batch"
    assert describe_row("ru", "gan-new") == ("gan-new: метод GAN (gan) (пресет улучшенный (improved)) с «коэффициент KL» "
                                             "(--kl-coef) = 0,1, «сэмплирование» (--rollout) = по шагам (batch)")


def test_every_metric_has_words_in_both_languages():
    from ui.tabs.compare import DISTRIBUTION, QUALITY

    for lang in ("en", "ru"):
        assert set(QUALITY + DISTRIBUTION) <= set(METRICS[lang]), lang


def test_plots_carry_plotlys_own_locale_bundle():
    shown = json.loads(plots.for_page(plots.memory([{"seconds": 1.0, "memory_mb": 2714.5, "peak_memory_mb": 2714.5}],
                                                   "ru"), "ru").plot)
    config = shown["config"]
    assert config["locale"] == "ru" and config["displaylogo"] is False
    bundle = config["locales"]["ru"]
    assert bundle["dictionary"]["Download plot as a PNG"] == "Сохранить в формате PNG"
    assert bundle["dictionary"]["Autoscale"] and (bundle["format"]["decimal"], bundle["format"]["thousands"]) == (",", " ")
    english = json.loads(plots.for_page(plots.hint("x"), "en").plot)["config"]
    assert english == {"locale": "en", "displaylogo": False}  # plotly's own words


def test_traces_that_may_lie_on_each_other_differ_in_dash_and_marker():
    records = [{"step": s, "phase": "adversarial", "reward_mean": 0.1, "d_acc_real": 1.0, "d_acc_fake": 1.0, "kl": 0.0,
                "seconds": float(s), "memory_mb": 100.0, "peak_memory_mb": 100.0} for s in (1, 2, 3)]
    for fig in (plots.game(records), plots.memory(records)):
        pair = [t for t in fig.data if t.name in ("D accuracy, real", "D accuracy, generated", "in use", "peak")]
        assert len(pair) == 2 and pair[0].line.dash != pair[1].line.dash
        assert pair[0].marker.symbol != pair[1].marker.symbol


def test_the_game_plot_says_the_warm_up_runs_and_a_hint_wraps_inside_the_plot():
    warmup = [{"step": 1, "phase": "mle", "mle_loss": 2.0, "seconds": 1.0}]
    for lang, words in (("en", "The adversarial game starts after the MLE warm-up (2 epochs)"),
                        ("ru", "Состязательная игра начнётся после MLE-разогрева (2 эпохи)")):
        text = plots.game(warmup, lang, warmup_epochs=2).layout.annotations[0].text
        assert text.replace("<br>", " ").startswith(words)
        assert all(len(line) <= plots.HINT_WIDTH for line in text.split("<br>"))
    assert plots.game([], "en", warmup_epochs=2).layout.annotations[0].text.startswith("No run to show yet")


@pytest.mark.parametrize(("settings", "records", "active", "says"), [
    # the run: sample every 5, 4 steps of which 2 adversarial (warm-up 2 asked for, 1 possible with 2 epochs)
    ({"epochs": 2, "warmup_epochs": 2, "sample_every": 5}, [1, 2, 3, 4], False,
     "No answers were recorded: the adversarial phase ran steps 3–4, and answers are recorded every 5 steps."),
    ({"epochs": 2, "warmup_epochs": 2, "sample_every": 5}, [1], True,
     "after the MLE warm-up (1 epoch)"),  # the warm-up the run really has: at most epochs - 1
    ({"epochs": 3, "sample_every": 0}, [1, 2], False, "records no sampled answers"),
    ({"epochs": 3, "warmup_epochs": 2, "sample_every": 1}, [1, 2], False, "never reached its adversarial phase"),
])
def test_no_samples_says_why(settings, records, active, says):
    config = preset_config("gan", "improved", **settings)
    steps_per_epoch = 2
    rows = [{"step": s, "phase": "mle" if s <= steps_per_epoch * min(config.warmup_epochs, config.epochs - 1)
             else "adversarial"} for s in records]
    assert says in samples_html([], config, rows, active, "en")
    assert not re.search(r"\(s\)", samples_html([], config, rows, active, "ru"))


def test_the_english_and_russian_catalogues_say_every_key():
    assert set(EN) == set(RU)


@pytest.mark.parametrize("lang", ["en", "ru"])
def test_the_objective_by_adapter_table_reads_each_cell_and_its_twin(lang):
    from ui.tabs.compare import Row, View, objective_table

    diff = {"mean": 0.0123, "ci": [-0.004, 0.031]}
    cells = [{"objective": "mle", "adapter": "m-tunable", "row": "adapter-mle", "rougeL": 0.301, "vs_twin": None},
             {"objective": "implicit", "adapter": "m-tunable", "row": "gan-implicit", "rougeL": 0.313,
              "vs_twin": {"rougeL": diff, "semantic": None}},
             {"objective": "mle", "adapter": "lora", "row": "lora", "rougeL": 0.322, "vs_twin": None}]
    rows = [Row(c["row"], {"rougeL": c["rougeL"]}, seeds=[0], method="gan", runs=[]) for c in cells]
    table = objective_table(View(rows, None, {}, [], cells), lang)
    assert list(table.columns) == [("objective" if lang == "en" else "цель обучения"),
                                   choice_label(lang, "adapter", "m-tunable"), choice_label(lang, "adapter", "lora")]
    mle, implicit = table.values.tolist()
    assert mle[1].endswith(number(lang, 0.301, 3)) and mle[2].endswith(number(lang, 0.322, 3))
    assert implicit[2] == "—" and number(lang, 0.0123, 3) in implicit[1] and number(lang, -0.004, 3) in implicit[1]
    assert objective_table(View(rows, None, {}, [], cells[::2]), lang).empty  # one objective: nothing to compare


@pytest.mark.parametrize(("lang", "words"), [
    ("en", "**Who won:** lora answers closer to the references than gan (ROUGE-L +0.030 [+0.010, +0.050]); gan and "
           "base model cannot be told apart on these 40 test questions."),
    ("ru", "**Кто лучше:** lora отвечает ближе к эталонным ответам, чем gan (ROUGE-L +0,030 [+0,010; +0,050]); gan и "
           "базовая модель неразличимы на 40 тестовых вопросах."),
])
def test_compare_names_the_winner_in_words_from_the_paired_intervals(lang, words):
    from ui.tabs.compare import Row, View, verdict_text

    paired = [{"method": "gan", "versus": "lora", "temperature": 0.0, "seeds": [0],
               "rougeL": {"mean": -0.03, "ci": [-0.05, -0.01]}},
              {"method": "gan", "versus": "base", "temperature": 0.0, "seeds": [0],
               "rougeL": {"mean": 0.001, "ci": [-0.02, 0.02]}}]
    v = View([Row("gan", {}), Row("lora", {})], None, {}, paired, [], 40)
    assert verdict_text(v, lang) == words
    assert verdict_text(View([], None), lang) == ""


def test_the_quality_table_counts_seeds_and_keeps_one_retention_figure_the_others_in_details():
    from ui.tabs.compare import QUALITY, Row, View, retention_table, tables

    values = {"rougeL": 0.3, "retention_answered": 0.25, "retention": 0.375, "retention_rougeL": 0.05, "retention_n": 8}
    v = View([Row("lora", values, seeds=[0, 1, 2], method="lora")], None)
    quality = tables(v, "en")[0]
    assert quality.iloc[0, 1] == "3" and [k for k in QUALITY if k.startswith("retention")] == ["retention_answered"]
    assert list(quality.columns)[-1] == "facts still answered right"
    details = retention_table(v, "en")
    assert list(details.columns) == ["run", "facts still answered right", "retention (likelihood)",
                                     "retention (ROUGE-L)"]
    assert details.values.tolist() == [["lora", "2 of 8 (25%)", "0.375", "0.050"]]
    assert retention_table(View([Row("lora", {"rougeL": 0.3})], None), "en").empty


def test_answer_lengths_are_grouped_bars_not_overlaid():
    figure = plots.answer_lengths({"reference answers": [3, 5, 8], "lora": [4, 4, 9]})
    assert figure.layout.barmode == "group" and all(trace.opacity is None for trace in figure.data)


def test_russian_numbers_have_commas_true_minus_signs_and_spaced_percent_signs(monkeypatch):
    from ui.i18n import exact, signed

    assert number("ru", -0.016, 3) == "\u22120,016" and number("en", -0.016, 3) == "-0.016"
    assert signed("ru", -0.0312, 3) == "\u22120,031" and signed("en", 0.03, 3) == "+0.030"
    assert exact("ru", 0.0005) == "0,0005" and exact("en", 1e-05) == "0.00001" and exact("ru", 3) == "3"
    monkeypatch.setitem(ROWS, "gan-slow", ("gan", "improved", {"adv_lr": 0.0005}))
    assert "(--adv-lr) = 0,0005" in describe_row("ru", "gan-slow")
    # CLDR's Russian percent: a (no-break) space before "%", in the catalogue's words as in formatted numbers
    assert not [k for k, text in RU.items() if re.search(r"\d%", text)]


def test_why_a_scorer_is_unavailable_is_said_in_russian_on_the_russian_page():
    from gantune.metrics import _load_failure
    from ui.i18n import reason_text

    hub = ("BLEURT unavailable: 'lucadiliello/BLEURT-20-D12' is a hub id and the hub cannot be reached (offline); "
           "pass --bleurt PATH to a local checkpoint")
    assert reason_text("en", hub) == hub  # English: the library's line as it is
    assert reason_text("ru", hub) == ("«lucadiliello/BLEURT-20-D12» — идентификатор модели на хабе Hugging Face, а хаб "
                                      "недоступен (нет сети); укажите путь к локальному чекпойнту (--bleurt ПУТЬ)")
    missing = _load_failure("semantic similarity", "./no-such-model", None, "pass a local sentence-transformers model folder")
    assert reason_text("ru", missing) == ("чекпойнта «./no-such-model» нет; укажите папку локальной модели "
                                          "sentence-transformers")
    assert reason_text("ru", "something new") == "something new"  # a reason it does not know: as the library says it


def test_setup_offers_no_retention_answer_sets_as_training_data():
    from ui.tabs.setup import HUB_SUBSETS, TRAINING_SUBSETS

    for subsets in (HUB_SUBSETS, TRAINING_SUBSETS):
        assert "forget10" in subsets and not {"real_authors_perturbed", "world_facts_perturbed"} & set(subsets)
