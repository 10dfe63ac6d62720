"""Does the 1-day news vote (local analyst over the StockNet tweets) predict next-day returns?

For each sampled trading day d and each tweet-covered stock, the vote is taken as of d 20:00 UTC (at or
before the 16:00 New York close all year, so no tweet after the close is used) over the tweets of the
previous 24 hours (de-duplicated) plus market headlines, every item scored by the LOCAL sentiment model.
The target is the close-to-close return from d to the next trading day, raw and minus the equal-weighted
mean of the covered stocks that day (market-adjusted). Printed: Spearman rank correlation (pooled, and the
mean daily cross-sectional IC with its t-statistic), hit rate and mean return by vote bucket, and the
analyst's throughput. Days are sampled at random (seeded) so the analysis fits `--max-items`; the figures
are in-sample for these files and say nothing about later periods.

    .venv/bin/python -m scripts.news_eval [--data ../shared/data] [--max-items 20000] [--json OUT.json]
"""
from __future__ import annotations

import argparse
import bisect
import json
import os
import random
import sys
import time
from collections import defaultdict
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from core.news.providers.local import LOCAL_PROMPT_VERSION, LocalAnalyst
from core.news.schema import AnalysisRecord
from core.news.sources import Deduplicator, NewsItem, load_headlines, load_tweets
from core.news.voter import VoterConfig, news_vote

UTC = timezone.utc
REPO = Path(__file__).resolve().parents[1]
TWEETS = "news/stocknet_tweets_2014-01-01_2016-03-31.csv.gz"
HEADLINES = "news/market_headlines_2008-01-02_2018-02-07.csv.gz"
EQUITIES = "equities/sp500_daily_2013-02-08_2018-02-07.csv.gz"
BUCKETS = ((-1.01, -0.3), (-0.3, -0.1), (-0.1, 0.1), (0.1, 0.3), (0.3, 1.01))
AS_OF_HOUR = 20


def next_day_returns(path: Path, symbols: list[str]) -> pd.DataFrame:
    """Rows (date, symbol) -> ret (close d -> close of the next trading day), excess (minus the day's mean)."""
    bars = pd.read_csv(path, usecols=["date", "symbol", "close"])
    bars = bars[bars["symbol"].isin(symbols)].dropna()
    close = bars.pivot(index="date", columns="symbol", values="close").sort_index()
    ret = close.shift(-1) / close - 1
    ret = ret.iloc[:-1]
    excess = ret.sub(ret.mean(axis=1), axis=0)
    out = pd.DataFrame({"ret": ret.stack(), "excess": excess.stack()}).dropna()  # gaps: no target that day
    out.index.names = ["date", "symbol"]
    return out


def sample_days(days: list[date], counts: dict[date, int], max_items: int, seed: int) -> list[date]:
    shuffled = list(days)
    random.Random(seed).shuffle(shuffled)
    chosen, total = [], 0
    for d in shuffled:
        if total + counts.get(d, 0) > max_items:
            continue
        chosen.append(d)
        total += counts.get(d, 0)
    return sorted(chosen)


def window_of(d: date, hours: float) -> tuple[datetime, datetime]:
    as_of = datetime(d.year, d.month, d.day, AS_OF_HOUR, tzinfo=UTC)
    return as_of - timedelta(hours=hours), as_of


def bucket_table(votes: np.ndarray, rets: np.ndarray, excess: np.ndarray,
                 edges: list[tuple[float, float]] | None = None) -> list[dict[str, Any]]:
    """Per bucket of the vote: count, mean vote, mean raw / market-adjusted return, share of up days, and
    the hit rate (sign of the return = sign of the vote; zero votes are not counted). Buckets: the fixed
    `edges`, or the vote's quintiles when None."""
    if edges is None:
        q = np.quantile(votes, [0, 0.2, 0.4, 0.6, 0.8, 1.0])
        edges = [(float(q[i]), float(q[i + 1]) + (1e-12 if i == 4 else 0.0)) for i in range(5)]
    rows = []
    for lo, hi in edges:
        mask = (votes >= lo) & (votes < hi)
        n = int(mask.sum())
        if n == 0:
            rows.append({"bucket": f"[{lo:+.2f},{hi:+.2f})", "n": 0})
            continue
        v, r, e = votes[mask], rets[mask], excess[mask]
        direction = np.sign(v)
        hit = float(np.mean(np.sign(r[direction != 0]) == direction[direction != 0])) if (direction != 0).any() else None
        rows.append({"bucket": f"[{max(lo, -1):+.2f},{min(hi, 1):+.2f})", "n": n, "mean_vote": float(v.mean()),
                     "mean_ret_bps": float(r.mean() * 1e4), "mean_excess_bps": float(e.mean() * 1e4),
                     "up_rate": float((r > 0).mean()), "hit_rate": hit})
    return rows


