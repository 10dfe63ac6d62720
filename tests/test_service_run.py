"""The whole process: `signalbot run` offline, driven through a pipe, stopped by --for."""
from __future__ import annotations

import os
import re
import subprocess
import sys

from tests.conftest import MECHANICS_FAMILIES


def run_service(tmp_path, commands: str, seconds: int, *extra: str) -> subprocess.CompletedProcess[str]:  # noqa: ANN001
    env = {**os.environ, "SIGNALBOT_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'svc.db'}",
           "SIGNALBOT_LOG_LEVEL": "INFO", "SIGNALBOT_FAMILIES": MECHANICS_FAMILIES}
    env.pop("TELEGRAM_TOKEN", None)
    env.pop("DISCORD_TOKEN", None)
    return subprocess.run([sys.executable, "-m", "bot.cli", "run", "--for", str(seconds), *extra], input=commands,
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=seconds + 90)


def test_offline_service_answers_commands_and_delivers_signals(tmp_path):
    proc = run_service(tmp_path, "/start\n/signal AAPL\n/signals\n/performance\n", 40, "--speed", "7200",
                       "--start", "2025-06-02")
    out, err = proc.stdout, proc.stderr
    assert proc.returncode == 0, err[-3000:]
    assert "> /start\nWelcome" in out
    assert "> /signal AAPL\nAAPL 1d:" in out
    assert "> /signals\n" in out
    deliveries = [block for block in out.split("\n\n") if block.startswith("[message ")]
    assert deliveries, f"no signal delivered in 40 s\nstdout:\n{out[-3000:]}\nstderr:\n{err[-3000:]}"
    first = deliveries[0]
    for label in ("confidence", "Entry", "Target", "Stop", "Risk-reward", "Position size", "Expires", "Signal",
                  "Not investment advice"):
        assert label in first, first
    assert "signalbot stopped cleanly" in err
    assert "Traceback" not in err

    # a restart on the same database sends no signal twice
    again = run_service(tmp_path, "/signals\n", 8, "--speed", "7200", "--start", "2025-06-02")
    assert again.returncode == 0, again.stderr[-2000:]
    first_ids = delivered_signal_ids(out)
    assert len(first_ids) == len(set(first_ids))
    assert not set(delivered_signal_ids(again.stdout)) & set(first_ids)


def delivered_signal_ids(stdout: str) -> list[str]:
    """Ids of the signal messages (not exits) the console received."""
    ids = []
    for block in stdout.split("\n\n"):
        lines = block.splitlines()
        if len(lines) > 1 and lines[0].startswith("[message ") and lines[1].startswith(("BUY ", "SELL ")):
            ids += [ln.split()[-1] for ln in lines if ln.strip().startswith("Signal ")]
    return ids


def test_started_from_an_empty_directory_the_service_finds_its_shipped_models_and_backtests(tmp_path):
    """Shipped files are found from the package, not the working directory (issue 18, item 3)."""
    commands = ("/start\n/signal BTC-USDT 15m\n/watchlist add NVDA\n/screener rsi<30 sector=Technology\n/portfolio\n"
                "/signal BTC-USDT\n/admin models\n/performance\n")  # the demo, and what it needs shipped
    proc = run_service(tmp_path, commands, 6, "--speed", "3600")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    answers = {block.split("\n", 1)[0]: block for block in out.split("\n\n> ")}
    assert "15m is not offered" in answers["/signal BTC-USDT 15m"]  # no tier sells what is not scanned
    watch = answers["/watchlist add NVDA"]
    assert "Added NVDA" in watch and re.search(r"NVDA +\d+\.\d+ +[+-]\d+\.\d+%", watch), watch
    assert re.search(r"\d+ (of \d+ )?instruments", answers["/screener rsi<30 sector=Technology"])
    assert "paper portfolio" in answers["/portfolio"]
    assert "Ensemble vote" in answers["/signal BTC-USDT"] and "Last close" in answers["/signal BTC-USDT"]
    assert "No model manifests" not in out and "model versions" in out, out[-3000:]
    assert "reversion-crypto-1d" in out or "pullback-crypto-1d" in out
    assert "champion" in answers["/admin models"]
    assert "Backtest" in out or "backtest" in out, out[-3000:]
    assert list(tmp_path.iterdir()) == [tmp_path / "svc.db"] or all(
        p.name.startswith("svc.db") for p in tmp_path.iterdir())  # nothing but the database was written here
