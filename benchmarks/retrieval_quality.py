r"""Retrieval quality of each model choice on real music the models never saw, against MFCC statistics.

Usage (after `make install`; `make demo` first adds the demo-trained models):

    python -m benchmarks --only=retrieval_quality [--retrieval_catalog=../shared/data/music/catalog.csv]

The catalog (default: the public set `../shared/data/music/`, 199 real 30 s
game-soundtrack excerpts of 15 albums, where it exists; the bundled demo
catalog otherwise) is indexed once per embedding model by the real Beam job
(`serving.retrieval.embedding_job.build_index`, DirectRunner on all cores) after exporting
each model as `make demo` does: the pretrained artifacts (`mtat_crnn`,
`msd_musicnn`, `mtt_musicnn`, `msd_musicnn_vgg`, `mtt_musicnn_vgg`) with the
MagnaTagATune CRNN as the stage-1 tag model, and the demo-trained
Short-Chunk ResNet with the demo-trained CRNN when `demo_output/` holds
them, and ensembles of musicnn models (`msd_musicnn+mtt_musicnn`, with
`msd_musicnn_vgg` too). Every track then queries each index (`serving.retrieval.evaluation`):
a result is relevant when it comes from the same album. Reported: P@5,
R@5 and MAP@5 for embeddings only, for two stages (tag filter, then
ranking) and for tags only, the CRNN's 50 tag probabilities used as a
vector, the MFCC-20 + delta mean/std baseline (`serving.retrieval.mfcc_baseline`,
the baseline of the ratios, computed in the same run) and chance. Target:
the default embedding (`msd_musicnn`) >= 1.3x the MFCC baseline's P@5.
About 10 minutes on 2 cores.
"""

from __future__ import annotations

import os
import tempfile
import time

import numpy as np
from absl import flags

from benchmarks import report
from data_prep import catalog as catalog_lib
from serving.embedding import query_audio
from serving.embedding.embedders import LocalEmbedder
from serving.embedding.ensemble import EmbeddingModels
from serving.export import exported_model, saved_model
from serving.retrieval import embedding_job, evaluation, mfcc_baseline
from serving.retrieval.catalog_index import CatalogIndex

_CATALOG = flags.DEFINE_string(
    "retrieval_catalog", None, "Catalog CSV whose tags are the ground truth; default: ../shared/data/music, else demo."
)
_K = flags.DEFINE_integer("retrieval_k", 5, "Results per query of the retrieval_quality benchmark.")

PUBLIC_SET = report.REPO_ROOT.parent / "shared" / "data" / "music" / "catalog.csv"
DEMO_CATALOG = report.REPO_ROOT / "demo" / "catalog.csv"
PRETRAINED = report.REPO_ROOT / "pretrained"
DEMO_OUTPUT = report.REPO_ROOT / "demo_output"
TAG_MODEL = "mtat_crnn"
DEFAULT_EMBEDDING = "msd_musicnn"
PRETRAINED_EMBEDDINGS = ("msd_musicnn", "mtt_musicnn", "msd_musicnn_vgg", "mtt_musicnn_vgg", "mtat_crnn")
TARGET_RATIO = 1.3
ENSEMBLES = (("msd_musicnn", "mtt_musicnn"), ("msd_musicnn", "mtt_musicnn", "msd_musicnn_vgg"))
LATENCY_ROWS = ("msd_musicnn", "msd_musicnn+mtt_musicnn", "msd_musicnn+mtt_musicnn+msd_musicnn_vgg")


def _catalog_path() -> str:
    if _CATALOG.value:
        return _CATALOG.value
    return str(PUBLIC_SET if PUBLIC_SET.exists() else DEMO_CATALOG)


def _exports(work: str) -> dict[str, exported_model.ModelRef]:
    """Every model to compare, exported as `make demo` exports it (default chunking: `readers.chunk_count`)."""
    sources = {name: str(PRETRAINED / name) for name in PRETRAINED_EMBEDDINGS}
    for name in ("short_chunk_res", "crnn"):
        if (DEMO_OUTPUT / name / "best" / "model_info.json").exists():
            sources[f"demo-trained {name}"] = str(DEMO_OUTPUT / name)
    refs = {}
    for name, source in sources.items():
        folder = name.replace("demo-trained ", "demo_")
        refs[name] = exported_model.resolve(saved_model.export(source, os.path.join(work, "export", folder), 1))
    return refs


def _index(work: str, catalog, ranking: EmbeddingModels, tags: exported_model.ModelRef) -> CatalogIndex:
    directory = os.path.join(work, f"index_{ranking.label.replace('+', '_')}")
    summary = embedding_job.build_index(directory, embedding_job.JobModels(ranking, tags), catalog=catalog)
    print(summary.render(), flush=True)
    return CatalogIndex.load(directory)


def _query_latency_ms(index: CatalogIndex, path: str, repeats: int = 5) -> float:
    """Median milliseconds to decode and embed one query with the index's models (in-process), after a warm-up."""
    embedder = LocalEmbedder(index.embedding_models, index.tag_model)
    query_audio.audio_query(path, embedder)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        query_audio.audio_query(path, embedder)
        times.append(time.perf_counter() - start)
    embedder.close()
    return 1000.0 * float(np.median(times))


def _row(label: str, scores: evaluation.RetrievalScores, baseline: evaluation.RetrievalScores):
    ratio = "1.00x (baseline)" if scores is baseline else f"{scores.precision / baseline.precision:.2f}x"
    average_precision = scores.average_precision
    return [
        label,
        scores.configuration,
        f"{scores.precision:.3f}",
        f"{scores.recall:.3f}",
        "-" if average_precision != average_precision else f"{average_precision:.3f}",  # NaN for chance.
        ratio,
    ]


