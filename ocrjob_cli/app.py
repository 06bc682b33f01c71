"""`ocrjob`: the product command line — local runs and models (`ocrjob_cli.local`), and, with the `cli` or
`operator` extra, the cluster commands (`ocrjob_cli.jobs`). The shard pod does not use it: it runs
`python -m inference_pod` (`inference_pod.shard.entry`)."""

from __future__ import annotations

import sys

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__, pretty_exceptions_enable=False)


def build() -> typer.Typer:
    from ocrjob_cli import local

    local.register(app)
    try:
        from ocrjob_cli.jobs import register  # needs the kubernetes client: the `cli` extra
    except ImportError:
        return app
    register(app)
    return app


def main(argv: list[str] | None = None) -> None:
    build()(args=argv, prog_name="ocrjob")


if __name__ == "__main__":
    main(sys.argv[1:])
