"""Serving under load while ``/metrics`` is scraped: the handlers' latency and the
event loop's lag, ours against ``prometheus_client.make_asgi_app`` with the reference.

Each case starts a uvicorn worker (``load_app.py``) holding one contender's
middleware with ``label_sets`` label sets, sends it ``rate`` requests per
second on keep-alive connections (each request's latency counted from when it
was due, so a stalled loop shows in full), and scrapes ``/metrics`` as
Prometheus does (OpenMetrics, gzip) every ``scrape_every_s`` on a connection of
its own, or not at all. The worker measures how late its loop wakes from 10 ms
sleeps.

    python benches/load.py                   # every case (a few minutes)
    python benches/load.py --seconds 5 --label-sets 2500
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import h11

BENCHES = Path(__file__).resolve().parent
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)
#: Connections the load is spread over.
CONNECTIONS = 8
#: How long past its end a case may run before it is cut short.
LIMIT_S = 60.0


@dataclass(frozen=True)
class Outcome:
    """One case's figures, in milliseconds."""

    contender: str
    label_sets: int
    scrape_every_s: float | None
    requests: int
    #: Whether every request due was answered within the case's time limit.
    finished: bool
    p50_ms: float
    p99_ms: float
    max_lag_ms: float
    scrape_ms: float | None
    scrape_bytes: int | None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Client:
    """One keep-alive HTTP/1.1 connection (h11, the parser uvicorn uses)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.connection = h11.Connection(h11.CLIENT)

    @classmethod
    async def open(cls, port: int) -> Client:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def get(self, path: str, headers: tuple[tuple[str, str], ...] = ()) -> bytes:
        request = h11.Request(method="GET", target=path, headers=[("Host", "127.0.0.1"), *headers])
        self.writer.write(self.connection.send(request) + self.connection.send(h11.EndOfMessage()))
        body = bytearray()
        while True:
            event = self.connection.next_event()
            if event is h11.NEED_DATA:
                self.connection.receive_data(await self.reader.read(1 << 16))
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                self.connection.start_next_cycle()
                return bytes(body)
            elif isinstance(event, h11.ConnectionClosed):
                raise ConnectionError("the server closed the connection")

    def close(self) -> None:
        self.writer.close()


def serve(contender: str, label_sets: int) -> tuple[subprocess.Popen[bytes], int]:
    """A uvicorn worker serving ``load_app`` for ``contender``, once it answers."""
    port = free_port()
    argv = [sys.executable, "-m", "uvicorn", "--factory", "load_app:make_app"]
    argv += ["--host", "127.0.0.1", "--port", str(port), "--no-access-log"]
    # Connections idle while a stalled loop catches up are kept, not closed.
    argv += ["--log-level", "warning", "--lifespan", "on", "--timeout-keep-alive", "600"]
    environment = {**os.environ, "LOAD_CONTENDER": contender, "LOAD_LABEL_SETS": str(label_sets)}
    process = subprocess.Popen(argv, cwd=BENCHES, env=environment)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the {contender} worker exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return process, port
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"the {contender} worker did not start in 300 s")


async def load(
    port: int, rate: float, seconds: float, scrape_every_s: float | None
) -> tuple[list[float], list[float], list[int], list[float]]:
    """Latencies (s), scrape times (s) and sizes, and the loop's lags (ms)."""
    latencies: list[float] = []
    scrapes: list[float] = []
    sizes: list[int] = []
    start = time.perf_counter() + 0.2
    end = start + seconds
    interval = CONNECTIONS / rate

    async def worker(index: int) -> None:
        client = await Client.open(port)
        due = start + index * interval / CONNECTIONS
        try:
            while due < end:
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                await client.get("/work")
                latencies.append(time.perf_counter() - due)
                due += interval
        finally:
            client.close()

    async def scraper() -> None:
        assert scrape_every_s is not None
        client = await Client.open(port)
        due = start
        headers = (("Accept", PROMETHEUS_ACCEPT), ("Accept-Encoding", "gzip"))
        try:
            while due < end:
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                began = time.perf_counter()
                body = await client.get("/metrics", headers)
                scrapes.append(time.perf_counter() - began)
                sizes.append(len(body))
                due += scrape_every_s
        finally:
            client.close()

    lag_client = await Client.open(port)
    await lag_client.get("/lag")  # forget the start-up's lags
    tasks = [worker(index) for index in range(CONNECTIONS)]
    if scrape_every_s is not None:
        tasks.append(scraper())
    try:
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=seconds + LIMIT_S)
    except asyncio.TimeoutError:
        # The worker fell so far behind that the rest is not worth waiting for.
        return latencies, scrapes, sizes, []
    lags = json.loads(await lag_client.get("/lag"))
    lag_client.close()
    return latencies, scrapes, sizes, lags


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run_case(
    contender: str, label_sets: int, scrape_every_s: float | None, rate: float, seconds: float
) -> Outcome:
    process, port = serve(contender, label_sets)
    try:
        latencies, scrapes, sizes, lags = asyncio.run(load(port, rate, seconds, scrape_every_s))
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)
    return Outcome(
        contender=contender,
        label_sets=label_sets,
        scrape_every_s=scrape_every_s,
        requests=len(latencies),
        finished=bool(lags) and len(latencies) >= int(rate * seconds),
        p50_ms=percentile(latencies, 0.5) * 1e3,
        p99_ms=percentile(latencies, 0.99) * 1e3,
        max_lag_ms=max(lags, default=0.0),
        scrape_ms=statistics.median(scrapes) * 1e3 if scrapes else None,
        scrape_bytes=sizes[-1] if sizes else None,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="per case (10)")
    parser.add_argument("--rate", type=float, default=500.0, help="requests per second (500)")
    parser.add_argument("--label-sets", type=int, nargs="+", default=[2_500, 25_000])
    parser.add_argument("--contenders", nargs="+", default=["ours", "reference"])
    args = parser.parse_args()
    print(
        "| contender | label sets | scrapes | requests | p50 | p99 | max loop lag "
        "| scrape (median) | body |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for label_sets in args.label_sets:
        for contender in args.contenders:
            for every in (None, 1.0, 0.1):
                outcome = run_case(contender, label_sets, every, args.rate, args.seconds)
                scrapes = "none" if every is None else f"every {every:g} s"
                if not outcome.finished:
                    print(
                        f"| {contender} | {label_sets:,} | {scrapes} | {outcome.requests:,} "
                        f"answered in {args.seconds + LIMIT_S:g} s | - | - | - | - | - |",
                        flush=True,
                    )
                    continue
                scrape = "-" if outcome.scrape_ms is None else f"{outcome.scrape_ms:,.1f} ms"
                size = "-" if outcome.scrape_bytes is None else f"{outcome.scrape_bytes:,} B"
                print(
                    f"| {contender} | {label_sets:,} | {scrapes} | {outcome.requests:,} "
                    f"| {outcome.p50_ms:.2f} ms | {outcome.p99_ms:.2f} ms "
                    f"| {outcome.max_lag_ms:.1f} ms | {scrape} | {size} |",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
