"""Historical similarity: how past setups that looked like this one ended.

A row's similarity features read a `SetupHistory`, the table of past setups of its scope (asset class and
timeframe: the training rows, core.features.dataset) with their outcome (hit, net return) and the time that
outcome was known (`known_ns`: the close of the bar the idea exited on). A row decided at t reads ONLY past
setups with known_ns <= t, the same way in training (the table is the dataset itself), in the walk-forward backtest
(the backtest's dataset) and live (the table the service rebuilds from the history it has, core.models.live).

For each row, among the past setups known by its time:
- its pool of peers: the PEER_POOL most recently resolved setups of its group (sector; core.features.sectors),
  and its own pool: the SYMBOL_POOL most recently resolved setups of the same symbol;
- the K nearest of each pool in a small space of fixed scales (COORDINATES: setup score, RSI, z-score, distance
  from SMA20 in ATRs, volume percentile, VIX percentile; all oriented to the trade's side as the model's features
  are; a missing coordinate sits at its centre). Fixed scales, not fitted ones: nothing learnt from later rows.
- their hit rate and mean net return, shrunk toward the base: the outcome of the BASE_POOL most recently
  resolved setups of the whole scope, as (sum + PRIOR * base) / (n + PRIOR): with few neighbours the feature says
  little more than the base;
- the features are these minus the base: how much better than the recent setups of the scope the similar ones
  did. The base itself is not a feature: it changes slowly with time, the same for every row of a period, and the
  trees used it (and a count of past setups, which grows with the history) to tell periods apart, which does not
  carry to later periods (measured on the shared crypto data: a third of the classifiers' gain on the base
  alone, and a lower out-of-sample AUC).
A row without any past setup known gets NaN (the models handle NaN).

The pools hold a fixed number of the most recent setups (not all of history): the features of a row do not
depend on where the history starts once it holds that many, so the live table (the last bars the service has)
gives the values training gave.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from core.features.sets import FEATURES, SIMILARITY_FEATURES  # the names live with the row layout

K = 20
PRIOR = 10.0
SYMBOL_POOL = 200
PEER_POOL = 1000
BASE_POOL = 2000
CHUNK = 256

# coordinate: (feature it is read from, centre, scale), the scales about one standard deviation of the equity
# setups of 2013-2018; "dist_atr" is dist_sma20 / atr_pct_14 (the distance from SMA20 in ATRs)
COORDINATES: tuple[tuple[str, float, float], ...] = (
    ("setup_score", 0.70, 0.13),
    ("rsi_14c", 26.0, 9.0),
    ("zscore_20c", -2.3, 0.45),
    ("dist_atr", -2.8, 0.8),
    ("volume_pct_50", 0.7, 0.25),
    ("vix_pct_252", 0.45, 0.33),
)


def coordinates(x: np.ndarray) -> np.ndarray:
    """(m, len(COORDINATES)) standardised coordinates of model rows `x` (m, len(FEATURES))."""
    x = np.asarray(x, dtype=np.float64).reshape(-1, len(FEATURES))
    cols = []
    for name, centre, scale in COORDINATES:
        if name == "dist_atr":
            with np.errstate(divide="ignore", invalid="ignore"):
                v = x[:, FEATURES.index("dist_sma20")] / x[:, FEATURES.index("atr_pct_14")]
        else:
            v = x[:, FEATURES.index(name)]
        v = (v - centre) / scale
        cols.append(np.where(np.isfinite(v), v, 0.0))
    return np.column_stack(cols) if cols else np.empty((len(x), 0))


@dataclass(frozen=True, slots=True)
class _Pool:
    """Rows of one pool (a symbol, a group, or the scope), ascending by known time, with running sums."""

    idx: np.ndarray  # positions in the history
    known_ns: np.ndarray
    cum_hit: np.ndarray  # len + 1
    cum_ret: np.ndarray


def _pool(idx: np.ndarray, known_ns: np.ndarray, hit: np.ndarray, ret: np.ndarray) -> _Pool:
    return _Pool(idx, known_ns[idx], np.concatenate([[0.0], np.cumsum(hit[idx])]),
                 np.concatenate([[0.0], np.cumsum(ret[idx])]))


def _grouped(keys: np.ndarray) -> dict[str, np.ndarray]:
    """{key: the ascending positions holding it}."""
    if len(keys) == 0:
        return {}
    names, inverse = np.unique(keys.astype(str), return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    bounds = np.searchsorted(inverse[order], np.arange(len(names) + 1))
    return {str(name): order[bounds[j]: bounds[j + 1]] for j, name in enumerate(names)}


@dataclass(frozen=True, slots=True)
class SetupHistory:
    """Past setups of one scope with their outcomes, ordered by the time the outcome was known."""

    coords: np.ndarray  # (n, len(COORDINATES))
    hit: np.ndarray
    net_return: np.ndarray
    known_ns: np.ndarray  # int64: when the outcome was known (close of the exit bar)
    symbol: np.ndarray  # object
    group: np.ndarray  # object
    _pools: dict[tuple[str, str], _Pool] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def of(cls, x: np.ndarray, hit: np.ndarray, net_return: np.ndarray, known_ns: np.ndarray,
           decision_ns: np.ndarray, symbol: np.ndarray, group: np.ndarray) -> SetupHistory:
        """From model rows `x` and their outcomes (rows in any order)."""
        known_ns = np.asarray(known_ns, dtype=np.int64)
        symbol, group = np.asarray(symbol, dtype=object), np.asarray(group, dtype=object)
        ok = np.isfinite(np.asarray(hit, dtype=np.float64)) & np.isfinite(np.asarray(net_return, dtype=np.float64))
        order = np.lexsort((symbol.astype(str), np.asarray(decision_ns, dtype=np.int64), known_ns))
        order = order[ok[order]]
        return cls(coordinates(x)[order], np.asarray(hit, dtype=np.float64)[order],
                   np.asarray(net_return, dtype=np.float64)[order], known_ns[order], symbol[order], group[order])

    @classmethod
    def empty(cls) -> SetupHistory:
        z = np.empty(0)
        return cls(np.empty((0, len(COORDINATES))), z, z, np.empty(0, dtype=np.int64), np.empty(0, dtype=object),
                   np.empty(0, dtype=object))

    def __len__(self) -> int:
        return len(self.hit)

    def _pool_of(self, kind: str, key: str) -> _Pool:
        if not self._pools:  # every pool at once: one grouping pass per kind
            self._pools[("scope", "")] = _pool(np.arange(len(self.hit)), self.known_ns, self.hit, self.net_return)
            for name, keys in (("symbol", self.symbol), ("group", self.group)):
                for k, idx in _grouped(keys).items():
                    self._pools[(name, k)] = _pool(idx, self.known_ns, self.hit, self.net_return)
        found = self._pools.get((kind, key))
        return found if found is not None else _pool(np.empty(0, dtype=np.int64), self.known_ns, self.hit,
                                                     self.net_return)

    def features(self, x: np.ndarray, decision_ns: np.ndarray, symbols: Sequence[str] | np.ndarray,
                 groups: Sequence[str] | np.ndarray) -> np.ndarray:
        """(m, len(SIMILARITY_FEATURES)) for model rows `x` decided at `decision_ns`, of these symbols and groups."""
        q = coordinates(x)
        t = np.asarray(decision_ns, dtype=np.int64)
        symbols, groups = np.asarray(symbols, dtype=object), np.asarray(groups, dtype=object)
        m = len(t)
        out = np.full((m, len(SIMILARITY_FEATURES)), np.nan)
        if m == 0 or len(self) == 0:
            return out
        base_pool = self._pool_of("scope", "")
        c = np.searchsorted(base_pool.known_ns, t, side="right")
        lo = np.maximum(0, c - BASE_POOL)
        n_base = c - lo
        with np.errstate(invalid="ignore", divide="ignore"):
            base_hit = np.where(n_base > 0, (base_pool.cum_hit[c] - base_pool.cum_hit[lo]) / n_base, np.nan)
            base_ret = np.where(n_base > 0, (base_pool.cum_ret[c] - base_pool.cum_ret[lo]) / n_base, np.nan)
        for kind, keys, size, cols in (("symbol", symbols, SYMBOL_POOL, (0, 1)), ("group", groups, PEER_POOL, (2, 3))):
            hits, rets, n = np.zeros(m), np.zeros(m), np.zeros(m)
            for key, rows in _grouped(keys).items():
                hits[rows], rets[rows], n[rows] = self._nearest(self._pool_of(kind, key), q[rows], t[rows], size)
            with np.errstate(invalid="ignore"):
                out[:, cols[0]] = (hits + PRIOR * base_hit) / (n + PRIOR) - base_hit
                out[:, cols[1]] = (rets + PRIOR * base_ret) / (n + PRIOR) - base_ret
        out[n_base == 0, :] = np.nan
        return out

    def _nearest(self, pool: _Pool, q: np.ndarray, t: np.ndarray,
                 size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Sums of hits and net returns of the K nearest setups in each query's pool (the `size` most recent of
        `pool` known by its time), and how many they are."""
        m = len(t)
        hits, rets, n = np.zeros(m), np.zeros(m), np.zeros(m)
        c = np.searchsorted(pool.known_ns, t, side="right")
        lo_q = np.maximum(0, c - size)
        order = np.argsort(c, kind="stable")
        for s in range(0, m, CHUNK):
            chunk = order[s: s + CHUNK]
            cq, lq = c[chunk], lo_q[chunk]
            lo, hi = int(lq.min()), int(cq.max())
            if hi <= lo:
                continue
            cand = self.coords[pool.idx[lo:hi]]
            d = np.zeros((len(chunk), hi - lo))
            for j in range(cand.shape[1]):
                d += (q[chunk, j, None] - cand[None, :, j]) ** 2
            pos = np.arange(lo, hi)
            d[(pos[None, :] < lq[:, None]) | (pos[None, :] >= cq[:, None])] = np.inf
            k = min(K, hi - lo)
            near = np.argpartition(d, k - 1, axis=1)[:, :k]
            valid = np.isfinite(np.take_along_axis(d, near, axis=1))
            rows = pool.idx[lo + near]
            hits[chunk] = np.where(valid, self.hit[rows], 0.0).sum(axis=1)
            rets[chunk] = np.where(valid, self.net_return[rows], 0.0).sum(axis=1)
            n[chunk] = valid.sum(axis=1)
        return hits, rets, n
