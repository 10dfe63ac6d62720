"""Reasoning written by a language model from a signal's stored evidence, validated, else the template.

`ReasoningWriter` is the port: it turns one signal's facts into 2-4 plain sentences. `LLMReasoningWriter`
renders the versioned prompt, asks a `TextCompleter` (an LLM adapter) and validates the answer: length
and sentence bounds, no URLs or markup, and every number it cites must be in the evidence or the levels
(within the rounding it was written with). `Narrator` asks the writers in fallback order (Claude -> GPT)
within one time budget per batch, behind each writer's circuit breaker and daily quota; whatever fails,
times out or does not validate keeps the template text the engine wrote. The "Key risks" sentence is appended
here, never taken from the model; the not-investment-advice notice is every signal view's note. Who wrote the text goes into
``evidence["reasoning"]``: ``{"by": "anthropic:claude-haiku-4-5", "prompt": "reasoning-v1"}`` or
``{"by": "template", ...}``.
"""
from __future__ import annotations

import asyncio
import json
import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from core.clock import Clock, SystemClock
from core.domain import Direction, Signal
from core.resilience import CircuitBreaker
from core.llm import DailyQuota, price_of
from core.llm import AnalystError
from core.signals.reasoning import shows_record

log = logging.getLogger(__name__)

MIN_CHARS, MAX_CHARS = 60, 700
MIN_SENTENCES, MAX_SENTENCES = 2, 4


class InvalidNarrativeError(ValueError):
    """The model's text broke a rule (length, sentences, URL/markup, a number not in the evidence)."""


@dataclass(frozen=True, slots=True)
class TextAnswer:
    text: str
    model: str
    input_tokens: int = 0
    output_tokens: int = 0


class TextCompleter(Protocol):
    """An LLM adapter that answers a (system, user) prompt with free text (AnthropicAnalyst, OpenAIAnalyst)."""

    @property
    def provider(self) -> str: ...

    @property
    def model(self) -> str: ...

    async def complete_text(self, system: str, user: str, *, max_tokens: int) -> tuple[str, str, int, int]:
        """(text, answering model, input tokens, output tokens); raises the core.news.schema analyst errors."""
        ...


class ReasoningWriter(Protocol):
    @property
    def name(self) -> str: ...  # "anthropic:claude-haiku-4-5"

    @property
    def prompt_version(self) -> str: ...

    async def write(self, signal: Signal) -> TextAnswer:
        """2-4 validated sentences on `signal`'s evidence; raises on any failure or invalid answer."""
        ...


@dataclass(frozen=True, slots=True)
class NarrativePrompt:
    version: str
    system: str
    user: str  # str.format field: facts

    def render(self, signal: Signal) -> tuple[str, str]:
        return self.system, self.user.format(facts=json.dumps(facts_of(signal), indent=1, sort_keys=False))


REASONING_PROMPT = NarrativePrompt(
    version="reasoning-v1",
    system=(
        "You explain a trading signal to a retail trader. Write 2 to 4 plain English sentences that say why the "
        "signal was issued, naming only the evidence in the facts you are given. Cite a number only when it "
        "appears in the facts (you may round it). Do not add facts, prices, dates, forecasts or advice; do not "
        "mention risks or disclaimers (they are added separately); no lists, markdown, links or HTML."
    ),
    user="Facts of the signal (JSON):\n{facts}\n\nWrite the 2-4 sentences now.",
)


