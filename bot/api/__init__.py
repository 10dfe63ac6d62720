"""The REST API (bot.api.routes) with its access rules (bot.api.access) and response models (bot.api.schemas)."""
