"""The operations kit: a Grafana dashboard, Prometheus recording and alerting rules.

Everything is described once, as data: each panel's title, unit and queries
(``panels``), each recording rule and each alert with its threshold
(``rules``); ``grafana`` builds the dashboard from the panels. The
dashboard JSON and the rule files are derived from it for the extra labels a
deployment configured, so the queries always match the families the
middleware emits.

Export them with ``python -m gateway_metrics ops export DIR`` or::

    from gateway_metrics import ops

    ops.export("ops-kit", extra_labels=["team"],
               thresholds=ops.Thresholds(cost_usd_per_hour=20.0))
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from gateway_metrics._core import DEFAULT_NAMESPACE, check_extra_labels
from gateway_metrics.ops._namespace import in_namespace
from gateway_metrics.ops._yaml import dump
from gateway_metrics.ops.grafana import dashboard
from gateway_metrics.ops.panels import PANELS, Panel, Query
from gateway_metrics.ops.rules import Thresholds, alerting_rules, recording_rules

__all__ = [
    "PANELS",
    "Panel",
    "Query",
    "Thresholds",
    "alerting_rules",
    "dashboard",
    "export",
    "in_namespace",
    "recording_rules",
]

#: Files ``export`` writes.
DASHBOARD_FILE = "gateway-metrics-dashboard.json"
RECORDING_RULES_FILE = "gateway-metrics-recording-rules.yml"
ALERTING_RULES_FILE = "gateway-metrics-alerting-rules.yml"


def export(
    directory: str | os.PathLike[str],
    *,
    extra_labels: Iterable[str] = (),
    thresholds: Thresholds | None = None,
    namespace: str = DEFAULT_NAMESPACE,
) -> list[Path]:
    """Writes the dashboard and both rule files into ``directory``; returns their paths.

    ``extra_labels`` must be labels a middleware accepts (``ValueError``
    otherwise, naming the label); ``namespace`` is the one the middleware was
    given, which every query and recording rule then names. A ``directory``
    that is a file or cannot be created is an ``OSError`` naming it
    (``NotADirectoryError`` for a file). Each file is written to a new
    temporary file beside it and renamed over its name: a symbolic link
    planted there is replaced, never followed, and a reader never sees half a
    file.

    Example::

        ops.export("ops-kit", extra_labels=["team"])
    """
    if isinstance(extra_labels, (str, bytes)):
        raise TypeError("extra_labels must be an iterable of label names, not a str")
    extras = list(extra_labels)
    check_extra_labels(extras)
    written = {
        DASHBOARD_FILE: json.dumps(in_namespace(dashboard(extras), namespace), indent=2) + "\n",
        RECORDING_RULES_FILE: dump(in_namespace(recording_rules(extras), namespace)),
        ALERTING_RULES_FILE: dump(in_namespace(alerting_rules(thresholds, extras), namespace)),
    }
    target = Path(directory)
    try:
        target.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise NotADirectoryError(
            errno.ENOTDIR, "directory is a file, not a directory", str(target)
        ) from None
    except OSError as error:
        raise type(error)(
            error.errno, f"directory cannot be created: {error.strerror}", str(target)
        ) from None
    paths = []
    for name, text in written.items():
        path = target / name
        _replace(path, text)
        paths.append(path)
    return paths


def _replace(path: Path, text: str) -> None:
    """Writes ``text`` to a fresh file in ``path``'s directory and renames it to ``path``."""
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
