"""Walk-forward backtests through the live signal path.

walk.Backtester        the live decisions (engine over the live window, RiskManager, lifecycle), bar close by close
portfolio.simulate     the capital-constrained portfolio that follows the issued signals, marked daily
report.build_report    the design's report (DESIGN.md section 6) plus the calibration table
market.FrameMarket     a MarketData over frames in memory (subsets, cuts, synthetic data)
"""
from core.backtest.market import FrameMarket
from core.backtest.portfolio import PortfolioConfig, PortfolioResult, simulate
from core.backtest.report import benchmark_curve, build_report
from core.backtest.walk import Backtester, BacktestConfig, BacktestResult, Trade

__all__ = ["Backtester", "BacktestConfig", "BacktestResult", "FrameMarket", "PortfolioConfig", "PortfolioResult",
           "Trade", "benchmark_curve", "build_report", "simulate"]
