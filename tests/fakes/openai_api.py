"""A local OpenAI API on 127.0.0.1 speaking Chat Completions as the `openai` SDK reads it.

    POST /v1/chat/completions -> {"id", "object": "chat.completion", "created", "model",
                                  "choices": [{"index": 0, "message": {"role": "assistant", "content": "...",
                                               "refusal": null}, "finish_reason": "stop", "logprobs": null}],
                                  "usage": {"prompt_tokens", "completion_tokens", "total_tokens"}}

Point the SDK at it with ``AsyncOpenAI(base_url=fake.base_url + "/v1")``. The answer is a NewsVerdict as
JSON whose sentiment follows words in the prompt (``beats``/``surges`` positive, ``misses``/``plunges``
negative), or `fake.verdict` when set. Faults (`fake.faults.add(kind, ...)`, see tests.fakes.market_faults):

    "rate_limit" (429 + Retry-After), "status" (status=500 or any, with OpenAI's error body),
    "timeout" (sleep `delay` s before answering), "malformed" (content that is not JSON),
    "invalid" (JSON that breaks the schema: sentiment 3), "refusal" (message.refusal set)

A request without `response_format` gets a free-text answer: `fake.text` (or FREE_TEXT).
"""
from __future__ import annotations

import json
import time
from typing import Any

from aiohttp import web

from tests.fakes.market_faults import FakeServer

FREE_TEXT = "The setup met its criteria. The votes agreed on the direction."
POSITIVE = ("beats", "surges", "record", "upgrade", "raises")
NEGATIVE = ("misses", "plunges", "lawsuit", "downgrade", "recall")


def verdict_for(prompt: str) -> dict[str, Any]:
    """A deterministic, valid NewsVerdict for a prompt text."""
    lowered = prompt.lower()
    sentiment = 0.7 if any(w in lowered for w in POSITIVE) else -0.7 if any(w in lowered for w in NEGATIVE) else 0.0
    return {"event_type": "earnings" if "earnings" in lowered else "other", "severity": 3,
            "time_horizon": "days", "company_specific": True,
            "revenue_impact": "positive" if sentiment > 0 else "negative" if sentiment < 0 else "none",
            "earnings_impact": "unknown", "credibility": 0.8, "novelty": 0.7, "sentiment": sentiment,
            "reasoning": "The headline states the event directly."}


def tokens_of(text: str) -> int:
    return max(1, len(text) // 4)


class FakeOpenAI(FakeServer):
    def __init__(self, model_suffix: str = "") -> None:
        super().__init__()
        self.verdict: dict[str, Any] | None = None
        self.text: str | None = None  # the free-text answer (requests without response_format)
        self.bodies: list[dict[str, Any]] = []
        self.model_suffix = model_suffix  # e.g. "-2024-07-18": the dated model name OpenAI answers with

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/chat/completions", self._completions)

    async def _completions(self, request: web.Request) -> web.Response:
        fault = self.note(request)
        body = await request.json()
        self.bodies.append(body)
        if not body.get("model") or not isinstance(body.get("messages"), list):
            return _error(400, "invalid_request_error", "model and messages are required")
        if request.headers.get("Authorization", "") != "Bearer test-openai-key":
            return _error(401, "invalid_request_error", "Incorrect API key provided")
        prompt = "\n".join(str(m.get("content", "")) for m in body["messages"])
        first_user = next((str(m.get("content", "")) for m in body["messages"] if m.get("role") == "user"), "")
        free = "response_format" not in body
        content = (self.text or FREE_TEXT) if free else json.dumps(self.verdict or verdict_for(first_user))
        refusal = None
        if fault is not None:
            if fault.kind == "rate_limit":
                headers = {"retry-after": str(fault.retry_after)} if fault.retry_after is not None else {}
                return _error(429, "rate_limit_exceeded", "Rate limit reached for requests", headers)
            if fault.kind == "status":
                return _error(fault.status, "server_error", "The server had an error processing your request")
            if fault.kind == "timeout":
                await self.pause(fault.delay)
            elif fault.kind == "malformed":
                content = content[: len(content) // 2]
            elif fault.kind == "invalid" and not free:
                content = json.dumps({**json.loads(content), "sentiment": 3, "severity": 9})
            elif fault.kind == "refusal":
                content, refusal = "", "I can't help with that."
        completion_tokens = tokens_of(content)
        prompt_tokens = tokens_of(prompt)
        return web.json_response({
            "id": f"chatcmpl-{len(self.bodies)}", "object": "chat.completion", "created": int(time.time()),
            "model": body["model"] + self.model_suffix, "system_fingerprint": "fp_fake",
            "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                         "message": {"role": "assistant", "content": content or None, "refusal": refusal}}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        })


def _error(status: int, kind: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": {"message": message, "type": kind, "param": None, "code": kind}},
                             status=status, headers=headers)