def facts_of(s: Signal) -> dict[str, Any]:
    """The readable subset of a signal's evidence the prompt shows (validation accepts all of the evidence)."""
    ev = s.evidence
    facts: dict[str, Any] = {
        "symbol": s.symbol, "timeframe": str(s.timeframe), "direction": s.direction.value,
        "entry": s.entry, "target": s.target, "stop": s.stop, "confidence_out_of_100": s.confidence,
        "risk_reward": round(s.risk_reward, 2), "setup": s.strategy,
    }
    setup = ev.get("setup") or {}
    criteria = [{"criterion": c.get("name"), "value": c.get("value"), "strength_0_to_1": c.get("strength")}
                for c in setup.get("criteria", []) if isinstance(c, dict)]
    if criteria:
        facts["setup_criteria"] = criteria
    votes = [{"voter": v.get("voter"), "score_minus1_to_1": v.get("score"), "says": v.get("text")}
             for v in ev.get("votes", []) if isinstance(v, dict)]
    if votes:
        facts["votes"] = votes
    if ev.get("model_probability") is not None:
        facts["model_win_probability"] = ev["model_probability"]
        if shows_record(ev.get("model_reliability")):  # the base rate of past setups, not a model's call
            facts["model_win_probability_is"] = ("the share of past setups like this that won after costs (their "
                                                 "record), not a calibrated model probability")
    news = ev.get("news")
    if isinstance(news, dict):
        facts["news"] = {"score": news.get("score"), "items": news.get("items"), "effect": news.get("effect"),
                         "summary": news.get("text")}
    indicators = ev.get("indicators") or {}
    wanted = ("rsi_14", "adx_14", "atr_14", "sma_20", "sma_50", "sma_200", "volume_pct_50")
    picked = {k: indicators[k] for k in wanted if indicators.get(k) is not None}
    if picked:
        facts["indicators"] = picked
    return facts


# ---------------------------------------------------------------- validation

_NUMBER = re.compile(r"(?<![\w.])[-+−]?\$?(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?(%?)")
_URL = re.compile(r"(https?://|www\.|\w+\.(com|org|net|io)\b|://)", re.IGNORECASE)
_MARKUP = re.compile(r"(<\s*/?\s*[a-zA-Z][^>]*>|&[a-z]+;|\*\*|`|^\s*[-*#>]\s|\[[^\]]*\]\()", re.MULTILINE)
_SENTENCE_END = re.compile(r"[.!?](?=\s|$)")


def evidence_numbers(signal: Signal) -> list[float]:
    """Every number a text about `signal` may cite: evidence values (also as percentages), levels,
    confidence, risk/reward, and the digits in names (RSI 14, SMA 20) and the timeframe."""
    out: list[float] = []

    def walk(value: Any) -> None:
        if isinstance(value, bool):
            return
        if isinstance(value, (int, float)):
            if math.isfinite(value):
                out.extend((float(value), float(value) * 100))
        elif isinstance(value, dict):
            for k, v in value.items():
                walk_text(str(k))
                walk(v)
        elif isinstance(value, (list, tuple)):
            for v in value:
                walk(v)
        elif isinstance(value, str):
            walk_text(value)

    def walk_text(text: str) -> None:
        out.extend(float(m.replace(",", "")) for m in re.findall(r"\d+(?:\.\d+)?", text))

    walk({k: v for k, v in signal.evidence.items() if k != "reasoning"})
    walk([signal.entry, signal.target, signal.stop, signal.confidence, signal.risk_reward, signal.position_size,
          abs(signal.target - signal.entry), abs(signal.entry - signal.stop)])
    walk_text(f"{signal.symbol} {signal.timeframe} {signal.strategy}")
    return out


def cited_numbers(text: str) -> list[tuple[float, int]]:
    """(absolute value, decimals written) of each number in `text`."""
    found = []
    for whole, frac, _pct in _NUMBER.findall(text):
        decimals = len(frac) - 1 if frac else 0
        found.append((float(whole.replace(",", "") + (frac or "")), decimals))
    return found


def matches(cited: float, decimals: int, allowed: Sequence[float]) -> bool:
    """`cited` (written with `decimals` decimals) is some allowed value rounded (sign ignored); a whole
    number of 1000 or more may also be rounded to three significant digits (a price "near 65,400")."""
    tolerance = 0.5 * 10 ** -decimals + 1e-9
    for v in allowed:
        a = abs(v)
        if abs(a - cited) <= tolerance:
            return True
        if decimals == 0 and a >= 1000 and abs(a - cited) <= 0.005 * a:
            return True
    return False


