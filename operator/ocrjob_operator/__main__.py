"""`python -m ocrjob_operator`: run the OcrJob operator (kopf) with its settings, liveness and metrics.

    python -m ocrjob_operator --all-namespaces
    python -m ocrjob_operator --namespace team-a --namespace team-b --metrics-port 0

Cluster access: in-cluster ServiceAccount when KUBERNETES_SERVICE_HOST is set, else KUBECONFIG.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    env_ns = [n for n in os.environ.get("OCRJOB_WATCH_NAMESPACES", "").split(",") if n.strip()]
    parser = argparse.ArgumentParser(prog="python -m ocrjob_operator", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument("--namespace", "-n", action="append", default=None,
                       help="watch only this namespace (repeatable; env OCRJOB_WATCH_NAMESPACES, comma-separated)")
    scope.add_argument("--all-namespaces", "-A", action="store_true", help="watch OcrJobs in every namespace")
    parser.add_argument("--liveness", default=os.environ.get("OCRJOB_LIVENESS", "http://0.0.0.0:8080/healthz"),
                        help="kopf liveness endpoint URL ('' disables)")
    parser.add_argument("--metrics-port", type=int, default=int(os.environ.get("OCRJOB_METRICS_PORT", "9090")),
                        help="Prometheus metrics port (0 disables)")
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    args = parser.parse_args(argv)
    if not args.all_namespaces and not args.namespace:
        if not env_ns:
            parser.error("give --all-namespaces or at least one --namespace (or set OCRJOB_WATCH_NAMESPACES)")
        args.namespace = [n.strip() for n in env_ns]
    return args


class _QuietWakeups(logging.Filter):
    """The wake-up handlers run on every pod/job event; their success is not news."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (message.startswith("Handler '") and message.endswith("succeeded.")
                    and ("'pod_changed'" in message or "'job_changed'" in message))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import kopf

    from ocrjob_operator import handlers, metrics

    kopf.configure(verbose=args.verbose, log_format=kopf.LogFormat.PLAIN)
    if not args.verbose:
        logging.getLogger("kopf.objects").addFilter(_QuietWakeups())
    logging.getLogger("ocrjob").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    assert handlers.reconcile_job  # importing the module registers the handlers
    if args.metrics_port:
        metrics.serve(args.metrics_port)
    asyncio.run(kopf.operator(
        clusterwide=bool(args.all_namespaces),
        namespaces=args.namespace or (),
        liveness_endpoint=args.liveness or None,
        standalone=True,  # one replica (Deployment strategy Recreate): no peering objects needed
    ))
    return 0


if __name__ == "__main__":
    sys.exit(main())
