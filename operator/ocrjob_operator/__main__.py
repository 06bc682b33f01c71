"""`python -m ocrjob_operator`: run the OcrJob operator (kopf) with its settings, leader election, liveness and
metrics.

    python -m ocrjob_operator --all-namespaces
    python -m ocrjob_operator --namespace team-a --namespace team-b --metrics-port 0

Exactly one instance acts: each one campaigns for a coordination.k8s.io Lease (`--lease-namespace/--lease-name`)
and starts kopf only once it holds it; a standby waits, logging who leads. A leader that loses the Lease exits
with EXIT_LEADERSHIP_LOST at once (no graceful shutdown: it must stop acting now) and is restarted as a standby;
a clean stop (SIGTERM) lets kopf finish, then releases the Lease so a standby takes over at once.
The liveness endpoint is served for the whole life of the process, standby or leader (see health.py).

Cluster access: in-cluster ServiceAccount when KUBERNETES_SERVICE_HOST is set, else KUBECONFIG.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import threading
from typing import Any

from ocrjob_operator.api.names import LEASE_NAME, OPERATOR_NAMESPACE

EXIT_LEADERSHIP_LOST = 75  # EX_TEMPFAIL: restart me (the new process campaigns again, as a standby)
EXIT_CONFIG = 2  # the cluster configuration cannot be loaded
STANDBY_POLL = 1.0  # seconds between a standby's checks for leadership or a stop signal

log = logging.getLogger("ocrjob.operator")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    env_ns = [n for n in os.environ.get("OCRJOB_WATCH_NAMESPACES", "").split(",") if n.strip()]
    parser = argparse.ArgumentParser(prog="python -m ocrjob_operator", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument("--namespace", "-n", action="append", default=None,
                       help="watch only this namespace (repeatable; env OCRJOB_WATCH_NAMESPACES, comma-separated)")
    scope.add_argument("--all-namespaces", "-A", action="store_true", help="watch OcrJobs in every namespace")
    parser.add_argument("--liveness", default=os.environ.get("OCRJOB_LIVENESS", "http://0.0.0.0:8080/healthz"),
                        help="liveness endpoint URL, served by standbys too (env OCRJOB_LIVENESS; '' disables)")
    parser.add_argument("--metrics-port", type=int, default=int(os.environ.get("OCRJOB_METRICS_PORT", "9090")),
                        help="Prometheus metrics port (0 disables)")
    parser.add_argument("--metrics-address", default=os.environ.get("OCRJOB_METRICS_ADDRESS", "0.0.0.0"),
                        help="address the metrics server binds (env OCRJOB_METRICS_ADDRESS)")
    parser.add_argument("--leader-election", action=argparse.BooleanOptionalAction, default=True,
                        help="act only while holding the Lease (default); --no-leader-election: act at once")
    parser.add_argument("--lease-name", default=LEASE_NAME, help="the leader-election Lease")
    parser.add_argument("--lease-namespace", default=os.environ.get("POD_NAMESPACE") or OPERATOR_NAMESPACE,
                        help=f"the Lease's namespace (default: env POD_NAMESPACE, else {OPERATOR_NAMESPACE})")
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    args = parser.parse_args(argv)
    if not args.all_namespaces and not args.namespace:
        if not env_ns:
            parser.error("give --all-namespaces or at least one --namespace (or set OCRJOB_WATCH_NAMESPACES)")
        args.namespace = [n.strip() for n in env_ns]
    if args.liveness:
        from ocrjob_operator.health import parse_endpoint

        try:
            parse_endpoint(args.liveness)
        except ValueError as exc:
            parser.error(f"--liveness {exc}")
    return args


class _QuietWakeups(logging.Filter):
    """The wake-up handlers run on every pod/job event; their success is not news."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (message.startswith("Handler '") and message.endswith("succeeded.")
                    and ("'pod_changed'" in message or "'job_changed'" in message))


def _exit_now(reason: str) -> None:
    """Leadership lost: stop acting this instant. No graceful shutdown (kopf's would keep reconciling for a
    while, next to the new leader): flush the logs and leave."""
    log.critical("exiting (%s): %s", EXIT_LEADERSHIP_LOST, reason)
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(EXIT_LEADERSHIP_LOST)


class _Stop:
    """SIGTERM/SIGINT before kopf installs its own handlers: a standby leaves, a new leader stops kopf early."""

    def __init__(self) -> None:
        self.requested = threading.Event()
        self._bridge: Any = None  # sets kopf's stop flag once its loop runs

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, _frame: Any) -> None:
        self.requested.set()
        if self._bridge is not None:
            self._bridge()

    def bridge(self, loop: asyncio.AbstractEventLoop, flag: asyncio.Event) -> None:
        self._bridge = lambda: loop.call_soon_threadsafe(flag.set)
        if self.requested.is_set():
            flag.set()


async def _run_kopf(args: argparse.Namespace, identity: str, health: Any, stop: _Stop) -> None:
    import kopf

    stop_flag = asyncio.Event()
    stop.bridge(asyncio.get_running_loop(), stop_flag)
    beat = asyncio.create_task(health.beat_forever())
    try:
        await kopf.operator(
            clusterwide=bool(args.all_namespaces),
            namespaces=args.namespace or (),
            standalone=True,  # no kopf peering: the Lease decides who runs
            # Our own identity: kopf's default calls getpass.getuser(), a KeyError for a uid without a passwd
            # entry (the image runs as uid 10001), even in standalone mode.
            identity=identity,  # type: ignore[arg-type]  # kopf's Identity is a NewType of str
            stop_flag=stop_flag,
        )
    finally:
        beat.cancel()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import kopf

    from ocrjob_operator import handlers, health, leader, metrics
    from ocrjob_operator.api.client import Client, ConfigError, configure

    kopf.configure(verbose=args.verbose, log_format=kopf.LogFormat.PLAIN)
    if not args.verbose:
        logging.getLogger("kopf.objects").addFilter(_QuietWakeups())
    logging.getLogger("ocrjob").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    assert handlers.reconcile_job  # importing the module registers the handlers
    stop = _Stop()
    stop.install()
    identity = leader.make_identity()
    elector: leader.Elector | None = None
    if args.leader_election:
        try:
            client = Client(configure())
        except ConfigError as exc:
            log.error("%s", exc.message)
            return EXIT_CONFIG
        elector = leader.Elector(client, args.lease_namespace, args.lease_name, identity, on_lost=_exit_now)
    state = health.Health(elector.alive if elector else None)
    if args.liveness:
        health.serve(args.liveness, state)
    if args.metrics_port:
        metrics.serve(args.metrics_port, args.metrics_address)
    if elector is not None:
        elector.start()
        log.info("%s campaigns for the Lease %s/%s", identity, args.lease_namespace, args.lease_name)
        while not elector.wait_leading(STANDBY_POLL):
            if stop.requested.is_set():
                elector.stop()
                return 0
    try:
        asyncio.run(_run_kopf(args, identity, state, stop))
    finally:
        if elector is not None:
            elector.stop()
            elector.release()
    return 0


if __name__ == "__main__":
    sys.exit(main())
