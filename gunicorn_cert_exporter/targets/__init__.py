"""The Gunicorn-target stage: observe files, master and served leaves; decide (pure); reload and confirm."""
