"""``python -m nowcast``: the same as the ``nowcast`` command."""

from nowcast.cli import main

main()
