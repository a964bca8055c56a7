"""gunicorn with uvicorn workers in gateway-metrics' own multi-process mode.

Each worker records into its own memory-mapped file of the directory; any
worker's /metrics shows the sum over all of them. One server per directory.
"""

import os

from gateway_metrics import multiprocess

os.environ.setdefault("GATEWAY_METRICS_MULTIPROC_DIR", "/run/gateway-metrics")
METRICS_DIR = os.environ["GATEWAY_METRICS_MULTIPROC_DIR"]

bind = os.environ.get("BIND", "127.0.0.1:8000")
workers = 4
worker_class = "uvicorn_worker.UvicornWorker"


def on_starting(server):
    # Drops the files of the previous run; refuses (RuntimeError) if another live
    # process still uses the directory, such as another server. With --preload the
    # master's own file (its middleware, made on import) is kept.
    os.makedirs(METRICS_DIR, exist_ok=True)
    multiprocess.cleanup(METRICS_DIR)


def child_exit(server, worker):
    # Folds the files of workers that are gone, so scrapes stay fast however
    # often workers are replaced. Their counts stay in the sum.
    try:
        multiprocess.compact(METRICS_DIR, timeout=10)
    except (OSError, TimeoutError) as error:
        server.log.warning("gateway-metrics compaction skipped: %s", error)
