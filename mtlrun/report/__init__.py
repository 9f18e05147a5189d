"""Reports from finished runs: reads ``metrics.json`` files only (no training code) and writes
markdown tables, CSV files and plots. Entry point: ``mtlrun-report`` (:mod:`mtlrun.report.cli`)."""
