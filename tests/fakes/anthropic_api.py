"""A local Anthropic API on 127.0.0.1 speaking the Messages API as the `anthropic` SDK reads it.

    POST /v1/messages -> {"id": "msg_..", "type": "message", "role": "assistant", "model",
                          "content": [{"type": "tool_use", "id": "toolu_..", "name": <the forced tool>,
                                       "input": {...NewsVerdict...}}],
                          "stop_reason": "tool_use", "stop_sequence": null,
                          "usage": {"input_tokens", "output_tokens"}}

Point the SDK at it with ``AsyncAnthropic(base_url=fake.base_url)``. The tool input follows the prompt's
words (see tests.fakes.openai_api.verdict_for) or `fake.verdict`. Faults:

    "rate_limit" (429 rate_limit_error + retry-after), "status" (status=500 api_error, 529
    overloaded_error, ...), "timeout" (sleep `delay` s), "invalid" (tool input that breaks the schema),
    "malformed" (a text block and no tool call), "refusal" (stop_reason "refusal", no content)

A request without tools gets a free-text answer: one text block with `fake.text` (or FREE_TEXT),
stop_reason "end_turn" (the faults above apply as well).
"""
from __future__ import annotations

from typing import Any

from aiohttp import web

from tests.fakes.market_faults import FakeServer
from tests.fakes.openai_api import tokens_of, verdict_for

FREE_TEXT = "The setup met its criteria. The votes agreed on the direction."
_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 429: "rate_limit_error",
                500: "api_error", 529: "overloaded_error"}


class FakeAnthropic(FakeServer):
    def __init__(self) -> None:
        super().__init__()
        self.verdict: dict[str, Any] | None = None
        self.text: str | None = None  # the free-text answer (requests without tools)
        self.bodies: list[dict[str, Any]] = []

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/messages", self._messages)

    async def _messages(self, request: web.Request) -> web.Response:
        fault = self.note(request)
        body = await request.json()
        self.bodies.append(body)
        key = request.headers.get("x-api-key") or request.headers.get("Authorization", "").removeprefix("Bearer ")
        if key != "test-anthropic-key":  # SDK 2.x sends the key as a bearer token, older ones as x-api-key
            return _error(401, "invalid x-api-key")
        if not request.headers.get("anthropic-version"):
            return _error(400, "anthropic-version header is required")
        if not body.get("model") or not isinstance(body.get("max_tokens"), int) or not body.get("messages"):
            return _error(400, "model, max_tokens and messages are required")
        prompt = str(body.get("system", "")) + "\n" + "\n".join(_text(m.get("content")) for m in body["messages"])
        tool = (body.get("tool_choice") or {}).get("name") or (body.get("tools") or [{}])[0].get("name", "tool")
        content: list[dict[str, Any]] = [{"type": "tool_use", "id": f"toolu_{len(self.bodies):04d}", "name": tool,
                                          "input": self.verdict or verdict_for(_text(body["messages"][0].get("content")))}]
        stop_reason = "tool_use"
        if not body.get("tools"):
            content, stop_reason = [{"type": "text", "text": self.text or FREE_TEXT}], "end_turn"
        if fault is not None:
            if fault.kind == "rate_limit":
                headers = {"retry-after": str(fault.retry_after)} if fault.retry_after is not None else {}
                return _error(429, "Number of requests has exceeded your rate limit", headers)
            if fault.kind == "status":
                return _error(fault.status, "Overloaded" if fault.status == 529 else "Internal server error")
            if fault.kind == "timeout":
                await self.pause(fault.delay)
            elif fault.kind == "invalid" and content[0]["type"] == "tool_use":
                content[0]["input"] = {**content[0]["input"], "sentiment": -4, "event_type": "weather"}
            elif fault.kind == "malformed":
                content = [{"type": "text", "text": "I think this is good news {sentiment: high"}]
                stop_reason = "end_turn"
            elif fault.kind == "refusal":
                content, stop_reason = [], "refusal"
        return web.json_response({
            "id": f"msg_{len(self.bodies):06d}", "type": "message", "role": "assistant", "model": body["model"],
            "content": content, "stop_reason": stop_reason, "stop_sequence": None,
            "usage": {"input_tokens": tokens_of(prompt), "output_tokens": tokens_of(str(content))},
        })


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(b.get("text") or b.get("content") or "") for b in content if isinstance(b, dict))
    return ""


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    kind = _ERROR_TYPES.get(status, "api_error")
    return web.json_response({"type": "error", "error": {"type": kind, "message": message}},
                             status=status, headers=headers)
