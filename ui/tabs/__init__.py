"""One module a tab of the workbench: setup, tuning (GAN), compare, chat, runs."""
