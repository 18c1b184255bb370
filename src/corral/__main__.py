"""``python -m corral``: the ``corral`` command, where its console script is not on PATH."""

from corral.cli.entry import main

main()
