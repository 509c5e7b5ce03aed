"""``python -m train``: see :mod:`train.train` and ``python -m train --help``."""

from .train import main

main()
