"""Loading, splitting and encoding question/answer pairs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import TOFU, make_tokenizer

from gantune.data import Encoder, QAPair, format_prompt, load_pairs, pad, split_pairs
from gantune.errors import GantuneError

needs_tofu = pytest.mark.skipif(not (TOFU / "forget10.jsonl").is_file(), reason="../shared/tofu is not there")


def _jsonl_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


# --- load_pairs: the offline TOFU folder ----------------------------------------------------------

@needs_tofu
def test_forget10_has_all_400_rows_in_file_order():
    pairs, where = load_pairs(str(TOFU), "forget10")
    rows = _jsonl_rows(TOFU / "forget10.jsonl")
    assert len(pairs) == 400
    assert [(p.question, p.answer) for p in pairs] == [(r["question"].strip(), r["answer"].strip()) for r in rows]
    assert all(isinstance(p, QAPair) for p in pairs)
    assert "forget10.jsonl" in where


@needs_tofu
@pytest.mark.parametrize(("subset", "last"), [("forget05", 200), ("forget01", 40)])
def test_smaller_forget_sets_are_the_last_rows_of_forget10(subset, last):
    full, _ = load_pairs(str(TOFU), "forget10")
    pairs, where = load_pairs(str(TOFU), subset)
    assert len(pairs) == last
    assert pairs == full[-last:]
    assert f"last {last} rows" in where


@needs_tofu
@pytest.mark.parametrize("subset", ["real_authors", "real_authors_perturbed"])
def test_real_authors_carry_perturbed_answers(subset):
    pairs, _ = load_pairs(str(TOFU), subset)
    rows = _jsonl_rows(TOFU / "real_authors_perturbed.jsonl")
    assert len(pairs) == len(rows) == 100
    assert all(len(p.perturbed) >= 1 for p in pairs)
    assert pairs[0].perturbed == tuple(rows[0]["perturbed_answer"])
    assert all(isinstance(a, str) for p in pairs for a in p.perturbed)


@needs_tofu
def test_world_facts_subset_loads():
    pairs, _ = load_pairs(str(TOFU), "world_facts")
    assert len(pairs) == len(_jsonl_rows(TOFU / "world_facts_perturbed.jsonl"))


@needs_tofu
def test_unknown_subset_in_a_folder_names_the_files_there():
    with pytest.raises(GantuneError, match="no subset 'nosuch'.*forget10"):
        load_pairs(str(TOFU), "nosuch")


# --- load_pairs: single files ---------------------------------------------------------------------

def test_jsonl_file(tmp_path):
    path = tmp_path / "qa.jsonl"
    rows = [{"question": " who wrote it ? ", "answer": "she did ."},
            {"question": "where ?", "answer": "here", "perturbed_answer": "there"},
            {"question": "why ?", "answer": "because", "perturbed_answer": ["x", "y"]}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n", encoding="utf-8")  # trailing blank line
    pairs, where = load_pairs(str(path))
    assert pairs == [QAPair("who wrote it ?", "she did ."), QAPair("where ?", "here", ("there",)),
                     QAPair("why ?", "because", ("x", "y"))]
    assert where == str(path.resolve())


def test_csv_file(tmp_path):
    path = tmp_path / "qa.csv"
    path.write_text('question,answer\nwho wrote it ?,"she did, in 1990 ."\n"where, then ?",here\n', encoding="utf-8")
    pairs, _ = load_pairs(str(path))
    assert pairs == [QAPair("who wrote it ?", "she did, in 1990 ."), QAPair("where, then ?", "here")]


def test_csv_keeps_newlines_inside_quoted_fields(tmp_path):
    path = tmp_path / "qa.csv"
    path.write_text('question,answer\nwho ?,"line one\nline two"\n', encoding="utf-8")
    pairs, _ = load_pairs(str(path))
    assert pairs[0].answer == "line one\nline two"


def test_csv_with_byte_order_mark(tmp_path):
    path = tmp_path / "qa.csv"
    path.write_bytes("question,answer\nwho ?,me\n".encode("utf-8-sig"))
    pairs, _ = load_pairs(str(path))
    assert pairs == [QAPair("who ?", "me")]


# --- load_pairs: clear errors ---------------------------------------------------------------------

def test_missing_path_is_a_clear_error(tmp_path):
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(GantuneError, match="no data file or folder at"):
        load_pairs(str(missing))
    with pytest.raises(GantuneError, match="no data file or folder at"):
        load_pairs(str(tmp_path / "no-folder"))


@pytest.mark.parametrize("content", ["", "\n\n  \n"])
def test_empty_file_is_a_clear_error(tmp_path, content):
    path = tmp_path / "empty.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(GantuneError, match="holds no question/answer pairs"):
        load_pairs(str(path))


def test_empty_csv_is_a_clear_error(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_text("question,answer\n", encoding="utf-8")
    with pytest.raises(GantuneError, match="holds no question/answer pairs"):
        load_pairs(str(path))


def test_invalid_json_line_names_the_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"question": "q", "answer": "a"}\n{"question": "q", "answer": \n', encoding="utf-8")
    with pytest.raises(GantuneError, match=r"bad\.jsonl:2 is not valid JSON"):
        load_pairs(str(path))


@pytest.mark.parametrize("row", [
    {"q": "who ?", "a": "me"},
    {"question": "who ?"},
    {"question": "who ?", "answer": 3},
    ["who ?", "me"],
    "who ? me",
])
def test_wrong_fields_are_a_clear_error(tmp_path, row):
    path = tmp_path / "fields.jsonl"
    path.write_text(json.dumps(row) + "\n", encoding="utf-8")
    with pytest.raises(GantuneError, match="needs text fields 'question' and 'answer'"):
        load_pairs(str(path))


def test_csv_with_wrong_columns_is_a_clear_error(tmp_path):
    path = tmp_path / "fields.csv"
    path.write_text("prompt,response\nwho ?,me\n", encoding="utf-8")
    with pytest.raises(GantuneError, match="needs text fields 'question' and 'answer'"):
        load_pairs(str(path))


def test_blank_answer_is_a_clear_error(tmp_path):
    path = tmp_path / "blank.jsonl"
    path.write_text(json.dumps({"question": "who ?", "answer": "   "}) + "\n", encoding="utf-8")
    with pytest.raises(GantuneError, match="empty question or answer"):
        load_pairs(str(path))


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_non_utf8_bytes_are_a_clear_error(tmp_path, suffix):
    path = tmp_path / f"latin1{suffix}"
    path.write_bytes('{"question": "caf\xe9 ?", "answer": "oui"}\n'.encode("latin-1"))
    with pytest.raises(GantuneError, match="is not UTF-8 text"):
        load_pairs(str(path))


# --- split_pairs ----------------------------------------------------------------------------------

PAIRS = [QAPair(f"question {i} ?", f"answer {i}") for i in range(50)]


def test_split_is_deterministic_for_a_seed():
    assert split_pairs(PAIRS, 20, 0.5, seed=3) == split_pairs(PAIRS, 20, 0.5, seed=3)


def test_split_differs_across_seeds():
    assert split_pairs(PAIRS, 20, 0.5, seed=0) != split_pairs(PAIRS, 20, 0.5, seed=1)


def test_split_shuffles_rather_than_taking_the_first_rows():
    train, test = split_pairs(PAIRS, 20, 0.5, seed=0)
    assert set(train + test) != set(PAIRS[:20])


@pytest.mark.parametrize(("n", "fraction", "n_train"), [(20, 0.5, 10), (10, 0.8, 8), (7, 0.3, 2), (2, 0.5, 1),
                                                        (10, 0.01, 1), (10, 0.99, 9), (None, 0.5, 25)])
def test_split_respects_n_and_train_fraction(n, fraction, n_train):
    train, test = split_pairs(PAIRS, n, fraction, seed=5)
    total = n if n is not None else len(PAIRS)
    assert len(train) == n_train
    assert len(train) + len(test) == total
    assert not set(train) & set(test)
    assert set(train) | set(test) <= set(PAIRS)


def test_larger_n_keeps_the_smaller_n_pairs_as_a_prefix():
    small_train, small_test = split_pairs(PAIRS, 10, 0.5, seed=2)
    big_train, big_test = split_pairs(PAIRS, 20, 0.5, seed=2)
    assert (small_train + small_test) == (big_train + big_test)[:10]


def test_split_refuses_n_larger_than_available():
    with pytest.raises(GantuneError, match=r"--n 51 .*\b50\b"):
        split_pairs(PAIRS, 51, 0.5, seed=0)


def test_split_needs_two_pairs():
    with pytest.raises(GantuneError, match="at least 2 pairs"):
        split_pairs(PAIRS[:1], None, 0.5, seed=0)


# --- format_prompt --------------------------------------------------------------------------------

def test_format_prompt_uses_the_chat_template():
    tok = make_tokenizer(chat_template=True)
    text = format_prompt(tok, "who is the author ?")
    assert text == "<|im_start|>user who is the author ?<|im_end|> <|im_start|>assistant "


def test_format_prompt_without_chat_template():
    tok = make_tokenizer(chat_template=False)
    assert format_prompt(tok, "who is the author ?") == "Question: who is the author ?\nAnswer:"


# --- Encoder --------------------------------------------------------------------------------------

def _encoder(max_prompt=64, max_answer=16, chat_template=True):
    tok = make_tokenizer(chat_template)
    return Encoder(tok, tok.eos_token_id, max_prompt, max_answer), tok


def test_collate_pads_prompts_left_and_answers_right():
    enc, tok = _encoder()
    pairs = [QAPair("who ?", "the author ."),
             QAPair("who is the author of a book born in city ?", "her father was a writer and her mother was a writer .")]
    items = enc.encode(pairs)
    batch = enc.collate(items)
    assert batch.prompt_ids.dtype == batch.answer_ids.dtype == torch.long
    assert len(batch) == 2
    for row, (p, a) in enumerate(items):
        # left-padded prompt: the real ids are the row's right end, mask is exactly 1 there
        width = batch.prompt_ids.shape[1]
        assert batch.prompt_ids[row, width - len(p):].tolist() == p
        assert batch.prompt_mask[row].tolist() == [0] * (width - len(p)) + [1] * len(p)
        assert (batch.prompt_ids[row, : width - len(p)] == enc.pad_id).all()
        # right-padded answer
        width = batch.answer_ids.shape[1]
        assert batch.answer_ids[row, : len(a)].tolist() == a
        assert batch.answer_mask[row].tolist() == [1] * len(a) + [0] * (width - len(a))
        assert (batch.answer_ids[row, len(a):] == enc.pad_id).all()
        # answers end with EOS
        assert a[-1] == tok.eos_token_id
        assert batch.answer_ids[row, batch.answer_mask[row].sum() - 1] == tok.eos_token_id
    assert batch.prompt_mask[0].sum() < batch.prompt_mask[1].sum()
    assert batch.answer_mask[0].sum() < batch.answer_mask[1].sum()
    assert enc.pad_id == tok.pad_token_id


def test_answer_ids_are_the_tokens_plus_eos():
    enc, tok = _encoder()
    assert enc.answer_ids("the author .") == tok("the author .", add_special_tokens=False).input_ids + [tok.eos_token_id]


def test_answers_are_truncated_to_max_answer():
    enc, tok = _encoder(max_answer=4)
    long_answer = "her father was a writer and her mother was a writer ."
    ids = enc.answer_ids(long_answer)
    assert ids == tok(long_answer, add_special_tokens=False).input_ids[:4]
    assert len(enc.answer_ids("the author")) == 3  # short answers keep their EOS
    batch = enc.collate(enc.encode([QAPair("who ?", long_answer), QAPair("who ?", "the")]))
    assert batch.answer_ids.shape[1] == 4


def test_prompts_are_truncated_from_the_left():
    enc_full, tok = _encoder(max_prompt=1000)
    enc, _ = _encoder(max_prompt=5)
    question = "who is the author of a book born in city ?"
    full = enc_full.prompt_ids(question)
    assert len(full) > 5
    assert enc.prompt_ids(question) == full[-5:]  # the end (the assistant header) survives
    ids, mask = enc.prompts([question, "who ?"])
    assert ids.shape[1] == 5
    assert ids[0].tolist() == full[-5:]


def test_prompt_ids_without_chat_template():
    enc, tok = _encoder(chat_template=False)
    ids = enc.prompt_ids("who is the author ?")
    assert tok.decode(ids) == tok.decode(tok("Question: who is the author ?\nAnswer:", add_special_tokens=False).input_ids)
    assert tok.eos_token_id not in ids


def test_batch_to_moves_every_tensor():
    enc, _ = _encoder()
    batch = enc.collate(enc.encode([QAPair("who ?", "me .")]))
    moved = batch.to("cpu")
    for name in ("prompt_ids", "prompt_mask", "answer_ids", "answer_mask"):
        assert torch.equal(getattr(moved, name), getattr(batch, name))


def test_pad_helper():
    ids, mask = pad([[1, 2, 3], [4]], 0, left=True)
    assert ids.tolist() == [[1, 2, 3], [0, 0, 4]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    ids, mask = pad([[1, 2, 3], [4]], 9, left=False)
    assert ids.tolist() == [[1, 2, 3], [4, 9, 9]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]]
