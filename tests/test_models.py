"""core.models: calibration, purged walk-forward splits, training only on labels known by the time, versions
on disk with their manifest, champion / challenger, and the walk-forward voter."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from core.domain import AssetClass, Direction, Timeframe
from core.features.bars import BAR_WINDOW
from core.features.dataset import Dataset
from core.features.sets import DEFAULT_MODEL_FEATURE_SET, FEATURES, MODEL_FEATURE_SETS
from core.models.calibration import Calibrator, fit_calibrator
from core.models.lgbm import TreeParams
from core.models.promotion import decide_promotion
from core.models.reversion import MIN_RECORD_ROWS, MIN_ROWS, is_record, train_model, train_reversion
from core.models.store import champion, data_fingerprint, load_model, read_manifest, save_model, set_role, versions
from core.models.training import retrain_times, train_schedule
from core.models.validation import DAY_NS, auc, brier, calibration_slope, known_by, slope_lower_bound, walk_forward_folds
from core.models.voter import ModelVoter, WalkForwardVoter, reliability, request_features, skill
from core.signals.ensemble import ModelRequest

FAST = TreeParams(num_trees=30, num_leaves=7, min_data_in_leaf=20)
T0 = int(datetime(2015, 1, 1, tzinfo=timezone.utc).timestamp()) * 10**9


def synthetic(n: int = 3000, seed: int = 0, informative: bool = True) -> Dataset:
    """Rows one per ~6 hours over ~2 years; the hit depends on feature 1 (setup_score) when informative."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, len(FEATURES)))
    x[:, 0] = rng.choice([-1.0, 1.0], n)
    logit = 1.5 * x[:, 1] if informative else np.zeros(n)
    hit = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.float64)
    decision = T0 + np.arange(n, dtype=np.int64) * 6 * 3600 * 10**9
    end = decision + 14 * DAY_NS
    ret = np.where(hit > 0, 0.02, -0.015)
    return Dataset(x, hit, ret, np.where(hit > 0, 1, -1).astype(np.int8), ret, ret, decision, end,
                   np.ones(n, dtype=bool), np.full(n, "X", dtype=object), end, np.full(n, "equity:?", dtype=object),
                   "equity-1d")


def test_calibration_slope_and_its_lower_bound() -> None:
    rng = np.random.default_rng(4)
    p = rng.uniform(0.2, 0.6, 20000)
    honest = (rng.random(20000) < p).astype(float)
    assert calibration_slope(p, honest) == pytest.approx(1.0, abs=0.05)
    overconfident = (rng.random(20000) < 0.4 + 0.25 * (p - 0.4)).astype(float)
    assert calibration_slope(p, overconfident) == pytest.approx(0.25, abs=0.05)
    few = slice(0, 300)
    low = calibration_slope(p[few], honest[few], 2.0)
    assert low < calibration_slope(p[few], honest[few]) - 0.3  # 300 rows: a wide interval
    assert np.isnan(calibration_slope(np.full(50, 0.4), honest[:50]))  # flat predictions claim nothing


def test_the_cv_slope_bound_counts_the_spread_between_folds() -> None:
    steady = slope_lower_bound([0.9, 1.0, 1.1, 1.0], [0.7, 0.8, 0.9, 0.8])
    assert steady == pytest.approx(0.8)  # the folds agree: their own bounds decide
    erratic = slope_lower_bound([0.36, 0.31, -0.99, 0.81, -0.42], [0.21, 0.17, -1.24, 0.53, -0.55])
    assert erratic < -0.5  # fold slopes that disagree (AUC 0.47-0.53) earn no reliability
    assert np.isnan(slope_lower_bound([0.8], [0.5])) and np.isnan(slope_lower_bound([], []))


