"""core.resilience: one failure vocabulary under both error families, one back-off formula under both policies."""
from __future__ import annotations

import random

from bot.delivery.retry import RetryPolicy as DeliveryRetry
from core.errors import MarketDataError
from core.llm import (AnalystError, AnalystRateLimitedError, AnalystRefusedError, AnalystRequestError,
                      AnalystTimeoutError, AnalystUnavailableError)
from core.market_data.retry import (ProviderRequestError, ProviderUnavailableError, RateLimitedError, RetryPolicy,
                                    error_for_status)
from core.resilience import BadRequest, RateLimited, Unavailable, backoff


def test_both_families_speak_one_vocabulary_and_keep_their_own_bases():
    limited = [RateLimitedError("429", retry_after=3.0), AnalystRateLimitedError("429", retry_after=3.0)]
    assert all(isinstance(e, RateLimited) and isinstance(e, Unavailable) and e.retry_after == 3.0 for e in limited)
    assert all(isinstance(e, Unavailable) for e in (ProviderUnavailableError("x"), AnalystUnavailableError("x"),
                                                     AnalystTimeoutError("x")))
    assert all(isinstance(e, BadRequest) and not isinstance(e, Unavailable)
               for e in (ProviderRequestError("x"), AnalystRequestError("x")))
    assert not isinstance(AnalystRefusedError("x"), (Unavailable, BadRequest))  # a refusal is neither
    assert isinstance(limited[0], MarketDataError) and isinstance(limited[1], AnalystError)
    assert isinstance(error_for_status(503, "down"), Unavailable) and isinstance(error_for_status(404, "x"), BadRequest)


def test_both_policies_back_off_by_the_one_formula():
    assert [backoff(n, 0.5, 8.0) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0]
    market = RetryPolicy(max_attempts=9, jitter=0.0)
    assert [market.delay_for(ProviderUnavailableError("x"), n) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0]
    delivery = DeliveryRetry(jitter=0.0)
    assert [delivery.delay(n, random.Random(0)) for n in range(1, 4)] == [2.0, 4.0, 8.0]
