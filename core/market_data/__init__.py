"""Market data providers: the built-in simulated market and CSV files, plus bar resampling."""
from core.market_data.csv_files import CsvMarketData, default_data_dir
from core.market_data.resample import resample_bars
from core.market_data.simulated import SimulatedMarket

__all__ = ["CsvMarketData", "SimulatedMarket", "default_data_dir", "resample_bars"]
