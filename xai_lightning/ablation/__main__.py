"""``python -m xai_lightning.ablation``: the poster's pipeline, then one factor at a time towards the fair one.

    python -m xai_lightning.ablation --config configs/poster.yaml --seeds 0-9 --out runs/ablation
    python -m xai_lightning.ablation --config configs/poster.yaml --config configs/poster_synthetic.yaml \\
        --seeds 0-2 --out runs/ablation_synthetic          # synthetic data, 2-core CPU

Training arms (the poster, λ = 0, the decoder on an earlier stage, BCE) train their own seeds into
``<out>/<arm>/`` (re-running resumes and skips finished seeds); every other factor re-scores the
poster arm's checkpoints. Writes ``<out>/report.md``, ``<out>/ablation.csv``, ``<out>/tables/ablation.*``
and ``<out>/figures/ablation.png``, and logs them as a W&B summary run. Any other argument goes to
``train.py`` for every arm (``--trainer.max_epochs 5``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import xai_lightning  # noqa: F401  (sets NO_ALBUMENTATIONS_UPDATE before albumentations is imported)
from xai_lightning.ablation.factors import POSTER, backbone_of, early_stage_of, factors
from xai_lightning.ablation.output import write_outputs
from xai_lightning.ablation.study import arm_tables, train_arms
from xai_lightning.ablation.table import ablation_table
from xai_lightning.errors import ConfigError
from xai_lightning.experiment import parse_seeds
from xai_lightning.reporting.hierarchical import HIERARCHICAL_N_BOOT
from xai_lightning.reporting.report_sections import SYNTHETIC_DATA_NOTE
from xai_lightning.runs import find_runs

#: The training script every arm runs (through the seed launcher).
TRAIN_SCRIPT = Path(__file__).resolve().parents[2] / "train.py"


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0-2", help="seeds of every training arm (default 0-2)")
    parser.add_argument("--out", type=Path, default=Path("runs/ablation"), help="folder of the arms and the report")
    parser.add_argument("--parallel", type=int, default=1, help="seed processes at a time, per arm")
    parser.add_argument("--bootstrap", type=int, default=HIERARCHICAL_N_BOOT, help="hierarchical bootstrap replicates")
    parser.add_argument("--no-wandb", action="store_true", help="do not log the report as a W&B summary run")
    args, train_args = parser.parse_known_args(argv)
    if "--config" not in {a.partition("=")[0] for a in train_args}:
        raise ConfigError("python -m xai_lightning.ablation: give the poster pipeline, --config configs/poster.yaml.")
    if any(a.partition("=")[0] == "--experiment_dir" for a in train_args):
        raise ConfigError("python -m xai_lightning.ablation: leave out --experiment_dir; --out holds every arm.")
    return args, train_args


def main(argv: list[str] | None = None):
    """Train what is missing, explain, and write the ablation's table, figure and report; return the table."""
    args, train_args = parse_args(argv)
    if not TRAIN_SCRIPT.is_file():
        raise ConfigError(f"The ablation runs '{TRAIN_SCRIPT}', which is missing: run it from a repository checkout.")
    start = time.monotonic()
    early = early_stage_of(backbone_of(train_args))
    every = factors(early)
    folders = train_arms(TRAIN_SCRIPT, train_args, [f for f in every if f.trains or f.name == POSTER],
                         parse_seeds(args.seeds), args.out, args.parallel)  # fmt: skip
    trained = time.monotonic() - start
    table = ablation_table(arm_tables(folders, early), every, n_boot=args.bootstrap)
    poster_runs = find_runs(folders[POSTER])
    notes = [
        f"Seeds {args.seeds} per training arm; training arms: {', '.join(folders)}; command: "
        f"`python -m xai_lightning.ablation {' '.join(sys.argv[1:] if argv is None else argv)}`.",
        f"Wall time: {trained:.0f} s training (0 when every seed had finished), "
        f"{time.monotonic() - start - trained:.0f} s explaining and scoring.",
        *_data_notes(poster_runs),
    ]
    report = write_outputs(table, args.out, notes)
    print("\n".join(report.sentences) + f"\nReport: {report.path}")
    if not args.no_wandb:
        from xai_lightning.evaluation.summary_run import log_report_to_wandb

        log_report_to_wandb(report, poster_runs[0], name="poster-ablation-summary")
    return table


def _data_notes(runs) -> list[str]:
    """What the report must say of the data and the weights the poster arm trained on."""
    notes = []
    if any((run.manifest.get("data") or {}).get("kind") == "synthetic" for run in runs):
        notes.append(SYNTHETIC_DATA_NOTE)
    if any(run.weights == "scratch" for run in runs):
        notes.append("Weights: FROM SCRATCH (no ImageNet weights file), not the poster's pretrained encoder.")
    return notes


if __name__ == "__main__":
    main()
