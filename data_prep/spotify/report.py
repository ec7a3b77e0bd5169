"""The availability report: what the API gave, what is missing and why.

Counts reconcile: tracks collected = tracks with audio (the catalog rows) +
tracks without audio (`missing.csv`), and for features and genres, tracks
with + tracks without (by reason) = tracks collected.
"""

from __future__ import annotations

import collections
from collections.abc import Mapping, Sequence

from data_prep.spotify.collect import FEATURE_REASONS, GENRE_REASONS, Collection
from data_prep.spotify.download import AUDIO_REASONS, AudioResult
from intake.catalog import SPLITS


def _by_reason(issues) -> dict[str, int]:
    return dict(sorted(collections.Counter(issue.reason for issue in issues).items()))


def build_report(
    collection: Collection,
    audio: Mapping[str, AudioResult],
    rows: Sequence[Mapping],
    labels: Mapping,
    api_stats: Mapping,
) -> dict:
    """The report as a JSON-ready dict.

    Args:
        collection: What was collected.
        audio: The audio result of every collected track.
        rows: The catalog rows written.
        labels: The label settings and how they were derived (`labels.json`).
        api_stats: Requests made and retries.
    """
    tracks = collection.tracks
    results = [audio[t.track_id] for t in tracks]
    failed = [r for r in results if r.path is None]
    statuses = collections.Counter(r.status for r in results)
    tag_sets = {
        "spotify_features": set(labels.get("spotify_features", {}).get("tags", [])),
        "genres": set(labels.get("genres", {}).get("vocabulary", [])),
    }
    row_tags = [set(row["tags"].split("|")) - {""} for row in rows]
    reasons_seen = {issue.reason for issue in [r.issue for r in failed]}
    reasons_seen |= {i.reason for i in collection.feature_issues.values()}
    reasons_seen |= {i.reason for i in collection.genre_issues.values()}
    meanings = {**AUDIO_REASONS, **FEATURE_REASONS, **GENRE_REASONS}
    return {
        "tracks_collected": len(tracks),
        "sources": collection.sources,
        "audio": {
            "with_preview_url": sum(1 for t in tracks if t.preview_url),
            "previews_decoded": statuses["downloaded"] + statuses["existing"],
            "previews_downloaded": statuses["downloaded"],
            "previews_already_present": statuses["existing"],
            "matched_locally": statuses["local"],
            "matched_locally_by": dict(
                sorted(collections.Counter(r.matched_by for r in results if r.matched_by).items())
            ),
            "with_audio": len(results) - len(failed),
            "without_audio": len(failed),
            "without_audio_by_reason": _by_reason(r.issue for r in failed),
        },
        "audio_features": {
            "with_features": len(collection.audio_features),
            "without_features": len(collection.feature_issues),
            "by_reason": _by_reason(collection.feature_issues.values()),
        },
        "genres": {
            "with_genres": sum(1 for t in tracks if collection.genres.get(t.track_id)),
            "without_genres": len(collection.genre_issues),
            "by_reason": _by_reason(collection.genre_issues.values()),
        },
        "catalog": {
            "rows": len(rows),
            "splits": {split: sum(1 for row in rows if row["split"] == split) for split in SPLITS},
            "with_feature_tags": sum(1 for tags in row_tags if tags & tag_sets["spotify_features"]),
            "with_genre_tags": sum(1 for tags in row_tags if tags & tag_sets["genres"]),
            "without_tags": sum(1 for tags in row_tags if not tags),
        },
        "labels": {
            "labels": labels.get("labels"),
            "spotify_features": labels.get("spotify_features", {}).get("status"),
            "genres": labels.get("genres", {}).get("status"),
        },
        "api": {**api_stats, "refused": collection.errors},
        "reasons": {reason: meanings[reason] for reason in sorted(reasons_seen) if reason in meanings},
    }


def _reason_lines(counts: Mapping[str, int], meanings: Mapping[str, str]) -> list[str]:
    return [f"  {reason:<28} {count:>6}  {meanings.get(reason, '')}" for reason, count in counts.items()]


def render_report(report: Mapping, output_dir: str) -> str:
    """The report as text for the terminal."""
    meanings = report["reasons"]
    n = report["tracks_collected"]
    source_notes = []
    for source in report["sources"]:
        name = source["source"] + (f" {source['id']}" if "id" in source else "")
        if source["status"] == "ok":
            source_notes.append(f"{name}: {source.get('new_tracks', 0)} new")
        else:
            error = source["error"]
            source_notes.append(f"{name}: unavailable (HTTP {error['http_status']}: {error['message']})")
    audio, features, genres, catalog = report["audio"], report["audio_features"], report["genres"], report["catalog"]
    lines = [
        f"Spotify catalog in {output_dir}",
        f"tracks collected:    {n:>6}  ({'; '.join(source_notes)})",
        f"with a preview URL:  {audio['with_preview_url']:>6}",
        f"with audio:          {audio['with_audio']:>6}  (previews decoded {audio['previews_decoded']}: downloaded "
        f"{audio['previews_downloaded']}, already present {audio['previews_already_present']}; "
        f"matched locally {audio['matched_locally']})",
        f"without audio:       {audio['without_audio']:>6}  (listed in missing.csv)",
        *_reason_lines(audio["without_audio_by_reason"], meanings),
        f"with audio features: {features['with_features']:>6} of {n}",
        *_reason_lines(features["by_reason"], meanings),
        f"with genres:         {genres['with_genres']:>6} of {n}",
        *_reason_lines(genres["by_reason"], meanings),
        f"catalog rows:        {catalog['rows']:>6}  ("
        + ", ".join(f"{split} {count}" for split, count in catalog["splits"].items())
        + ")",
        f"labels ({report['labels']['labels']}): "
        + "; ".join(f"{kind}: {status}" for kind, status in report["labels"].items() if kind != "labels" and status),
        f"rows with feature tags {catalog['with_feature_tags']}, with genre tags {catalog['with_genre_tags']}, "
        f"without any tag {catalog['without_tags']}",
    ]
    api = report["api"]
    retries = ", ".join(f"{cause} x{count}" for cause, count in api["retries"].items() if count) or "none"
    lines.append(f"API requests:        {api['requests']:>6}  (retries: {retries})")
    for error in api["refused"]:
        status = f"HTTP {error['http_status']}" if error["http_status"] else "network error"
        note = f" - {error['note']}" if error.get("note") else ""
        lines.append(f"  refused: {error['request']}: {status}: {error['message']}{note}")
    return "\n".join(lines)
