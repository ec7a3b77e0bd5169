"""Deterministic, group-disjoint, tag-stratified train/valid/test splits.

Tracks are grouped (by artist by default, so that no artist is in two splits
and a model is not rewarded for recognising a producer's sound), and groups
are assigned greedily in the spirit of iterative stratification (Sechidis et
al. 2011): groups carrying the rarest tags are placed first, each into the
split whose per-tag quota is least filled. Ties are broken by a stable hash
(SHA-256, not Python's salted `hash()`), so the result depends only on the
catalog and the seed.
"""

from __future__ import annotations

import collections
import hashlib
from collections.abc import Sequence

from absl import flags

from intake.catalog import SPLITS, CatalogEntry

SPLIT_BY_CHOICES = ("artist", "track", "given")


def stable_hash(key: str, seed: int = 0) -> int:
    """A 64-bit hash of `key` that is the same in every process and run."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def group_key(entry: CatalogEntry, split_by: str) -> str:
    """The key that must not be shared between splits.

    Tracks without an artist form groups of their own.
    """
    if split_by == "artist" and entry.artist:
        return "artist:" + entry.artist.casefold()
    return "track:" + entry.track_id


def assign_splits(
    entries: Sequence[CatalogEntry],
    vocabulary: Sequence[str],
    split_by: str = "artist",
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
) -> dict[str, str]:
    """Assigns every entry to a split.

    Entries with a split given in the catalog always keep it. The other
    entries of a group that has given splits follow the group's most common
    given split (so a catalog that gives conflicting splits within one artist
    is taken at its word, and the rest of the group stays together).

    Args:
        entries: The catalog entries.
        vocabulary: The tags to stratify on.
        split_by: `artist` (group-disjoint by artist), `track` (every track on
            its own) or `given` (every entry must have a given split).
        fractions: Target fractions of train, valid and test.
        seed: Seed of the tie-breaking hash.

    Returns:
        A map from track id to split name.

    Raises:
        ValueError: On an unknown `split_by`, bad fractions, or `given`
            with an entry lacking a split.
    """
    if split_by not in SPLIT_BY_CHOICES:
        raise ValueError(f"split_by must be one of {SPLIT_BY_CHOICES}, got {split_by!r}")
    if len(fractions) != len(SPLITS) or any(f < 0 for f in fractions) or not sum(fractions) > 0:
        raise ValueError(f"fractions must be {len(SPLITS)} non-negative numbers, got {fractions}")
    if split_by == "given":
        missing = [e.track_id for e in entries if e.split is None]
        if missing:
            raise ValueError(f"split_by=given but {len(missing)} rows have no split, e.g. {missing[:3]}")
        return {e.track_id: e.split for e in entries}

    total = sum(fractions)
    fractions = [f / total for f in fractions]
    known = set(vocabulary)
    groups: dict[str, list[CatalogEntry]] = collections.defaultdict(list)
    for entry in entries:
        groups[group_key(entry, split_by)].append(entry)
    tag_totals = collections.Counter(t for e in entries for t in e.tags if t in known)

    track_counts = [0] * len(SPLITS)
    tag_counts = [collections.Counter() for _ in SPLITS]
    assignment: dict[str, str] = {}
    pending = []
    for key, members in groups.items():
        given = collections.Counter(e.split for e in members if e.split is not None)
        if given:
            majority = max(given.items(), key=lambda item: (item[1], -SPLITS.index(item[0])))[0]
            for entry in members:
                _place([entry], SPLITS.index(entry.split or majority), track_counts, tag_counts, assignment, known)
        else:
            pending.append((key, members))

    def rarity(item):
        key, members = item
        counts = [tag_totals[t] for e in members for t in e.tags if t in known]
        return (min(counts) if counts else float("inf"), stable_hash(key, seed))

    num_entries = len(entries)
    eligible = [i for i, f in enumerate(fractions) if f > 0]
    for _, members in sorted(pending, key=rarity):
        group_tags = collections.Counter(t for e in members for t in e.tags if t in known)
        best = max(
            eligible,
            key=lambda i: _deficit(i, group_tags, fractions, tag_totals, tag_counts, track_counts, num_entries),
        )
        _place(members, best, track_counts, tag_counts, assignment, known)
    return assignment


def _deficit(split_index, group_tags, fractions, tag_totals, tag_counts, track_counts, num_entries):
    """How much a split still lacks the group's tags, then tracks (higher first)."""
    tag_deficit = sum(
        (fractions[split_index] * tag_totals[t] - tag_counts[split_index][t]) * n / tag_totals[t]
        for t, n in group_tags.items()
    )
    track_deficit = (fractions[split_index] * num_entries - track_counts[split_index]) / max(num_entries, 1)
    return (round(tag_deficit, 9), round(track_deficit, 9), -split_index)


def _place(members, split_index, track_counts, tag_counts, assignment, known):
    for entry in members:
        assignment[entry.track_id] = SPLITS[split_index]
        track_counts[split_index] += 1
        tag_counts[split_index].update(t for t in entry.tags if t in known)


def check_split_fractions_flag(values: list[str]) -> bool:
    """The validator of the `--split_fractions` flag (`data_prep`, `data_prep.spotify`): absl's message says
    what is wrong with the values."""
    try:
        fractions = [float(value) for value in values]
    except ValueError:
        raise flags.ValidationError(f"{','.join(values)} are not three numbers") from None
    if len(fractions) != 3 or any(not fraction >= 0 for fraction in fractions):
        raise flags.ValidationError("give three numbers from 0 on: the train, valid and test fractions")
    if abs(sum(fractions) - 1.0) > 1e-6:
        raise flags.ValidationError(
            f"the train, valid and test fractions must add up to 1; these add up to {sum(fractions):g}"
        )
    return True