def validate_narrative(text: str, signal: Signal) -> str:
    """The text, whitespace-normalised, if it keeps every rule; else InvalidNarrativeError."""
    clean = " ".join(text.split())
    if not MIN_CHARS <= len(clean) <= MAX_CHARS:
        raise InvalidNarrativeError(f"{len(clean)} characters (allowed {MIN_CHARS}-{MAX_CHARS})")
    if _URL.search(clean):
        raise InvalidNarrativeError("contains a URL")
    if _MARKUP.search(text):
        raise InvalidNarrativeError("contains HTML or markup")
    sentences = len(_SENTENCE_END.findall(clean))
    if not clean.endswith((".", "!", "?")):
        sentences += 1
    if not MIN_SENTENCES <= sentences <= MAX_SENTENCES:
        raise InvalidNarrativeError(f"{sentences} sentences (allowed {MIN_SENTENCES}-{MAX_SENTENCES})")
    allowed = evidence_numbers(signal)
    for value, decimals in cited_numbers(clean):
        if not matches(value, decimals, allowed):
            raise InvalidNarrativeError(f"cites {value:g}, which is not in the evidence")
    return clean


def key_risks(signal: Signal) -> str:
    """The fixed risk sentence appended after the written text (never written by the model)."""
    move = "selling" if signal.direction is Direction.LONG else "buying"
    extra = ""
    votes = signal.evidence.get("votes", [])
    trend = next((v for v in votes if isinstance(v, dict) and v.get("voter") == "trend"), None)
    score = trend.get("score") if trend is not None else None
    if isinstance(score, (int, float)) and score * signal.direction.sign < -0.15:
        extra = "; the trade is against the prevailing trend"
    return (f"Key risks: reversion setups fail when the {move} keeps going, and a gap or fast market can fill "
            f"beyond the stop{extra}.")


def finish(text: str, signal: Signal) -> str:
    """The written text and the fixed risk sentence. The not-investment-advice notice is not repeated here: every
    view of a signal (chat, email) carries it as its note, as it does for template reasoning."""
    return f"{text} {key_risks(signal)}"


# ---------------------------------------------------------------- writers and the chain


class LLMReasoningWriter:
    """A ReasoningWriter over an LLM adapter: renders the prompt, asks, validates."""

    def __init__(self, completer: TextCompleter, prompt: NarrativePrompt = REASONING_PROMPT,
                 max_tokens: int = 300) -> None:
        self.completer = completer
        self.prompt = prompt
        self.max_tokens = max_tokens

    @property
    def name(self) -> str:
        return f"{self.completer.provider}:{self.completer.model}"

    @property
    def prompt_version(self) -> str:
        return self.prompt.version

    async def write(self, signal: Signal) -> TextAnswer:
        system, user = self.prompt.render(signal)
        text, model, tokens_in, tokens_out = await self.completer.complete_text(system, user,
                                                                                max_tokens=self.max_tokens)
        return TextAnswer(validate_narrative(text, signal), model or self.completer.model, tokens_in, tokens_out)

    async def close(self) -> None:
        close = getattr(self.completer, "close", None)
        if close is not None:
            await close()


@dataclass
class WriterStats:
    calls: int = 0
    successes: int = 0
    failures: int = 0
    rejected: int = 0  # answers that did not validate
    skipped: int = 0
    last_error: str = ""


@dataclass
class WriterSlot:
    writer: ReasoningWriter
    quota: DailyQuota | None = None
    breaker: CircuitBreaker | None = None
    estimated_tokens: int = 900
    stats: WriterStats = field(default_factory=WriterStats)

    @property
    def name(self) -> str:
        return self.writer.name


