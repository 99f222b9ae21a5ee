"""Start the gantune workbench: python app.py [--space] [--port N] [--runs DIR] [--host ADDR]."""

import argparse
from pathlib import Path

from ui.app import launch
from ui.engine import Engine, Settings

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="The gantune workbench (Gradio).")
    parser.add_argument("--space", action="store_true", help="hosted mode: caps, no local paths (on when SPACE_ID is set)")
    parser.add_argument("--runs", default="runs", help="runs folder")
    parser.add_argument("--host", default=None, help="address to listen on (default 127.0.0.1; 0.0.0.0 on a Space)")
    parser.add_argument("--port", type=int, default=None, help="port (default 7860 or the next free one)")
    args = parser.parse_args()
    settings = Settings.from_env(runs_dir=Path(args.runs))
    settings.space = settings.space or args.space
    launch(Engine(settings), server_name=args.host, server_port=args.port)
