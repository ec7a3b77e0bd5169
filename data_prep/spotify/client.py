"""A Spotify Web API client on spotipy: credentials, retries and the endpoints the catalog needs.

Credentials come from `SPOTIPY_CLIENT_ID` and `SPOTIPY_CLIENT_SECRET` and are
used for the client-credentials flow only. They never reach a log, an output
file or an exception message: the token is cached in memory (spotipy's
default cache would write it to `./.cache`), spotipy's DEBUG logging (which
prints request headers, the `Basic` credentials included) is raised to INFO,
errors are rebuilt from status codes and Spotify's error messages, and the
client id that Spotify appends to preview URLs (`cid=`) is dropped from the
URLs downloaded (`collect.preview_url_without_client_id`) and redacted from
everything written (`SpotifyApi.redact`).

Retries: spotipy's default session retries 429 and 5xx inside urllib3 (three
times, sleeping for any `Retry-After` however long, in a way tests cannot
observe), and an exhausted retry surfaces as a `SpotifyException` with status
429 whatever the cause, without the response's headers. The client
therefore gives spotipy a plain `requests.Session` (no urllib3 retries at
all) and retries here, with `data_prep.spotify.retry.RetryPolicy`: 429
honours `Retry-After` up to a limit, 5xx and network errors back off
exponentially.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import warnings
from collections.abc import Callable, Iterator

import requests
import spotipy
from spotipy.cache_handler import MemoryCacheHandler
from spotipy.oauth2 import SpotifyClientCredentials

from data_prep.spotify.retry import RetryPolicy

API_BASE = "https://api.spotify.com/v1/"
TOKEN_URL = SpotifyClientCredentials.OAUTH_TOKEN_URL
CLIENT_ID_ENV = "SPOTIPY_CLIENT_ID"
CLIENT_SECRET_ENV = "SPOTIPY_CLIENT_SECRET"

# The Web API's documented maxima of ids per request.
MAX_TRACK_IDS = 50
MAX_ARTIST_IDS = 50
MAX_AUDIO_FEATURE_IDS = 100


class CredentialsError(RuntimeError):
    """Client credentials that are missing or that Spotify rejects."""


class ApiError(RuntimeError):
    """A Web API request that failed for good.

    Attributes:
        what: The request, e.g. `GET audio-features`.
        status: The HTTP status, or None for a network error.
        message: Spotify's error message (or the network error).
    """

    def __init__(self, what: str, status: int | None, message: str):
        super().__init__(f"{what}: " + (f"HTTP {status}: " if status else "") + message)
        self.what = what
        self.status = status
        self.message = message

    def to_dict(self) -> dict:
        return {"request": self.what, "http_status": self.status, "message": self.message}


@dataclasses.dataclass(frozen=True)
class Credentials:
    """Client-credentials flow credentials; the secret stays out of `repr`."""

    client_id: str = dataclasses.field(repr=False)
    client_secret: str = dataclasses.field(repr=False)

    @classmethod
    def from_environment(cls, environ: dict | None = None) -> Credentials:
        """Reads `SPOTIPY_CLIENT_ID` and `SPOTIPY_CLIENT_SECRET`.

        Raises:
            CredentialsError: Naming the missing variables (never their values).
        """
        environ = os.environ if environ is None else environ
        values = {name: (environ.get(name) or "").strip() for name in (CLIENT_ID_ENV, CLIENT_SECRET_ENV)}
        missing = [name for name, value in values.items() if not value]
        if missing:
            raise CredentialsError(
                f"Spotify credentials missing: set {' and '.join(missing)} in the environment "
                "(an app's client id and secret from https://developer.spotify.com/dashboard; "
                "the client-credentials flow is used)"
            )
        return cls(values[CLIENT_ID_ENV], values[CLIENT_SECRET_ENV])


def _keep_credentials_out_of_debug_logs():
    """Spotipy logs request headers (the token request's `Basic` credentials) at DEBUG."""
    spotipy_logger = logging.getLogger("spotipy")
    if spotipy_logger.getEffectiveLevel() < logging.INFO:
        spotipy_logger.setLevel(logging.INFO)


def _spotify_message(error: spotipy.SpotifyException) -> str:
    """Spotify's error message without spotipy's URL prefix."""
    message = str(error.msg or "").split("\n", 1)[-1].strip()
    return message or f"HTTP {error.http_status}"


class SpotifyApi:
    """The Web API endpoints the catalog builder uses, with retries.

    Attributes:
        requests_made: Web API requests sent, retries included.
        retries: Retries by cause (`429`, `5xx`, `network`).
    """

    def __init__(
        self,
        credentials: Credentials,
        api_base: str = API_BASE,
        token_url: str = TOKEN_URL,
        timeout_s: float = 10.0,
        retry: RetryPolicy | None = None,
        market: str | None = None,
    ):
        """Creates the client; nothing is requested until `authenticate` or a call.

        Args:
            credentials: The app's client credentials.
            api_base: The Web API's base URL.
            token_url: The accounts service's token URL.
            timeout_s: Connect and read timeout of every request.
            retry: The retry policy.
            market: ISO 3166-1 alpha-2 market for track relinking, or None.
        """
        _keep_credentials_out_of_debug_logs()
        self._credentials = credentials
        self._retry = retry or RetryPolicy()
        self._market = market
        session = requests.Session()  # Default adapters: no urllib3 retries (see the module docstring).
        auth = SpotifyClientCredentials(
            client_id=credentials.client_id,
            client_secret=credentials.client_secret,
            requests_session=session,
            requests_timeout=timeout_s,
            cache_handler=MemoryCacheHandler(),
        )
        auth.OAUTH_TOKEN_URL = token_url
        self._auth = auth
        self._spotify = spotipy.Spotify(auth_manager=auth, requests_session=session, requests_timeout=timeout_s)
        self._spotify.prefix = api_base.rstrip("/") + "/"
        self.requests_made = 0
        self.retries = {"429": 0, "5xx": 0, "network": 0}

    def redact(self, text: str) -> str:
        """Replaces the credentials' values in text that is about to be written.

        Spotify appends the requesting app's client id to preview URLs
        (`?cid=...`), so API responses can carry it into outputs.
        """
        text = text.replace(self._credentials.client_secret, f"[{CLIENT_SECRET_ENV}]")
        return text.replace(self._credentials.client_id, f"[{CLIENT_ID_ENV}]")

    def authenticate(self):
        """Fetches an access token now, so that bad credentials fail first.

        Raises:
            CredentialsError: When Spotify rejects the credentials.
            ApiError: When the token service cannot be reached.
        """
        self._call("POST token", lambda: self._auth.get_access_token(as_dict=False))

    def _call(self, what: str, function: Callable[[], object]):
        """Calls spotipy, retrying rate limits, 5xx and network errors."""
        attempt = 0
        while True:
            attempt += 1
            self.requests_made += 1
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", DeprecationWarning)  # audio_features() is marked deprecated.
                    return function()
            except spotipy.SpotifyOauthError as error:
                raise CredentialsError(
                    f"Spotify's token service refused the client credentials "
                    f"({error.error or 'error'}: {error.error_description or 'no description'}); check "
                    f"{CLIENT_ID_ENV} and {CLIENT_SECRET_ENV}"
                ) from None
            except spotipy.SpotifyException as error:
                status = error.http_status
                if attempt >= self._retry.max_attempts or not (status == 429 or status >= 500):
                    raise ApiError(what, status, _spotify_message(error)) from None
                if status == 429:
                    self.retries["429"] += 1
                    wait = self._retry.rate_limit_wait((error.headers or {}).get("Retry-After"), attempt, what)
                else:
                    self.retries["5xx"] += 1
                    wait = self._retry.backoff(attempt)
                logging.warning("%s: HTTP %s, retrying in %.1f s", what, status, wait)
            except (requests.ConnectionError, requests.Timeout) as error:
                if attempt >= self._retry.max_attempts:
                    raise ApiError(what, None, f"network error: {type(error).__name__}") from None
                self.retries["network"] += 1
                wait = self._retry.backoff(attempt)
                logging.warning("%s: %s, retrying in %.1f s", what, type(error).__name__, wait)
            self._retry.sleep(wait)

    def _pages(self, what: str, first: Callable[[], dict], key: str | None) -> Iterator[dict]:
        """Follows a paging object's `next` URLs.

        Args:
            what: The request, for messages.
            first: Fetches the first response.
            key: Where the paging object sits in each response (`tracks` for
                search), or None when the response is the paging object.

        Yields:
            The paging objects, first page first.
        """
        response = self._call(what, first)
        while response:
            page = response[key] if key else response
            yield page
            if not page.get("next"):
                return
            response = self._call(
                f"{what} (offset {page.get('offset', 0) + page.get('limit', 0)})", lambda p=page: self._spotify.next(p)
            )

    def playlist_item_pages(self, playlist_id: str, page_size: int = 50) -> Iterator[dict]:
        """Pages of `GET /playlists/{id}/items` (playlist track objects)."""
        return self._pages(
            f"GET playlists/{playlist_id}/items",
            lambda: self._spotify.playlist_items(
                playlist_id, limit=page_size, market=self._market, additional_types=("track",)
            ),
            key=None,
        )

    def search_track_pages(self, query: str, page_size: int = 10) -> Iterator[dict]:
        """Pages of `GET /search?type=track` (the `tracks` paging objects)."""
        return self._pages(
            "GET search",
            lambda: self._spotify.search(query, limit=page_size, type="track", market=self._market),
            key="tracks",
        )

    def tracks(self, ids: list[str]) -> list[dict | None]:
        """`GET /tracks?ids=` (at most 50 ids): track objects, None for unknown ids."""
        _check_batch(ids, MAX_TRACK_IDS)
        return self._call("GET tracks", lambda: self._spotify.tracks(ids, market=self._market))["tracks"]

    def track(self, track_id: str) -> dict:
        """`GET /tracks/{id}`."""
        return self._call(f"GET tracks/{track_id}", lambda: self._spotify.track(track_id, market=self._market))

    def artists(self, ids: list[str]) -> list[dict | None]:
        """`GET /artists?ids=` (at most 50 ids): artist objects, None for unknown ids."""
        _check_batch(ids, MAX_ARTIST_IDS)
        return self._call("GET artists", lambda: self._spotify.artists(ids))["artists"]

    def artist(self, artist_id: str) -> dict:
        """`GET /artists/{id}`."""
        return self._call(f"GET artists/{artist_id}", lambda: self._spotify.artist(artist_id))

    def audio_features(self, ids: list[str]) -> list[dict | None]:
        """`GET /audio-features?ids=` (at most 100 ids): feature objects, None where Spotify has none."""
        _check_batch(ids, MAX_AUDIO_FEATURE_IDS)
        return self._call("GET audio-features", lambda: self._spotify.audio_features(ids))


def _check_batch(ids: list[str], maximum: int):
    if not 0 < len(ids) <= maximum:
        raise ValueError(f"a batch must have 1 to {maximum} ids, got {len(ids)}")
