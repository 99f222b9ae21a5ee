"""What the workbench accepts from a request: hosted mode's rules and caps, and the person's consent to a
model's own code. Every refusal is a ``PageError``, worded for the page.

Hosted mode (``Settings.space``) loads hub models only, reads only its own data folder and Gradio's
upload folder, caps every setting that sizes a job at its field's ``hosted`` bound (the settings'
own metadata), refuses a step that would take more than its budget, never runs a model's own code,
and shows no server path in what it says.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gantune.compare import ROWS
from gantune.config import SECTIONS, TrainConfig, preset_config, step_cost
from gantune.data import HUB_DATASET, default_data_source
from gantune.errors import GantuneError
from gantune.models import hub_reachable, resolve_model
from gantune.settings import hosted_caps

from .i18n import field_label, tr

MAX_SEEDS = 5  # seeds a comparison may take
HOSTED_CAPS: dict[str, float] = {name: cap for section in SECTIONS for name, cap in hosted_caps(section).items()}
# the refusals of the caps that read best in their own words; every other cap says the setting's name
_CAP_KEYS = {"n": "hosted_max_n", "epochs": "hosted_max_epochs", "max_new_tokens": "hosted_max_tokens"}
_ABSOLUTE = re.compile(r"(?<![\w.~/:])/(?:[^\s/:'\"()]+/)+")  # a server path's folders (its file name stays)


class PageError(GantuneError):
    """A refusal worded for the page: its catalogue key and values (``str()`` is the English text).

    A value named ``<name>_key`` is itself a catalogue key, said in the page's language as ``<name>``.
    """

    def __init__(self, key: str, **values: Any):
        self.key, self.values = key, values
        super().__init__(self.text("en"))

    def text(self, lang: str) -> str:
        """The refusal in ``lang``."""
        values = {k.removesuffix("_key"): tr(lang, v) if k.endswith("_key") else v for k, v in self.values.items()}
        return tr(lang, self.key, **values)


@dataclass
class Settings:
    runs_dir: Path = Path("runs")
    data: str | None = None  # default data source (None: ../shared/tofu when present, else the hub)
    space: bool = False  # hosted mode: caps, no local paths, no remote code
    max_upload_mb: float = 20.0  # an uploaded data file larger than this is refused (also enforced by Gradio)
    # retention questions per set in the page's evaluations, as the quick bench takes (a comparison in the page then
    # takes no longer than that bench); None: the whole sets (217 questions: about 12 s more a model on a 2-core CPU)
    retention_n: int | None = 20
    max_seeds: int = 2  # hosted mode: seeds a comparison may take
    max_step_passes: int | None = None  # hosted mode: a training step's budget in token passes (None: hosted_budget())
    max_job_minutes: float = 45.0  # hosted mode: a comparison's most minutes, by the plan the page shows for it

    @classmethod
    def from_env(cls, **overrides: Any) -> "Settings":
        return cls(space=bool(os.environ.get("SPACE_ID")), **overrides)

    @property
    def max_n(self) -> int:
        """Hosted mode's most pairs (the ``n`` field's hosted bound)."""
        return int(HOSTED_CAPS["n"])

    @property
    def step_budget(self) -> int:
        return self.max_step_passes if self.max_step_passes is not None else hosted_budget()


def hosted_budget() -> int:
    """A hosted step's budget: six times the default GAN step at the hosted caps (batch, prompt and answer length):
    room for any one costly lever (more samples, D steps or PPO epochs) at its cap, not for several at once."""
    sizes = {name: int(HOSTED_CAPS[name]) for name in ("n", "batch_size", "max_new_tokens", "max_prompt_tokens")}
    config = preset_config("gan", "improved", **sizes)
    return 6 * sum(passes for passes, _ in step_cost(config, _train_pairs(config)))


def _train_pairs(config: TrainConfig) -> int:
    """The training pairs a run of ``config`` splits off at most (``n`` is capped in hosted mode)."""
    return max(1, math.ceil((config.n or 1) * config.train_fraction))


def upload_folder() -> str:
    """Where Gradio keeps uploaded files (its GRADIO_TEMP_DIR rule)."""
    return os.environ.get("GRADIO_TEMP_DIR") or str(Path(tempfile.gettempdir()) / "gradio")


class Policy:
    """The checks a request passes before anything loads, reads or starts."""

    def __init__(self, settings: Settings):
        self.settings = settings
        # (model, gguf_file) whose own code the person allowed in this session: loaded with Setup's box ticked
        self._trusted: set[tuple[str, str | None]] = set()

    # --- the doors of jobs ----------------------------------------------------------------------
    def admit(self, config: TrainConfig, run: str | None = None) -> bool:
        """Whether a training job with these (validated) settings may start: the hosted caps and model rules, then
        consent to the model's own code (a new run's: Setup's box; the run ``run``'s: ``run_trust``).

        Returns whether the model may run its own code.
        """
        self.check_limits(config)
        self.check_model(config.model, config.gguf_file)
        if run is None:
            return self.trust(config.model, config.gguf_file, config.trust_remote_code)
        return self.run_trust(config, run)

    def check_chat_tokens(self, limit: int) -> None:
        """Hosted mode: a chat message's answers take no more new tokens than a job's (three answers each)."""
        if self.settings.space and limit > HOSTED_CAPS["max_new_tokens"]:
            raise PageError("hosted_max_tokens", n=int(HOSTED_CAPS["max_new_tokens"]))

    def check_limits(self, config: TrainConfig) -> None:
        """Hosted mode: every setting within its hosted bound, and the heaviest step within the step budget."""
        if not self.settings.space:
            return
        for name, cap in HOSTED_CAPS.items():
            value = getattr(config, name)
            if value is None or any(v > cap for v in (value if isinstance(value, list) else [value])):
                if name in _CAP_KEYS:
                    raise PageError(_CAP_KEYS[name], n=int(cap))
                raise PageError("hosted_max_setting", name_key=field_label(name), n=int(cap))
        parts = step_cost(config, _train_pairs(config))
        cost, most = sum(p for p, _ in parts), self.settings.step_budget
        if cost > most:
            raise PageError("hosted_step_cost", cost=f"{cost:,}", most=f"{most:,}", name_key=field_label(max(parts)[1]))

    def shown(self, text: str) -> str:
        """``text`` as the page shows it: hosted, with no server path (the runs, data and upload folders by short
        names, any other folder as …/); local, as it is."""
        if not self.settings.space:
            return text
        places = [(Path(upload_folder()), "uploads"), (self.settings.runs_dir, "runs"), (Path.cwd(), "."),
                  (Path.home(), "~")]
        data = Path(self.settings.data or default_data_source())
        if data.exists():
            places.append((data, "data"))
        named = sorted({(str(form), name) for folder, name in places
                        for form in (folder.resolve(), folder.absolute())}, key=lambda p: -len(p[0]))
        for folder, name in named:
            if folder != "/":
                text = re.sub(re.escape(folder) + r"(?![\w.-])", name, text)
        return _ABSOLUTE.sub("…/", text)

    def check_comparison(self, methods: list[str], seeds: int) -> None:
        """Known methods, each once, and 1 to ``MAX_SEEDS`` seeds (hosted: ``max_seeds``)."""
        unknown = [m for m in methods if m not in ROWS]
        if unknown:
            raise PageError("unknown_methods", methods=", ".join(unknown))
        twice = next((m for i, m in enumerate(methods) if m in methods[:i]), None)
        if twice is not None:
            raise PageError("methods_twice", method=twice)
        if not 1 <= seeds <= MAX_SEEDS:
            raise PageError("seeds_range", most=MAX_SEEDS, seeds=seeds)
        if self.settings.space and seeds > self.settings.max_seeds:
            raise PageError("hosted_max_seeds", n=self.settings.max_seeds)

    def check_plan(self, seconds: float) -> None:
        """Hosted mode: a comparison's whole length, as the plan the page shows says (``ui.estimate``), within the
        Space's per-job time (a step's budget bounds each step; this, the job)."""
        most = self.settings.max_job_minutes
        if self.settings.space and seconds > most * 60:
            raise PageError("hosted_job_time", minutes=f"{math.ceil(seconds / 60):,}", most=f"{most:g}")

    # --- models and their own code --------------------------------------------------------------
    def check_model(self, name: str, gguf_file: str | None) -> None:
        """Hosted mode loads 'default' or a hub id only: nothing typed reaches the filesystem."""
        if not self.settings.space:
            return
        if gguf_file:
            raise PageError("hosted_no_gguf")
        try:
            valid = name == "default" or resolve_model(name, local=False)[2] == "hub"
        except GantuneError:  # not a valid hub id
            valid = False
        if not valid:
            raise PageError("hosted_hub_id", name=repr(name))

    def trust(self, name: str, gguf_file: str | None, ticked: bool) -> bool:
        """Whether a model loaded now may run its own code: Setup's box (``ticked``), never when hosted.

        A model loaded with it counts as allowed for the rest of this session (``run_trust``).
        """
        if self.settings.space or not ticked:
            return False
        self._trusted.add((name, gguf_file))
        return True

    def run_trust(self, config: TrainConfig, run: str, ticked: bool = False) -> bool:
        """Whether a run's base model may run its own code: only when its config.json asks for it and the person
        allowed it in this session (Setup's box ``ticked`` now, in Chat; or ticked when that model was loaded);
        never when hosted. A run that asks without that is refused: a run folder alone never turns remote code on."""
        if not config.trust_remote_code:
            return False
        if self.settings.space:
            raise PageError("remote_code_hosted", run=run)
        if ticked or (config.model, config.gguf_file) in self._trusted:
            return True
        raise PageError("remote_code_consent", run=run, model=config.model)

    # --- data -----------------------------------------------------------------------------------
    def data_source(self, kind: str, path: str | None, upload: str | None) -> str:
        """The data argument for gantune from the Setup widgets (offline folder, hub, or an upload).

        Hosted mode reads only its own data folder and Gradio's upload folder, whatever a request says.
        """
        default = self.settings.data or default_data_source()
        if kind == "upload":
            return self._checked_upload(upload)
        if kind == "hub":
            if not hub_reachable():  # said in the page's words, before a job starts
                raise PageError("hub_offline")
            return HUB_DATASET
        if kind != "offline":
            raise PageError("unknown_kind", kind=repr(kind))
        path = (path or "").strip()
        if self.settings.space:
            if path and Path(path).resolve() != Path(default).resolve():
                raise PageError("hosted_own_data")
            return default
        return path or default

    def _checked_upload(self, upload: str | None) -> str:
        if not upload:
            raise PageError("upload_first")
        path = Path(upload)
        if self.settings.space and not path.resolve().is_relative_to(Path(upload_folder()).resolve()):
            raise PageError("upload_only")
        if not path.is_file():
            raise PageError("upload_gone")
        size_mb = path.stat().st_size / 2**20
        if size_mb > self.settings.max_upload_mb:
            raise PageError("upload_too_big", size=f"{size_mb:.2f}", most=f"{self.settings.max_upload_mb:g}")
        return str(path)