def test_isotonic_calibration_is_monotone_and_fixes_a_miscalibrated_score() -> None:
    rng = np.random.default_rng(1)
    raw = rng.random(5000)
    truth = 0.2 + 0.5 * raw ** 2
    y = (rng.random(5000) < truth).astype(float)
    cal = fit_calibrator(raw[:4000], y[:4000])
    assert cal.kind == "isotonic"
    grid = np.linspace(0, 1, 101)
    assert np.all(np.diff(cal(grid)) >= 0)
    assert brier(cal(raw[4000:]), y[4000:]) < brier(raw[4000:], y[4000:]) - 0.01
    assert Calibrator.from_dict(json.loads(json.dumps(cal.to_dict()))) == cal
    assert fit_calibrator(raw[:100], y[:100]).kind == "platt"
    with pytest.raises(ValueError):
        Calibrator.from_dict({"kind": "magic"})


def test_walk_forward_folds_are_purged_and_embargoed() -> None:
    data = synthetic(2000)
    embargo = 5 * DAY_NS
    folds = walk_forward_folds(data.decision_ns, data.end_ns, 4, embargo)
    assert len(folds) >= 3
    for train, test in folds:
        first_test = data.decision_ns[test].min()
        assert data.end_ns[train].max() <= first_test - embargo  # no training label reaches into the test block
        assert data.decision_ns[train].max() < first_test


def test_a_model_for_time_t_saw_no_label_known_after_t() -> None:
    data = synthetic(3000)
    t = int(data.decision_ns[2000])
    embargo = 10 * DAY_NS
    model = train_reversion(data, t, embargo, FAST)
    assert model.trained_until_ns <= t
    assert model.metrics["rows"] == known_by(data.end_ns, t, embargo).sum()
    # scramble every label that was not known by t: the model must not change at all
    later = ~known_by(data.end_ns, t, embargo)
    rng = np.random.default_rng(9)
    scrambled = Dataset(data.features, np.where(later, rng.integers(0, 2, len(data)), data.hit).astype(float),
                        np.where(later, rng.normal(size=len(data)), data.net_return), data.status,
                        np.where(later, rng.normal(size=len(data)), data.fwd_5),
                        np.where(later, rng.normal(size=len(data)), data.fwd_10), data.decision_ns, data.end_ns,
                        data.triggered, data.symbol, data.outcome_ns, data.group, data.scope)
    again = train_reversion(scrambled, t, embargo, FAST)
    probe = data.features[2500:]
    np.testing.assert_array_equal(model.probability(probe), again.probability(probe))
    np.testing.assert_array_equal(model.expected_return(probe), again.expected_return(probe))


def test_the_model_learns_a_real_signal_and_its_probabilities_are_calibrated() -> None:
    data = synthetic(6000)
    t = int(data.decision_ns[4500])
    model = train_reversion(data, t, 10 * DAY_NS, FAST)
    later = data.subset(data.decision_ns >= t)
    p = model.probability(later.features)
    assert auc(p, later.hit) > 0.75
    edges = np.quantile(p, [0.0, 1 / 3, 2 / 3, 1.0])
    means = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        inside = (p >= lo) & (p <= hi)
        assert inside.sum() > 200
        assert abs(later.hit[inside].mean() - p[inside].mean()) < 0.06
        means.append(later.hit[inside].mean())
    assert means == sorted(means) and means[-1] - means[0] > 0.3


def test_versions_on_disk_round_trip_with_their_manifest(tmp_path: Path) -> None:
    data = synthetic(2000)
    model = train_reversion(data, int(data.decision_ns[-1]), 10 * DAY_NS, FAST)
    folder = save_model(model, tmp_path, "reversion-equity-1d", data, role="challenger", training_data="synthetic")
    m = read_manifest(folder)
    for key in ("name", "version", "created_at", "role", "metrics", "features", "feature_set", "training_windows",
                "data_fingerprint", "library_versions"):
        assert key in m
    assert folder.name == f"reversion-equity-1d-{m['version']}"
    assert m["features"] == list(MODEL_FEATURE_SETS[DEFAULT_MODEL_FEATURE_SET]) and m["feature_set"] == "fs-1"
    assert m["data_fingerprint"] == data_fingerprint(data) and len(m["data_fingerprint"]) == 64
    assert all(isinstance(v, float) for v in m["metrics"].values())
    assert "lightgbm" in m["library_versions"]
    loaded = load_model(folder)
    np.testing.assert_array_equal(loaded.probability(data.features[:50]), model.probability(data.features[:50]))
    assert champion(tmp_path, "reversion-equity-1d") is None
    set_role(folder, "champion")
    assert champion(tmp_path, "reversion-equity-1d") == folder
    assert [f for f, _ in versions(tmp_path)] == [folder]
    with pytest.raises(ValueError):
        set_role(folder, "king")
    bad = json.loads((folder / "manifest.json").read_text()) | {"feature_set": "fs-0", "features": ["gone", "ret_1"]}
    (folder / "manifest.json").write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="feature set"):
        load_model(folder)


