"""The ServerApp: reads the run config and runs fedgmm's federated algorithm over the Grid."""

from __future__ import annotations

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedgmm.flower.job import run_job

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run one job (see :func:`fedgmm.flower.job.run_job`); an exception marks the run failed."""
    run_job(grid, context.run_config, run_id=int(grid.run.run_id))
