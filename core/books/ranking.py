"""The equity ranking book: a walk-forward LightGBM ranks the stocks each day; the book holds the best of them.

- Features: core.books.ranking_features (momentum, reversal, volatility, beta, 52-week high, ...), ranked
  across the day's stocks. Label: core.labels.ranking_labels, the stock's next-`horizon`-day return (bought at the
  next open) less its 252-day beta times the universe's mean, ranked across the day's stocks (qlib's Alpha158 +
  LightGBM recipe, hedged for beta: the book is judged by its beta-hedged alpha, and a raw-return label ranks
  high-beta stocks first in every rising market; `hedged_label=False` is qlib's plain label).
- Models: one per calendar quarter, trained at the first trading day of the quarter on the `train_days` days
  before it whose labels had closed by then (a rolling window: the live service and a backtest that both hold
  the window train the same model). Before the final fit, a fit on the window less its last fifth (with a purge
  of `horizon` days between) predicts that fifth: the `top_k` picks of each of its days, held `horizon` days,
  after costs, are the model's record (its confidence, expected return and worst case) and its held-out rank IC.
- Book: every trading day, enter the best-ranked stocks not held while the book has free slots (`top_k`, at
  most `sector_cap` names of one sector); hold a stock while it ranks in the top `exit_fraction` of the universe
  (a rank buffer: a name enters in the top 20 of about 500 and leaves only when it falls out of the top 100,
  which keeps turnover, and so costs, low); leave it at the next open when it falls out.
- Risk: each position gets an equal share of a `book_vol` volatility budget (as if its positions were
  correlated `assumed_correlation`), sized by the stock's own 63-day volatility and never beyond its stop budget
  (core.risk.vol_target_size); a protective stop `stop_sigmas` standard deviations of a `horizon`-day move away.
- Crash guard (Moreira and Muir 2017; Barroso and Santa-Clara 2015): when the universe's 21-day volatility runs
  above `market_vol`, the book shrinks in proportion (fewer slots, the lowest-ranked names sold, new positions
  smaller), down to `guard_floor` of its size.
A record whose mean after costs is not positive stops entries.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from core.books.base import BookBars, BookDecision, Exit, Key, Record, time_of
from core.books.panel import Panel
from core.books.ranking_features import HISTORY, feature_cube, features, market_returns, raw_features
from core.domain import AssetClass, Direction, Signal, Timeframe
from core.features.sectors import sector_group
from core.labels import ranking_labels
from core.models.lgbm import TreeParams, Trees, fit_trees
from core.risk import vol_target_size
from core.signals.engine import signal_id
from core.signals.levels import expiry

RANKING = "ranking"
MIN_UNIVERSE = 50  # fewer stocks than this: the book does not rank


@dataclass(frozen=True, slots=True)
class RankingConfig:
    top_k: int = 20
    exit_fraction: float = 0.2
    horizon: int = 20
    train_days: int = 756
    min_train_rows: int = 20_000
    holdout_fraction: float = 0.2
    book_vol: float = 0.12
    assumed_correlation: float = 0.3
    market_vol: float = 0.15
    guard_floor: float = 0.25
    sector_cap: int = 5
    stop_sigmas: float = 3.0
    target_sigmas: float = 4.0
    expiry_days: int = 126
    min_price: float = 5.0
    min_features: int = 10
    costs_bps: float = 10.0
    hedged_label: bool = True  # learn the beta-hedged residual return (the alpha the book is judged by)
    residual_momentum: bool = True  # 12-1 momentum of residual returns in place of raw 12-1 (ranking_features)
    weekly: bool = True  # trade only on the first trading day of each week (stops still act every day)
    trees: TreeParams = field(default_factory=lambda: TreeParams(
        objective="regression", num_trees=200, learning_rate=0.05, num_leaves=31, min_data_in_leaf=500,
        lambda_l2=10.0))


@dataclass(frozen=True, slots=True)
class RankingModel:
    quarter: str  # "2016Q3"
    trained_at_ns: int  # the close of the day it was trained on
    trees: Trees
    record: Record | None
    holdout_ic: float | None
    rows: int


class RankingBook:
    name = RANKING

    def __init__(self, config: RankingConfig | None = None) -> None:
        self.config = config or RankingConfig()
        self.timeframes: dict[AssetClass, tuple[Timeframe, ...]] = {AssetClass.EQUITY: (Timeframe.D1,)}
        self.panel = Panel.of([])
        self.models: dict[str, RankingModel] = {}
        self.scores: dict[int, np.ndarray] = {}  # day row -> the model's score of each stock (NaN: not ranked)
        self.features = features(self.config.residual_momentum)
        self._cube = np.empty((0, 0, len(self.features)))

    @property
    def lookback(self) -> int:
        return self.config.train_days + HISTORY + self.config.horizon + 70  # a quarter's slack

    def prepare(self, bars: Mapping[Key, BookBars]) -> None:
        mine = sorted((b for (s, tf), b in bars.items() if tf is Timeframe.D1 and b.asset_class is AssetClass.EQUITY),
                      key=lambda b: b.symbol)
        symbols = tuple(b.symbol for b in mine)
        if symbols != self.panel.symbols:  # a model depends on the universe it ranks; the same universe keeps its
            self.models = {}  # quarters' models (the live service prepares every day and trains once a quarter)
        self.panel = Panel.of(mine)
        self.sectors = [sector_group(b.symbol, AssetClass.EQUITY) for b in mine]
        self._column = {s: j for j, s in enumerate(self.panel.symbols)}
        self.scores = {}
        if len(mine) < MIN_UNIVERSE:
            self._cube = np.empty((len(self.panel), len(mine), len(self.features)))
            return
        raw = raw_features(self.panel, self.sectors)
        self._cube = feature_cube(raw, self.features)
        self._vol = raw["vol_63"]
        self._raw = {k: raw[k] for k in ("mom_12_1", "rev_5_sector", "high_52w")}
        m = market_returns(self.panel.close)
        self._market_vol = pd.Series(m).rolling(21, min_periods=20).std().to_numpy() * math.sqrt(252)
        self._labels = ranking_labels(self.panel.open, self.panel.close, self.panel.close_ns, self.config.horizon,
                                      raw["beta_252"] if self.config.hedged_label else None)

    def decide(self, t_ns: int, due: Sequence[Key], held: Sequence[Signal]) -> BookDecision:
        p = self.panel.last_closed(t_ns)
        if p < 0 or int(self.panel.close_ns[p]) != t_ns or len(self.panel.symbols) < MIN_UNIVERSE:
            return BookDecision()
        if self.config.weekly and not self.first_of_week(p):
            return BookDecision()
        model = self.model_at(p)
        mine = [s for s in held if s.strategy == RANKING]
        if model is None:
            return BookDecision()
        ranks, n = self._ranks(p, model)
        guard = self.guard(p)
        slots = max(1, round(self.config.top_k * guard))
        exits, kept = self._exits(mine, ranks, n, slots, guard)
        entries = self._entries(p, ranks, kept, slots, guard, model)
        return BookDecision(entries, exits)

    def first_of_week(self, p: int) -> bool:
        """Whether day p is the first trading day of its week (known at its close: the day before was earlier)."""
        if p == 0:
            return True
        a, b = (pd.Timestamp(int(self.panel.open_ns[i]), unit="ns").isocalendar()[:2] for i in (p - 1, p))
        return bool(a != b)

    def guard(self, p: int) -> float:
        """The crash guard's multiplier of the book on day p (1: full size)."""
        vol = self._market_vol[p]
        if not np.isfinite(vol) or vol <= 0:
            return 1.0
        return float(min(1.0, max(self.config.guard_floor, self.config.market_vol / vol)))

    def ranked_ideas(self, t_ns: int) -> list[tuple[str, int, float]]:
        """The day's ranking (symbol, rank, score), best first: what `signalbot scan` shows."""
        p = self.panel.last_closed(t_ns)
        model = self.model_at(p) if p >= 0 else None
        if model is None:
            return []
        ranks, _ = self._ranks(p, model)
        score = self.scores[p]
        return sorted(((s, r, float(score[self._column[s]])) for s, r in ranks.items()),
                      key=lambda x: x[1])

    def model_at(self, p: int) -> RankingModel | None:
        """The model of day p's quarter, trained (once) on its first trading day."""
        if len(self.panel.symbols) < MIN_UNIVERSE:
            return None
        day = pd.Timestamp(int(self.panel.open_ns[p]), unit="ns")
        quarter = f"{day.year}Q{day.quarter}"
        if quarter not in self.models:
            start = pd.Timestamp(year=day.year, month=3 * (day.quarter - 1) + 1, day=1)
            first = int(np.searchsorted(self.panel.open_ns, start.value))
            if first >= len(self.panel) or int(self.panel.open_ns[first]) < start.value:
                return None
            model = self._train(first, quarter)
            if model is None:
                return None
            self.models[quarter] = model
        return self.models[quarter]

    def _train(self, r: int, quarter: str) -> RankingModel | None:
        """The model trained at the close of day r: rows of the `train_days` days before, labels known by then."""
        cfg = self.config
        cutoff = int(self.panel.close_ns[r])
        days = np.arange(max(0, r - cfg.train_days), r + 1)
        days = days[self._labels.end_ns[days] <= cutoff]
        if len(days) == 0:
            return None
        x, y, d = self._rows(days)
        if len(y) < cfg.min_train_rows:
            return None
        record, ic = self._holdout(days)
        return RankingModel(quarter, cutoff, fit_trees(x, y, list(self.features), cfg.trees), record, ic, len(y))

    def _rows(self, days: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        x = self._cube[days].reshape(-1, len(self.features))
        y = self._labels.label[days].reshape(-1)
        d = np.repeat(days, self._cube.shape[1])
        ok = np.isfinite(y) & (np.isfinite(x).sum(axis=1) >= self.config.min_features)
        return x[ok], y[ok], d[ok]

    def _holdout(self, days: np.ndarray) -> tuple[Record | None, float | None]:
        """A fit on the early days predicts the last fifth (after a purge of `horizon` days): its record."""
        cfg = self.config
        cut = int(len(days) * (1 - cfg.holdout_fraction))
        early, late = days[: max(0, cut - cfg.horizon)], days[cut:]
        x, y, _ = self._rows(early)
        if len(y) < cfg.min_train_rows // 2 or len(late) == 0:
            return None, None
        trees = fit_trees(x, y, list(self.features), cfg.trees)
        picks, ics = [], []
        for day in late.tolist():
            score = self._score(day, trees)
            ok = np.isfinite(score) & np.isfinite(self._labels.raw[day])
            if ok.sum() < MIN_UNIVERSE:
                continue
            order = np.argsort(-np.where(ok, score, -np.inf))[: cfg.top_k]
            picks.extend(self._labels.raw[day, order] - 2 * cfg.costs_bps / 10_000)
            ics.append(pd.Series(score[ok]).corr(pd.Series(self._labels.residual[day, ok]), method="spearman"))
        first, last = (pd.Timestamp(int(self.panel.open_ns[late[i]]), unit="ns").date() for i in (0, -1))
        record = Record.of(np.asarray(picks), f"ranking top {cfg.top_k} held {cfg.horizon} days, {first}..{last}")
        return record, float(np.nanmean(ics)) if ics else None

    def _score(self, p: int, trees: Trees) -> np.ndarray:
        x = self._cube[p]
        price = self.panel.close[p]
        ok = (np.isfinite(x).sum(axis=1) >= self.config.min_features) & (price >= self.config.min_price)
        out = np.full(len(price), np.nan)
        if ok.any():
            out[ok] = trees.predict(x[ok])
        return out

    def _ranks(self, p: int, model: RankingModel) -> tuple[dict[str, int], int]:
        if p not in self.scores:
            self.scores[p] = self._score(p, model.trees)
        score = self.scores[p]
        ok = np.flatnonzero(np.isfinite(score))
        order = ok[np.argsort(-score[ok], kind="stable")]
        return {self.panel.symbols[j]: k + 1 for k, j in enumerate(order.tolist())}, len(order)

    def _exits(self, held: list[Signal], ranks: dict[str, int], n: int, slots: int,
               guard: float) -> tuple[list[Exit], list[Signal]]:
        cfg = self.config
        keep_rank = max(cfg.top_k, math.ceil(cfg.exit_fraction * n))
        exits, kept = [], []
        for s in held:
            r = ranks.get(s.symbol)
            if r is not None and r > keep_rank:
                exits.append(Exit(s.id, f"it fell to rank {r} of {n}, out of the top {keep_rank} the book holds"))
            else:
                kept.append(s)
        if len(kept) > slots:  # the crash guard shrinks the book: the lowest-ranked names go first
            kept.sort(key=lambda s: ranks.get(s.symbol, n + 1))
            for s in kept[slots:]:
                exits.append(Exit(s.id, f"the book shrinks to {slots} names: the market's 21-day volatility is "
                                        f"{cfg.market_vol / guard:.0%}, above the {cfg.market_vol:.0%} it is sized for"))
            kept = kept[:slots]
        return exits, kept

    def _entries(self, p: int, ranks: dict[str, int], kept: list[Signal], slots: int, guard: float,
                 model: RankingModel) -> list[Signal]:
        cfg = self.config
        rec = model.record
        if rec is None or rec.mean <= 0:
            return []
        held = {s.symbol for s in kept}
        per_sector: dict[str, int] = {}
        for s in kept:
            sec = self.sectors[self._column[s.symbol]]
            per_sector[sec] = per_sector.get(sec, 0) + 1
        out: list[Signal] = []
        free = slots - len(kept)
        for sym, r in sorted(ranks.items(), key=lambda x: x[1]):
            if free <= 0 or r > cfg.top_k:
                break
            j = self._column[sym]
            if sym in held or per_sector.get(self.sectors[j], 0) >= cfg.sector_cap:
                continue
            signal = self._signal(p, j, r, len(ranks), guard, model, rec)
            if signal is None:
                continue
            out.append(signal)
            per_sector[self.sectors[j]] = per_sector.get(self.sectors[j], 0) + 1
            free -= 1
        return out

    def _signal(self, p: int, j: int, rank: int, n: int, guard: float, model: RankingModel,
                rec: Record) -> Signal | None:
        cfg = self.config
        sym = self.panel.symbols[j]
        entry, vol_d = float(self.panel.close[p, j]), float(self._vol[p, j])
        if not (entry > 0 and np.isfinite(vol_d) and vol_d > 0):
            return None
        move = vol_d * math.sqrt(cfg.horizon)
        stop, target = entry * (1 - cfg.stop_sigmas * move), entry * (1 + cfg.target_sigmas * move)
        if stop <= 0:
            return None
        k, rho = cfg.top_k, cfg.assumed_correlation
        share = cfg.book_vol / math.sqrt(k * k * rho + k * (1 - rho))
        size = vol_target_size(entry, stop, vol_d * math.sqrt(252), share * guard)
        issued = time_of(int(self.panel.close_ns[p]))
        facts = {name: round(float(v[p, j]), 6) for name, v in self._raw.items() if np.isfinite(v[p, j])}
        evidence = {
            "book": RANKING, "rank": rank, "ranked": n, "score": round(float(self.scores[p][j]), 6),
            "model": model.quarter, "holdout_ic": None if model.holdout_ic is None else round(model.holdout_ic, 4),
            "record": rec.evidence(), "expected_return": round(rec.mean, 6), "worst_case": round(rec.worst, 6),
            "guard": round(guard, 4), "features": facts, "sector": self.sectors[j],
            "size": {"vol_share": round(share * guard, 6), "risk_at_stop": round(size * (1 - stop / entry), 6)},
        }
        return Signal(
            id=signal_id(sym, Timeframe.D1, issued, Direction.LONG) + "-R", symbol=sym, asset_class=AssetClass.EQUITY,
            timeframe=Timeframe.D1, direction=Direction.LONG, entry=entry, target=target, stop=stop,
            confidence=max(1, min(99, round(rec.win_rate * 100))), position_size=size, issued_at=issued,
            expires_at=expiry(issued, Timeframe.D1, AssetClass.EQUITY, cfg.expiry_days),
            reasoning=_reasoning(sym, rank, n, facts, cfg, guard, rec, model), strategy=RANKING, evidence=evidence)

    def predictions(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """The scores of every day the book ranked, and the residual forward returns they were meant to order
        (dates x symbols): for the report's rank IC."""
        rows = sorted(self.scores)
        index = [pd.Timestamp(int(self.panel.open_ns[p]), unit="ns").date() for p in rows]
        cols = list(self.panel.symbols)
        pred = pd.DataFrame([self.scores[p] for p in rows], index=index, columns=cols)
        real = pd.DataFrame(self._labels.residual[rows] if rows else np.empty((0, len(cols))), index=index,
                            columns=cols)
        return pred, real


def _reasoning(sym: str, rank: int, n: int, facts: Mapping[str, float], cfg: RankingConfig, guard: float,
               rec: Record, model: RankingModel) -> str:
    parts = []
    if "mom_12_1" in facts:
        parts.append(f"{facts['mom_12_1']:+.0%} over the year to last month")
    if "high_52w" in facts:
        parts.append(f"{-facts['high_52w']:.0%} below its 52-week high")
    if "rev_5_sector" in facts:
        parts.append(f"{facts['rev_5_sector']:+.1%} against its sector this week")
    shrink = "" if guard >= 1 else f" The book is at {guard:.0%} of its size: the market is more volatile than usual."
    return (f"Ranking: {sym} ranks {rank} of {n} S&P 500 stocks in the model of {model.quarter} ("
            + ", ".join(parts) + f"). Held while it stays in the top {cfg.exit_fraction:.0%}; a stop "
            f"{cfg.stop_sigmas:g} standard deviations of a {cfg.horizon}-day move below.{shrink} Record: the model's "
            f"top {cfg.top_k} picks on held-out days won {rec.win_rate:.0%} of the time over {cfg.horizon} days after "
            f"costs, average {rec.mean:+.2%}; one in twenty lost more than {-rec.worst:.1%}. It expects to beat the "
            "market by little on each idea, and earns over many of them.")