def test_a_models_vote_counts_by_its_out_of_sample_skill() -> None:
    informative = train_reversion(synthetic(4000), int(synthetic(4000).decision_ns[-1]), 10 * DAY_NS, FAST)
    blind = train_reversion(synthetic(4000, informative=False), int(synthetic(4000).decision_ns[-1]), 10 * DAY_NS, FAST)
    assert informative.metrics["holdout_auc"] > 0.7 and skill(informative) == 1.0
    assert skill(blind) < 0.6  # about half of the time a blind model's holdout AUC is below 0.5: no say at all
    assert skill(replace_metrics(blind, {})) == 0.0
    assert reliability(replace_metrics(blind, {"holdout_auc": 0.54})) == 0.0  # no out-of-sample slope: base rate
    assert reliability(replace_metrics(blind, {"holdout_auc": 0.6, "cv_slope_low": -0.3})) == 0.0


def test_in_a_schedule_skill_rests_on_the_earlier_models_out_of_sample_calls() -> None:
    """A model's holdout can look skilful by chance; in a walk-forward schedule each model after the first carries
    the AUC of the calls its predecessors made on rows they had not seen (outcomes known by its own start), and its
    vote and confidence use that. Informative data: high; blind data: about 0.5 whatever the holdouts said."""
    for informative, check in ((True, lambda a: a > 0.7), (False, lambda a: abs(a - 0.5) < 0.06)):
        data = synthetic(5000, seed=3, informative=informative)
        start = datetime.fromtimestamp(int(data.decision_ns[1500]) / 1e9, timezone.utc)
        end = datetime.fromtimestamp(int(data.decision_ns[-1]) / 1e9, timezone.utc)
        models = train_schedule({"equity-1d": data}, retrain_times(start, end, timedelta(days=90)), FAST)["equity-1d"]
        assert "tracked_auc" not in models[0].metrics and len(models) >= 4
        for k, m in enumerate(models[1:], start=1):
            if "tracked_auc" not in m.metrics:
                continue
            rows = known_by(data.end_ns, m.trained_until_ns, 10 * DAY_NS) & (data.decision_ns >= models[0].trained_until_ns) \
                & (data.decision_ns < m.trained_until_ns)
            assert m.metrics["tracked_rows"] == rows.sum() >= 200  # only calls whose outcome was known by its start
            assert check(m.metrics["tracked_auc"])
            assert skill(m) == skill(replace_metrics(m, {"holdout_auc": m.metrics["tracked_auc"]}))
            if m.metrics["tracked_models"] >= 2:
                low = m.metrics["tracked_slope_low"]
                assert reliability(m) == max(0.0, min(1.0, low)) and low < m.metrics["tracked_slope"]
            else:  # one earlier model's stint is no record yet
                assert "tracked_slope_low" not in m.metrics and reliability(m) == 0.0
            if not informative:  # what a blind model shows stays near its base rate (a flat calibrator or a low slope)
                shown = reliability(m) * (m.probability(data.features[-500:]) - m.metrics["base_rate"])
                assert np.abs(shown).max() < 0.1
        assert sum("tracked_auc" in m.metrics for m in models) >= 3


def replace_metrics(model, metrics):  # noqa: ANN001, ANN201
    from dataclasses import replace

    return replace(model, metrics=metrics)