class Narrator:
    """Rewrites approved signals' reasoning through the writer chain within `budget` seconds per batch;
    at most `max_per_batch` signals (the newest) are sent, `concurrency` at a time. Never raises, never
    drops a signal: anything that goes wrong keeps the template text."""

    def __init__(self, slots: Sequence[WriterSlot], *, budget: float = 8.0, concurrency: int = 4,
                 max_per_batch: int = 12, clock: Clock | None = None) -> None:
        self.slots = list(slots)
        self.budget = budget
        self.concurrency = concurrency
        self.max_per_batch = max_per_batch
        self.clock = clock or SystemClock()
        for slot in self.slots:
            if slot.breaker is None:
                slot.breaker = CircuitBreaker(f"reasoning:{slot.name}", clock=self.clock)

    async def narrate(self, signals: Sequence[Signal]) -> list[Signal]:
        if not signals or not self.slots:
            return list(signals)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.budget
        semaphore = asyncio.Semaphore(self.concurrency)
        chosen = sorted(range(len(signals)), key=lambda i: signals[i].issued_at, reverse=True)[: self.max_per_batch]
        notes: dict[int, list[str]] = {i: [] for i in range(len(signals))}

        async def one(i: int) -> tuple[int, Signal]:
            async with semaphore:
                return i, await self._write(signals[i], deadline, notes[i])

        tasks = [asyncio.create_task(one(i)) for i in chosen]
        out = list(signals)
        written: set[int] = set()
        if tasks:
            done, pending = await asyncio.wait(tasks, timeout=max(0.0, deadline - loop.time()) + 0.05)
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            for t in done:
                if not t.cancelled() and t.exception() is None:
                    i, signal = t.result()
                    out[i] = signal
                    written.add(i)
        for i, s in enumerate(signals):
            if i not in written:
                why = notes[i] or (["time budget used up"] if i in chosen else ["not sent: batch limit"])
                out[i] = _template(s, why)
        return out

    async def _write(self, signal: Signal, deadline: float, notes: list[str]) -> Signal:
        loop = asyncio.get_running_loop()
        for slot in self.slots:
            left = deadline - loop.time()
            if left <= 0:
                notes.append("time budget used up")
                break
            breaker = slot.breaker
            assert breaker is not None
            if slot.quota is not None and not slot.quota.allows(slot.estimated_tokens):
                slot.stats.skipped += 1
                notes.append(f"{slot.name}: daily quota used up")
                continue
            if not breaker.allow():
                slot.stats.skipped += 1
                notes.append(f"{slot.name}: circuit open")
                continue
            slot.stats.calls += 1
            try:
                answer = await asyncio.wait_for(slot.writer.write(signal), left)
            except asyncio.CancelledError:
                breaker.release()
                raise
            except Exception as exc:  # noqa: BLE001 - any writer failure means: next writer, then the template
                self._failed(slot, exc, notes)
                continue
            breaker.record_success()
            slot.stats.successes += 1
            if slot.quota is not None:
                slot.quota.charge(answer.input_tokens + answer.output_tokens,
                                  price_of(answer.model).cost(answer.input_tokens, answer.output_tokens))
            evidence = {**signal.evidence, "reasoning": {"by": slot.name, "prompt": slot.writer.prompt_version,
                                                         "model": answer.model}}
            return replace(signal, reasoning=finish(answer.text, signal), evidence=evidence)
        return _template(signal, notes)

    def _failed(self, slot: WriterSlot, exc: BaseException, notes: list[str]) -> None:
        breaker = slot.breaker
        assert breaker is not None
        if isinstance(exc, TimeoutError):
            message = "timed out"
        elif isinstance(exc, (AnalystError, InvalidNarrativeError)):
            message = str(exc)
        else:
            message = f"unexpected {type(exc).__name__}: {exc}"
        notes.append(f"{slot.name}: {message}")
        slot.stats.last_error = message
        if isinstance(exc, InvalidNarrativeError):
            slot.stats.rejected += 1
            breaker.release()  # a wrong answer is the model's, not an outage
        else:
            slot.stats.failures += 1
            if not isinstance(exc, AnalystError) or exc.counts_against_provider:
                breaker.record_failure()
            else:
                breaker.release()
        log.warning("reasoning writer %s failed: %s", slot.name, message)

    async def close(self) -> None:
        for slot in self.slots:
            close = getattr(slot.writer, "close", None)
            if close is not None:
                await close()


def _template(signal: Signal, notes: Sequence[str]) -> Signal:
    record: dict[str, Any] = {"by": "template"}
    if notes:
        record["fallback"] = list(notes)[:4]
    return replace(signal, evidence={**signal.evidence, "reasoning": record})
