"""Question/answer pairs: load them, pick a subset, split, and turn them into padded batches.

Sources: a folder of JSON Lines (like ../shared/tofu), one .jsonl/.json/.csv file, or a hub dataset
(``locuslab/TOFU`` and any of its configs) through ``datasets``. Offline, ``forget05`` and
``forget01`` are the last 200 and 40 rows of ``forget10``, as on the hub.

Each file kind has one reader that refuses, in one line naming the file and row, what is not UTF-8
text, not JSON/CSV, or not rows of text fields ``question`` and ``answer`` (``perturbed_answer``: text
or a list of texts). ``.jsonl``: one object per line. ``.json``: a list of objects, an object holding
one such list (``{"data": [...]}``), or JSON Lines (what ``datasets``' ``to_json`` writes).
``.csv``: a header row naming the columns, every row as many cells.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import os
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerBase

from .errors import GantuneError, first_line
from .hub import hub_reachable

HUB_DATASET = "locuslab/TOFU"
# offline subset -> (file, keep only the last k rows)
OFFLINE_SUBSETS: dict[str, tuple[str, int | None]] = {
    "forget10": ("forget10.jsonl", None),
    "forget05": ("forget10.jsonl", 200),
    "forget01": ("forget10.jsonl", 40),
    "real_authors": ("real_authors_perturbed.jsonl", None),
    "real_authors_perturbed": ("real_authors_perturbed.jsonl", None),
    "world_facts": ("world_facts_perturbed.jsonl", None),
    "world_facts_perturbed": ("world_facts_perturbed.jsonl", None),
}


@dataclass(frozen=True)
class QAPair:
    question: str
    answer: str
    perturbed: tuple[str, ...] = field(default=())


def default_data_source() -> str:
    """The offline TOFU folder when one is beside the project (or in $GANTUNE_DATA), else the hub."""
    candidates = [os.environ.get("GANTUNE_DATA"), Path(__file__).resolve().parents[2] / "shared" / "tofu",
                  Path.cwd().parent / "shared" / "tofu"]
    for c in candidates:
        if c and Path(c).is_dir():
            return str(Path(c).resolve())
    return HUB_DATASET


_HUB_DATASET = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_SUBSET = re.compile(r"^[A-Za-z0-9][\w.-]{0,63}$")


def load_pairs(source: str | None, subset: str = "forget10") -> tuple[list[QAPair], str]:
    """Load all pairs of ``subset`` from ``source``; returns them and a description of where from."""
    source = source or default_data_source()
    if not isinstance(subset, str) or not _SUBSET.match(subset) or ".." in subset:
        raise GantuneError(f"{subset!r} is not a subset name (letters, digits, '_', '-' and '.')")
    try:
        path = Path(source).expanduser()
        is_dir, is_file = path.is_dir(), path.is_file()
    except (OSError, RuntimeError) as exc:  # a name too long, ~user unknown …
        reason = getattr(exc, "strerror", None) or exc
        raise GantuneError(f"no data file or folder at {_shown(source)} ({reason})") from None
    if is_dir:
        return _load_folder(path, subset)
    if is_file:
        return _read_file(path), str(path.resolve())
    if path.suffix.lower() in READERS or source.startswith((".", "/", "~")) or not _HUB_DATASET.match(source):
        raise GantuneError(f"no data file or folder at {_shown(source)}")
    return _load_hub(source, subset), f"hub:{source}/{subset}"


def _shown(text: str, most: int = 120) -> str:
    """A path as a message shows it: quoted when it holds unprintable characters, cut when very long."""
    shown = text if text.isprintable() else repr(text)
    return shown if len(shown) <= most else shown[:most - 1] + "…"


def _load_folder(folder: Path, subset: str) -> tuple[list[QAPair], str]:
    name, last = OFFLINE_SUBSETS.get(subset, (f"{subset}.jsonl", None))
    file = folder / name
    if not file.is_file():
        have = sorted(p.stem for p in folder.glob("*.jsonl"))
        raise GantuneError(f"no subset {subset!r} in {folder} (files there: {', '.join(have) or 'none'})")
    pairs = _read_file(file)
    if last is not None:
        pairs = pairs[-last:]
    return pairs, f"{file.resolve()}" + (f" (last {last} rows)" if last else "")


# Each row as read from a file: (where it is, for messages; the row as parsed).
Rows = list[tuple[str, object]]


def _read_file(path: Path) -> list[QAPair]:
    """The pairs of one data file, read by the reader of its kind (.jsonl, .json or .csv)."""
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise GantuneError(f"{path.name} is not a data file gantune reads: use .jsonl (one JSON object per line), "
                           ".json (a list of objects) or .csv, each row with 'question' and 'answer'")
    pairs = [_to_pair(row, where) for where, row in reader(path, _read_text(path))]
    if not pairs:
        raise GantuneError(f"{path} holds no question/answer pairs")
    return pairs


def _read_text(path: Path) -> str:
    """The file as UTF-8 text (a leading byte-order mark dropped); bytes that are not text are refused."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise GantuneError(f"cannot read {path}: {exc.strerror}") from None
    data = data.removeprefix(codecs.BOM_UTF8)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise GantuneError(f"{path} is not UTF-8 text (line {line} has the byte 0x{data[exc.start]:02x}); "
                           "save it as UTF-8") from None
    if "\0" in text:
        line = text[:text.index("\0")].count("\n") + 1
        raise GantuneError(f"{path} is not UTF-8 text (line {line} holds a NUL character: binary data, or UTF-16?)")
    return text