def run(data: Path, models: Path, max_items: int, seed: int, window_hours: float) -> dict[str, Any]:
    started = time.perf_counter()
    tweets = load_tweets(data / TWEETS)
    headlines = load_headlines(data / HEADLINES)
    symbols = tweets.symbols()
    returns = next_day_returns(data / EQUITIES, symbols)
    days = sorted({date.fromisoformat(d) for d in returns.index.get_level_values("date").unique()
                   if "2014-01-02" <= d <= "2016-03-31"})
    dedup = Deduplicator()
    kept = dedup.filter(tweets)
    # each tweet belongs to the window of the first trading day whose as-of time is at or after it
    per_day: dict[date, list[NewsItem]] = defaultdict(list)
    as_ofs = [window_of(d, window_hours)[1] for d in days]
    for item in kept:
        i = bisect.bisect_left(as_ofs, item.published_at)
        if i < len(as_ofs) and item.published_at > as_ofs[i] - timedelta(hours=window_hours):
            per_day[days[i]].append(item)
    counts = {d: len(v) for d, v in per_day.items()}
    chosen = sample_days([d for d in days if counts.get(d)], counts, max_items, seed)
    items = [item for d in chosen for item in per_day[d]]
    market = [h for d in chosen for h in headlines.between(*window_of(d, window_hours), [""])]
    load_s = time.perf_counter() - started

    t_load = time.perf_counter()
    analyst = LocalAnalyst.from_store(models)
    model_load_s = time.perf_counter() - t_load
    t_analyse = time.perf_counter()
    answers = analyst.analyze_batch(items + market)
    analyse_s = time.perf_counter() - t_analyse
    records: dict[str, list[AnalysisRecord]] = defaultdict(list)
    for item, answer in zip(items + market, answers):
        for symbol in (("",) if item.market_wide else item.tickers):
            records[symbol].append(AnalysisRecord(
                item_id=item.id, symbol=symbol, published_at=item.published_at, analysed_at=item.published_at,
                provider="local", model=analyst.model, prompt_version=LOCAL_PROMPT_VERSION, verdict=answer.verdict,
                market_wide=item.market_wide, title=item.title))

    config = VoterConfig(window=timedelta(hours=window_hours))
    targets: dict[tuple[str, str], tuple[float, float]] = {
        (str(k[0]), str(k[1])): (float(r), float(x))
        for k, r, x in zip(returns.index, returns["ret"].to_numpy(), returns["excess"].to_numpy())}
    rows = []
    for d in chosen:
        as_of = window_of(d, window_hours)[1]
        for symbol in symbols:
            key = (d.isoformat(), symbol)
            if key not in targets or not records.get(symbol):
                continue
            vote = news_vote(symbol, as_of, records[symbol] + records[""], config)
            if vote is None or vote.items == 0:
                continue  # market headlines alone: not a vote about this stock
            rows.append((d, symbol, vote.score, *targets[key]))
    frame = pd.DataFrame(rows, columns=["date", "symbol", "vote", "ret", "excess"])
    return summarise(frame, {
        "tweet_items": len(tweets), "rows_skipped": len(tweets.skipped), "after_dedup": len(kept),
        "dedup_dropped": dedup.dropped, "days_total": len(days), "days_sampled": len(chosen),
        "items_analysed": len(items), "headlines_analysed": len(market), "seed": seed, "window_hours": window_hours,
        "analyst": analyst.model, "model_load_s": round(model_load_s, 1), "data_load_s": round(load_s, 1),
        "analyse_s": round(analyse_s, 1),
        "items_per_s": round((len(items) + len(market)) / analyse_s, 1) if analyse_s else None,
        "threads": 1, "total_s": round(time.perf_counter() - started, 1)})


