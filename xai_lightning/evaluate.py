"""Re-score an experiment's runs: model metrics per split, and attributions recomputed per seed.

``python evaluate.py runs/quickstart`` writes into ``runs/quickstart/evaluation/``:
``metrics.csv`` (one row per run, seed, split and model metric) and ``per_image.parquet`` (one row
per run, seed, split, image, method and localisation metric), the tidy shapes pandas aggregates.
Each run is loaded once; every part of its evaluation scores with the configuration it trained with.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from xai_lightning.atomic import write_atomically
from xai_lightning.checks import CheckSettings, check_run
from xai_lightning.data.splits import SPLITS
from xai_lightning.errors import ConfigError, RunError
from xai_lightning.evaluation import evaluate_run, evaluation_scoring, example_maps, explain_run, training_curves
from xai_lightning.evaluation.explanations import RunExplanations
from xai_lightning.evaluation.layers import layer_method_names, layer_sensitivity
from xai_lightning.evaluation.tcav import check_layer, layer_for_backbone, tcav_table
from xai_lightning.evaluation.settings import checked_overrides, configured_methods, methods_for
from xai_lightning.evaluation.summary_run import log_report_to_wandb
from xai_lightning.metrics.names import DEFAULT_WIN_TIES, POINTING_TIES, WIN_TIES
from xai_lightning.reporting.report import build_report
from xai_lightning.reporting.report_sections import SYNTHETIC_DATA_NOTE
from xai_lightning.models.backbones import create_backbone
from xai_lightning.runs import LoadedRun, Run, find_runs
from xai_lightning.metrics.faithfulness import CURVE_BASELINES
from xai_lightning.scoring import ScoringConfig
from xai_lightning.scoring.config import TARGETS

__all__ = [
    "TABLE_FILES",
    "RunExplanations",
    "configured_methods",
    "evaluate_run",
    "example_maps",
    "explain_run",
    "main",
    "training_curves",
]

#: The seed of the check set's and the example grid's samples and of their explanations (the same images
#: for every run).
CHECK_SEED = 0
#: Images per class in the report's heatmap grid.
EXAMPLES_PER_CLASS = 1

#: Where each tidy table of the attribution evaluation is written, relative to the output folder.
#: Deletion-curve steps of the layer-sensitivity pass (``--layer-sensitivity``): enough for an area, cheap per stage.
LAYER_FAITHFULNESS_STEPS = 5

TABLE_FILES = {
    "per_image": "per_image.parquet",
    "faithfulness_curves": "faithfulness_curves.csv",
    "agreement": "agreement.parquet",
    "randomization": "randomization.csv",
    "stability": "stability.csv",
    "scoring": "scoring.csv",
    "layer_sensitivity": "layer_sensitivity.csv",
    "tcav": "tcav.csv",
}


def _top_k(text: str) -> int | float:
    """``--top-k``: a pixel count (``100``) or a fraction of the image (``0.05``)."""
    try:
        return int(text)
    except ValueError:
        return float(text)


def add_scoring_arguments(parser: argparse.ArgumentParser) -> None:
    """The scoring overrides: one flag per :class:`~xai_lightning.scoring.ScoringConfig` option but the seed."""
    scoring = parser.add_argument_group(
        "scoring",
        "default: what each run's AttributionCallback recorded (xai/scoring.json); the report names overrides",
    )
    scoring.add_argument("--top-k", type=_top_k, default=None, help="K of TKO: a pixel count or a fraction of H·W")
    scoring.add_argument("--pointing-tolerance", type=int, default=None, help="pointing-game tolerance in pixels")
    scoring.add_argument("--pointing-ties", choices=POINTING_TIES, default=None)
    scoring.add_argument("--target", choices=TARGETS, default=None, help="the class explained")
    scoring.add_argument("--include-good", action=argparse.BooleanOptionalAction, default=None)
    scoring.add_argument(
        "--faithfulness-steps",
        type=int,
        default=None,
        help="deletion / insertion steps per image and method (0: skip; default: the run's, or 10 when it had none)",
    )
    scoring.add_argument("--faithfulness-baseline", choices=CURVE_BASELINES, default=None)
    scoring.add_argument(
        "--only-correct",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="score only the images the model classifies correctly (the poster's protocol)",
    )
    scoring.add_argument(
        "--win-ties", choices=WIN_TIES, default=None, help="first_listed reproduces the poster code's argsort flaw"
    )
    scoring.add_argument(
        "--top-k-iou", action=argparse.BooleanOptionalAction, default=None, help="also score the IoU of the top-K set"
    )


def add_analysis_arguments(parser: argparse.ArgumentParser) -> None:
    """The opt-in analyses: layer sensitivity and TCAV."""
    parser.add_argument(
        "--layer-sensitivity",
        action="store_true",
        help="also Grad-CAM at every encoder stage: TKO, pointing game and deletion AUC per stage (costs one "
        f"Grad-CAM and {LAYER_FAITHFULNESS_STEPS}-step deletion curves per stage and image)",
    )
    parser.add_argument(
        "--layer-method",
        choices=layer_method_names(),
        default=None,
        help="the layer method --layer-sensitivity hooks at every stage (default: gradcam)",
    )
    parser.add_argument(
        "--tcav",
        action="store_true",
        help="also TCAV: do concepts cut from each defect class's masks drive that class? (about 10 s per run at 64²)",
    )
    parser.add_argument(
        "--tcav-layer",
        action="append",
        default=[],
        metavar="[BACKBONE=]PATH",
        help="layer the CAVs are trained on, a module path such as encoder.layer3; BACKBONE=PATH for the runs of one "
        "backbone (repeatable). Default: the Grad-CAM layer, or the stage before it when it feeds the pooling",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Evaluate the runs of one or more experiments and write a report.")
    parser.add_argument("experiment_dirs", type=Path, nargs="+", help="experiment folder(s) (or single run folders)")
    parser.add_argument("--checkpoint", choices=["best", "last"], default="best")
    parser.add_argument("--splits", nargs="+", choices=SPLITS, default=list(SPLITS))
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: <first experiment>/evaluation)")
    parser.add_argument(
        "--methods",
        nargs="*",
        default=None,
        help="attribution methods to recompute (default: those each run's AttributionCallback used); none: skip",
    )
    parser.add_argument("--xai-splits", nargs="+", choices=SPLITS, default=["train", "test"])
    parser.add_argument("--max-images-per-class", type=int, default=None, help="default: every image with a mask")
    parser.add_argument("--batch-size", type=int, default=8, help="images explained together (the callback's default)")
    add_scoring_arguments(parser)
    checks = parser.add_argument_group(
        "checks", "robustness, randomisation and stability, on a fixed sample of --check-split (they cost many passes)"
    )
    checks.add_argument("--check-images-per-class", type=int, default=2, help="defect images per class (0: no checks)")
    checks.add_argument("--check-split", choices=SPLITS, default=None, help="default: the last of --xai-splits")
    checks.add_argument(
        "--robustness-samples",
        type=int,
        default=5,
        help="perturbations per image for infidelity and max-sensitivity (0: skip)",
    )
    checks.add_argument(
        "--randomization",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="cascading model-parameter randomisation (sanity check)",
    )
    checks.add_argument(
        "--stability-runs", type=int, default=5, help="seeded runs per stochastic method (below 2: skip)"
    )
    add_analysis_arguments(parser)
    parser.add_argument("--bootstrap", type=int, default=10000, help="bootstrap resamples for the CIs")
    parser.add_argument(
        "--ddof", type=int, choices=(0, 1), default=1, help="std over seeds: 1 (sample std) or 0 (the poster's)"
    )
    parser.add_argument("--no-wandb", action="store_true", help="do not log the report as a W&B summary run")
    return parser


def scoring_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The scoring options given on the command line (None: as the run recorded)."""
    return {name: getattr(args, name) for name in ScoringConfig().to_dict() if name != "seed" and hasattr(args, name)}


