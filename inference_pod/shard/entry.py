"""`python -m inference_pod [OPTIONS]`: process one shard — what every shard pod runs (and `ocrjob shard`).

A small entry of its own, without the product CLI: its options are the loader settings table
(`inference_pod.job.settings`), each also read from its environment variable, which is how the operator's
pod builder hands them over. Exit codes: `inference_pod.job.exit_codes`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from inference_pod.job import exit_codes, settings

# Before anything can import PaddleX: there is no model hub to check, and no code path may try one.
os.environ.setdefault("PADDLE_PDX_DISABLE_MODEL_SOURCE_CHECK", "True")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        print(f"error: {message}", file=sys.stderr)
        sys.exit(exit_codes.USAGE)


def parser(prog: str = "python -m inference_pod") -> argparse.ArgumentParser:
    out = _Parser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for setting in settings.SETTINGS:
        env = os.environ.get(setting.env)
        out.add_argument(setting.flag, dest=setting.name, default=env if env not in (None, "") else setting.default,
                         help=f"{setting.help} (env {setting.env}; default {setting.default})")
    out.add_argument("--verbose", "-v", action="store_true", help="Log each document's stages, workers included.")
    return out


def configure_logging(verbose: bool) -> None:
    if verbose:
        os.environ[settings.LOG_LEVEL_ENV] = "DEBUG"  # for the spawned workers too
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )


def fail_without_ocr_stack(termination_log: str | None) -> None:
    """Exit 70 naming what to install, before any work starts (the loader's modules need the stack to import);
    a shard pod also says it in its termination message, as the loader does for any early failure."""
    from inference_pod.shard import results
    from inference_pod.shard.ocr_stack import missing_message, missing_packages

    missing = missing_packages()
    if not missing:
        return
    message = missing_message(missing)
    results.write_termination_log(termination_log, results.early_failure_summary(exit_codes.SYSTEMIC, message))
    print(f"error: {message}", file=sys.stderr)
    sys.exit(exit_codes.SYSTEMIC)


def main(argv: list[str] | None = None, prog: str = "python -m inference_pod") -> int:
    args = vars(parser(prog).parse_args(argv))
    verbose = args.pop("verbose")
    fail_without_ocr_stack(args.get("termination_log"))
    from inference_pod.shard.config import config_from_settings
    from inference_pod.shard.coordinator import run_shard

    if not args.get("manifest"):
        print(f"error: {settings.BY_NAME['manifest'].flag} (or {settings.BY_NAME['manifest'].env}) is required",
              file=sys.stderr)
        return exit_codes.USAGE
    configure_logging(verbose)
    try:
        args["manifest"] = settings.manifest_for_pod(args["manifest"], os.environ.get(settings.COMPLETION_INDEX_ENV))
        config = config_from_settings(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exit_codes.USAGE
    code, summary = run_shard(config)
    print(json.dumps({k: summary.to_dict().get(k) for k in ("status", "exit_code", "message", "items")}))
    return code