def _loads(text: str) -> tuple[object, str | None]:
    """``json.loads``: (the value, None), or (None, why ``text`` is not JSON)."""
    try:
        return json.loads(text), None
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno}" if "\n" in text.strip() else f"column {exc.colno}"
        return None, f"{exc.msg} at {where}"
    except RecursionError:
        return None, "nested too deeply"
    except ValueError:  # an integer of thousands of digits
        return None, "a number too long to read"


def _jsonl_rows(path: Path, text: str) -> Rows:
    """JSON Lines: one object per line; blank lines are skipped."""
    rows: Rows = []
    for i, line in enumerate(text.split("\n"), 1):  # not splitlines(): U+2028 and the like may sit inside a string
        if not line.strip():
            continue
        row, error = _loads(line)
        if error is not None:
            hint = "; the whole file is one JSON document: name it .json" if _loads(text)[1] is None else ""
            raise GantuneError(f"{path}:{i} is not valid JSON (expected one object per line{hint}): {error}")
        rows.append((f"{path}:{i}", row))
    return rows


def _json_rows(path: Path, text: str) -> Rows:
    """A .json file: a list of objects, an object holding one such list (``{"data": [...]}``), or one object.

    JSON Lines saved as .json (what ``datasets``' ``to_json`` writes) is read as JSON Lines.
    """
    doc, error = _loads(text)
    if error is not None:
        if error.startswith("Extra data") and text.lstrip().startswith("{"):
            return _jsonl_rows(path, text)
        raise GantuneError(f"{path} is not valid JSON ({error})")
    if isinstance(doc, list):
        return [(f"{path} item {i}", row) for i, row in enumerate(doc, 1)]
    if isinstance(doc, dict) and "question" in doc:
        return [(str(path), doc)]
    if isinstance(doc, dict):
        lists = [key for key, value in doc.items() if isinstance(value, list)]
        if len(lists) == 1:
            return [(f"{path} '{lists[0]}' item {i}", row) for i, row in enumerate(doc[lists[0]], 1)]
        what = f"a JSON object with {len(lists) or 'no'} lists in it"
    else:
        what = _kind(doc)
    raise GantuneError(f"{path} holds {what}; a .json data file is a list of objects "
                       '[{"question": …, "answer": …}, …] or an object holding one such list')


def _csv_rows(path: Path, text: str) -> Rows:
    """CSV with a header row naming the columns; every row has as many cells as the header."""
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [name.strip() for name in next(reader, [])]
        if not header:
            return []
        missing = [c for c in ("question", "answer") if c not in header]
        twice = sorted({c for c in header if header.count(c) > 1})
        if missing or twice:
            raise GantuneError(f"{path}:1: each row needs text fields 'question' and 'answer' "
                               f"(the header row names {', '.join(map(repr, header))})")
        rows: Rows = []
        for cells in reader:
            if not cells:  # a blank line
                continue
            if len(cells) != len(header):
                raise GantuneError(f"{path}:{reader.line_num} has {len(cells)} cell{'s' * (len(cells) != 1)} but the header has {len(header)} "
                                   "(a comma in unquoted text? put such text in double quotes)")
            rows.append((f"{path}:{reader.line_num}", dict(zip(header, cells))))
    except csv.Error as exc:
        raise GantuneError(f"{path}:{reader.line_num} is not valid CSV: {exc}") from None
    return rows


READERS = {".jsonl": _jsonl_rows, ".json": _json_rows, ".csv": _csv_rows}