def test_a_challenger_replaces_the_champion_only_when_better_on_the_same_window() -> None:
    data = synthetic(6000)
    t = int(data.decision_ns[3000])
    good = train_reversion(data, t, 10 * DAY_NS, FAST)
    blind = train_reversion(synthetic(6000, seed=5, informative=False), t, 10 * DAY_NS, FAST)
    window = data.subset(data.decision_ns > t)
    assert decide_promotion(blind, good, window).promote
    kept = decide_promotion(good, blind, window)
    assert not kept.promote and kept.champion["brier"] < kept.challenger["brier"]
    assert not decide_promotion(blind, good, window.subset(np.arange(len(window)) < 50)).promote
    assert decide_promotion(None, good, window).promote


def _request(as_of_ns: int, symbol: str = "") -> ModelRequest:
    rng = np.random.default_rng(as_of_ns % 1000)
    closes = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, BAR_WINDOW)))
    window = np.vstack([closes, closes * 1.01, closes * 0.99, closes, np.full(BAR_WINDOW, 1e6)])
    return ModelRequest(AssetClass.EQUITY, Timeframe.D1, as_of_ns, Direction.LONG, (0.8, 1.0, 0.2, 25.0, 0.7), window,
                        symbol)


def test_walk_forward_voter_uses_only_models_trained_before_each_request() -> None:
    data = synthetic(4000)
    start = datetime.fromtimestamp(int(data.decision_ns[1000]) / 1e9, timezone.utc)
    end = datetime.fromtimestamp(int(data.decision_ns[-1]) / 1e9, timezone.utc)
    times = retrain_times(start, end, timedelta(days=120))
    schedule = train_schedule({"equity-1d": data}, times, FAST)
    models = schedule["equity-1d"]
    assert len(models) >= 3
    for model, t in zip(models, times, strict=False):
        assert model.trained_until_ns <= int(t.timestamp() * 1e9)
    voter = WalkForwardVoter(schedule)
    for t_ns in np.linspace(int(data.decision_ns[0]), int(data.decision_ns[-1]), 40).astype(np.int64):
        chosen = voter.model_for("equity-1d", int(t_ns))
        if chosen is not None:
            assert chosen.trained_until_ns <= t_ns
            newer = [m for m in models if m.trained_until_ns <= t_ns]
            assert chosen is newer[-1]
    assert voter.model_for("equity-1d", int(data.decision_ns[0])) is None
    probs = voter.probabilities([_request(int(data.decision_ns[0])), _request(int(data.decision_ns[-1]))])
    assert probs[0] is None and probs[1] is not None and 0.0 <= probs[1].probability <= 1.0
    assert probs[1].skill == skill(voter.model_for("equity-1d", int(data.decision_ns[-1])))
    fixed = ModelVoter({"equity-1d": models[-1]})
    other = ModelRequest(AssetClass.CRYPTO, Timeframe.H1, 0, Direction.LONG, (0.8, 1.0, 0.2, 25.0, 0.7),
                         _request(0).window)
    assert fixed.probabilities([other, _request(5)])[0] is None


