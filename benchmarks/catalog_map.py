r"""The catalog map: which projection keeps same-album tracks together, and what it costs.

Embeds the public set (`../shared/data/music/catalog.csv`, else the demo
catalog, which the section then says) with the shipped default models, as
`serving.build_index` does, and maps the vectors ranking compares
(`serving.retrieval.catalog_map`) by t-SNE and by PCA (the baseline, in the
same run). For each track, the share of its 5 nearest points on the map
that come from its album (the soundtrack); the same in the embedding space
itself (cosine) is the ceiling a 2-D map can approach. Means with 95 %
bootstrap intervals over albums, and the paired difference to PCA.

Cost: the time to map this catalog; and a 100,000-track index (synthetic
clustered embeddings, indexed as by these models) with its map behind
`serving.app`: the map's build (t-SNE fitted to 20,000 tracks, `MAX_FITTED`,
the rest placed), and in headless Chromium the map's download, the drawing
of all points, a redraw, and a pointer move (hit test and overlay). UMAP was not measured: it is not
installed (umap-learn brings numba and llvmlite, about 150 MB and a JIT
compile at first use), while scikit-learn's t-SNE comes with librosa.

Usage:

    python -m benchmarks --only=catalog_map
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time

import numpy as np

from benchmarks import catalog_embedding, preprocess_throughput, recommend_latency, report
from intake import catalog as catalog_lib
from serving.app.child_process import app_process
from serving.export import graph_options, saved_model
from serving.retrieval import catalog_map, embedding_job, evaluation
from serving.retrieval.catalog_index import CatalogIndex

SECTION = "catalog_map"
K = catalog_map.NEIGHBOURS
SYNTHETIC_TRACKS = 100_000


def _embedding_space_share(vectors: np.ndarray, albums: list[str], k: int = K) -> np.ndarray:
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    similarities = unit @ unit.T
    np.fill_diagonal(similarities, -np.inf)
    nearest = np.argsort(-similarities, axis=1, kind="stable")[:, :k]
    labels = np.asarray(albums)
    return np.mean(labels[nearest] == labels[:, None], axis=1)


def _row(name: str, shares: np.ndarray, ids: list[str], groups: dict[str, str], seconds: float | None, baseline=None):
    values = dict(zip(ids, shares.tolist(), strict=True))
    low, high = evaluation.album_interval(values, groups)
    difference = ""
    if baseline is not None:
        paired = {i: values[i] - baseline[i] for i in ids}
        d_low, d_high = evaluation.album_interval(paired, groups)
        difference = f"{np.mean(list(paired.values())):+.3f} [{d_low:+.3f}, {d_high:+.3f}]"
    timing = "" if seconds is None else f"{seconds:.2f}"
    return [name, f"{np.mean(shares):.3f}", f"[{low:.3f}, {high:.3f}]", difference, timing], values


def _browser_figures(models, work_dir: str) -> dict[str, float] | str:
    """A 100,000-track index with its map behind `serving.app`, its page in headless Chromium: the map's build
    time, and in the browser its download and parse, drawing, pointing and redrawing (ms). A string says why
    the browser part could not run."""
    index = recommend_latency.synthetic_index(models.embedding_models, models.tag_model, SYNTHETIC_TRACKS)
    index_dir = os.path.join(work_dir, "index_100k")
    index.save(index_dir)
    start = time.perf_counter()
    catalog_map.for_index(index).save(index_dir)
    figures = {"map build (s)": time.perf_counter() - start}
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        return "not measured in a browser: Debian's chromium is not installed (`make system-packages`)"
    from playwright.sync_api import sync_playwright

    with app_process(index_dir, None, os.path.join(work_dir, "app.log"), ["--noaccess_log"]) as url:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, headless=True)
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                start = time.perf_counter()
                page.goto(url + "/")
                page.wait_for_selector(f"#map-points[data-points='{SYNTHETIC_TRACKS}']", timeout=300_000)
                figures["page open to map drawn (ms)"] = 1000.0 * (time.perf_counter() - start)
                figures["GET /map download (ms)"] = page.evaluate(
                    "performance.getEntriesByType('resource').find(e => e.name.endsWith('/map')).duration"
                )
                figures["first draw of all points (ms)"] = page.evaluate("window.catalogMap.drawMs")
                figures["redraw, median of 5 (ms)"] = page.evaluate(
                    """() => { const t = []; for (let i = 0; i < 5; i++) { drawMapPoints(); t.push(catalogMap.drawMs); }
                               return t.sort((a, b) => a - b)[2]; }"""
                )
                figures["pointer move: hit test + overlay, mean of 200 (ms)"] = page.evaluate(
                    """() => { const box = document.getElementById('map-overlay').getBoundingClientRect();
                               const t0 = performance.now();
                               for (let i = 0; i < 200; i++) {
                                 catalogMap.hover = -2;
                                 hoverMap({clientX: box.left + (i * 37) % box.width,
                                           clientY: box.top + (i * 53) % box.height}); }
                               return (performance.now() - t0) / 200; }"""
                )
            finally:
                browser.close()
    return figures


def run_benchmark(command: str) -> report.Section:
    logging.getLogger("apache_beam").setLevel(logging.WARNING)
    load_at_start = report.load_average()
    path, is_fallback = preprocess_throughput.find_catalog()
    catalog = catalog_lib.read_catalog(path)
    with tempfile.TemporaryDirectory(prefix="catalog_map_") as work_dir:
        precision = graph_options.resolve_precision(graph_options.AUTO)
        models = catalog_embedding.export_defaults(work_dir, saved_model.GRAPH_INFERENCE, precision)
        run = embedding_job.embed(models, os.path.join(work_dir, "job"), catalog=catalog)
        browser = _browser_figures(models, work_dir)  # While the exports it serves with exist.
    features = run.features
    index = CatalogIndex.build(
        [f.track for f in features],
        np.stack([f.embedding for f in features]),
        np.stack([f.tag_probabilities for f in features]),
        models.embedding_models,
        models.tag_model,
    )
    album_of = {entry.track_id: "|".join(entry.tags) for entry in catalog.entries}
    ids = [t.track_id for t in index.tracks]
    albums = [album_of[i] for i in ids]
    groups = dict(zip(ids, albums, strict=True))
    start = time.perf_counter()
    pca = catalog_map.project(index.embeddings, catalog_map.PCA)
    pca_s = time.perf_counter() - start
    start = time.perf_counter()
    tsne = catalog_map.project(index.embeddings, catalog_map.TSNE)
    tsne_s = time.perf_counter() - start
    pca_row, pca_values = _row(
        "baseline: PCA (first two components)", catalog_map.album_neighbour_share(pca, albums), ids, groups, pca_s
    )
    tsne_row, _ = _row(
        "t-SNE (cosine, PCA start, seed 0): the shipped map",
        catalog_map.album_neighbour_share(tsne, albums),
        ids,
        groups,
        tsne_s,
        pca_values,
    )
    ceiling_row, _ = _row(
        "the embedding space itself (cosine; no map)",
        _embedding_space_share(index.embeddings, albums),
        ids,
        groups,
        None,
        pca_values,
    )
    table = report.markdown_table(
        [
            "Map",
            f"share of the {K} nearest points from the same album",
            "95 % interval (albums)",
            "difference to PCA [95 %]",
            f"seconds for {len(ids)} tracks",
        ],
        [pca_row, tsne_row, ceiling_row],
    )
    if isinstance(browser, str):
        scale = browser
    else:
        scale = "; ".join(f"{name} {value:,.1f}" for name, value in browser.items())
    notes = [
        preprocess_throughput.fallback_note(catalog, is_fallback),
        f"Vectors: the shipped default models' combined embeddings (`--precision=auto` here: {precision}), centred "
        f"on the catalog, as the index ranks with them; {len(ids)} tracks of {len(set(albums))} albums. Albums are "
        "the catalog's tags (the soundtrack). Chance: about "
        f"{np.mean([(albums.count(a) - 1) / (len(albums) - 1) for a in albums]):.3f}.",
        f"At {SYNTHETIC_TRACKS:,} tracks (synthetic clustered embeddings indexed as by these models, behind "
        "`serving.app`, the page in headless Chromium on this machine; t-SNE fitted to "
        f"{catalog_map.MAX_FITTED:,} of them, the rest placed among their {K} nearest): {scale}.",
        "UMAP was not measured: not installed (umap-learn needs numba and llvmlite, about 150 MB); scikit-learn's "
        "t-SNE comes with librosa.",
        report.load_note(load_at_start),
    ]
    return report.Section(
        name=SECTION,
        title="Catalog map: same-album neighbours on the map (t-SNE against PCA)",
        command=command,
        table=table,
        notes=notes,
    )
