"""Fine-tuning the MiniLM encoder and a linear head for sentiment, in JAX (a training-only dependency).

The forward pass mirrors `core.news.minilm.encode_tokens` exactly (same parameter names, same
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
from core.news.minilm import HEADS, HIDDEN, LAYERS, LN_EPS, Params, WordPiece

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
