"""``python -m corral.cli``: the ``corral`` command without its console script."""

from corral.cli.entry import main

main()
