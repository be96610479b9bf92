"""`python -m bioknow.training.torchrun ARGS`: torchrun (the same arguments) for a sweep's point of
several ranks. Like every command a sweep runs, it dies with the sweep; its ranks, with it."""

import os
import sys

from bioknow.base.process import PARENT_ENV, die_with_parent

if __name__ == "__main__":
    die_with_parent()
    os.environ[PARENT_ENV] = str(os.getpid())  # the ranks' parent is this process
    from torch.distributed.run import main

    main(sys.argv[1:])
