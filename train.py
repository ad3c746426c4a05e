"""Train a multi-task defect classifier: ``python train.py --config configs/quickstart.yaml``.

Every option can be overridden on the command line; ``python train.py --help`` lists them.
"""

from xai_lightning.cli import main

if __name__ == "__main__":
    main()