def _index_rows(name: str, tag_name: str, index: CatalogIndex, truth, k: int, baseline):
    """The rows of one index (two stages, embeddings only, tags only), each named by its models, and chance."""
    labels = {"two stages": f"{tag_name} tags + {name}", "embeddings only": name, "tags only": f"{tag_name} tags"}
    *scores, chance = evaluation.evaluate(index, truth, k)
    return [_row(labels[s.configuration], s, baseline) for s in scores], scores, chance


def run_benchmark(command: str) -> report.Section:
    load_at_start = report.load_average()
    k = _K.value
    catalog_path = _catalog_path()
    catalog = catalog_lib.read_catalog(catalog_path)
    truth = {entry.track_id: set(entry.tags) for entry in catalog.entries}
    started = time.perf_counter()
    ids, vectors, skipped = mfcc_baseline.catalog_statistics(catalog)
    baseline = evaluation.evaluate_embeddings("embeddings only", ids, vectors, truth, k)
    rows, ratios, chance, latencies = {}, {}, None, {}
    with tempfile.TemporaryDirectory() as work:
        refs = _exports(work)
        demo_tags = refs.pop("demo-trained crnn", None)
        rankings = {name: EmbeddingModels((ref,)) for name, ref in refs.items()}
        for members in ENSEMBLES:
            rankings["+".join(members)] = EmbeddingModels(tuple(refs[m] for m in members))
        for name, ranking in rankings.items():
            tag_ref = demo_tags if name.startswith("demo-trained") and demo_tags else refs[TAG_MODEL]
            tag_name = "demo-trained crnn" if tag_ref is demo_tags else TAG_MODEL
            index = _index(work, catalog, ranking, tag_ref)
            if name in LATENCY_ROWS:
                latencies[name] = _query_latency_ms(index, catalog.entries[0].uri)
            index_rows, scores, chance = _index_rows(name, tag_name, index, truth, k, baseline)
            rows.update({(row[0], row[1]): row for row in index_rows})
            ratios[name] = (
                next(s for s in scores if s.configuration == "embeddings only").precision / baseline.precision
            )
            if name == TAG_MODEL:
                track_ids = [track.track_id for track in index.tracks]
                vector = evaluation.evaluate_embeddings("embeddings only", track_ids, index.tag_probabilities, truth, k)
                rows["tags as vector"] = _row(f"{TAG_MODEL} tag probabilities as a vector", vector, baseline)
    elapsed = time.perf_counter() - started
    ordered = sorted(rows.values(), key=lambda row: -float(row[2]))
    ordered += [_row("MFCC-20 + delta mean/std", baseline, baseline), _row("chance", chance, baseline)]
    table = report.markdown_table(["model", "configuration", f"P@{k}", f"R@{k}", f"MAP@{k}", f"P@{k} vs MFCC"], ordered)
    ratio = ratios.get(DEFAULT_EMBEDDING, 0.0)
    single = latencies.get(DEFAULT_EMBEDDING)
    latency_note = "; ".join(
        f"`{name}` {ms:.0f} ms" + ("" if single is None or name == DEFAULT_EMBEDDING else f" ({ms / single:.2f}x)")
        for name, ms in latencies.items()
    )
    notes = [
        f"Catalog: `{os.path.relpath(catalog_path, report.REPO_ROOT)}`, {len(catalog.entries)} tracks of "
        f"{len({tag for tags in truth.values() for tag in tags})} albums (the `tags` column); each track queries "
        f"the others and a result is relevant when it shares the album ({baseline.num_queries} queries; "
        f"{len(skipped)} tracks the MFCC baseline could not decode). None of these models saw this music. Models "
        "are exported as `make demo` exports them (up to 16 chunks, as `readers.chunk_count` says: ten 3 s chunks "
        "of a 30 s track for musicnn and VGG, one 29 s CRNN "
        "chunk) and indexed by the Beam job (exact search at this size). Two stages: keep tracks sharing one of "
        "the query's top-3 CRNN tags with probability >= 0.5 (skipped for a query without one), rank by the "
        "embedding. Demo-trained rows appear when `make demo` ran first (8 training tracks, 6 epochs). "
        f"Whole run: {elapsed:.0f} s.",
        f"Baseline: MFCC-20 + delta mean/std (80 values per track, standardised over the catalog, cosine; "
        f"`serving.retrieval.mfcc_baseline`), computed in the same run; the last column is each row's P@{k} over the "
        "baseline's.",
        f"Target: the default embedding (`{DEFAULT_EMBEDDING}`, embeddings only) >= {TARGET_RATIO}x the MFCC "
        f"baseline's P@{k}: {ratio:.2f}x, **{'met' if ratio >= TARGET_RATIO else 'not met'}**.",
        f"Ensembles (`serving.embedding.ensemble`): each model's embedding L2-normalised, equal weights, "
        f"concatenated, normalised; built by the same Beam job. Query cost with the ensemble (decode + embed one "
        f"30 s track in-process, all models concurrently, the CRNN tagging too; median of 5, after a warm-up; "
        f"ratio to the single `{DEFAULT_EMBEDDING}` index measured in the same run): {latency_note}.",
        report.load_note(load_at_start),
    ]
    title = f"Retrieval quality on unseen real music (same-album P@{k})"
    return report.Section("retrieval_quality", title, command, table, notes)
