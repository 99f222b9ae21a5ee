"""Question/answer pairs: load them, pick a subset, split, and turn them into padded batches.

Sources: a folder of JSON Lines (like ../shared/tofu), one .jsonl/.csv file, or a hub dataset
(``locuslab/TOFU`` and any of its configs) through ``datasets``. Offline, ``forget05`` and
``forget01`` are the last 200 and 40 rows of ``forget10``, as on the hub.
"""

from __future__ import annotations

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

from .errors import GantuneError
from .models import hub_reachable

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


SUFFIXES = (".jsonl", ".json", ".csv")
_HUB_DATASET = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_SUBSET = re.compile(r"^[A-Za-z0-9][\w.-]{0,63}$")


def load_pairs(source: str | None, subset: str = "forget10") -> tuple[list[QAPair], str]:
    """Load all pairs of ``subset`` from ``source``; returns them and a description of where from."""
    source = source or default_data_source()
    if not isinstance(subset, str) or not _SUBSET.match(subset) or ".." in subset:
        raise GantuneError(f"{subset!r} is not a subset name (letters, digits, '_', '-' and '.')")
    path = Path(source).expanduser()
    if path.is_dir():
        return _load_folder(path, subset)
    if path.is_file():
        return _read_file(path), str(path.resolve())
    if path.suffix.lower() in SUFFIXES or source.startswith((".", "/", "~")) or not _HUB_DATASET.match(source):
        raise GantuneError(f"no data file or folder at {source}")
    return _load_hub(source, subset), f"hub:{source}/{subset}"


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


def _read_file(path: Path) -> list[QAPair]:
    if path.suffix.lower() not in SUFFIXES:
        raise GantuneError(f"{path.name} is not a data file gantune reads: use .jsonl (one JSON object per line), "
                           ".json (a list of objects) or .csv, each row with 'question' and 'answer'")
    try:
        text = path.read_text(encoding="utf-8-sig")  # -sig: files saved with a byte-order mark
    except UnicodeDecodeError:
        raise GantuneError(f"{path} is not UTF-8 text") from None
    except OSError as exc:
        raise GantuneError(f"cannot read {path}: {exc.strerror}") from None
    rows: list[tuple[int, object]] = []  # (line number, row)
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(io.StringIO(text, newline=""))
        try:
            rows = [(reader.line_num, r) for r in reader]
        except csv.Error as exc:
            raise GantuneError(f"{path}:{reader.line_num} is not valid CSV: {exc}") from None
    elif path.suffix.lower() == ".json" and text.lstrip().startswith("["):
        try:
            rows = list(enumerate(json.loads(text), 1))
        except json.JSONDecodeError as exc:
            raise GantuneError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno})") from None
    else:
        for i, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rows.append((i, json.loads(line)))
            except json.JSONDecodeError:
                raise GantuneError(f"{path}:{i} is not valid JSON (expected one object per line)") from None
    pairs = [_to_pair(r, f"{path}:{i}") for i, r in rows]
    if not pairs:
        raise GantuneError(f"{path} holds no question/answer pairs")
    return pairs


def _to_pair(row: object, where: str) -> QAPair:
    if not isinstance(row, dict) or not isinstance(row.get("question"), str) or not isinstance(row.get("answer"), str):
        raise GantuneError(f"{where}: each row needs text fields 'question' and 'answer'")
    if not row["question"].strip() or not row["answer"].strip():
        raise GantuneError(f"{where}: empty question or answer")
    perturbed = row.get("perturbed_answer") or ()
    if isinstance(perturbed, str):
        perturbed = (perturbed,)
    if not isinstance(perturbed, (list, tuple)) or not all(isinstance(p, str) for p in perturbed):
        raise GantuneError(f"{where}: 'perturbed_answer' must be text or a list of texts")
    return QAPair(row["question"].strip(), row["answer"].strip(), tuple(perturbed))


def _load_hub(repo: str, subset: str) -> list[QAPair]:
    if not hub_reachable():
        raise GantuneError(f"{repo} is a hub dataset and the hub cannot be reached (offline?); "
                           "pass --data with a local folder or file")
    try:
        from datasets import load_dataset

        ds = load_dataset(repo, subset, split="train")
    except Exception as exc:  # the hub raises many kinds; all mean "not available"
        raise GantuneError(f"could not load {repo}/{subset} from the hub: {str(exc).splitlines()[0]}") from exc
    return [_to_pair(r, f"{repo}/{subset} row {i}") for i, r in enumerate(ds, 1)]


def split_pairs(pairs: list[QAPair], n: int | None, train_fraction: float, seed: int) -> tuple[list[QAPair], list[QAPair]]:
    """Seeded shuffle, keep ``n``, then cut into train and test; the same seed gives the same split."""
    if n is not None and n > len(pairs):
        raise GantuneError(f"--n {n} is more than the {len(pairs)} pairs available")
    order = list(range(len(pairs)))
    random.Random(seed).shuffle(order)
    chosen = [pairs[i] for i in order[: n or len(pairs)]]
    if len(chosen) < 2:
        raise GantuneError(f"need at least 2 pairs (one to train, one to test); have {len(chosen)}")
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
