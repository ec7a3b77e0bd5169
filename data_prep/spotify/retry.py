"""When and how long to wait before retrying a Spotify request.

One policy serves the Web API calls and the preview downloads: HTTP 429 waits
for as long as the response's `Retry-After` header says (Spotify sends whole
seconds); 5xx responses, timeouts and broken connections back off
exponentially. Spotipy's own urllib3 retries are switched off (see
`data_prep.spotify.client`), so this is the only place that retries.
"""

from __future__ import annotations

import dataclasses
import email.utils
import time
from collections.abc import Callable


class RateLimitError(RuntimeError):
    """Spotify asked to wait longer than the policy allows."""


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """Retry settings.

    Attributes:
        max_attempts: Attempts per request, the first one included.
        backoff_s: Wait after the first failed attempt (5xx, timeout, broken
            connection); doubled after each further one.
        max_backoff_s: Upper bound of the exponential backoff.
        max_retry_after_s: A 429 whose `Retry-After` asks for longer is not
            waited for: `RateLimitError` (the run can be repeated later).
        sleep: The function that waits; tests inject one that records.
    """

    max_attempts: int = 6
    backoff_s: float = 1.0
    max_backoff_s: float = 60.0
    max_retry_after_s: float = 900.0
    sleep: Callable[[float], None] = time.sleep

    def __post_init__(self):
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.backoff_s < 0 or self.max_backoff_s < 0 or self.max_retry_after_s < 0:
            raise ValueError("waiting times must not be negative")

    def backoff(self, attempt: int) -> float:
        """The wait after failed attempt number `attempt` (1-based) of a 5xx or network error."""
        return min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1))

    def rate_limit_wait(self, retry_after: str | None, attempt: int, what: str) -> float:
        """The wait after a 429 response.

        Args:
            retry_after: The response's `Retry-After` header, if any.
            attempt: The failed attempt's number (1-based).
            what: The request, for the error message.

        Returns:
            The header's delay, or the exponential backoff without a usable header.

        Raises:
            RateLimitError: When the header asks for more than `max_retry_after_s`.
        """
        wait = parse_retry_after(retry_after)
        if wait is None:
            return self.backoff(attempt)
        if wait > self.max_retry_after_s:
            raise RateLimitError(
                f"{what}: Spotify's rate limit asks to wait {wait:.0f} s (Retry-After), more than the "
                f"{self.max_retry_after_s:.0f} s allowed; run the command again later (it resumes)"
            )
        return wait


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header (delta-seconds or HTTP-date).

    Returns:
        The delay in seconds (never negative), or None when the header is
        absent or unreadable.
    """
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))
