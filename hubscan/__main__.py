"""``python -m hubscan …``: the ``hubscan`` command (:func:`hubscan.cli.main`)."""

import sys

from hubscan.cli import main

if __name__ == "__main__":
    sys.exit(main())
