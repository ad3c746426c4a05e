"""Train a multi-task defect classifier: ``python train.py --config configs/quickstart.yaml``.

Every option can be overridden on the command line; ``python train.py --help`` lists them.
``--seeds 0-9`` runs the config once per seed as one experiment (``--parallel N`` processes at a
time); re-running it skips finished seeds and resumes interrupted ones.
"""

import sys

from xai_lightning.experiment import parse_seeds, run_experiment, split_launcher_args


def launch(argv: list[str]) -> int:
    launcher, rest = split_launcher_args(argv)
    if launcher.seeds is None:
        from xai_lightning.cli import main

        main(rest)
        return 0
    outcome = run_experiment(__file__, rest, parse_seeds(launcher.seeds), launcher.parallel)
    return 0 if all(state.startswith(("finished", "already")) for state in outcome.values()) else 1


if __name__ == "__main__":
    sys.exit(launch(sys.argv[1:]))
