"""The evaluation report as one W&B run (job type ``summary``) in the group of the runs it evaluates."""

from __future__ import annotations

import os

from xai_lightning.runs import Run


def log_report_to_wandb(report, run: Run, name: str) -> None:
    """Log the report's tables and figures as one W&B run in ``run``'s project and group."""
    import wandb

    from xai_lightning.tracking import resolve_wandb_mode

    logger = (run.config.get("trainer") or {}).get("logger") or {}
    init_args = logger.get("init_args", {}) if isinstance(logger, dict) else {}
    experiment = wandb.init(
        project=init_args.get("project") or "xai-lightning",
        entity=init_args.get("entity"),
        group=init_args.get("group"),
        name=name,
        job_type="summary",
        dir=str(report.path.parent),
        mode=os.environ.get("WANDB_MODE") or resolve_wandb_mode(),
        reinit="finish_previous",
    )
    payload = {f"report/{key}": wandb.Table(dataframe=frame.astype(str)) for key, frame in report.tables.items()}
    payload.update({f"report/{key}": wandb.Image(str(path)) for key, path in report.figures.items() if path})
    experiment.log(payload)
    experiment.save(str(report.path), base_path=str(report.path.parent), policy="now")
    experiment.finish()
    print(f"W&B summary run: {experiment.dir}")
