"""``python -m train``: see :mod:`train.train` and ``python -m train --help``."""

from .train import main

if __name__ == "__main__":  # DataLoader workers are spawned and re-import this module: they must not train
    main()