def check_settings(args: argparse.Namespace) -> CheckSettings:
    try:
        return CheckSettings(
            images_per_class=args.check_images_per_class,
            robustness_samples=args.robustness_samples,
            randomization=args.randomization,
            stability_runs=args.stability_runs,
        )
    except ValueError as error:
        raise ConfigError(
            f"evaluate.py: {error} (options --check-images-per-class, --robustness-samples, --stability-runs)"
        ) from error


@dataclass
class Collected:
    """Every run's share of the tables, concatenated once all runs are done."""

    model: list[pd.DataFrame] = field(default_factory=list)
    curves: list[pd.DataFrame] = field(default_factory=list)
    tables: dict[str, list[pd.DataFrame]] = field(default_factory=lambda: {name: [] for name in TABLE_FILES})
    examples: list[dict] = field(default_factory=list)
    synthetic: bool = False
    #: ``{option: (training, evaluation)}`` per run whose evaluation scores differently from its training.
    differences: dict[str, dict[str, tuple[Any, Any]]] = field(default_factory=dict)

    def merge(self, other: Collected) -> None:
        """Add another run's share (examples: the first run that has any)."""
        self.model += other.model
        self.curves += other.curves
        for name, frames in other.tables.items():
            self.tables[name] += frames
        self.examples = self.examples or other.examples
        self.synthetic = self.synthetic or other.synthetic
        self.differences.update(other.differences)


