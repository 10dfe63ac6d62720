"""Soak: run the real service (`signalbot run`, offline simulated market, loopback only) for a while and sample its
resident memory, to show whether it levels off.

    python -m scripts.soak --minutes 30 --speed 36000 [--api-rate 50] [--json soak.json]

Every `--every` seconds it reads VmRSS of the service process from /proc and, to keep the chat path busy, sends a
few commands on its standard input. At the end it prints the samples (thinned), the RSS at the end of warm-up and
at the end, the largest excursion after warm-up relative to the warm-up level, and the slope of a least-squares
line through the samples after warm-up (MB per minute). `--max-growth` (default 10 %) decides pass/fail: the
exit code is 1 when RSS after warm-up rises more than that above its level at the end of warm-up.

With `--api-rate R` the service also serves HTTP on a free port, an API key is made on its console
(`/apikey create soak`), and a thread sends R requests per second round the REST API and the public track
record (`/api/v1/signals?status=all`, a signal's detail and proof, `/api/v1/performance`, `/track-record`); the
answers by status and their latency percentiles are reported (drill 3 of issue 17).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import socket
import threading
import urllib.error
import urllib.request
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COMMANDS = ("/signals", "/performance", "/signal BTC-USDT", "/history", "/help")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def slope_per_minute(samples: list[tuple[float, float]]) -> float:
    n = len(samples)
    if n < 2:
        return 0.0
    mx = sum(t for t, _ in samples) / n
    my = sum(r for _, r in samples) / n
    var = sum((t - mx) ** 2 for t, _ in samples)
    return 0.0 if var == 0 else sum((t - mx) * (r - my) for t, r in samples) / var * 60.0


class ApiLoad(threading.Thread):
    """`rate` requests per second round the API until stopped; status counts and latencies kept."""

    def __init__(self, base: str, key: str, rate: float, until: float) -> None:
        super().__init__(daemon=True)
        self.base, self.key, self.rate, self.until = base, key, rate, until
        self.stop = threading.Event()
        self.codes: dict[int, int] = {}
        self.latencies: list[float] = []

    def get(self, path: str, auth: bool = True) -> tuple[int, bytes]:
        req = urllib.request.Request(self.base + path, headers={"Authorization": f"Bearer {self.key}"} if auth else {})
        t0 = time.perf_counter()
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                status, body = r.status, r.read()
        except urllib.error.HTTPError as exc:
            status, body = exc.code, b""
        except (urllib.error.URLError, OSError):
            status, body = 0, b""
        self.latencies.append(time.perf_counter() - t0)
        self.codes[status] = self.codes.get(status, 0) + 1
        return status, body

    def run(self) -> None:
        k, signal_id = 0, ""
        while not self.stop.is_set() and time.monotonic() < self.until:
            began = time.monotonic()
            match k % 10:
                case 0 | 6:
                    status, body = self.get("/api/v1/signals?status=all&limit=50")
                    found = re.search(rb'"id":"([^"]+)"', body) if status == 200 else None
                    signal_id = found.group(1).decode() if found else signal_id
                case 1 | 4 | 7:
                    self.get(f"/api/v1/signals/{signal_id or 'none'}")
                case 2 | 8:
                    self.get("/api/v1/performance?period=all")
                case 3:
                    self.get("/api/v1/signals?status=closed")
                case 5:
                    self.get("/api/v1/subscription")
                case _:  # the public routes (120 per minute per address): one request in ten
                    self.get(f"/api/v1/signals/{signal_id or 'none'}/proof" if k % 20 == 9 else "/track-record",
                             auth=False)
            k += 1
            self.stop.wait(max(0.0, 1.0 / self.rate - (time.monotonic() - began)))

    def figures(self) -> dict[str, object]:
        lat = sorted(self.latencies)

        def q(p: float) -> float:
            return lat[min(len(lat) - 1, int(p * len(lat)))] * 1e3 if lat else float("nan")

        return {"requests": len(lat), "codes": {str(k): v for k, v in sorted(self.codes.items())},
                "p50_ms": q(0.5), "p95_ms": q(0.95), "p99_ms": q(0.99)}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def soak(minutes: float, speed: float, every: float, warmup_share: float, families: str,
         api_rate: float = 0.0) -> dict[str, object]:
    seconds = minutes * 60
    with tempfile.TemporaryDirectory(prefix="signalbot-soak-") as tmp:
        env = {**os.environ, "SIGNALBOT_DATABASE_URL": f"sqlite+aiosqlite:///{tmp}/soak.db",
               "SIGNALBOT_LOG_LEVEL": "WARNING", "SIGNALBOT_FAMILIES": families, "PYTHONPATH": str(REPO)}
        for name in ("TELEGRAM_TOKEN", "DISCORD_TOKEN", "STRIPE_API_KEY", "OPENAI_API_KEY", "ANTHROPIC_API_KEY"):
            env.pop(name, None)
        port = _free_port() if api_rate > 0 else None
        if port is not None:
            env["SIGNALBOT_HTTP_PORT"] = str(port)
        log = open(Path(tmp) / "stderr.log", "w+")  # a file, not a pipe: a full pipe would stall the service
        out = open(Path(tmp) / "stdout.log", "w+")
        proc = subprocess.Popen([sys.executable, "-m", "bot.cli", "run", "--for", str(int(seconds)), "--speed",
                                 str(speed)], stdin=subprocess.PIPE, stdout=out,
                                stderr=log, cwd=tmp, env=env, text=True)
        assert proc.stdin is not None
        proc.stdin.write("/start\n" + ("/apikey create soak\n" if port is not None else ""))
        proc.stdin.flush()
        load: ApiLoad | None = None
        start = time.monotonic()
        if port is not None:
            end = time.monotonic() + 120
            while load is None and time.monotonic() < end and proc.poll() is None:
                time.sleep(0.5)
                out.seek(0)
                found = re.search(r"\bsb_[A-Za-z0-9_-]{43}\b", out.read())
                if found:
                    load = ApiLoad(f"http://127.0.0.1:{port}", found.group(0), api_rate, start + seconds - 5)
                    load.start()
            if load is None:
                proc.kill()
                raise RuntimeError("no API key on the service's console")
        began, samples, k = time.monotonic(), [], 0
        try:
            while proc.poll() is None and time.monotonic() - began < seconds + 60:
                time.sleep(every)
                try:
                    samples.append((time.monotonic() - began, rss_mb(proc.pid)))
                    proc.stdin.write(COMMANDS[k % len(COMMANDS)] + "\n")
                    proc.stdin.flush()
                except (FileNotFoundError, ProcessLookupError, BrokenPipeError, RuntimeError):
                    break
                k += 1
            if load is not None:
                load.stop.set()
                load.join(30)
            proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
            log.seek(0)
            err = log.read()
            log.close()
            out.close()
    warm = [s for s in samples if s[0] >= seconds * warmup_share]
    level = warm[0][1] if warm else float("nan")
    peak = max((r for _, r in warm), default=float("nan"))
    return {"minutes": minutes, "speed": speed, "exit_code": proc.returncode, "commands_sent": k,
            "samples": samples, "warmup_s": seconds * warmup_share, "rss_after_warmup_mb": level,
            "rss_end_mb": samples[-1][1] if samples else float("nan"), "rss_peak_after_warmup_mb": peak,
            "growth_after_warmup": (peak / level - 1) if warm else float("nan"),
            "slope_mb_per_min": slope_per_minute(warm), "stderr_tail": err[-2000:],
            "api": load.figures() if load is not None else None}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--speed", type=float, default=36_000.0, help="market seconds per wall second")
    p.add_argument("--every", type=float, default=10.0, help="seconds between samples")
    p.add_argument("--warmup", type=float, default=0.2, help="share of the run counted as warm-up")
    p.add_argument("--families", default="trend,ranking,setups")
    p.add_argument("--max-growth", type=float, default=0.10)
    p.add_argument("--api-rate", type=float, default=0.0, help="API requests per second during the soak (0: none)")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    r = soak(args.minutes, args.speed, args.every, args.warmup, args.families, args.api_rate)
    samples = r["samples"]
    assert isinstance(samples, list)
    step = max(1, len(samples) // 20)
    print(f"soak: {args.minutes:g} min at speed {args.speed:g}, {r['commands_sent']} commands, exit {r['exit_code']}")
    print("   t (s)   RSS (MB)")
    for t, mb in samples[::step]:
        print(f"{t:8.0f} {mb:10.1f}")
    growth = float(r["growth_after_warmup"])  # type: ignore[arg-type]
    print(f"after warm-up ({r['warmup_s']:.0f} s): {r['rss_after_warmup_mb']:.1f} MB; peak {r['rss_peak_after_warmup_mb']:.1f}"
          f" MB ({growth * 100:+.1f} %); end {r['rss_end_mb']:.1f} MB; slope {r['slope_mb_per_min']:+.3f} MB/min")
    if r["api"] is not None:
        print(f"API under load: {r['api']}")
    holds = r["exit_code"] == 0 and growth <= args.max_growth
    print(f"flat within {args.max_growth * 100:.0f} % after warm-up: {'yes' if holds else 'no'}")
    if args.json:
        args.json.write_text(json.dumps(r, indent=2))
    return 0 if holds else 1


if __name__ == "__main__":
    sys.exit(main())
