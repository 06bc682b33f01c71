"""The spec options of `ocrjob submit`, generated from the API's field table (`ocrjob_operator.api.fields`).

Each flagged spec field becomes one typer option (its flag, short flag and help from the table, the help panel
from its place in the spec); the command receives them gathered into one `SubmitFlags`. typer reads the
command's `inspect.signature`, so the generated options are a `__signature__`, as `ocrjob run`'s loader
options are (`ocrjob_cli.local.with_loader_options`). No cluster, no kubernetes import.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Annotated, Any

import typer

from ocrjob_cli.flags import SubmitFlags
from ocrjob_operator.api.fields import FLAGGED, SpecField

PANEL_JOB, PANEL_S3, PANEL_PODS, PANEL_OCR = "Job", "S3", "Shards and pods", "OCR"
_PANELS = {"input": PANEL_JOB, "output": PANEL_JOB, "suspend": PANEL_JOB, "s3": PANEL_S3, "models": PANEL_OCR,
           "ocr": PANEL_OCR}


def panel(spec_field: SpecField) -> str:
    """The `submit --help` panel of a spec field: by the top-level spec field it lies in."""
    return _PANELS.get(spec_field.path.split(".")[0], PANEL_PODS)


def _switch(spec_field: SpecField) -> bool:
    """A bare boolean flag (--suspend): it can only say true; absent means "not given"."""
    return spec_field.type is bool and "/" not in (spec_field.flag or "")


def parameter(spec_field: SpecField) -> inspect.Parameter:
    """The typer option of one flagged spec field."""
    assert spec_field.flag is not None, spec_field.path
    declarations = [spec_field.flag, *([spec_field.short] if spec_field.short else [])]
    option = typer.Option(*declarations, help=spec_field.flag_help or spec_field.help,
                          rich_help_panel=panel(spec_field))
    if _switch(spec_field):
        kind, default = bool, False
    elif spec_field.type is list:
        kind, default = list[str] | None, None  # type: ignore[assignment]
    else:
        kind, default = spec_field.flag_type | None, None  # type: ignore[assignment]
    return inspect.Parameter(spec_field.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default,
                             annotation=Annotated[kind, option])


def flags_from_options(values: dict[str, Any]) -> Any:
    """The SubmitFlags for the options' values (popped from `values`): only what was given is set."""
    given: dict[str, Any] = {}
    for spec_field in FLAGGED:
        value = values.pop(spec_field.name)
        if spec_field.type is list:
            value = list(value or [])
        elif _switch(spec_field):
            value = True if value else None
        given[spec_field.name] = value
    return SubmitFlags(**given)


def with_generated_options(into: str, params: list[inspect.Parameter], gather: Callable[[dict[str, Any]], Any],
                           after: str | None = None) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Give a command generated options: `params` go after its parameter `after` (default: at the end) in the
    `__signature__` typer reads; the command receives `gather(values)` — which pops the generated values — as
    its parameter `into`."""

    def decorate(fn: Callable[..., None]) -> Callable[..., None]:
        @functools.wraps(fn)
        def command(**kwargs: Any) -> None:
            fn(**{into: gather(kwargs)}, **kwargs)

        own = [p.replace(kind=inspect.Parameter.POSITIONAL_OR_KEYWORD)
               for p in inspect.signature(fn, eval_str=True).parameters.values() if p.name != into]
        cut = [p.name for p in own].index(after) + 1 if after else len(own)
        command.__signature__ = inspect.Signature([*own[:cut], *params, *own[cut:]])  # type: ignore[attr-defined]
        return command

    return decorate


def with_spec_options(after: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """One option per flagged spec field after the command's parameter `after`; the command receives them as
    `flags` (a SubmitFlags)."""
    return with_generated_options("flags", [parameter(f) for f in FLAGGED], flags_from_options, after)
