"""Tools for multi-process mode: compaction and cleanup of a metrics directory.

In multi-process mode (``GatewayMetricsMiddleware(multiprocess_dir=...)`` or the
``GATEWAY_METRICS_MULTIPROC_DIR`` environment variable) every process records
into its own file of the directory, and a scrape sums all of them. Each live
process holds a lock on its file; a file nobody holds belongs to a process that
is gone.

- ``cleanup(directory)`` removes the files of processes that are gone: call it
  at the start of a job (gunicorn: ``on_starting``) so that the previous run
  does not count. It refuses while a live process still holds a file there.
- ``compact(directory)`` folds the files of processes that are gone into one
  file, so that scrape cost stops growing with every worker that came and
  went (gunicorn: ``child_exit``). It is safe while workers write, while other
  processes scrape, and if it is killed at any point.

Two servers must not share one directory.

Example::

    from gateway_metrics import multiprocess

    multiprocess.cleanup("/tmp/job-metrics")
    ...  # workers record
    multiprocess.compact("/tmp/job-metrics")
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

from gateway_metrics import _core

__all__ = ["DEFAULT_TIMEOUT", "Compaction", "cleanup", "compact", "mark_process_dead"]


#: Seconds ``compact`` and ``cleanup`` wait for the directory lock by default.
DEFAULT_TIMEOUT = 30.0


@dataclass(frozen=True)
class Compaction:
    """What ``compact`` did."""

    folded: int
    """Files of processes that were gone, folded into one."""
    discarded: int
    """Damaged files of processes that were gone, removed without being folded."""
    into: str | None
    """The file they were folded into; None when there was nothing to fold."""


def compact(directory: str | os.PathLike[str], *, timeout: float = DEFAULT_TIMEOUT) -> Compaction:
    """Folds the files of processes that are gone into one new file.

    Use it periodically (or at the end of a job) when many short-lived workers
    recorded into the directory. It is atomic: killed at any point, or unable
    to remove a file, it leaves every value counted exactly once (the next
    compaction finishes the removals). A file it could not remove is reported
    with a ``RuntimeWarning``. Waits at most ``timeout`` seconds for another
    compaction or cleanup to finish, then raises ``TimeoutError``.

    Example::

        done = compact("/tmp/job-metrics")
        print(f"{done.folded} files folded into {done.into}")
    """
    folded, discarded, into, not_removed = _core.compact(os.fspath(directory), timeout=timeout)
    for path, reason in not_removed:
        warnings.warn(
            f"compact() could not remove {path} ({reason}); its values are counted once, "
            "through the folded file, and the next compaction tries again",
            RuntimeWarning,
            stacklevel=2,
        )
    return Compaction(folded=folded, discarded=discarded, into=None if into is None else str(into))


def cleanup(
    directory: str | os.PathLike[str], *, force: bool = False, timeout: float = DEFAULT_TIMEOUT
) -> int:
    """Removes the files of processes that are gone; returns how many.

    Use it at the start of a job, before workers start recording (under
    gunicorn: in ``on_starting``). While a live process still holds a file of
    the directory it raises ``RuntimeError`` naming that process and removes
    nothing, since removing dead workers' files under a running server makes
    its totals fall; ``force=True`` removes them anyway. Waits at most
    ``timeout`` seconds for a compaction to finish, then raises ``TimeoutError``.

    Example::

        cleanup("/tmp/job-metrics")
    """
    return _core.cleanup(os.fspath(directory), force=force, timeout=timeout)


def mark_process_dead(pid: int, path: str | os.PathLike[str] | None = None) -> int:
    """Removes the requests-in-flight files of a process that is gone, in
    ``prometheus_client``'s multi-process mode; returns how many.

    ``prometheus_client`` sums its ``livesum`` gauges over every file until
    ``prometheus_client.multiprocess.mark_process_dead(pid)`` removes the dead
    process's; this does the same for this package's gauge files (named
    ``gauge_livesum_gwm-<pid>-<id>.db``), so call both (gunicorn: in
    ``child_exit``). ``path`` defaults to ``PROMETHEUS_MULTIPROC_DIR``. Our own
    multi-process mode needs no such call: a dead process's calls in flight
    stop counting by themselves.

    Example::

        def child_exit(server, worker):
            prometheus_client.multiprocess.mark_process_dead(worker.pid)
            gateway_metrics.multiprocess.mark_process_dead(worker.pid)
    """
    if isinstance(pid, bool) or not isinstance(pid, int):
        raise TypeError(f"pid must be an int, not {type(pid).__name__}")
    directory = path if path is not None else os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory is None:
        raise ValueError("path is None and PROMETHEUS_MULTIPROC_DIR is not set")
    removed = 0
    for name in os.listdir(directory):
        if name.startswith(f"gauge_livesum_gwm-{pid}-") and name.endswith(".db"):
            try:
                os.remove(os.path.join(directory, name))
                removed += 1
            except FileNotFoundError:
                pass  # removed meanwhile by another cleanup
    return removed
