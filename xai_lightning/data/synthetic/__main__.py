"""``python -m xai_lightning.data.synthetic --out data/synthetic``: write the synthetic set from the command line.

Options: ``--help``, or :func:`xai_lightning.data.synthetic.cli.main`.
"""

import sys

from xai_lightning.data.synthetic.cli import main

if __name__ == "__main__":
    sys.exit(main())