def summarise(frame: pd.DataFrame, info: dict[str, Any]) -> dict[str, Any]:
    votes, rets, excess = frame["vote"].to_numpy(), frame["ret"].to_numpy(), frame["excess"].to_numpy()
    out: dict[str, Any] = {**info, "observations": len(frame)}
    if len(frame) < 10:
        out["note"] = "too few observations"
        return out
    rho, p = stats.spearmanr(votes, rets)
    rho_x, p_x = stats.spearmanr(votes, excess)
    daily = [stats.spearmanr(g["vote"], g["excess"])[0] for _, g in frame.groupby("date") if len(g) >= 5
             and g["vote"].nunique() > 1]
    daily_arr = np.array([x for x in daily if np.isfinite(x)])
    ic_t = float(daily_arr.mean() / (daily_arr.std(ddof=1) / np.sqrt(len(daily_arr)))) if len(daily_arr) > 2 else None
    direction = np.sign(votes)
    active = direction != 0
    out.update({
        "spearman_vote_vs_ret": float(rho), "p_value": float(p),
        "spearman_vote_vs_excess": float(rho_x), "p_value_excess": float(p_x),
        "daily_ic_mean": float(daily_arr.mean()) if len(daily_arr) else None, "daily_ic_days": len(daily_arr),
        "daily_ic_t": ic_t,
        "hit_rate": float(np.mean(np.sign(rets[active]) == direction[active])),
        "hit_rate_excess": float(np.mean(np.sign(excess[active]) == direction[active])),
        "up_rate_all": float((rets > 0).mean()),
        "buckets": bucket_table(votes, rets, excess, list(BUCKETS)),
        "quintiles": bucket_table(votes, rets, excess),
    })
    return out


def report(result: dict[str, Any]) -> str:
    lines = [
        f"news vote -> next-day return, local analyst {result['analyst']} (in-sample, StockNet tweets 2014-01..2016-03)",
        f"tweets: {result['tweet_items']} items ({result['rows_skipped']} rows skipped) -> {result['after_dedup']} after dedup; "
        f"sampled {result['days_sampled']}/{result['days_total']} trading days (seed {result['seed']}), "
        f"{result['items_analysed']} tweets + {result['headlines_analysed']} headlines analysed",
        f"throughput: {result['items_per_s']} items/s on {result['threads']} thread (model load {result['model_load_s']} s, "
        f"analysis {result['analyse_s']} s, total {result['total_s']} s)",
        f"observations (stock-days with a vote): {result['observations']}",
    ]
    if "spearman_vote_vs_ret" not in result:
        return "\n".join(lines + [result.get("note", "")])
    lines += [
        f"Spearman(vote, next-day return)        = {result['spearman_vote_vs_ret']:+.4f} (p={result['p_value']:.3f})",
        f"Spearman(vote, market-adjusted return) = {result['spearman_vote_vs_excess']:+.4f} (p={result['p_value_excess']:.3f})",
        f"daily cross-sectional IC: mean {result['daily_ic_mean']:+.4f} over {result['daily_ic_days']} days, "
        f"t={result['daily_ic_t']:+.2f}" if result["daily_ic_t"] is not None else "daily IC: too few days",
        f"hit rate (sign of vote = sign of return): {result['hit_rate']:.3f}; vs market-adjusted: "
        f"{result['hit_rate_excess']:.3f}; base rate of up days {result['up_rate_all']:.3f}",
    ]
    for title, table in (("by fixed vote bucket", result["buckets"]), ("by vote quintile", result["quintiles"])):
        lines.append(f"{title}:")
        lines.append(f"{'bucket':>16} {'n':>6} {'vote':>6} {'ret bps':>8} {'excess bps':>10} {'up':>6} {'hit':>6}")
        for b in table:
            if not b["n"]:
                lines.append(f"{b['bucket']:>16} {0:>6}")
                continue
            hit = f"{b['hit_rate']:.3f}" if b["hit_rate"] is not None else "n/a"
            lines.append(f"{b['bucket']:>16} {b['n']:>6} {b['mean_vote']:+6.2f} {b['mean_ret_bps']:+8.1f} "
                         f"{b['mean_excess_bps']:+10.1f} {b['up_rate']:6.3f} {hit:>6}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("SIGNALS_DATA_DIR") or REPO.parent / "shared" / "data"))
    parser.add_argument("--models", type=Path, default=REPO / "models_store")
    parser.add_argument("--max-items", type=int, default=20_000, help="tweets to analyse (days are sampled to fit)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--window-hours", type=float, default=24.0)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    for rel in (TWEETS, HEADLINES, EQUITIES):
        if not (args.data / rel).is_file():
            print(f"missing {args.data / rel} (set --data or SIGNALS_DATA_DIR)", file=sys.stderr)
            return 2
    result = run(args.data, args.models, args.max_items, args.seed, args.window_hours)
    print(report(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