def evaluate_one(
    run: Run, experiment: str, args: argparse.Namespace, settings: CheckSettings, out: Collected, examples: bool = True
) -> None:
    """Everything evaluation computes on one run, from one load of its checkpoint and data (``examples``: the
    example heatmap grid too)."""
    loaded = run.load(args.checkpoint)
    out.synthetic = out.synthetic or loaded.data.is_synthetic
    out.model.append(evaluate_run(loaded, tuple(args.splits)).assign(experiment=experiment))
    out.curves.append(training_curves(run, experiment))
    methods = methods_for(run, args.methods)
    if not methods:
        return
    scoring, differences = evaluation_scoring(run, **scoring_overrides(args))
    if differences:
        out.differences[f"{experiment}/{run.name}"] = differences
    ids = {"experiment": experiment, "run": run.name, "seed": run.seed}
    out.tables["scoring"].append(pd.DataFrame([{**ids, **scoring.to_dict()}]))
    check_split, example_split = args.check_split or args.xai_splits[-1], args.xai_splits[-1]
    reuse = scoring.target == "label" and scoring.seed == CHECK_SEED
    explained = explain_run(
        loaded,
        methods,
        tuple(args.xai_splits),
        max_images_per_class=args.max_images_per_class,
        batch_size=args.batch_size,
        experiment=experiment,
        scoring=scoring,
        keep_maps=[
            *(sampled(loaded, check_split, settings.images_per_class) if reuse else ()),
            *(sampled(loaded, example_split, EXAMPLES_PER_CLASS) if reuse and examples else ()),
        ],
    )
    checked = check_run(
        loaded, methods, check_split, settings, seed=CHECK_SEED, experiment=experiment, known_maps=explained.maps
    )
    backbone = run.backbone
    out.tables["per_image"] += [explained.per_image, checked.per_image.assign(backbone=backbone)]
    out.tables["faithfulness_curves"].append(explained.curves)
    out.tables["agreement"].append(explained.agreement)
    out.tables["randomization"].append(checked.randomization)
    out.tables["stability"].append(checked.stability)
    optional_analyses(loaded, experiment, backbone, scoring, args, out)
    if examples:
        out.examples = example_maps(
            loaded, methods, example_split, EXAMPLES_PER_CLASS, seed=CHECK_SEED, known_maps=explained.maps
        )


def optional_analyses(
    loaded: LoadedRun,
    experiment: str,
    backbone: str | None,
    scoring: ScoringConfig,
    args: argparse.Namespace,
    out: Collected,
) -> None:
    """The opt-in analyses of one run: Grad-CAM at every stage (``--layer-sensitivity``) and TCAV (``--tcav``)."""
    if args.layer_sensitivity:
        out.tables["layer_sensitivity"].append(
            layer_sensitivity(
                loaded,
                method=args.layer_method or "gradcam",
                split=args.xai_splits[-1],
                faithfulness_steps=LAYER_FAITHFULNESS_STEPS,
                max_images_per_class=args.max_images_per_class,
                experiment=experiment,
                batch_size=args.batch_size,
                scoring=scoring,
            )
        )
    if args.tcav:
        layer = layer_for_backbone(args.tcav_layer, backbone)  # checked for every run's backbone by check_tcav_layers
        table = tcav_table(loaded, split="train", layer=layer, seed=CHECK_SEED, experiment=experiment)
        out.tables["tcav"].append(table)


