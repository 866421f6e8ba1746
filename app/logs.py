"""Structured logs: one JSON object a line, each with its request's id (given by
:mod:`app.telemetry`). Never a secret: messages name sessions and routes, not tokens, bodies or
bank URLs.

A line is formatted and written by a thread of its own (``QueueHandler`` and ``QueueListener``,
the logging cookbook's way): the request that logs it only notes its id and queues the record,
so a webhook's answer never waits for a JSON encoder or a write to stderr."""

from __future__ import annotations

import atexit
import itertools
import json
import logging
import secrets
import sys
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from logging.handlers import QueueHandler, QueueListener
from queue import SimpleQueue

_REQUEST_ID: ContextVar[str | None] = ContextVar("request_id", default=None)
# An id must be unique, not unpredictable: a random prefix per process and a counter cost
# nothing, where uuid4 reads os.urandom on every request.
_PROCESS = secrets.token_hex(6)
_NUMBERS = itertools.count(1)


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        # Noted when the line was logged (this may run in the writer's thread).
        request_id = getattr(record, "noted_request_id", None) or _REQUEST_ID.get()
        if request_id is not None:
            entry["request_id"] = request_id
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class _RequestId(logging.Filter):
    """Notes the request's id on the record where it is logged: the formatter runs elsewhere."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.noted_request_id = noted = _REQUEST_ID.get()
        record.request_id = noted or "-"
        return True


class _Enqueue(QueueHandler):
    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        """The record as it is: it stays in this process, so nothing need be formatted (the
        base class formats it here, on the caller's time, to make it picklable)."""
        return record


def configure(style: str) -> None:
    """``json`` for machines (``serve``), ``text`` for people (``demo``)."""
    handler = logging.StreamHandler(sys.stderr)
    if style == "json":
        handler.setFormatter(JSONFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")
        )
    # Neither format names the thread, the process or the source line: don't look them up for
    # every record (the logging HOWTO's "Optimization": the caller's frame walk is the costly
    # part).
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    logging._srcfile = None
    records: SimpleQueue[logging.LogRecord] = SimpleQueue()
    writer = QueueListener(records, handler)
    writer.start()
    atexit.register(writer.stop)  # what is queued is written before the process ends
    queueing = _Enqueue(records)
    queueing.addFilter(_RequestId())
    root = logging.getLogger()
    root.handlers[:] = [queueing]
    root.setLevel(logging.INFO)


def init_app(style: str) -> None:
    """Set logging up unless something already did (a ``serve`` worker process does not
    inherit its parent's handlers; a test runner has its own)."""
    if not logging.getLogger().handlers:
        configure(style)


def new_request_id() -> str:
    return f"{_PROCESS}-{next(_NUMBERS):x}"


def with_request_id(request_id: str) -> Token[str | None]:
    """Every log line written from now on (in this task and those it starts) carries the id,
    until :func:`without_request_id` with the token returned."""
    return _REQUEST_ID.set(request_id)


def without_request_id(token: Token[str | None]) -> None:
    _REQUEST_ID.reset(token)
