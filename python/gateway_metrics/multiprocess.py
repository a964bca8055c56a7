"""Tools for multi-process mode: compaction and cleanup of a metrics directory.

In multi-process mode (``GatewayMetricsMiddleware(multiprocess_dir=...)`` or the
``GATEWAY_METRICS_MULTIPROC_DIR`` environment variable) every process records
into its own file of the directory, and a scrape sums all of them. Each live
process holds a lock on its file; a file nobody holds belongs to a process that
is gone.

- ``cleanup(directory)`` removes the files of processes that are gone: call it
  at the start of a job so that the previous run does not count.
- ``compact(directory)`` folds the files of processes that are gone into one
  file, so that scrape cost stops growing with every worker that came and
  went. It is safe while workers write and while other processes scrape.

Example::

    from gateway_metrics import multiprocess

    multiprocess.cleanup("/tmp/job-metrics")
    ...  # workers record
    multiprocess.compact("/tmp/job-metrics")
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from gateway_metrics import _core

__all__ = ["Compaction", "cleanup", "compact"]


@dataclass(frozen=True)
class Compaction:
    """What ``compact`` did."""

    folded: int
    """Files of processes that were gone, folded into one."""
    discarded: int
    """Torn or truncated files removed without being folded."""
    into: str | None
    """The file they were folded into; None when there was nothing to fold."""


def compact(directory: str | os.PathLike[str]) -> Compaction:
    """Folds the files of processes that are gone into one new file.

    Use it periodically (or at the end of a job) when many short-lived workers
    recorded into the directory.

    Example::

        done = compact("/tmp/job-metrics")
        print(f"{done.folded} files folded into {done.into}")
    """
    folded, discarded, into = _core.compact(os.fspath(directory))
    return Compaction(folded=folded, discarded=discarded, into=None if into is None else str(into))


def cleanup(directory: str | os.PathLike[str]) -> int:
    """Removes the files of processes that are gone; returns how many.

    Use it at the start of a job, before workers start recording.

    Example::

        cleanup("/tmp/job-metrics")
    """
    return _core.cleanup(os.fspath(directory))
