"""A local HTTP server that answers like the Spotify Web API, from recorded objects.

It serves the accounts service's token endpoint (client-credentials flow,
checking the `Basic` credentials), the Web API endpoints the catalog builder
uses, with the documented paging envelopes (`href`, `items`, `limit`,
`next`, `offset`, `previous`, `total`) and id limits (50 tracks or artists,
100 audio features), and the preview MP3s. Misbehaviour is scripted per
test: a 429 with `Retry-After` or a 5xx on chosen requests, 403 on
`/audio-features` or on the several-ids endpoints, 404 on an editorial
playlist, and broken preview downloads (a connection that closes mid-body,
a body that is not audio, 5xx/429 once).
"""

from __future__ import annotations

import base64
import copy
import http.server
import json
import pathlib
import threading
import time
import urllib.parse

FIXTURES_DIR = pathlib.Path(__file__).resolve().parent
WEB_API_JSON = FIXTURES_DIR / "web_api.json"
DEMO_AUDIO_DIR = FIXTURES_DIR.parents[2] / "demo" / "audio"
ACCESS_TOKEN = "BQC-fake-access-token-for-tests-7f3a9d"


def load_web_api() -> dict:
    return json.loads(WEB_API_JSON.read_text(encoding="utf-8"))


class FakeSpotify:
    """The fake API and its script.

    Attributes:
        base: `http://127.0.0.1:PORT`.
        api_base: The Web API base URL to give the client.
        token_url: The token URL to give the client.
        requests: Every request seen: (method, path, query dict).
        request_times: When each request arrived (`time.monotonic()`).
        failures: Scripted failures: a list of [path prefix, status, headers, times left];
            the first entry whose prefix matches the request path answers it.
        previews: Per track id: the name of a demo MP3 to serve, `truncated:NAME`
            (the connection closes a third into the body), `cut:NAME` (a third of
            the body, sent without a Content-Length) or `not_audio` (an HTML page).
        features_forbidden: Answer 403 to `/audio-features`.
        batch_forbidden: Several-ids endpoints that answer 403 (`tracks`, `artists`).
        single_artist_forbidden: Answer 403 to `/artists/{id}` too.
        item_key: The key of a playlist item's track (`item` since February 2026, `track` before).
    """

    def __init__(self, client_id: str, client_secret: str, previews: dict[str, str] | None = None):
        self.data = load_web_api()
        self.client_id = client_id
        self.client_secret = client_secret
        self.previews = dict(previews or {})
        self.failures: list[list] = []
        self.features_forbidden = False
        self.batch_forbidden: set[str] = set()
        self.single_artist_forbidden = False
        self.item_key = "item"
        self.requests: list[tuple[str, str, dict]] = []
        self.request_times: list[float] = []
        self._lock = threading.Lock()
        self._tracks = {t["id"]: t for t in self.data["tracks"]}
        self._artists = {a["id"]: a for a in self.data["artists"]}
        self._features = {f["id"]: f for f in self.data["audio_features"]}
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self.base = f"http://127.0.0.1:{self._server.server_address[1]}"
        self.api_base = self.base + "/v1/"
        self.token_url = self.base + "/api/token"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self) -> FakeSpotify:
        self._thread.start()
        return self

    def __exit__(self, *exc_info):
        self._server.shutdown()
        self._server.server_close()

    def fail(self, path_prefix: str, status: int, times: int = 1, headers: dict | None = None):
        """Answers the next `times` requests under `path_prefix` with `status`."""
        self.failures.append([path_prefix, status, dict(headers or {}), times])

    def add_search(self, query: str, count: int) -> list[str]:
        """Makes `query` find `count` generated tracks, each by its own generated artist."""
        template = self.data["tracks"][0]
        ids = []
        for i in range(count):
            track_id, artist_id = f"9Synthetic{i:012d}", f"8SynthArtist{i:010d}"
            artist = {**copy.deepcopy(self.data["artists"][0]), "id": artist_id, "name": f"Synthetic Artist {i}"}
            artist.update(uri=f"spotify:artist:{artist_id}", genres=[f"synth {i % 3}"])
            simple = {key: artist[key] for key in ("external_urls", "href", "id", "name", "type", "uri")}
            track = {**copy.deepcopy(template), "id": track_id, "name": f"Synthetic {i}", "artists": [simple]}
            track.update(uri=f"spotify:track:{track_id}", preview_url=None)
            self._artists[artist_id] = artist
            self._tracks[track_id] = track
            self._features[track_id] = {**self._features[template["id"]], "id": track_id}
            ids.append(track_id)
        self.data["searches"][query] = ids
        return ids

    def count(self, path_prefix: str) -> int:
        with self._lock:
            return sum(1 for _, path, _ in self.requests if path.startswith(path_prefix))

    def queries(self, path: str) -> list[dict]:
        with self._lock:
            return [query for _, p, query in self.requests if p == path]

    def track(self, track_id: str) -> dict:
        """A track object as served: preview URLs point at this server and, like Spotify's,
        carry the requesting app's client id (`cid`)."""
        return self._with_base(self._tracks[track_id]) if track_id in self._tracks else None

    def _with_base(self, obj):
        text = json.dumps(obj).replace("{base}", self.base).replace("{client_id}", self.client_id)
        return json.loads(text)

    # Request handling, called by the handler thread.

    def _record(self, method: str, path: str, query: dict):
        with self._lock:
            self.requests.append((method, path, query))
            self.request_times.append(time.monotonic())
            for failure in self.failures:
                if path.startswith(failure[0]) and failure[3] > 0:
                    failure[3] -= 1
                    return failure[1], failure[2]
        return None

    def _paging(self, path: str, items: list, query: dict, extra: dict | None = None) -> dict:
        offset, limit = int(query.get("offset", 0)), int(query.get("limit", 20))
        page = items[offset : offset + limit]

        def url(start):
            parameters = {**query, **(extra or {}), "offset": start, "limit": limit}
            return f"{self.api_base}{path}?{urllib.parse.urlencode(parameters)}"

        return {
            "href": url(offset),
            "items": page,
            "limit": limit,
            "next": url(offset + limit) if offset + limit < len(items) else None,
            "offset": offset,
            "previous": url(max(0, offset - limit)) if offset > 0 else None,
            "total": len(items),
        }

    def _playlist_item(self, entry) -> dict:
        added_by = {
            "external_urls": {"spotify": "https://open.spotify.com/user/fixtureuser"},
            "href": "https://api.spotify.com/v1/users/fixtureuser",
            "id": "fixtureuser",
            "type": "user",
            "uri": "spotify:user:fixtureuser",
        }
        item = {"added_at": "2024-05-01T12:00:00Z", "added_by": added_by, "is_local": False}
        if entry is None:
            item[self.item_key] = None
        elif entry == "local_file":
            item["is_local"] = True
            item[self.item_key] = {
                "id": None,
                "name": "my bootleg.mp3",
                "type": "track",
                "is_local": True,
                "uri": "spotify:local:::my+bootleg:180",
                "artists": [],
                "album": {"name": ""},
                "duration_ms": 180000,
                "preview_url": None,
            }
        elif entry == "episode":
            item[self.item_key] = {
                "id": "5EpisodeFixture0000001",
                "name": "A jazz podcast",
                "type": "episode",
                "uri": "spotify:episode:5EpisodeFixture0000001",
                "duration_ms": 1800000,
            }
        else:
            item[self.item_key] = self.track(entry)
        return item

    def api_response(self, method: str, path: str, query: dict, headers) -> tuple[int, dict, object]:
        """The status, extra headers and JSON body of a Web API or token request."""
        scripted = self._record(method, path, query)
        if scripted is not None:
            status, extra = scripted
            return status, extra, _error(status, {429: "API rate limit exceeded"}.get(status, "Server error"))
        if path == "/api/token":
            return self._token(headers)
        if headers.get("Authorization") != f"Bearer {ACCESS_TOKEN}":
            return 401, {}, _error(401, "Invalid access token")
        route = path.removeprefix("/v1/").rstrip("/")
        parts = route.split("/")
        if parts[0] == "playlists" and len(parts) == 3 and parts[2] == "items":
            playlist = self.data["playlists"].get(parts[1])
            if playlist is None or playlist == "editorial":
                return 404, {}, _error(404, "Resource not found")
            items = [self._playlist_item(entry) for entry in playlist["items"]]
            return 200, {}, self._paging(route, items, query)
        if route == "search":
            if query.get("type") != "track" or int(query.get("limit", 20)) > 10:
                return 400, {}, _error(400, "Invalid limit")
            ids = self.data["searches"].get(query.get("q"), [])
            return 200, {}, {"tracks": self._paging("search", [self.track(i) for i in ids], query)}
        if parts[0] in ("tracks", "artists") and len(parts) == 1:
            if parts[0] in self.batch_forbidden:
                return 403, {}, _error(403, "Forbidden")
            ids = query.get("ids", "").split(",")
            if len(ids) > 50:
                return 400, {}, _error(400, "Too many ids requested")
            if parts[0] == "tracks":
                return 200, {}, {"tracks": [self.track(i) for i in ids]}
            return 200, {}, {"artists": [self._artists.get(i) for i in ids]}
        if parts[0] in ("tracks", "artists") and len(parts) == 2:
            obj = self.track(parts[1]) if parts[0] == "tracks" else self._artists.get(parts[1])
            if parts[0] == "artists" and self.single_artist_forbidden:
                return 403, {}, _error(403, "Forbidden")
            return (200, {}, copy.deepcopy(obj)) if obj else (404, {}, _error(404, "Resource not found"))
        if route == "audio-features":
            if self.features_forbidden:
                return 403, {}, _error(403, "Forbidden")
            ids = query.get("ids", "").split(",")
            if len(ids) > 100:
                return 400, {}, _error(400, "Too many ids requested")
            return 200, {}, {"audio_features": [copy.deepcopy(self._features.get(i)) for i in ids]}
        return 404, {}, _error(404, "Service not found")

    def _token(self, headers) -> tuple[int, dict, object]:
        expected = base64.b64encode(f"{self.client_id}:{self.client_secret}".encode()).decode()
        if headers.get("Authorization") != f"Basic {expected}":
            return 400, {}, {"error": "invalid_client", "error_description": "Invalid client secret"}
        return 200, {}, {"access_token": ACCESS_TOKEN, "token_type": "Bearer", "expires_in": 3600}

    def preview(self, path: str) -> tuple[int, dict, bytes, int | None]:
        """Status, headers, body and the byte count after which to hang up (None: send all)."""
        scripted = self._record("GET", path, {})
        if scripted is not None:
            status, extra = scripted
            return status, extra, b"", None
        behaviour = self.previews.get(path.rsplit("/", 1)[-1])
        if behaviour is None:
            return 404, {}, b"", None
        if behaviour == "not_audio":
            return 200, {"Content-Type": "text/html"}, b"<html><body>Preview unavailable</body></html>" * 20, None
        mode, _, name = behaviour.rpartition(":")
        body = (DEMO_AUDIO_DIR / name).read_bytes()
        if mode == "cut":  # No Content-Length: the client cannot tell that the body is short.
            return 200, {"Content-Type": "audio/mpeg", "Content-Length": None}, body[: len(body) // 3], None
        hang_up_after = len(body) // 3 if mode == "truncated" else None
        return 200, {"Content-Type": "audio/mpeg"}, body, hang_up_after


def _error(status: int, message: str) -> dict:
    return {"error": {"status": status, "message": message}}


def _handler_for(fake: FakeSpotify):
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _respond(self, status: int, headers: dict, body: bytes, hang_up_after: int | None = None):
            self.send_response(status)
            headers = {"Content-Length": str(len(body)), **headers}
            for name, value in headers.items():
                if value is not None:
                    self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body if hang_up_after is None else body[:hang_up_after])
            self.wfile.flush()
            self.close_connection = True

        def _api(self, method: str):
            url = urllib.parse.urlsplit(self.path)
            query = dict(urllib.parse.parse_qsl(url.query))
            if method == "POST":
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
            status, headers, body = fake.api_response(method, url.path, query, self.headers)
            self._respond(status, {"Content-Type": "application/json", **headers}, json.dumps(body).encode())

        def do_GET(self):  # noqa: N802 - the name http.server calls.
            path = urllib.parse.urlsplit(self.path).path
            if path.startswith("/mp3-preview/"):
                self._respond(*fake.preview(path))
            else:
                self._api("GET")

        def do_POST(self):  # noqa: N802
            self._api("POST")

    return Handler