def _kind(value: object) -> str:
    """What a JSON value is, in words."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, (int, float)):
        return "a number"
    return {str: "text", list: "a list", dict: "an object"}.get(type(value), type(value).__name__)


def _text(row: dict, key: str, where: str) -> str:
    """Field ``key`` of a row as text: present, a string, valid Unicode, no NUL."""
    if key not in row:
        raise GantuneError(f"{where}: each row needs text fields 'question' and 'answer' ({key!r} is missing)")
    value = row[key]
    if not isinstance(value, str):
        raise GantuneError(f"{where}: each row needs text fields 'question' and 'answer' ({key!r} is {_kind(value)})")
    return _valid_text(value, key, where)


def _valid_text(value: str, key: str, where: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise GantuneError(f"{where}: {key!r} is not valid Unicode text (a lone surrogate, such as a \\ud800 escape)") from None
    if "\0" in value:
        raise GantuneError(f"{where}: {key!r} holds a NUL character")
    return value


def _to_pair(row: object, where: str) -> QAPair:
    if not isinstance(row, dict):
        raise GantuneError(f"{where}: each row needs text fields 'question' and 'answer' (this row is {_kind(row)}, "
                           "not an object)")
    question, answer = _text(row, "question", where).strip(), _text(row, "answer", where).strip()
    if not question or not answer:
        raise GantuneError(f"{where}: empty question or answer")
    perturbed = row.get("perturbed_answer")
    if perturbed is None or perturbed == "":
        perturbed = []
    elif isinstance(perturbed, str):
        perturbed = [perturbed]
    if not isinstance(perturbed, list) or not all(isinstance(p, str) for p in perturbed):
        raise GantuneError(f"{where}: 'perturbed_answer' must be text or a list of texts")
    return QAPair(question, answer, tuple(_valid_text(p, "perturbed_answer", where) for p in perturbed))


def _load_hub(repo: str, subset: str) -> list[QAPair]:
    if not hub_reachable():
        raise GantuneError(f"{repo} is a hub dataset and the hub cannot be reached (offline?); "
                           "pass --data with a local folder or file")
    try:
        from datasets import load_dataset

        ds = load_dataset(repo, subset, split="train")
    except Exception as exc:  # the hub raises many kinds; all mean "not available"
        raise GantuneError(f"could not load {repo}/{subset} from the hub: {first_line(exc)}") from exc
    return [_to_pair(r, f"{repo}/{subset} row {i}") for i, r in enumerate(ds, 1)]


def split_pairs(pairs: list[QAPair], n: int | None, train_fraction: float, seed: int) -> tuple[list[QAPair], list[QAPair]]:
    """Seeded shuffle, keep ``n``, then cut into train and test; the same seed gives the same split."""
    if n is not None and n > len(pairs):
        raise GantuneError(f"--n {n} is more than the {len(pairs)} pairs available", key="n_too_many", setting="n",
                           n=n, have=len(pairs))
    order = list(range(len(pairs)))
    random.Random(seed).shuffle(order)
    chosen = [pairs[i] for i in order[: n or len(pairs)]]
    if len(chosen) < 2:
        raise GantuneError(f"need at least 2 pairs (one to train, one to test); have {len(chosen)}",
                           key="too_few_pairs", have=len(chosen))
    n_train = min(max(1, round(len(chosen) * train_fraction)), len(chosen) - 1)
    return chosen[:n_train], chosen[n_train:]


def format_prompt(tokenizer: PreTrainedTokenizerBase, question: str) -> str:
    """The chat template's user turn plus the assistant header, or plain 'Question: … Answer:'."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": question}], add_generation_prompt=True, tokenize=False
        )
    return f"Question: {question}\nAnswer:"


@dataclass
class Batch:
    """Left-padded prompts and right-padded reference answers (EOS included), with their masks."""

    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    answer_ids: torch.Tensor
    answer_mask: torch.Tensor

    def to(self, device: torch.device | str) -> "Batch":
        return Batch(*(t.to(device) for t in (self.prompt_ids, self.prompt_mask, self.answer_ids, self.answer_mask)))

    def __len__(self) -> int:
        return self.prompt_ids.shape[0]


class Encoder:
    """Tokenises pairs once and pads them into batches."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, eos_id: int, max_prompt_tokens: int, max_answer_tokens: int):
        self.tokenizer, self.eos_id = tokenizer, eos_id
        self.max_prompt, self.max_answer = max_prompt_tokens, max_answer_tokens
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_id

    def prompt_ids(self, question: str) -> list[int]:
        return self._full_prompt_ids(question)[-self.max_prompt :]

    def prompt_length(self, question: str) -> int:
        """Tokens of the whole prompt, before the cut to ``max_prompt_tokens``."""
        return len(self._full_prompt_ids(question))

    def _full_prompt_ids(self, question: str) -> list[int]:
        return self.tokenizer(format_prompt(self.tokenizer, question), add_special_tokens=False).input_ids

    def answer_ids(self, answer: str) -> list[int]:
        ids = self.tokenizer(answer, add_special_tokens=False).input_ids + [self.eos_id]
        return ids[: self.max_answer]

    def encode(self, pairs: list[QAPair]) -> list[tuple[list[int], list[int]]]:
        return [(self.prompt_ids(p.question), self.answer_ids(p.answer)) for p in pairs]

    def collate(self, items: list[tuple[list[int], list[int]]]) -> Batch:
        prompts, answers = zip(*items)
        p_ids, p_mask = pad(prompts, self.pad_id, left=True)
        a_ids, a_mask = pad(answers, self.pad_id, left=False)
        return Batch(p_ids, p_mask, a_ids, a_mask)

    def prompts(self, questions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        return pad([self.prompt_ids(q) for q in questions], self.pad_id, left=True)


def pad(seqs: list[list[int]] | tuple, pad_id: int, left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad id lists to one length (left or right); returns ids and a 0/1 mask, both long."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        sl = slice(width - len(s), width) if left else slice(0, len(s))
        ids[i, sl] = torch.tensor(s, dtype=torch.long)
        mask[i, sl] = 1
    return ids, mask
