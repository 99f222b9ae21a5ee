"""The workbench served in a process of its own, for tests/test_load.py.

    python tests/load_server.py RUNS_DIR [DATA.jsonl]

Builds the engine over the tiny talkative Llama (tests/test_ui_app.py's ``talkative_base``; no
download), writes a 12-pair .jsonl next to the runs folder when no data file is given, launches
ui.app on a free loopback port and prints one line to stdout: ``URL <url> DATA <path>``. Then it
serves until its stdin closes (the test holds the pipe) or it is killed; it stops a running job
first. A process of its own: the load test's client threads do not share its GIL, and psutil
can read its memory alone.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent
sys.path[:0] = [str(TESTS), str(TESTS.parent)]  # conftest / test_ui_app, and the project's packages
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # loopback only

from conftest import WORDS  # noqa: E402
from test_ui_app import free_port, talkative_base  # noqa: E402

from ui.app import launch  # noqa: E402
from ui.engine import Engine, Settings  # noqa: E402


def write_pairs(path: Path) -> Path:
    """The 12 question/answer pairs of test_ui_app's app fixture (6 train / 6 test at fraction 0.5)."""
    rows = [{"question": f"who is the author of {w} ?",
             "answer": f"the author was born in a city and wrote {w} fiction ."} for w in WORDS[:12]]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def main(argv: list[str]) -> int:
    if not 1 <= len(argv) <= 2:
        print(__doc__, file=sys.stderr)
        return 2
    runs = Path(argv[0])
    data = Path(argv[1]) if len(argv) > 1 else write_pairs(runs.parent / "pairs.jsonl")
    engine = Engine(Settings(runs_dir=runs), load_model=lambda *a: talkative_base())
    demo, url, _ = launch(engine, prevent_thread_lock=True, server_name="127.0.0.1", server_port=free_port(),
                          quiet=True)
    print(f"URL {url} DATA {data}", flush=True)
    try:
        sys.stdin.read()  # returns when the test closes the pipe (or exits)
    except KeyboardInterrupt:
        pass
    finally:
        engine.jobs.stop()
        engine.jobs.wait(30)
        demo.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
