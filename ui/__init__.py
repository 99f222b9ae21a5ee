"""The Gradio workbench: a page over the gantune library (app.py builds it; engine.py starts its jobs)."""