def test_champion_voter_loads_the_champion_of_each_scope_and_refreshes_its_context(tmp_path: Path) -> None:
    import asyncio

    import pandas as pd

    from core.backtest.market import FrameMarket
    from core.domain import Instrument
    from core.models.live import champion_voter, refresh_context
    from tests.conftest import make_bars

    assert champion_voter(tmp_path) is None
    data = synthetic(2000)
    model = train_reversion(data, int(data.decision_ns[-1]), 10 * DAY_NS, FAST, feature_set="fs-2")
    folder = save_model(model, tmp_path, "reversion-equity-1d", data, role="challenger")
    assert champion_voter(tmp_path) is None  # a challenger only shadows
    set_role(folder, "champion")
    voter = champion_voter(tmp_path)
    assert voter is not None and set(voter.models) == {"equity-1d"}
    rng = np.random.default_rng(2)
    stocks = [Instrument(f"S{k}", AssetClass.EQUITY) for k in range(3)]
    frames = {(s.symbol, Timeframe.D1): make_bars(100 * np.exp(np.cumsum(rng.normal(0, 0.01, 300))), start="2020-01-01")
              for s in stocks}
    frames[("SPX", Timeframe.D1)] = make_bars(3000 * np.exp(np.cumsum(rng.normal(0, 0.01, 300))), start="2020-01-01")
    market = FrameMarket([*stocks, Instrument("SPX", AssetClass.INDEX)], frames)
    now = (pd.Timestamp("2020-01-01", tz="UTC") + pd.Timedelta(days=300)).to_pydatetime()
    asyncio.run(refresh_context(voter, market, now))
    row = voter.context.at_ns(np.array([pd.Timestamp(now).value]))[0]
    assert np.isnan(row[0]) and not np.isnan(row[2]) and 0.0 <= row[4] <= 1.0  # no VIX; SPX trend; breadth
    assert voter.probabilities([_request(pd.Timestamp(now).value)])[0] is not None
    # fs-2: the sectors' strength and the past setups of the scope, from the market's bars up to now
    assert set(voter.sectors.group_of) == {"S0", "S1", "S2"} and "equity-1d" in voter.history
    table = voter.history["equity-1d"]
    assert len(table) > 0 and (table.known_ns <= pd.Timestamp(now).value).all()
    x = request_features([_request(pd.Timestamp(now).value, "S1")], voter.features())[0]
    assert np.isfinite(x[[FEATURES.index(n) for n in ("sector_rs_20", "rs_vs_sector_20", "sim_peer_hit")]]).all()
    # an fs-1 model reads no similarity feature: no years of bars are read and no table is built for it
    fs1 = ModelVoter({"equity-1d": train_reversion(data, int(data.decision_ns[-1]), 10 * DAY_NS, FAST)})
    asyncio.run(refresh_context(fs1, market, now))
    assert fs1.history == {} and set(fs1.sectors.group_of) == {"S0", "S1", "S2"}
    assert fs1.probabilities([_request(pd.Timestamp(now).value, "S1")])[0] is not None


def test_an_outdated_feature_set_is_refused_live_and_retired_by_the_next_training(tmp_path: Path) -> None:
    import asyncio

    from core.models.live import champion_voter
    from bot.cli.train import run_train

    data = write_stocks_csv(tmp_path / "stocks.csv")
    store = tmp_path / "models"
    first = asyncio.run(run_train(data, store, params=FAST, progress=lambda f, s: None, say_line=lambda t: None))
    old = json.loads((first / "manifest.json").read_text())
    (first / "manifest.json").write_text(json.dumps(old | {"feature_set": "fs-0", "features": ["gone", *old["features"]]}))
    assert champion_voter(store) is None  # a champion reading a feature no longer computed does not vote
    lines: list[str] = []
    second = asyncio.run(run_train(data, store, end="2021-09-30", params=FAST, progress=lambda f, s: None,
                                   say_line=lines.append))
    assert read_manifest(second)["role"] == "champion" and read_manifest(first)["role"] == "retired"
    assert any("outdated" in line for line in lines)
    voter = champion_voter(store)
    assert voter is not None and set(voter.models) == {"equity-1d"}


def write_stocks_csv(path: Path, symbols: int = 10, days: int = 800) -> Path:
    import pandas as pd

    rng = np.random.default_rng(4)
    idx = pd.bdate_range("2019-01-01", periods=days)
    rows = []
    for k in range(symbols):
        r = rng.normal(0.0003, 0.018, days)
        r[rng.choice(days, 40, replace=False)] -= 0.06
        close = 40 * np.exp(np.cumsum(r))
        opn = np.r_[close[0], close[:-1]] * (1 + rng.normal(0, 0.004, days))
        rows.append(pd.DataFrame({"date": idx.strftime("%Y-%m-%d"), "symbol": f"S{k:02d}", "open": opn,
                                  "high": np.maximum(opn, close) * 1.007, "low": np.minimum(opn, close) * 0.993,
                                  "close": close, "volume": rng.uniform(1e6, 3e6, days)}))
    pd.concat(rows).to_csv(path, index=False)
    return path


