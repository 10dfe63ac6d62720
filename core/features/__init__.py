"""Model features, versioned. Every feature of row t reads bars (and market context) closing by t only.

bars.bar_features      price, volatility and microstructure features from an OHLCV block (finite windows)
setup.setup_features   the rule detector's reading of each bar (setup score and side, trend), vectorised
regime.MarketContext   market regime by day: VIX level and percentile, SPX trend, breadth
dataset                the rows a model learns from (setup bars of many series), features + labels
"""
from core.features.bars import BAR_FEATURES, bar_features
from core.features.regime import REGIME_FEATURES, MarketContext
from core.features.sets import FEATURE_SET_VERSION, FEATURES, model_row, model_rows

__all__ = ["BAR_FEATURES", "FEATURES", "FEATURE_SET_VERSION", "REGIME_FEATURES", "MarketContext", "bar_features",
           "model_row", "model_rows"]
