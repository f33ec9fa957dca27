"""The ESM alphabet, tokenization, padding, pooling and CSV reading, with numpy only (no torch).

This file owns the Python copy of what src/data/tokenizer.rs and src/model/pooling.rs do, shared by
scripts/export_onnx.py (which re-exports these names) and scripts/bench_python.py, whose onnxruntime
contender must not import torch: that would add torch's import time and memory to its numbers.
"""

from __future__ import annotations

import csv
import os

import numpy as np

# The ESM-2 alphabet (also ESM-1b/1v's), ids 0..32 in this order.
ESM_VOCAB = [
    "<cls>", "<pad>", "<eos>", "<unk>",
    "L", "A", "G", "V", "S", "E", "R", "T", "I", "D", "P", "K", "Q", "N",
    "F", "Y", "M", "H", "W", "C", "X", "B", "U", "Z", "O", ".", "-",
    "<null_1>", "<mask>",
]
CLS_ID, PAD_ID, EOS_ID, UNK_ID, MASK_ID = 0, 1, 2, 3, 32
_TOKEN_ID = {tok: i for i, tok in enumerate(ESM_VOCAB)}

# ESM's length limit: ESM-1v has 1026 learned positions, ids 0 and 1 (padding) are never used, so
# 1024 tokens = <cls> + 1022 residues + <eos>. esmbench's --max-residues default is the same.
MAX_RESIDUES = 1022


def tokenize(sequence: str) -> list[int]:
    """<cls> + one id per residue letter (unknown letters -> <unk>) + <eos>."""
    return [CLS_ID] + [_TOKEN_ID.get(c, UNK_ID) for c in sequence.upper()] + [EOS_ID]


def pad_batch(sequences: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Right-padded int64 (input_ids, attention_mask) for a batch of sequences."""
    ids = [tokenize(s) for s in sequences]
    width = max(len(x) for x in ids)
    input_ids = np.full((len(ids), width), PAD_ID, dtype=np.int64)
    attention_mask = np.zeros((len(ids), width), dtype=np.int64)
    for row, x in enumerate(ids):
        input_ids[row, : len(x)] = x
        attention_mask[row, : len(x)] = 1
    return input_ids, attention_mask


def mean_residues(last_hidden_state: np.ndarray, length: int) -> np.ndarray:
    """Mean over residue positions 1..=length of one [sequence, hidden] array, in float64."""
    return last_hidden_state[1 : length + 1].astype(np.float64).mean(axis=0)


def pooled(last_hidden_state: np.ndarray, sequences: list[str]) -> np.ndarray:
    """[batch, hidden] float64 residue means of a padded batch."""
    return np.stack([mean_residues(last_hidden_state[i], len(s)) for i, s in enumerate(sequences)])


def read_sequences(path: str | os.PathLike, column: str = "sequence") -> tuple[list[str], list[str], list[str]]:
    """(sequences, labels, ids) from a CSV, cleaned the way esmbench cleans them (trimmed, upper
    case, truncated to 1022 residues); labels and ids are '' where the file has none."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = list(csv.DictReader(f))
    sequences = [r[column].strip().upper()[:MAX_RESIDUES] for r in rows]
    labels = [(r.get("label") or "").strip() for r in rows]
    ids = [(r.get("id") or "").strip() for r in rows]
    return sequences, labels, ids
