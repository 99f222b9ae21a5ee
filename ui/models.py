"""The workbench's loaded models: two slots, the page's copies of their tokenizers, and the scorers.

Two slots keep training and chat apart: a training job may inject adapters into its copy, while
chat switches adapters on its own copy. Nothing here checks a request: callers pass what the
hosted rules admitted (``ui.policy``).
"""

from __future__ import annotations

import copy
import threading
from typing import Any, Callable

from gantune.evaluate import Scorers
from gantune.models import BaseModel, load_base_model, pick_device, resolve_precision

ModelLoader = Callable[[str, "str | None", bool, str], BaseModel]


class Models:
    def __init__(self, load: ModelLoader | None = None, local: bool = True):
        """``load``: (name, gguf_file, trust_remote_code, precision) → a base model; by default gantune's loader,
        which reads a name as a local path too unless ``local`` is off (hosted: a name is a hub id, never a path,
        even one shaped like "org/name" that exists here)."""
        self._load = load or (lambda name, gguf_file, trust, precision: load_base_model(
            name, gguf_file, pick_device("auto"), trust, local=local, precision=precision))
        self._slots: dict[str, tuple[tuple, BaseModel]] = {}
        self._lock = threading.Lock()
        self.chat_lock = threading.Lock()  # one chat answers at a time on the chat slot
        self._tokenizers: dict[tuple, Any] = {}  # the page's own copies (loaded_tokenizer)
        self._scorers: Scorers | None = None

    def get(self, name: str, gguf_file: str | None, trust_remote_code: bool, slot: str = "train",
            precision: str = "auto") -> BaseModel:
        """The base model in ``slot`` (``train`` or ``chat``) in ``precision``, loaded when the slot holds another."""
        precision = resolve_precision(precision, pick_device("auto"))
        key = (name, gguf_file, trust_remote_code, precision)
        with self._lock:
            held = self._slots.get(slot)
            if held is None or held[0] != key:
                self._slots.pop(slot, None)
                self._slots[slot] = (key, self._load(name, gguf_file, trust_remote_code, precision))
            return self._slots[slot][1]

    def loaded(self, name: str, gguf_file: str | None) -> BaseModel | None:
        """The model ``name`` when a slot holds it already (nothing is loaded for it)."""
        with self._lock:
            return next((model for key, model in self._slots.values() if key[:2] == (name, gguf_file)), None)

    def loaded_tokenizer(self, name: str, gguf_file: str | None) -> Any | None:
        """A copy of the tokenizer of ``name`` when a slot holds that model already (nothing is loaded for it).

        A copy: the page counts tokens while a training thread encodes with the original, and a fast
        tokenizer's settings are not safe to share between threads.
        """
        with self._lock:
            if (name, gguf_file) not in self._tokenizers:
                found = next((model.tokenizer for key, model in self._slots.values() if key[:2] == (name, gguf_file)),
                             None)
                if found is None:
                    return None
                self._tokenizers[(name, gguf_file)] = copy.deepcopy(found)
            return self._tokenizers[(name, gguf_file)]

    def scorers(self) -> Scorers:
        """The evaluation's scorers, loaded on first use."""
        if self._scorers is None:
            self._scorers = Scorers.load(device=str(pick_device("auto")))
        return self._scorers
