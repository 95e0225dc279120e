"""The ground floor for errors shared across stages: this module imports nothing of ours.

Stages raise `StageError` (or a subclass) for expected failures; `cli.run_main` turns it into one
clear line and a non-zero exit. Living here rather than in `cli.py` means a stage can raise it
without importing the command-line plumbing.
"""

from __future__ import annotations


class StageError(RuntimeError):
    """An expected failure with a message for people: what went wrong and what to do next.

    ``exit_code`` is what the command exits with: 2 by default (something the user gave must
    change), 1 for a fault of the machine the same command succeeds on once it is fixed.
    """

    exit_code = 2


class OutOfSpaceError(StageError):
    """A disk (or quota) filled up while a stage wrote its outputs (ENOSPC, EDQUOT).

    Exit 1, not 2: the command was right; free space and rerun it unchanged. The message names
    the path, the free space left there and what was kept (:func:`atomic.out_of_space`).
    """

    exit_code = 1
