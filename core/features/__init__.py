"""Model features, versioned. Every feature of row t reads bars (and market context) closing by t only.

bars.bar_features        price, volatility and microstructure features from an OHLCV block (finite windows)
setup.setup_features     the rule detector's reading of each bar (setup score and side, trend), vectorised
regime.MarketContext     market regime by day: VIX level and percentile, SPX trend, breadth
sectors.SectorContext    sector relative strength by day: the sector against its benchmark, the symbol against
                         its sector (fs-2)
similarity.SetupHistory  how the most similar past setups of the symbol and of its sector ended, from the setups
                         whose outcome was known by the row's time (fs-2)
dataset                  the rows a model learns from (setup bars of many series), features + labels
"""
from core.features.bars import BAR_FEATURES, bar_features
from core.features.regime import REGIME_FEATURES, MarketContext
from core.features.sectors import SECTOR_FEATURES, SectorContext, sector_group
from core.features.sets import FEATURE_SET_VERSION, FEATURES, model_row, model_rows
from core.features.similarity import SIMILARITY_FEATURES, SetupHistory

__all__ = ["BAR_FEATURES", "FEATURES", "FEATURE_SET_VERSION", "REGIME_FEATURES", "SECTOR_FEATURES",
           "SIMILARITY_FEATURES", "MarketContext", "SectorContext", "SetupHistory", "bar_features", "model_row",
           "model_rows", "sector_group"]