def sampled(loaded: LoadedRun, split: str, per_class: int) -> list[tuple[str, str]]:
    """``(split, image_id)`` of the seeded sample the checks (or the example grid) take of ``split``.

    The explanation pass keeps these images' maps (when it explains them the way the checks would:
    the label, the same seed), so the checks need not explain the intact model again.
    """
    return [(split, image_id) for image_id in loaded.sample_ids(split, per_class, CHECK_SEED)] if per_class > 0 else []


def scoring_notes(differences: dict[str, dict[str, tuple[Any, Any]]]) -> list[str]:
    """Report lines naming each scoring setting in which evaluation differs from training."""
    if not differences:
        return ["Scoring: as each run's training passes scored (xai/scoring.json)."]
    by_change: dict[str, list[str]] = {}
    for run, changed in differences.items():
        for option, (trained, evaluated) in changed.items():
            by_change.setdefault(f"`{option}` {trained!r} in training, {evaluated!r} here", []).append(run)
    return [f"Scoring differs from training: {change} ({', '.join(runs)})." for change, runs in by_change.items()]


def weights_notes(experiments: dict[Path, list[Run]]) -> list[str]:
    """A report line naming the runs whose encoder trained from scratch although ImageNet weights were asked for
    (``model.pretrained: if_available`` without the weights file)."""
    scratch = [
        f"{directory.name}/{run.name}"
        for directory, runs in experiments.items()
        for run in runs
        if (run.config.get("model") or {}).get("pretrained") and run.weights == "scratch"
    ]
    if not scratch:
        return []
    return [f"Weights: FROM SCRATCH, not ImageNet (no weights file when they trained): {', '.join(scratch)}."]


def report_win_ties(scoring: pd.DataFrame | None, notes: list[str]) -> str:
    """The win-rate tie rule of the report: the runs' own (``scoring.csv``) when they agree, else ``fair`` (noted)."""
    rules = sorted(set(scoring["win_ties"])) if scoring is not None and "win_ties" in scoring else [DEFAULT_WIN_TIES]
    if len(rules) > 1:
        notes.append(f"Runs score ties differently ({', '.join(rules)}); the report shares ties fairly.")
        return DEFAULT_WIN_TIES
    if rules[0] != DEFAULT_WIN_TIES:
        notes.append(f"Win-rate ties go to the first-listed method (`win_ties: {rules[0]}`), as in the poster's code.")
    return rules[0]


def check_options(args: argparse.Namespace) -> None:
    """Refuse bad options before any run is loaded (a scoring override is checked against the defaults)."""
    checked_overrides(scoring_overrides(args))
    layer_for_backbone(args.tcav_layer, None)  # malformed or repeated entries, before any run is loaded
    if args.layer_method and not args.layer_sensitivity:
        raise ConfigError("evaluate.py --layer-method is given without --layer-sensitivity; add --layer-sensitivity.")
    if args.tcav_layer and not args.tcav:
        raise ConfigError("evaluate.py --tcav-layer is given without --tcav; add --tcav to run TCAV.")
    for option in ("batch_size", "max_images_per_class"):
        value = getattr(args, option)
        if value is not None and value < 1:
            raise ConfigError(f"evaluate.py --{option.replace('_', '-')} is {value}; use 1 or more.")


def check_tcav_layers(runs: list[Run], layers: list[str]) -> None:
    """Refuse, before any run is evaluated, a ``--tcav-layer`` entry for a backbone that no run uses (a typo would
    silently fall back to the default layer) and a path that is not in the encoder of a backbone it applies to."""
    backbones = sorted({run.backbone for run in runs})
    unused = sorted({value.partition("=")[0] for value in layers if "=" in value} - set(backbones))
    if unused:
        raise ConfigError(
            f"evaluate.py --tcav-layer names backbone {', '.join(map(repr, unused))}, which no run evaluated here "
            f"uses; the runs use {', '.join(backbones)}."
        )
    for backbone in backbones:
        layer = layer_for_backbone(layers, backbone)
        if layer:
            option = f"evaluate.py --tcav-layer for the {backbone} runs"
            check_layer(create_backbone(backbone).encoder, layer, option, backbone)


