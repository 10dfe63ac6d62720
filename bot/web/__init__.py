"""The web dashboard (bot.web.app) and its rendering of command Docs (bot.web.render)."""
