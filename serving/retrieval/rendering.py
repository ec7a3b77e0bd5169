"""How a recommendation result reads: a plain-text table, JSON, and a chart of the query's top tags.

result = Recommender(catalog).recommend(query, k=10)
print(render_table(result, "song.mp3", top_tags(query.tag_probabilities, catalog.vocabulary, 5)))
"""

from __future__ import annotations

import json
import textwrap

import numpy as np

from serving.retrieval.recommender import RecommendationResult


def top_tags(probabilities, vocabulary, n: int) -> list[tuple[str, float]]:
    """The `n` most probable tags, best first (ties in vocabulary order); [] without probabilities."""
    if probabilities is None:
        return []
    probabilities = np.asarray(probabilities, np.float32)
    order = np.argsort(-probabilities, kind="stable")[:n]
    return [(vocabulary[i], float(probabilities[i])) for i in order]


def _cell(text: str, width: int) -> str:
    return textwrap.shorten(text, width, placeholder="…").ljust(width) if text else "-".ljust(width)


def render_table(result: RecommendationResult, query_label: str = "", query_top_tags=()) -> str:
    """A plain-text table of the results with their explanations and the notes.

    Args:
        result: The recommendations.
        query_label: What was queried.
        query_top_tags: The query's most probable tags (`top_tags`), shown
            whether or not they reach the tag sets' threshold.
    """
    lines = []
    if query_label:
        lines.append(f"query: {query_label}")
    if result.models.get("tags"):
        lines.append(f"tags by: {result.models['tags']}")
    if result.models.get("ranking"):
        lines.append(f"ranked by: {result.models['ranking']}")
    if query_top_tags:
        lines.append("query's top tags: " + ", ".join(f"{tag} {p:.2f}" for tag, p in query_top_tags))
    if result.query_tags:
        lines.append("query's tag set: " + ", ".join(f"{tag} {p:.2f}" for tag, p in result.query_tags))
    lines.append(
        f"{'#':>3}  {'score':>6}  {_cell('artist', 24)}  {_cell('title', 32)}  {_cell('shared tags', 28)}  track id"
    )
    for r in result.recommendations:
        shared = ", ".join(t.tag for t in r.shared_tags)
        lines.append(
            f"{r.rank:>3}  {r.score:6.3f}  {_cell(r.track.artist, 24)}  {_cell(r.track.title, 32)}  "
            f"{_cell(shared, 28)}  {r.track.track_id}"
        )
    lines += [f"note: {note}" for note in result.notes]
    return "\n".join(lines)


def render_json(result: RecommendationResult, query_label: str = "", query_top_tags=()) -> str:
    top = [{"tag": tag, "probability": p} for tag, p in query_top_tags]
    return json.dumps({"query": query_label, "query_top_tags": top, **result.to_dict()}, indent=2, ensure_ascii=False)


def write_tag_chart(path: str, probabilities: np.ndarray, vocabulary, top: int = 10, title: str = "") -> None:
    """A horizontal bar chart (PNG) of the query's most probable tags."""
    from matplotlib.figure import Figure  # Headless: no pyplot, no GUI backend.

    tags = top_tags(probabilities, vocabulary, top)[::-1]
    figure = Figure(figsize=(6, 0.35 * len(tags) + 1.2))
    axes = figure.subplots()
    axes.barh([tag for tag, _ in tags], [p for _, p in tags], color="#3b6ea5")
    axes.set_xlim(0, 1)
    axes.set_xlabel("probability")
    axes.set_title(title or "top tags")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
