"""What the web app guarantees about connections, whatever the clients do.

uvicorn's HTTP/1.1 protocol waits for a request's headers as long as the
client likes, and accepts connections until the process runs out of file
descriptors (each then logs an error, for every accept attempt). The
protocol here (`bounded_protocol`) adds two bounds and `RepeatLimiter`
bounds the log:

- a header deadline: a connection that has not sent a complete request head
  within `header_timeout_s` of connecting, or of its previous response, is
  closed (slow or stalled clients: "slowloris");
- at most `max_connections` open connections: one more is closed as soon as
  it is accepted, before it costs more than its socket;
- a log record repeated more than `max_per_minute` times in a minute is
  dropped, and one line says how many were.

Uploads have their own bounds (size, idle time, deadline: `serving.app.uploads`).
"""

from __future__ import annotations

import logging
import time

from uvicorn.protocols.http.h11_impl import H11Protocol

_LOGGER = logging.getLogger(__name__)


class _BoundedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline for each request head and a bound on open connections."""

    header_timeout_s: float = 10.0
    max_connections: int = 1024

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._header_deadline = None
        if len(self.connections) > self.max_connections:
            _LOGGER.warning(
                "refused a connection: %d open, the most is %d", len(self.connections) - 1, self.max_connections
            )
            transport.close()
            return
        self._arm_header_deadline()

    def _arm_header_deadline(self) -> None:
        self._cancel_header_deadline()
        self._header_deadline = self.loop.call_later(self.header_timeout_s, self._headers_overdue)

    def _cancel_header_deadline(self) -> None:
        if getattr(self, "_header_deadline", None) is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _headers_overdue(self) -> None:
        self._header_deadline = None
        if not self.transport.is_closing():
            _LOGGER.info("closed a connection that sent no complete request head within %g s", self.header_timeout_s)
            self.transport.close()

    def handle_events(self) -> None:
        super().handle_events()
        if self.cycle is not None and not self.cycle.response_complete:  # A request's head has arrived.
            self._cancel_header_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and (self.cycle is None or self.cycle.response_complete):
            self._arm_header_deadline()  # The next request's head on this keep-alive connection.

    def connection_lost(self, exc) -> None:
        self._cancel_header_deadline()
        super().connection_lost(exc)


def bounded_protocol(header_timeout_s: float, max_connections: int) -> type[H11Protocol]:
    """The protocol class to give `uvicorn.Config(http=...)`.

    Args:
        header_timeout_s: Seconds a connection has to send a complete request head.
        max_connections: Open connections at most.
    """
    if header_timeout_s <= 0 or max_connections < 1:
        raise ValueError(
            f"need header_timeout_s > 0 and max_connections >= 1, got {header_timeout_s}, {max_connections}"
        )
    return type(
        "BoundedH11Protocol",
        (_BoundedH11Protocol,),
        {"header_timeout_s": float(header_timeout_s), "max_connections": int(max_connections)},
    )


class RepeatLimiter(logging.Filter):
    """Lets at most `max_per_minute` records with the same message template through per minute, then says how
    many it dropped (on the next record of that template after the minute)."""

    def __init__(self, max_per_minute: int = 10, clock=time.monotonic):
        super().__init__()
        self.max_per_minute = max_per_minute
        self._clock = clock
        self._windows: dict[tuple[str, object], list] = {}  # (logger, template) -> [start, passed, dropped]

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.msg)
        now = self._clock()
        window = self._windows.setdefault(key, [now, 0, 0])
        if now - window[0] >= 60.0:
            if window[2]:
                record.msg = f"{record.msg} (and {window[2]} more like it in the last minute, not logged)"
            window[:] = [now, 0, 0]
        if window[1] < self.max_per_minute:
            window[1] += 1
            return True
        window[2] += 1
        return False


def limit_repeated_logs(logger_names=("asyncio", "uvicorn.error", __name__), max_per_minute: int = 10) -> RepeatLimiter:
    """Installs one `RepeatLimiter` on the loggers that report connection trouble, e.g. asyncio's accept errors
    when the process runs out of file descriptors; returns it."""
    limiter = RepeatLimiter(max_per_minute)
    for name in logger_names:
        logging.getLogger(name).addFilter(limiter)
    return limiter
