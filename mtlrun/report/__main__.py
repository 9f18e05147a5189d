"""``python -m mtlrun.report OUTPUT_DIR`` is the ``mtlrun-report`` command."""

from mtlrun.report.cli import main

raise SystemExit(main())
