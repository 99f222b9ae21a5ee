"""Start the gantune workbench: python app.py [--space] [--port N] [--runs DIR] [--host ADDR]."""

import argparse
import threading
from pathlib import Path

from gantune.cpu import keep_freed_pages
from gantune.errors import GantuneError
from ui.app import launch
from ui.engine import Engine, Settings


def preload(engine: Engine) -> None:
    """Load the default model while the page opens, so the first Start does not wait for it."""
    try:
        engine.model("default")
    except GantuneError as exc:  # the page says it again when the model is asked for
        print(f"gantune: {exc}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="The gantune workbench (Gradio).")
    parser.add_argument("--space", action="store_true", help="hosted mode: caps, no local paths (on when SPACE_ID is set)")
    parser.add_argument("--runs", default="runs", help="runs folder")
    parser.add_argument("--host", default=None, help="address to listen on (default 127.0.0.1; 0.0.0.0 on a Space)")
    parser.add_argument("--port", type=int, default=None, help="port (default 7860 or the next free one)")
    args = parser.parse_args()
    keep_freed_pages()
    settings = Settings.from_env(runs_dir=Path(args.runs))
    settings.space = settings.space or args.space
    engine = Engine(settings)
    threading.Thread(target=preload, args=(engine,), daemon=True).start()
    launch(engine, server_name=args.host, server_port=args.port)
