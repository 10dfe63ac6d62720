"""`python -m bot.cli`: the `signalbot` command line (scripts/signalbot and scripts/soak.py run it so)."""
from bot.cli import main

raise SystemExit(main())
