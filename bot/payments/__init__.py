"""Payments: Stripe (cards, outside Telegram) and Telegram Stars (inside Telegram) over one billing store.

`Payments` turns what the providers report into subscriptions and tier changes (core.billing decides,
storage.billing records each event exactly once) and tells the user:

- Stripe webhooks (bot.http_server) -> `handle_stripe_webhook()`; each TierChange goes to `notify`.
- Stars: /subscribe on Telegram -> `stars_invoice()` (an Invoice on the Doc; the transport makes the invoice
  link) -> pre_checkout_query -> `check_stars_checkout()` -> successful_payment -> `stars_paid()` (its Doc is
  the reply in the chat, so no `notify` for it).
- `review()` (a scheduled job) downgrades users whose grace period ended or whose Stars period ran out.

`notify` is `async (TierChange) -> None`; the composition root sends the change as a notice (bot.notices) on
the user's platform. What a Stripe event means for the stored subscription is decided by the pure
`core.billing.reconcile_stripe`; `service.Payments` fetches, reconciles, records and notifies.
"""
from bot.payments.service import Notify, Payments, WebhookResult, tier_change_doc
from bot.payments.stripe_billing import CheckoutFailed, WebhookRejected

__all__ = ["CheckoutFailed", "Notify", "Payments", "WebhookRejected", "WebhookResult", "tier_change_doc"]
