"""gunicorn with uvicorn workers in prometheus_client's multi-process mode.

Each worker records natively into prometheus_client's own file format, next to
the files prometheus_client writes for the application's other metrics;
MultiProcessCollector serves them all. One server per directory.
"""

import os

# Before anything imports prometheus_client, which reads it once.
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", "/run/prometheus-metrics")
METRICS_DIR = os.environ["PROMETHEUS_MULTIPROC_DIR"]
os.makedirs(METRICS_DIR, exist_ok=True)

from gateway_metrics import multiprocess as gateway_multiprocess  # noqa: E402
from prometheus_client import multiprocess  # noqa: E402

bind = os.environ.get("BIND", "127.0.0.1:8000")
workers = 4
worker_class = "uvicorn_worker.UvicornWorker"
# Workers fork from a master that has imported the app: the middleware follows
# the fork, and each worker records into files of its own.
preload_app = True


def on_starting(server):
    # prometheus_client's files have no owner lock: they must be removed
    # before the workers start, never while a server uses the directory.
    for name in os.listdir(METRICS_DIR):
        os.remove(os.path.join(METRICS_DIR, name))


def child_exit(server, worker):
    # prometheus_client's livesum gauges and ours (requests in flight) of the
    # dead worker stop counting.
    multiprocess.mark_process_dead(worker.pid)
    gateway_multiprocess.mark_process_dead(worker.pid)