def evaluate_all(
    experiments: dict[Path, list[Run]], args: argparse.Namespace, settings: CheckSettings
) -> tuple[Collected, Run, dict[str, str]]:
    """Every run's share of the tables, the first run that succeeded, and ``{experiment/run: error}`` of the others.

    One run's tables join the others' only once all of them are computed: a run that fails adds nothing,
    and the runs before and after it are still evaluated. Raises :class:`RunError` when every run fails.
    """
    collected, first, failed = Collected(), None, {}
    for directory, runs in experiments.items():
        for run in tqdm(runs, desc=f"evaluating {directory.name}", unit="run"):
            share = Collected()
            try:
                evaluate_one(run, directory.name, args, settings, share, examples=not collected.examples)
            except ConfigError:
                raise  # an option this command was given (--methods ...) that fails every run alike: stop at once
            except Exception as error:  # noqa: BLE001 - any other failure of one run is reported with the others'
                failed[f"{directory.name}/{run.name}"] = f"{type(error).__name__}: {error}"
                print(f"[evaluate] {run.path} failed and is left out: {failed[f'{directory.name}/{run.name}']}")
                continue
            collected.merge(share)
            first = first or run
    if first is None:
        raise RunError("Every run failed to evaluate:\n" + "\n".join(f"  {r}: {e}" for r, e in failed.items()))
    return collected, first, failed


def main(argv: list[str] | None = None) -> pd.DataFrame:
    args = build_parser().parse_args(argv)
    check_options(args)
    settings = check_settings(args)
    experiments = {directory: find_runs(directory) for directory in args.experiment_dirs}
    if args.tcav and args.tcav_layer:
        check_tcav_layers([run for runs in experiments.values() for run in runs], args.tcav_layer)
    out = args.out or args.experiment_dirs[0] / "evaluation"
    out.mkdir(parents=True, exist_ok=True)
    collected, first, failed = evaluate_all(experiments, args, settings)
    table = pd.concat(collected.model, ignore_index=True)
    write_atomically(out / "metrics.csv", lambda p: table.to_csv(p, index=False))
    written = {name: _write(frames, out / TABLE_FILES[name]) for name, frames in collected.tables.items()}
    curves_table = pd.concat(collected.curves, ignore_index=True)
    write_atomically(out / "curves.csv", lambda p: curves_table.to_csv(p, index=False))

    notes = [f"Runs: {', '.join(f'{d} ({len(r)} seeds)' for d, r in experiments.items())}."]
    if collected.synthetic:
        notes.append(SYNTHETIC_DATA_NOTE)
    if written["scoring"] is not None:
        notes += scoring_notes(collected.differences)
    notes += [f"FAILED and left out: {run} ({error})." for run, error in failed.items()]
    notes += weights_notes(experiments)
    report = build_report(
        out,
        table,
        written["per_image"],
        curves_table,
        collected.examples,
        title=f"Evaluation of {', '.join(e.name for e in experiments)}",
        notes=notes,
        n_boot=args.bootstrap,
        faithfulness_curves=written["faithfulness_curves"],
        randomization=written["randomization"],
        stability=written["stability"],
        agreement=written["agreement"],
        ddof=args.ddof,
        win_ties=report_win_ties(written["scoring"], notes),
        layer_sensitivity=written["layer_sensitivity"],
        tcav=written["tcav"],
    )
    summary = table[table["metric"].isin(["loss", "acc", "balanced_acc", "seg_iou"])]
    print(
        summary.pivot_table(index=["experiment", "run", "split"], columns="metric", values="value").round(4).to_string()
    )
    print("\n".join(report.sentences[:10]))
    print(f"\nReport: {report.path}")
    if not args.no_wandb:
        log_report_to_wandb(report, first, name=f"{'+'.join(e.name for e in experiments)}-summary")
    if failed:
        print(f"[evaluate] {len(failed)} run(s) failed and are left out: {', '.join(failed)} (see above).")
    table.attrs["failed"] = failed
    return table


def _write(frames: list[pd.DataFrame], path: Path) -> pd.DataFrame | None:
    """Concatenate one table's per-run parts and write it (CSV or Parquet by suffix); None when empty."""
    frames = [frame for frame in frames if len(frame)]
    if not frames:
        return None
    table = pd.concat(frames, ignore_index=True)
    if path.suffix == ".parquet":
        write_atomically(path, lambda p: table.to_parquet(p, index=False))
    else:
        write_atomically(path, lambda p: table.to_csv(p, index=False))
    return table
