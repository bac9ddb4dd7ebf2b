"""``python -m fedgmm.flower``: the ``fedgmm flower`` commands without the main CLI."""

from fedgmm.flower.cli import app

app(prog_name="python -m fedgmm.flower")
