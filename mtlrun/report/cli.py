"""Placeholder replaced by the report implementation."""


def main() -> None:
    raise SystemExit("mtlrun-report: not implemented yet")
