"""The result record: one object `<output>/<rel>.json` per input document, `ok` with its pages or `error` with
a code (README, "Result format"). Written by the shard's upload threads, read back to resume a shard and by the
CLI. Never imports paddle, kubernetes or inference_pod.shard.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from inference_pod.job.records import RESULT_SCHEMA, Fields, RecordError

OK, ERROR = "ok", "error"


@dataclass(frozen=True, slots=True)
class Source:
    NAME: ClassVar[str] = "result source"
    SCHEMA: ClassVar[str | None] = None

    uri: str
    key: str
    etag: str
    size: int

    @classmethod
    def from_dict(cls, doc: Any) -> Source:
        f = Fields(cls.NAME, doc)
        return cls(f.text("uri"), f.text("key"), f.text("etag", ""), f.integer("size"))

    def to_dict(self) -> dict[str, Any]:
        return {"uri": self.uri, "key": self.key, "etag": self.etag, "size": self.size}


@dataclass(frozen=True, slots=True)
class Line:
    """One detected text box: its text, recognition score and polygon ([[x, y], ...])."""

    NAME: ClassVar[str] = "result line"
    SCHEMA: ClassVar[str | None] = None

    text: str
    score: float
    polygon: tuple[tuple[float, ...], ...]

    @classmethod
    def from_dict(cls, doc: Any) -> Line:
        f = Fields(cls.NAME, doc)
        points = f.sequence("polygon", ())
        if not all(isinstance(p, (list, tuple)) and all(isinstance(v, (int, float)) for v in p) for p in points):
            raise RecordError(cls.NAME, "polygon", "must be a list of [x, y] points")
        return cls(f.text("text"), f.number("score"), tuple(tuple(p) for p in points))

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "score": self.score, "polygon": [list(point) for point in self.polygon]}


@dataclass(frozen=True, slots=True)
class Page:
    """One page's text. `no_text_found`: no line was found although the page is not blank (the loader's measure:
    inference_pod.shard.blank), so the empty text may be a loss, not an empty page; stored only when true."""

    NAME: ClassVar[str] = "result page"
    SCHEMA: ClassVar[str | None] = None

    page: int  # 1-based
    width: int
    height: int
    text: str  # reading order
    lines: tuple[Line, ...]
    no_text_found: bool = False

    @classmethod
    def from_dict(cls, doc: Any) -> Page:
        f = Fields(cls.NAME, doc)
        return cls(f.integer("page"), f.integer("width"), f.integer("height"), f.text("text"),
                   f.each("lines", Line.from_dict), f.flag("no_text_found", False))

    def to_dict(self) -> dict[str, Any]:
        page = {"page": self.page, "width": self.width, "height": self.height, "text": self.text,
                "lines": [line.to_dict() for line in self.lines]}
        return {**page, "no_text_found": True} if self.no_text_found else page  # absent: as before the field


@dataclass(frozen=True, slots=True)
class ResultError:
    NAME: ClassVar[str] = "result error"
    SCHEMA: ClassVar[str | None] = None

    code: str  # inference_pod.shard.decode's codes: empty, too_large, corrupt, ...
    message: str

    @classmethod
    def from_dict(cls, doc: Any) -> ResultError:
        f = Fields(cls.NAME, doc)
        return cls(f.text("code"), f.text("message", ""))

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message}


@dataclass(frozen=True, slots=True)
class ResultContext:
    """Which job, shard and worker wrote a result, with which models on which device. The last three are
    known once the worker's predictor is loaded; an error record written before that lacks them."""

    job_id: str
    shard_index: int
    models: dict[str, Any] | None = None
    device: dict[str, Any] | None = None
    worker: int | None = None

    @classmethod
    def read(cls, f: Fields) -> ResultContext:
        return cls(f.text("job_id"), f.integer("shard_index"), f.mapping("models", None),
                   f.mapping("device", None), f.integer("worker", None))

    def to_dict(self) -> dict[str, Any]:
        present = {"models": self.models, "device": self.device, "worker": self.worker}
        return {"job_id": self.job_id, "shard_index": self.shard_index,
                **{k: v for k, v in present.items() if v is not None}}


@dataclass(frozen=True, slots=True)
class ResultRecord:
    """`ok`: the document's pages (its `format`, `timing`); `error`: no pages and an `error` with its code."""

    NAME: ClassVar[str] = "result"
    SCHEMA: ClassVar[str | None] = RESULT_SCHEMA

    status: str  # OK or ERROR
    source: Source
    context: ResultContext
    created: str
    pages: tuple[Page, ...] = ()
    format: str | None = None  # ok only: the detected document kind (png, pdf, ...)
    timing: dict[str, float] = field(default_factory=dict)  # ok only
    error: ResultError | None = None  # error only

    @property
    def failed(self) -> bool:
        return self.status == ERROR

    @property
    def page_count(self) -> int:
        return len(self.pages)

    @property
    def text(self) -> str:
        return "\n\n".join(page.text for page in self.pages)

    @property
    def no_text_pages(self) -> int:
        """Pages not blank where no text was found (`Page.no_text_found`)."""
        return sum(1 for page in self.pages if page.no_text_found)

    @classmethod
    def from_dict(cls, doc: Any) -> ResultRecord:
        f = Fields(cls.NAME, doc)
        status = f.choice("status", (OK, ERROR))
        record = cls(status, f.nested("source", Source.from_dict), ResultContext.read(f), f.text("created"),
                     f.each("pages", Page.from_dict, ()), f.text("format", None, nullable=True),
                     f.mapping("timing", {}), f.nested("error", ResultError.from_dict, None, nullable=True))
        if record.failed and record.error is None:
            raise RecordError(cls.NAME, "error", "is missing from an error record")
        return record

    def to_dict(self) -> dict[str, Any]:
        head = {"schema": RESULT_SCHEMA, "status": self.status, "source": self.source.to_dict()}
        body = {"page_count": self.page_count, "text": self.text, "pages": [page.to_dict() for page in self.pages],
                **self.context.to_dict()}
        if self.failed:
            return {**head, **body, "created": self.created, "error": self.error.to_dict() if self.error else None}
        timing = {k: round(v, 4) for k, v in self.timing.items()}
        return {**head, "format": self.format, **body, "timing": timing, "created": self.created, "error": None}
