"""``python -m mtlrun`` is the ``mtlrun`` command."""

from mtlrun.cli import main

main()