def test_train_command_writes_a_champion_then_a_shadowing_challenger(tmp_path: Path, capsys) -> None:
    import asyncio

    from bot.cli import main
    from bot.cli.train import run_train

    data = write_stocks_csv(tmp_path / "stocks.csv")
    store = tmp_path / "models"
    first = asyncio.run(run_train(data, store, params=FAST, progress=lambda f, s: None, say_line=lambda t: None))
    m = read_manifest(first)
    assert m["role"] == "champion" and m["name"] == "reversion-equity-1d" and m["metrics"]["cv_folds"] >= 1
    assert {w["role"] for w in m["training_windows"]} == {"classifier", "calibrator"}
    assert main(["train", "--data", str(data), "--models-dir", str(store), "--end", "2021-12-31"]) == 0
    second = Path(capsys.readouterr().out.strip().splitlines()[-1])
    assert read_manifest(second)["role"] == "challenger"  # it has seen everything the champion could be judged on
    assert champion(store, "reversion-equity-1d") == first
    assert main(["train", "--data", str(tmp_path / "missing.csv"), "--models-dir", str(store)]) == 2


def test_model_upkeep_retrains_in_the_service_and_the_engine_then_votes_with_the_champion(tmp_path: Path) -> None:
    import asyncio

    from core.clock import FixedClock
    from core.indicators import default_engine
    from core.market_data import CsvMarketData
    from core.models.live import ModelUpkeep
    from core.signals.engine import SignalEngine

    market = CsvMarketData(write_stocks_csv(tmp_path / "stocks.csv"))
    engine = SignalEngine(default_engine())
    upkeep = ModelUpkeep(tmp_path / "models", market, FixedClock(market.data_range()[1]), engine,
                         {AssetClass.EQUITY: (Timeframe.D1,)})
    assert asyncio.run(upkeep.load()) is None and engine.model is None  # nothing trained: the rules alone
    folders = asyncio.run(upkeep.retrain())
    assert set(folders) == {"equity-1d"} and read_manifest(folders["equity-1d"])["role"] == "champion"
    assert isinstance(engine.model, ModelVoter) and set(engine.model.models) == {"equity-1d"}
    asyncio.run(upkeep.refresh_context())
    bars = asyncio.run(market.get_bars("S00", Timeframe.D1, end=market.data_range()[1]))
    inst = next(i for i in market.instruments() if i.symbol == "S00")
    analyses = engine.analyse_recent(inst, Timeframe.D1, bars, 300)
    voted = [a for a in analyses if a.setup.direction is not None]
    assert voted and all(a.probability is not None and a.ensemble.confidence == round(100 * a.probability)
                         for a in voted)


def test_a_model_reads_the_columns_of_its_feature_set_and_sets_compete_on_the_same_rows(tmp_path: Path) -> None:
    """Rows always carry every feature this code computes; an fs-1 model reads fs-1's columns only (it cannot see a
    similarity feature), an fs-2 model reads fs-1's and the sector and similarity columns, the manifest names them, and the two compete on the same
    recent rows (A/B) instead of the newer set winning by default."""
    rng = np.random.default_rng(7)
    n = 6000
    data = synthetic(n, seed=7, informative=False)
    x = data.features.copy()
    similar = FEATURES.index("sim_peer_hit")
    assert FEATURES[similar] not in MODEL_FEATURE_SETS["fs-1"]
    hit = (rng.random(n) < 1 / (1 + np.exp(-2.0 * x[:, similar]))).astype(np.float64)
    data = Dataset(x, hit, *(getattr(data, f) for f in ("net_return", "status", "fwd_5", "fwd_10", "decision_ns",
                                                          "end_ns", "triggered", "symbol", "outcome_ns", "group")),
                   data.scope)
    train, recent = data.subset(np.arange(n) < 4500), data.subset(np.arange(n) >= 4500)
    t = int(train.end_ns[-1]) + 10 * DAY_NS
    fs1 = train_reversion(train, t, 10 * DAY_NS, FAST)
    fs2 = train_reversion(train, t, 10 * DAY_NS, FAST, feature_set="fs-2")
    assert (fs1.feature_set, fs1.features) == ("fs-1", MODEL_FEATURE_SETS["fs-1"]) and fs2.features == MODEL_FEATURE_SETS["fs-2"]
    assert auc(fs2.probability(recent.features), recent.hit) > 0.7 > auc(fs1.probability(recent.features), recent.hit) + 0.1
    decision = decide_promotion(fs1, fs2, recent)
    assert decision.promote and "Brier" in decision.reason  # judged on the rows, not on the version label
    folder = save_model(fs1, tmp_path, "reversion-equity-1d", train, "champion", {}, "synthetic")
    assert read_manifest(folder)["features"] == list(MODEL_FEATURE_SETS["fs-1"])
    assert np.allclose(load_model(folder).probability(recent.features), fs1.probability(recent.features))
    with pytest.raises(ValueError, match="unknown feature set"):
        train_reversion(train, t, 10 * DAY_NS, FAST, feature_set="fs-9")


