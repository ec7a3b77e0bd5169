"""What a recommendation is asked for: tag sets (`TagFilter`) and query expansion (`QueryExpansion`).

The one definition of these settings and their defaults, used by the
recommender (`serving.retrieval.recommender`, which re-exports them) and by
the binaries' flags (`serving.flag_groups`). It needs NumPy only, so a binary
defines and checks its flags before it loads TensorFlow or ScaNN.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np


@dataclasses.dataclass(frozen=True)
class TagFilter:
    """Stage 1's settings.

    Attributes:
        threshold: Minimum probability for a tag to count.
        top_n: At most this many tags per track (the most probable).
    """

    threshold: float = 0.5
    top_n: int = 3

    def __post_init__(self):
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"tag threshold must be in [0, 1], got {self.threshold}")
        if self.top_n < 1:
            raise ValueError(f"top_n must be >= 1, got {self.top_n}")

    def tag_sets(self, probabilities: np.ndarray) -> np.ndarray:
        """Boolean membership `[tracks, num_tags]` of each track's tag set."""
        probabilities = np.atleast_2d(probabilities)
        top_n = min(self.top_n, probabilities.shape[1])
        ranked = np.argsort(-probabilities, axis=1, kind="stable")[:, :top_n]
        members = np.zeros(probabilities.shape, bool)
        np.put_along_axis(members, ranked, True, axis=1)
        return members & (probabilities >= self.threshold)


@dataclasses.dataclass(frozen=True)
class QueryExpansion:
    """Average query expansion: the query's vector plus its nearest catalog tracks', weighted by cosine**power.

    Attributes:
        neighbours: How many nearest catalog tracks join the query (0: off).
        power: Each neighbour's weight is its cosine to the query to this
            power (negative cosines weigh 0): close neighbours count, far ones
            hardly. The query itself weighs 1.

    The defaults (3, 3) were chosen on a held-out catalog of 8 soundtracks
    outside the repository, not on the public set that measures them.
    """

    neighbours: int = 3
    power: float = 3.0

    def __post_init__(self):
        if self.neighbours < 0:
            raise ValueError(f"query expansion neighbours must be >= 0, got {self.neighbours}")
        if not self.power > 0:
            raise ValueError(f"query expansion power must be > 0, got {self.power}")

    def expand(self, index, vector: np.ndarray, is_the_query: Callable[[str], bool]) -> np.ndarray:
        """`vector` (unit, as `index` compares) expanded with its nearest tracks of `index` that are not the query.

        Args:
            index: Anything with `search(vectors, k)` and `ranking_vector_of(track_id)`
                (one index, or a sharded one).
            vector: The query's ranking vector.
            is_the_query: True for a track id that is the query or a copy of its audio.
        """
        if not self.neighbours:
            return vector
        found = index.search(vector[np.newaxis], self.neighbours + _EXPANSION_SLACK)[0]
        neighbours = [(track_id, cosine) for track_id, cosine in found if not is_the_query(track_id)]
        expanded = vector.astype(np.float64)
        for track_id, cosine in neighbours[: self.neighbours]:
            expanded += max(cosine, 0.0) ** self.power * index.ranking_vector_of(track_id)
        return (expanded / np.linalg.norm(expanded)).astype(np.float32)


_EXPANSION_SLACK = 8  # Searched beyond `neighbours`: the query and its copies are skipped.
DEFAULT_EXPANSION = QueryExpansion()
