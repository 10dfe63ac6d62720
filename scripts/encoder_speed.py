"""How fast a larger encoder would run where the shipped sentiment model runs: the shipped MiniLM-L6 (6 layers,
384 wide) against a BERT-base-shaped encoder (12 x 768, FinBERT's shape) and a DistilBERT-shaped one (6 x 768),
both with random weights, through the same ONNX graph builder and runtime (`core.news.providers.minilm`, onnxruntime with
dynamic int8, one thread, one text per call as shipped), on the same headlines. Weights do not change the speed,
so random ones measure what weights of that size would cost here. No network, nothing written.

    .venv/bin/python -m scripts.encoder_speed --data ../shared/data/sentiment/phrasebank_50agree_dev.csv.gz
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

from core.news.providers import minilm
from core.news.sentiment import latest_model_dir, read_manifest

STORE = Path(__file__).resolve().parents[1] / "models_store"


def _random_params(hidden: int, layers: int, vocab: np.ndarray, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)

    def w(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    params = {"emb.word": w(vocab.shape[0], hidden), "emb.pos": w(512, hidden), "emb.type": w(2, hidden),
              "emb.ln.g": np.ones(hidden, np.float32), "emb.ln.b": np.zeros(hidden, np.float32)}
    for i in range(layers):
        p = f"l{i}."
        for name in "qkvo":
            params[p + name + ".w"], params[p + name + ".b"] = w(hidden, hidden), w(hidden)
        params[p + "ffn1.w"], params[p + "ffn1.b"] = w(hidden, 4 * hidden), w(4 * hidden)
        params[p + "ffn2.w"], params[p + "ffn2.b"] = w(4 * hidden, hidden), w(hidden)
        for norm in ("ln1", "ln2"):
            params[p + norm + ".g"], params[p + norm + ".b"] = np.ones(hidden, np.float32), np.zeros(hidden, np.float32)
    return params


def _rate(encoder: minilm.MiniLMEncoder, texts: list[str]) -> float:
    encoder.embed(texts[:8])  # warm-up
    began = time.perf_counter()
    for t in texts:
        encoder.embed([t])
    return len(texts) / (time.perf_counter() - began)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True, help="labelled CSV (text,label); only the texts are read")
    ap.add_argument("--texts", type=int, default=400, help="how many headlines to time (default 400)")
    args = ap.parse_args()
    texts = pd.read_csv(args.data)["text"].astype(str).tolist()[: args.texts]
    folder = latest_model_dir(STORE)
    shipped = minilm.MiniLMEncoder.from_folder(folder, read_manifest(folder), threads=1)
    small = _rate(shipped, texts)
    print(f"{len(texts)} headlines, one thread, {shipped.engine}, one text per call")
    print(f"  shipped MiniLM-L6 (6 x 384)          {small:7.1f} headlines/s")
    saved = (minilm.HIDDEN, minilm.HEADS, minilm.LAYERS)
    try:
        for layers, what in ((12, "BERT-base / FinBERT shape"), (6, "DistilBERT shape")):
            minilm.HIDDEN, minilm.HEADS, minilm.LAYERS = 768, 12, layers
            other = minilm.MiniLMEncoder(_random_params(768, layers, shipped._params["emb.word"]), shipped.tokenizer,
                                         threads=1, engine=shipped.engine)
            rate = _rate(other, texts)
            print(f"  {what + f' ({layers} x 768)':<36} {rate:7.1f} headlines/s  ({small / rate:.1f} x slower)")
    finally:
        minilm.HIDDEN, minilm.HEADS, minilm.LAYERS = saved


if __name__ == "__main__":
    main()