def _time_with_known(data: Dataset, known: int, embargo: int = 10 * DAY_NS) -> int:
    """The first decision time by which exactly `known` rows' labels (plus the embargo) were known."""
    return int(np.sort(data.end_ns)[known - 1]) + embargo


def test_a_scope_with_too_few_setups_for_trees_gets_its_record(tmp_path: Path) -> None:
    """From MIN_RECORD_ROWS to MIN_ROWS known setups a scope gets a record: one probability for every setup, the
    share that won after costs, with what their wins paid per loss; no skill and no reliability, so the vote weighs
    nothing and the confidence shows that share. From MIN_ROWS: trees. Below MIN_RECORD_ROWS: nothing."""
    data = synthetic(3000, seed=2)
    embargo = 10 * DAY_NS
    t = _time_with_known(data, 120)
    record = train_model(data, t, embargo, FAST)
    known = data.subset(known_by(data.end_ns, t, embargo))
    assert is_record(record) and len(known) == 120 and record.metrics["rows"] == 120
    p = record.probability(data.features[:200])
    assert np.all(p == pytest.approx(known.hit.mean())) and record.metrics["base_rate"] == pytest.approx(known.hit.mean())
    assert record.metrics["avg_win"] == pytest.approx(0.02) and record.metrics["avg_loss"] == pytest.approx(0.015)
    assert record.trained_until_ns <= t and record.regressor is None
    (opinion,) = ModelVoter({"equity-1d": record}).probabilities([_request(t)])
    assert opinion.skill == 0.0 and opinion.reliability == 0.0 and opinion.payoff == pytest.approx(0.02 / 0.015)
    assert opinion.honest_probability == pytest.approx(known.hit.mean())
    loaded = load_model(save_model(record, tmp_path, "reversion-equity-1d", data))
    assert is_record(loaded) and np.array_equal(loaded.probability(data.features[:50]), p[:50])
    assert not is_record(train_model(data, _time_with_known(data, MIN_ROWS), embargo, FAST))
    with pytest.raises(ValueError, match="a record needs at least"):
        train_model(data, _time_with_known(data, MIN_RECORD_ROWS - 1), embargo, FAST)
    trees = train_reversion(data, int(data.decision_ns[-1]), embargo, FAST)
    assert decide_promotion(record, trees, data.subset(data.decision_ns > trees.trained_until_ns)).promote
    smaller = train_model(data, _time_with_known(data, 60), embargo, FAST)  # an earlier, smaller record
    later_but_fewer = replace_metrics(trees, {**trees.metrics, "rows": 100.0})
    for challenger in (smaller, later_but_fewer):  # neither is a later version on more rows: the window decides
        decision = decide_promotion(record, challenger, data.subset(data.decision_ns > trees.trained_until_ns))
        assert "is a record" not in decision.reason


def test_a_schedule_starts_with_records_and_scores_only_the_trees_calls() -> None:
    data = synthetic(3000, seed=3)
    start = datetime.fromtimestamp(_time_with_known(data, 60) / 1e9, timezone.utc)
    end = datetime.fromtimestamp(int(data.decision_ns[-1]) / 1e9, timezone.utc)
    models = train_schedule({"equity-1d": data}, retrain_times(start, end, timedelta(days=30)), FAST)["equity-1d"]
    kinds = [is_record(m) for m in models]
    assert kinds[0] and not kinds[-1] and kinds == sorted(kinds, reverse=True)  # records first, then trees
    first_trees = kinds.index(False)
    for k, m in enumerate(models[first_trees:], start=first_trees):
        tracked = m.metrics.get("tracked_models")
        assert tracked is None or tracked == k - first_trees  # the records' stints are not calls to score
