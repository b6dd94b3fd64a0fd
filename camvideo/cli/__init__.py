"""The ``camvideo`` command line: ``annotate`` and ``models`` (:mod:`.main`), ``live`` (:mod:`.live`)."""

from .main import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, build_parser, main, plan_outputs

__all__ = ["EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "build_parser", "main", "plan_outputs"]
