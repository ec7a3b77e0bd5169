"""Downloads 30 s preview MP3s: resumable, verified, with retries.

A preview is written to `<track_id>.mp3.part` (a body shorter than its
`Content-Length` is an error and retried), decoded completely with
`intake.audio` (which also detects MP3s shorter than their header says) and only then
renamed to `<track_id>.mp3` (`os.replace`, atomic on one filesystem), so a
file under the final name is always complete. A run that is interrupted
leaves at most a `.part` file, which the next run discards and downloads
again; final files that exist and decode are not downloaded again.

HTTP 429 honours `Retry-After`; 5xx, timeouts and broken connections back
off exponentially (`data_prep.spotify.retry.RetryPolicy`). Other statuses
(e.g. 403/404 for an expired preview) fail at once.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading

import requests

from data_prep.spotify.collect import Issue
from data_prep.spotify.retry import RateLimitError, RetryPolicy
from intake import audio

PART_SUFFIX = ".part"
PREVIEW_SUFFIX = ".mp3"
_CHUNK_BYTES = 1 << 16

AUDIO_REASONS = {
    "no_preview_url": "Spotify returned no preview URL (withheld from apps created after 27 Nov 2024) "
    "and no local file was given",
    "preview_download_failed": "the preview could not be downloaded (HTTP error, timeout or broken connection, "
    "after the retries)",
    "preview_not_audio": "the downloaded preview does not decode as complete audio",
    "local_audio_unusable": "the local file given for the track is missing or does not decode",
}


@dataclasses.dataclass(frozen=True)
class AudioResult:
    """Where a track's audio came from, or why it has none.

    Attributes:
        track_id: The track.
        path: The verified local file (absolute), or None.
        source: `preview` or `local`, or None.
        status: `downloaded`, `existing` (a complete file from an earlier
            run), `local` or `failed`.
        duration_s: The decoded duration, or None.
        issue: Why there is no audio (when `status` is `failed`).
        attempts: Download attempts made.
        matched_by: How a local file matched (`track_id` or `isrc`).
    """

    track_id: str
    path: str | None
    source: str | None
    status: str
    duration_s: float | None = None
    issue: Issue | None = None
    attempts: int = 0
    matched_by: str | None = None


class _IncompleteDownloadError(Exception):
    pass


def verify_audio(path: str) -> float:
    """Decodes a file completely and returns its duration in seconds.

    Raises:
        audio.AudioError: When it is missing, does not decode, is truncated or
            has no samples.
    """
    if not os.path.isfile(path):
        raise audio.AudioError("missing_file", path, "no such file")
    decoded = audio.decode_audio(path, path)
    if decoded.samples.shape[0] == 0:
        raise audio.AudioError("empty", path, "the file decodes to 0 samples")
    return decoded.duration_s


def _after(attempts: int) -> str:
    return f"after {attempts} attempt{'s' if attempts > 1 else ''}"


def _remove(path: str):
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


class PreviewDownloader:
    """Downloads previews into one directory; safe to share between threads."""

    def __init__(self, audio_dir: str, retry: RetryPolicy | None = None, timeout_s: float = 30.0):
        """Creates the downloader.

        Args:
            audio_dir: Where `<track_id>.mp3` files go.
            retry: The retry policy.
            timeout_s: Connect timeout and the longest wait between two
                received chunks.
        """
        self._audio_dir = audio_dir
        self._retry = retry or RetryPolicy()
        self._timeout_s = timeout_s
        self._local = threading.local()

    def _session(self) -> requests.Session:
        """One session per thread: `requests.Session` is not documented as thread-safe."""
        if not hasattr(self._local, "session"):
            self._local.session = requests.Session()
        return self._local.session

    def final_path(self, track_id: str) -> str:
        return os.path.join(self._audio_dir, track_id + PREVIEW_SUFFIX)

    def fetch(self, track_id: str, url: str) -> AudioResult:
        """Makes sure `<track_id>.mp3` exists and decodes, downloading it if needed."""
        final = self.final_path(track_id)
        part = final + PART_SUFFIX
        _remove(part)  # A leftover of an interrupted run.
        if os.path.exists(final):
            try:
                return AudioResult(track_id, final, "preview", "existing", verify_audio(final))
            except audio.AudioError as error:
                logging.warning("%s exists but is unusable (%s); downloading it again", final, error.reason)
                _remove(final)
        attempts = 0
        while True:
            attempts += 1
            try:
                status = self._download(url, part)
            except (requests.RequestException, _IncompleteDownloadError) as error:
                _remove(part)
                failure = (
                    f"{type(error).__name__}: {error}"
                    if isinstance(error, _IncompleteDownloadError)
                    else type(error).__name__
                )
                if attempts >= self._retry.max_attempts:
                    return self._failed(track_id, "preview_download_failed", f"{failure} {_after(attempts)}", attempts)
                wait = self._retry.backoff(attempts)
                logging.warning("preview of %s: %s, retrying in %.1f s", track_id, failure, wait)
                self._retry.sleep(wait)
                continue
            if status is None:
                break
            code, retry_after = status
            if code != 429 and code < 500 or attempts >= self._retry.max_attempts:
                return self._failed(track_id, "preview_download_failed", f"HTTP {code} {_after(attempts)}", attempts)
            try:
                wait = (
                    self._retry.rate_limit_wait(retry_after, attempts, f"preview of {track_id}")
                    if code == 429
                    else self._retry.backoff(attempts)
                )
            except RateLimitError as error:
                return self._failed(track_id, "preview_download_failed", str(error), attempts)
            logging.warning("preview of %s: HTTP %d, retrying in %.1f s", track_id, code, wait)
            self._retry.sleep(wait)
        try:
            duration_s = verify_audio(part)
        except audio.AudioError as error:
            _remove(part)
            return self._failed(track_id, "preview_not_audio", f"{error.reason}: {error.detail}", attempts)
        os.replace(part, final)
        return AudioResult(track_id, final, "preview", "downloaded", duration_s, attempts=attempts)

    def _download(self, url: str, part: str) -> tuple[int, str | None] | None:
        """One attempt: None when `part` holds the whole body, else (status, Retry-After)."""
        # identity: Content-Length is then the size of the bytes written.
        headers = {"Accept-Encoding": "identity"}
        with self._session().get(url, stream=True, timeout=self._timeout_s, headers=headers) as response:
            if response.status_code != 200:
                return response.status_code, response.headers.get("Retry-After")
            written = 0
            with open(part, "wb") as handle:
                for chunk in response.iter_content(_CHUNK_BYTES):
                    handle.write(chunk)
                    written += len(chunk)
        # A body shorter than its Content-Length raises in urllib3 (ChunkedEncodingError);
        # one cut short without a Content-Length is caught by decoding.
        if written == 0:
            raise _IncompleteDownloadError("empty body")
        return None

    @staticmethod
    def _failed(track_id: str, reason: str, detail: str, attempts: int) -> AudioResult:
        return AudioResult(track_id, None, None, "failed", issue=Issue(reason, detail), attempts=attempts)
