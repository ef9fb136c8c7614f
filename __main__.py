"""``python -m tiekd``: the ``tiekd`` command, e.g. ``torchrun --nproc-per-node 2 -m tiekd train-student ...``."""

from tiekd.cli import main

main(prog_name="tiekd")
