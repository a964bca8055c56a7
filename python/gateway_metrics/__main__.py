"""Command line: ``python -m gateway_metrics demo`` and ``python -m gateway_metrics bench``."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gateway_metrics")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo", help="record simulated gateway traffic, scrape it and summarise it"
    )
    demo.add_argument("--duration", type=float, default=10.0, help="seconds of traffic (10)")
    demo.add_argument("--port", type=int, default=0, help="exporter port (0: any free port)")
    demo.add_argument("--addr", default="127.0.0.1", help="exporter address (127.0.0.1)")
    demo.add_argument("--seed", type=int, default=7, help="random seed of the traffic")
    demo.add_argument(
        "--serve", action="store_true", help="keep the exporter up after the summary (Ctrl-C ends)"
    )
    commands.add_parser(
        "bench", help="compare the hot path and a scrape with the reference and the floor"
    )
    args = parser.parse_args(argv)

    if args.command == "bench":
        from gateway_metrics._bench_report import print_comparison

        return print_comparison()

    from gateway_metrics._demo import run_demo

    return run_demo(
        duration=args.duration, port=args.port, addr=args.addr, seed=args.seed, serve=args.serve
    )


if __name__ == "__main__":
    sys.exit(main())
