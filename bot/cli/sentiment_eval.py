"""`signalbot sentiment-eval`: accuracy and macro-F1 of the offline news-sentiment model on a labelled CSV
(core.news.evaluation: held-out scoring or cross-validation), the JSON report written and its headline printed."""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bot.settings import Settings

NAME = "sentiment-eval"
HELP = "evaluate the offline news-sentiment model on a labelled CSV"
HEADLINE = ("mode", "accuracy", "macro_f1", "throughput", "warning")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", type=Path, required=True, help="labelled CSV (text,label), .csv or .csv.gz")
    p.add_argument("--json", dest="out", type=Path, help="where to write the JSON report")
    p.add_argument("--model", type=Path, help="model folder (default: the newest models_store/sentiment-*)")
    p.add_argument("--mode", choices=("auto", "heldout", "cv"), default="auto",
                   help="auto: cross-validate on the model's own training file, held-out scoring otherwise")
    p.add_argument("--folds", type=int, default=5)


def run(args: argparse.Namespace, settings: Settings) -> int:
    report = evaluate(args.data, args.out, args.model, args.mode, args.folds,
                      progress=lambda m: print(m, file=sys.stderr, flush=True))
    print(json.dumps({k: report[k] for k in HEADLINE if k in report}, indent=2))
    return 0


def evaluate(data_csv: Path | str, json_out: Path | str | None = None, model_dir: Path | str | None = None,
             mode: str = "auto", folds: int = 5, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """What `signalbot sentiment-eval` does: core.news.evaluation.evaluate_sentiment (pick the mode, evaluate),
    then the JSON report written to `json_out`."""
    from core.news.evaluation import evaluate_sentiment

    report = evaluate_sentiment(data_csv, model_dir, mode, folds, progress)
    if json_out:
        Path(json_out).write_text(dump_report(report))
    return report


def dump_report(report: dict[str, Any]) -> str:
    """The report as indented JSON, its (long) out-of-fold section on one line."""
    if "oof" not in report:
        return json.dumps(report, indent=2) + "\n"
    marker = "@@OOF@@"
    text = json.dumps({**report, "oof": marker}, indent=2)
    return text.replace(json.dumps(marker), json.dumps(report["oof"], separators=(",", ":"))) + "\n"
