"""Command line: ``python -m gateway_metrics demo`` and ``python -m gateway_metrics ops export``."""

from __future__ import annotations

import argparse
import importlib.util
import sys

from gateway_metrics.ops import Thresholds
from gateway_metrics.ops import export as export_kit


def _as_options(message: str) -> str:
    """An error of ``ops.export`` or ``Thresholds`` with arguments named as CLI options."""
    for name in (
        "extra_labels",
        "namespace",
        "job_regex",
        "error_ratio",
        "latency_p95_s",
        "time_to_first_token_p95_s",
        "cost_usd_per_hour",
    ):
        option = "--extra-label" if name == "extra_labels" else "--" + name.replace("_", "-")
        message = message.replace(name, option)
    return message


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
        "--namespace", default="ractogateway", help="the family names' prefix (ractogateway)"
    )
    demo.add_argument(
        "--serve", action="store_true", help="keep the exporter up after the summary (Ctrl-C ends)"
    )
    demo.add_argument(
        "--serve-seconds", type=float, help="with --serve: stop after this long (default: Ctrl-C)"
    )
    demo.add_argument(
        "--serve-rate",
        type=float,
        default=1000.0,
        help="with --serve: simulated requests per second while serving (1000)",
    )
    ops = commands.add_parser("ops", help="the Grafana dashboard and Prometheus rules")
    ops_commands = ops.add_subparsers(dest="ops_command", required=True)
    export = ops_commands.add_parser("export", help="write the dashboard and rule files to DIR")
    export.add_argument("directory", metavar="DIR")
    export.add_argument(
        "--extra-label",
        action="append",
        default=[],
        metavar="NAME",
        help="an extra label the middleware was configured with (repeat for several)",
    )
    export.add_argument(
        "--namespace",
        default="ractogateway",
        help="the namespace the middleware was given (ractogateway)",
    )
    defaults = Thresholds()
    for name, help_text in (
        ("error_ratio", "GatewayErrorRatioHigh above this share of requests"),
        ("latency_p95_s", "GatewayLatencyP95High above this p95, seconds"),
        ("time_to_first_token_p95_s", "GatewayTimeToFirstTokenHigh above this p95, seconds"),
        ("cost_usd_per_hour", "GatewayCostBurnHigh above this USD per hour, per job"),
    ):
        export.add_argument(
            f"--{name.replace('_', '-')}",
            type=float,
            default=getattr(defaults, name),
            help=f"{help_text} ({getattr(defaults, name):g})",
        )
    export.add_argument(
        "--job-regex", default=defaults.job_regex, help="GatewayTargetDown's jobs (.+: all)"
    )
    args = parser.parse_args(argv)

    if args.command == "ops":
        try:
            thresholds = Thresholds(
                error_ratio=args.error_ratio,
                latency_p95_s=args.latency_p95_s,
                time_to_first_token_p95_s=args.time_to_first_token_p95_s,
                cost_usd_per_hour=args.cost_usd_per_hour,
                job_regex=args.job_regex,
            )
            paths = export_kit(
                args.directory,
                extra_labels=args.extra_label,
                thresholds=thresholds,
                namespace=args.namespace,
            )
        except (TypeError, ValueError) as refused:
            # Said as the option is spelt on the command line; exits with status 2.
            export.error(_as_options(str(refused)))
        except OSError as failed:
            # A DIR that is a file, or one that cannot be created or written to.
            export.error(f"DIR {failed.filename or args.directory}: {failed.strerror or failed}")
        for path in paths:
            print(path)
        return 0

    if importlib.util.find_spec("rich") is None:
        demo.error(
            "the demo draws with rich, which is not installed: pip install 'gateway-metrics[demo]'"
        )
    from gateway_metrics._demo import run_demo

    return run_demo(
        duration=args.duration,
        port=args.port,
        addr=args.addr,
        seed=args.seed,
        serve=args.serve,
        serve_seconds=args.serve_seconds,
        serve_rate=args.serve_rate,
        namespace=args.namespace,
    )


if __name__ == "__main__":
    sys.exit(main())
