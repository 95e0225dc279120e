"""The ground floor for errors shared across stages: this module imports nothing of ours.

Stages raise `StageError` (or a subclass) for expected failures; `cli.run_main` turns it into one
clear line and a non-zero exit. Living here rather than in `cli.py` means a stage can raise it
without importing the command-line plumbing.
"""

from __future__ import annotations


class StageError(RuntimeError):
    """An expected failure with a message for people: what went wrong and what to do next."""
