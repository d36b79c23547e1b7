"""PatchCore's memory bank: a greedy k-centre coreset of the training patch features, in bounded memory.

Greedy k-centre (Sener and Savarese 2018, as PatchCore uses it, docs/methods/patchcore.md)
starts from one point and repeatedly adds the point farthest from everything chosen; after k steps
every point lies within the reported radius of a chosen one. Distances are measured after a fixed
Gaussian random projection to `projection_dim` dimensions (Johnson-Lindenstrauss, as the paper does
for speed); features with fewer dimensions are used as they are.

Features arrive batch by batch. `CoresetBuilder` keeps at most `chunk_rows` of them: each full chunk
is reduced to its own coreset (`ratio` of its rows) at once, and whenever the kept points exceed twice
the bank's capacity they are reduced to the capacity. Memory therefore stays near
(chunk_rows + 2 x capacity) x dims floats whatever the number of images. A point dropped in a later
reduction is within that reduction's radius of a kept one, so the reported radius is the sum of the
radii along the way: a bound on every training feature's distance to the bank, exact for one chunk.
Each chunk is sorted before its reduction, so the bank does not depend on the order in which replicas
delivered the features of a step.
"""

from __future__ import annotations

import math

import numpy as np


def greedy_k_center(points: np.ndarray, k: int, seed: int = 0, projection: np.ndarray | None = None):
    """(indices of k chosen rows, the cover radius: the largest distance of a row to its nearest chosen
    one, in the projected space)."""
    z = points if projection is None else points @ projection
    z = np.asarray(z, np.float32)
    n = len(z)
    k = min(k, n)
    norms = np.einsum("ij,ij->i", z, z)
    chosen = np.empty(k, np.int64)
    chosen[0] = np.random.default_rng(seed).integers(n)
    nearest = np.full(n, np.inf, np.float32)
    for step in range(k):
        if step:
            chosen[step] = int(np.argmax(nearest))
        centre = z[chosen[step]]
        squared = norms - 2.0 * (z @ centre) + norms[chosen[step]]
        np.minimum(nearest, np.maximum(squared, 0.0), out=nearest)
    return chosen, float(np.sqrt(nearest.max())) if n else 0.0


def random_projection(dims: int, projection_dim: int, seed: int = 0) -> np.ndarray | None:
    """A [dims, projection_dim] Gaussian matrix scaled to keep distances on average; None when the
    features are not larger than the projection."""
    if dims <= projection_dim:
        return None
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((dims, projection_dim)) / math.sqrt(projection_dim)).astype(np.float32)


class CoresetBuilder:
    """Collects patch features and reduces them to a memory bank of at most `capacity` rows."""

    def __init__(self, capacity: int, ratio: float, projection_dim: int = 128, chunk_rows: int = 16384,
                 seed: int = 0):
        self.capacity, self.ratio, self.projection_dim = capacity, ratio, projection_dim
        self.chunk_rows, self.seed = chunk_rows, seed
        self.reset()

    def reset(self):
        self.buffer, self.buffered = [], 0
        self.kept, self.kept_rows = [], 0
        self.seen = 0
        self.chunk_radius, self.merge_radius = 0.0, 0.0
        self.projection = None

    def add(self, features: np.ndarray):
        """Take a batch of patch features [rows, dims]."""
        features = np.asarray(features, np.float32)
        if self.projection is None and features.size:
            self.projection = random_projection(features.shape[1], self.projection_dim, self.seed)
        self.buffer.append(features)
        self.buffered += len(features)
        self.seen += len(features)
        if self.buffered >= self.chunk_rows:
            self._reduce_chunk()

    def _reduce_chunk(self):
        chunk = np.concatenate(self.buffer)
        chunk = chunk[np.lexsort(chunk.T[::-1])]  # a fixed order: the same bank whatever the arrival order
        self.buffer, self.buffered = [], 0
        chosen, radius = greedy_k_center(chunk, max(1, math.ceil(self.ratio * len(chunk))), self.seed, self.projection)
        self.chunk_radius = max(self.chunk_radius, radius)
        self.kept.append(chunk[chosen])
        self.kept_rows += len(chosen)
        if self.kept_rows > 2 * self.capacity:
            self._merge(self.capacity)

    def _merge(self, size: int):
        kept = np.concatenate(self.kept)
        chosen, radius = greedy_k_center(kept, size, self.seed, self.projection)
        self.merge_radius += radius
        self.kept, self.kept_rows = [kept[chosen]], len(chosen)

    def finish(self) -> tuple[np.ndarray, float, int]:
        """(bank [capacity, dims], the cover radius bound, unique rows): the coreset of all features,
        `ratio` of them but at most `capacity`, its rows repeated to fill the bank (a repeated row
        changes no nearest distance)."""
        if self.buffered:
            self._reduce_chunk()
        if not self.kept:
            raise ValueError("no training features to build the memory bank from")
        target = min(self.capacity, max(1, math.ceil(self.ratio * self.seen)))
        if self.kept_rows > target:
            self._merge(target)
        unique = np.concatenate(self.kept)
        repeats = np.resize(np.arange(len(unique)), self.capacity)
        return unique[repeats], self.chunk_radius + self.merge_radius, len(unique)


def bank_neighbours(bank: np.ndarray, unique_rows: int, count: int, block: int = 2048) -> np.ndarray:
    """int32 [rows, count]: each bank row's `count` nearest distinct rows (itself first), for PatchCore's
    image-score re-weighting; repeated rows get their original's list, and with fewer distinct rows than
    `count` the last neighbour fills the list."""
    unique = np.asarray(bank[:unique_rows], np.float32)
    wanted, count = count, min(count, unique_rows)
    norms = np.einsum("ij,ij->i", unique, unique)
    table = np.empty((unique_rows, count), np.int32)
    for start in range(0, unique_rows, block):
        part = unique[start:start + block]
        squared = norms[start:start + block, None] - 2.0 * part @ unique.T + norms[None]
        squared[np.arange(len(part)), np.arange(start, start + len(part))] = -1.0  # itself first
        table[start:start + block] = np.argsort(squared, axis=1)[:, :count]
    if count < wanted:  # fewer distinct rows than neighbours asked for: the farthest one again
        table = np.concatenate([table, np.repeat(table[:, -1:], wanted - count, axis=1)], axis=1)
    return table[np.resize(np.arange(unique_rows), len(bank))]
