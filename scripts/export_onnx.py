"""Export a Hugging Face ESM encoder (transformers EsmModel) to ONNX for esmbench.

This file owns the ONNX model contract that the Rust side (src/) relies on:

* inputs  ``input_ids`` and ``attention_mask``: int64, shape [batch, sequence]
  (dynamic axes named ``batch`` and ``sequence``);
* output  ``last_hidden_state``: float32, shape [batch, sequence, hidden] (also with --fp16
  and --quantize int8: only the inside of the graph changes precision);
* opset 17, ``ir_version`` forced to 10 (ONNX Runtime 1.31 rejects newer IR);
* metadata_props ``esmbench.*``: where the weights came from (checkpoint, revision), the
  architecture, precision, optimisation, the post-export check, library versions and, with a
  head, ``esmbench.head`` (head JSON text, the format src/model/head.rs reads).

It also owns the head converters (scikit-learn LogisticRegression pickles, .npz, JSON), the
random-init architectures (real ESM-2 and ESM-1v sizes plus ``tiny``/``micro``/``esm1v_tiny``
test sizes), the post-export check against PyTorch, and the PyTorch reference probabilities
(--reference-data/--reference-out) that tests compare esmbench with. The alphabet, tokenization
and pooling live in scripts/esm_tokens.py (numpy only) and are re-exported here.

Sources (one of):
    --checkpoint NAME_OR_DIR   facebook/esm2_* (rotary positions) or facebook/esm1v_* (learned
                               absolute positions, at most 1024 tokens = 1022 residues), from the
                               Hub (or its local cache) or a save_pretrained folder
    --random-init ARCH         random weights from torch.manual_seed(--seed); no network

Heads (at most one): --head H.json | --sklearn P.pkl (pickle or joblib; a LogisticRegression,
or a Pipeline of StandardScaler steps ending in one, folded into one linear head) | --npz N.npz
(arrays ``coef`` and ``intercept``, optional ``threshold``).

Precision and graph options:
    --fp16           float16 weights and compute inside the graph, float32 inputs/outputs
                     (onnxruntime.transformers.float16, keep_io_types). Meant for CUDA/CoreML; on
                     CPU it runs but is slower than float32. Check: max |diff| <= tolerance x
                     max(1, max |PyTorch|).
    --optimize       onnxruntime.transformers fusions (SkipLayerNormalization, BiasGelu, ...),
                     saved offline; only contrib ops with CPU kernels, so the file stays portable.
    --quantize int8  onnxruntime.quantization.quantize_dynamic: MatMul weights 8-bit (per channel,
                     unsigned, reduce_range), activations quantised at run time (CPU). Check:
                     mean |p_onnx - p_torch| over the sample sequences (with a head), else
                     1 - min cosine of pooled embeddings.
    --quantize int8-vnni
                     the same with signed, full-range (8-bit) weights: faster where the CPU has
                     VNNI (AVX-512 VNNI, AVX-VNNI, AMX; 1.4x to 2.0x int8 on the ESM-2 8M graph). On
                     x86 CPUs without VNNI ONNX Runtime's u8 x s8 kernel saturates (ESM-2 8M: mean
                     |dp| 0.14), so esmbench and this check set session.x64quantprecision, which
                     makes the weights unsigned at load there: exact, and no faster than int8.
    --calibration D.csv
                     with --quantize: bias correction. Rounding the weights to 8 bits shifts each
                     MatMul's output by (W_int8 - W) . E[x], the same way for every input, so
                     probabilities drift one way. The float32 graph's mean input x over the
                     residues of D.csv's sequences (column sequence; e.g. the training set) gives
                     that shift, and it is taken off the MatMul's bias. ESM-2 8M, calibrated on
                     Boughter: mean |dp| vs float32 on Jain 0.0169 -> 0.0110 and Shehata
                     0.0169 -> 0.0103 with --quantize int8.
    --keep-fp32 GROUP
                     with --quantize (repeatable): leave one MatMul group of every layer in float32
                     (attention-qkv, attention-output, ffn-in, ffn-out; found by the node names of
                     this script's export). attention-output's input barely varies along a
                     sequence, so its activation rounding error does not average out in the pooling:
                     keeping it (1/12 of the FLOPs) took int8-vnni's mean |dp| from 0.0056 to 0.0033
                     on ESM-2 8M (4,000 synthetic nanobodies, calibrated on 1,000 others).

The check compares ONNX Runtime (CPU) with the float32 PyTorch model at several lengths (1 to
1022 residues) and batch sizes, prints the largest |ONNX - PyTorch|, and refuses the export
(exit 1, output removed) above --tolerance (default: 1e-4 fp32, 1e-2 fp16 relative, 0.05 int8).

Usage:
    python scripts/export_onnx.py --checkpoint facebook/esm2_t6_8M_UR50D --out M.onnx --sklearn head.pkl
    python scripts/export_onnx.py --checkpoint ./esm1v_folder --out esm1v.onnx --npz head.npz --optimize
    python scripts/export_onnx.py --random-init esm2_t6_8M --seed 0 --out M.onnx [--head H.json]
    python scripts/export_onnx.py --random-init tiny --head H.json --out M.onnx \\
        --reference-data D.csv --reference-out torch_proba.csv

Head JSON (same format as the shared *.head.json files):
    {"type": "logistic_regression", "pooling": "mean_residues", "threshold": 0.5,
     "coef": [hidden floats], "intercept": float}
probability = sigmoid(coef . embedding + intercept), where embedding is the mean of
last_hidden_state over residue positions 1..=len (no <cls>, <eos> or padding).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import pickle
import platform
import re
import sys
import tempfile
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

# ONNX Runtime 1.31 otherwise contacts Microsoft's telemetry collector; an explicit value is kept.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

import numpy as np
import onnx
import torch
import transformers
from transformers import EsmConfig, EsmModel

sys.path.insert(0, str(Path(__file__).resolve().parent))
# Re-exported: make_fixtures.py, bench_python.py and the tests use them as export_onnx.NAME.
from esm_tokens import (  # noqa: E402,F401
    CLS_ID, EOS_ID, ESM_VOCAB, MASK_ID, MAX_RESIDUES, PAD_ID, UNK_ID, mean_residues, pad_batch, pooled,
    read_sequences, tokenize,
)

OPSET = 17
IR_VERSION = 10
INPUT_NAMES = ["input_ids", "attention_mask"]
OUTPUT_NAME = "last_hidden_state"

# name -> (layers, hidden, heads, ffn)
ARCHS = {
    "esm2_t6_8M": (6, 320, 20, 1280),
    "esm2_t12_35M": (12, 480, 20, 1920),
    "esm2_t30_150M": (30, 640, 20, 2560),
    "esm2_t33_650M": (33, 1280, 20, 5120),
    "tiny": (2, 32, 4, 64),
    "micro": (1, 8, 2, 16),
    # ESM-1v is the ESM-1b architecture: learned absolute positions and a LayerNorm on the embeddings.
    "esm1v_t33_650M": (33, 1280, 20, 5120),
    "esm1v_tiny": (2, 32, 4, 64),
}
# Architectures with ESM-1b/1v learned absolute positions; the others are ESM-2 (rotary).
ABSOLUTE_POSITION_ARCHS = {"esm1v_t33_650M", "esm1v_tiny"}

# Protobuf cannot hold more than 2 GiB in one file; above this, weights go to external data.
_EXTERNAL_DATA_BYTES = 1_800_000_000

DEFAULT_TOLERANCE = {"fp32": 1e-4, "fp16": 1e-2, "int8": 0.05, "int8-vnni": 0.05}
# --keep-fp32 groups: the weight MatMuls of each ESM layer, by the node names torch.onnx gives the
# transformers EsmModel modules (the names survive --optimize).
MATMUL_GROUPS = {
    "attention-qkv": re.compile(r"/attention/self/(query|key|value)/MatMul$"),
    "attention-output": re.compile(r"/attention/output/dense/MatMul$"),
    "ffn-in": re.compile(r"/intermediate/dense/MatMul$"),
    "ffn-out": re.compile(r"/layer\.\d+/output/dense/MatMul$"),
}


# ----------------------------------------------------------------------------- models


def arch_config(arch: str) -> EsmConfig:
    """EsmConfig for one of ARCHS, with the real ESM-2 (or ESM-1b/1v) hyper-parameters."""
    layers, hidden, heads, ffn = ARCHS[arch]
    absolute = arch in ABSOLUTE_POSITION_ARCHS
    return EsmConfig(
        vocab_size=len(ESM_VOCAB),
        pad_token_id=PAD_ID,
        mask_token_id=MASK_ID,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=ffn,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        max_position_embeddings=1026,
        position_embedding_type="absolute" if absolute else "rotary",
        layer_norm_eps=1e-5,
        emb_layer_norm_before=absolute,
        token_dropout=True,
        vocab_list=list(ESM_VOCAB),
    )


def esm2_config(arch: str) -> EsmConfig:
    """Kept for callers of the first version of this script; see arch_config."""
    return arch_config(arch)


def _eager(model: EsmModel) -> EsmModel:
    # Eager attention traces to plain MatMul/Softmax ops that every ONNX Runtime provider runs.
    model.config._attn_implementation = "eager"
    return model.eval()


def random_init_model(arch: str, seed: int) -> EsmModel:
    """torch.manual_seed(seed), then EsmModel(config, add_pooling_layer=False)."""
    config = arch_config(arch)
    config._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = EsmModel(config, add_pooling_layer=False)
    return _eager(model)


def load_checkpoint(name_or_dir: str, revision: str | None = None) -> EsmModel:
    """EsmModel from a Hugging Face Hub name (or its local cache) or a save_pretrained folder.
    Refuses a checkpoint that leaves encoder weights missing: from_pretrained would fill them with
    random values and the export check (which runs that same model) could not notice."""
    if name_or_dir.startswith((".", "/", "~")) and not Path(name_or_dir).expanduser().is_dir():
        # from_pretrained would call it a malformed Hub repo id.
        raise ValueError(f"--checkpoint {name_or_dir}: no such folder; fix: pass a save_pretrained folder or a Hub "
                         "name such as facebook/esm2_t33_650M_UR50D")
    kwargs = {"revision": revision} if revision else {}
    model, info = EsmModel.from_pretrained(
        name_or_dir, add_pooling_layer=False, attn_implementation="eager", output_loading_info=True, **kwargs
    )
    ignorable = ("contact_head.", "pooler.", "position_ids", "inv_freq")
    missing = sorted(k for k in info.get("missing_keys", ()) if not any(x in k for x in ignorable))
    if missing:
        raise ValueError(f"{name_or_dir}: the checkpoint lacks {len(missing)} encoder weights "
                         f"(e.g. {', '.join(missing[:3])}); is it an ESM (EsmModel/EsmForMaskedLM) checkpoint?")
    return _eager(model.float())


_SNAPSHOT = re.compile(r"[0-9a-f]{40}")


def _snapshot(path: Path) -> tuple[str, str] | None:
    """(repo name, commit) when `path` is a Hugging Face cache snapshot: .../models--org--name/snapshots/HASH."""
    parts = path.resolve().parts
    if len(parts) >= 3 and parts[-2] == "snapshots" and _SNAPSHOT.fullmatch(parts[-1]):
        repo = parts[-3]
        return (repo[len("models--"):].replace("--", "/") if repo.startswith("models--") else repo), parts[-1]
    return None


def checkpoint_identity(model: EsmModel, name_or_dir: str, revision: str | None = None) -> tuple[str, str]:
    """(checkpoint name, revision) for metadata. The revision is the commit hash when known: the
    snapshot folder the Hub cache resolved the name to (or config._commit_hash), or the snapshot a
    given folder is; "local" for a plain folder. A folder is named by its last component, so no
    machine path ends up inside the model file."""
    path = Path(name_or_dir)
    if path.is_dir():
        return _snapshot(path) or (path.resolve().name, "local")
    commit = getattr(model.config, "_commit_hash", None)
    if not commit:
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(name_or_dir, "config.json", revision=revision or "main")
            found = _snapshot(Path(cached).parent) if isinstance(cached, str) else None
            commit = found[1] if found else None
        except (ImportError, ValueError, OSError):
            commit = None
    return name_or_dir, commit or (revision or "unknown")


def architecture_summary(config: EsmConfig) -> dict:
    return {
        "layers": config.num_hidden_layers,
        "hidden": config.hidden_size,
        "heads": config.num_attention_heads,
        "ffn": config.intermediate_size,
        "position_embedding_type": config.position_embedding_type,
        "max_position_embeddings": config.max_position_embeddings,
        "emb_layer_norm_before": bool(config.emb_layer_norm_before),
        "token_dropout": bool(config.token_dropout),
    }


# ----------------------------------------------------------------------------- the traced module


def _additive_key_mask(attention_mask: torch.Tensor, embedding_output: torch.Tensor, **_) -> tuple:
    """What EsmModel._create_attention_masks gives eager attention, in the form that traces cheaply: an
    additive [batch, 1, 1, keys] mask (0 where attended, the dtype's minimum at padding) that every
    layer broadcasts, instead of transformers' [batch, 1, queries, keys] mask built per layer with
    Expand/Where/IsNaN. Same softmax inputs, so the same numbers; on the ESM-2 8M graph it removes
    about 30% of ONNX Runtime's CPU time (scripts/bench.sh). Rows are never fully masked: <cls> and
    <eos> are always attended."""
    dtype = embedding_output.dtype
    return (1.0 - attention_mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min, None


class _LastHiddenState(torch.nn.Module):
    """Wraps EsmModel so the traced graph has exactly the contract's inputs and output."""

    def __init__(self, model: EsmModel):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        # Only while tracing: the post-export check runs the untouched model as its reference.
        self.model._create_attention_masks = _additive_key_mask
        try:
            return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        finally:
            del self.model._create_attention_masks


@torch.no_grad()
def torch_last_hidden_state(model: EsmModel, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
    out = model(
        input_ids=torch.from_numpy(input_ids), attention_mask=torch.from_numpy(attention_mask)
    ).last_hidden_state
    return out.numpy()


# ----------------------------------------------------------------------------- heads


def head_probability(head: dict, embedding: np.ndarray) -> float:
    z = float(np.dot(np.asarray(head["coef"], dtype=np.float64), embedding)) + float(head["intercept"])
    # The plain form (the committed fixtures' references were made with it) until exp(-z) would overflow.
    return 1.0 / (1.0 + math.exp(-z)) if z > -700 else math.exp(z)


@dataclass
class Head:
    """A logistic head as esmbench reads it, plus where it came from."""

    parsed: dict
    text: str
    source: str
    # The scikit-learn estimator, when the head came from one: references use its predict_proba.
    estimator: object | None = field(default=None, repr=False)

    def probabilities(self, embeddings: np.ndarray) -> np.ndarray:
        if self.estimator is not None:
            return np.asarray(self.estimator.predict_proba(embeddings)[:, 1], dtype=np.float64)
        return np.array([head_probability(self.parsed, e) for e in embeddings])

    @property
    def threshold(self) -> float:
        return float(self.parsed.get("threshold", 0.5))


def _flat(values, what: str, path) -> list[float]:
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{path}: {what} holds {np.asarray(values).dtype} values, not numbers") from None
    if array.ndim == 2 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 1:
        raise ValueError(f"{path}: {what} has shape {array.shape}; a binary head has one row")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{path}: {what} has non-finite values")
    return [float(x) for x in array]


def _head_json(coef: list[float], intercept: float, threshold: float, source: str) -> dict:
    return {
        "type": "logistic_regression",
        "pooling": "mean_residues",
        "threshold": threshold,
        "coef": coef,
        "intercept": intercept,
        "source": source,
    }


def _check_hidden(head: dict, hidden: int, path) -> None:
    if len(head["coef"]) != hidden:
        raise ValueError(f"{path}: coef has {len(head['coef'])} values, model hidden size is {hidden}")


HEAD_KEYS = ("type", "pooling", "threshold", "coef", "intercept")


def _edit_distance(a: str, b: str) -> int:
    """Optimal string alignment distance (a swap of two neighbours counts once), as esmbench's head reader uses."""
    d = [[i + j if i * j == 0 else 0 for j in range(len(b) + 1)] for i in range(len(a) + 1)]
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] != b[j - 1]))
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                d[i][j] = min(d[i][j], d[i - 2][j - 2] + 1)
    return d[len(a)][len(b)]


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_head_json(head, path) -> None:
    """The checks esmbench makes when it reads a head (src/model/head.rs), made before an export that takes
    minutes would embed a head that `esmbench test` then refuses."""
    if not isinstance(head, dict):
        raise ValueError(f"{path}: a head is a JSON object with coef, intercept and threshold")
    for given in head:
        normalized = given.strip("_").lower()
        for meant in HEAD_KEYS:
            if meant not in head and given != meant and _edit_distance(normalized, meant) <= min(len(meant), 8) // 4:
                raise ValueError(f"{path}: key `{given}` is not read; `{meant}` is, and is missing; "
                                 f"fix: rename `{given}` to `{meant}`")
    coef = np.asarray(head.get("coef", []), dtype=object).reshape(-1)
    if not all(_is_number(c) for c in coef):
        raise ValueError(f"{path}: coef must be a list of numbers")
    intercept = np.asarray(head.get("intercept", None), dtype=object).reshape(-1)
    if len(intercept) != 1 or not _is_number(intercept[0]):
        raise ValueError(f"{path}: intercept must be one number")
    if "threshold" in head:
        check_threshold(head["threshold"], f"{path}: threshold")


def check_threshold(value, what: str) -> None:
    if not _is_number(value) or not (0.0 <= value <= 1.0):
        raise ValueError(f"{what} {value!r} is not a probability; fix: use a number in [0, 1]")


def _read_text(path, what: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise ValueError(f"{what} {path}: {err.strerror or err}") from None


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a number a head may hold")


def load_head(path: str | os.PathLike, hidden: int) -> tuple[dict, str]:
    """Read and sanity-check a head JSON file; returns (parsed, exact text)."""
    text = _read_text(path, "--head")
    try:
        head = json.loads(text, parse_constant=_refuse_constant)
    except ValueError as err:
        raise ValueError(f"{path}: not a head JSON ({err}); fix: expected "
                         '{"type": "logistic_regression", "coef": [...], "intercept": x, "threshold": 0.5}') from None
    check_head_json(head, path)
    if head.get("type", "logistic_regression") != "logistic_regression" or head.get(
        "pooling", "mean_residues"
    ) != "mean_residues":
        raise ValueError(f"{path}: expected type logistic_regression with pooling mean_residues")
    head["coef"] = _flat(head.get("coef", []), "coef", path)
    head["intercept"] = _flat(np.atleast_1d(head.get("intercept", float("nan"))), "intercept", path)[0]
    _check_hidden(head, hidden, path)
    return head, text


def _unpickle(path: Path):
    """joblib.load reads both joblib.dump files and plain pickles; plain pickle when joblib is absent.
    Unpickling runs code from the file: only load heads you trust."""
    if not Path(path).is_file():
        raise ValueError(f"--sklearn {path}: no such file")
    try:
        import joblib
    except ImportError:
        joblib = None
    try:
        if joblib is None:
            with open(path, "rb") as f:
                return pickle.load(f)
        return joblib.load(path)
    except Exception as err:  # a file of another kind fails inside pickle with any error type
        raise ValueError(f"{path}: not a pickle or joblib file of a scikit-learn model ({type(err).__name__}: {err}); "
                         "fix: save the fitted estimator with joblib.dump(model, path) or pickle.dump") from None


def _fold_sklearn(obj, path) -> tuple[np.ndarray, float, object]:
    """(coef, intercept, final estimator) of a LogisticRegression, or of a Pipeline whose steps before
    it are StandardScalers: x -> (x - mean) / scale is linear, so it folds into coef and intercept."""
    steps = [obj]
    if hasattr(obj, "steps"):  # sklearn.pipeline.Pipeline
        steps = [step for _, step in obj.steps if step not in (None, "passthrough")]
    *before, clf = steps
    if type(clf).__name__ not in ("LogisticRegression", "LogisticRegressionCV"):
        raise ValueError(f"{path}: expected a LogisticRegression (or a Pipeline ending in one), got {type(clf).__name__}")
    classes = list(getattr(clf, "classes_", []))
    if len(classes) != 2:
        raise ValueError(f"{path}: the classifier has {len(classes)} classes; esmbench needs a binary one")
    coef = np.asarray(clf.coef_, dtype=np.float64).reshape(-1)
    intercept = float(np.asarray(clf.intercept_, dtype=np.float64).reshape(-1)[0])
    for step in reversed(before):
        if type(step).__name__ != "StandardScaler":
            raise ValueError(f"{path}: pipeline step {type(step).__name__} cannot be folded into a linear head")
        # StandardScaler(with_mean=False) still learns mean_ but does not subtract it.
        mean = getattr(step, "mean_", None) if getattr(step, "with_mean", True) else None
        scale = getattr(step, "scale_", None) if getattr(step, "with_std", True) else None
        mean = np.zeros_like(coef) if mean is None else np.asarray(mean, dtype=np.float64)
        scale = np.ones_like(coef) if scale is None else np.asarray(scale, dtype=np.float64)
        coef = coef / scale
        intercept = intercept - float(np.dot(coef, mean))
    return coef, intercept, obj


def head_from_sklearn(path: str | os.PathLike, hidden: int, threshold: float | None) -> Head:
    path = Path(path)
    obj = _unpickle(path)
    coef, intercept, estimator = _fold_sklearn(obj, path)
    import sklearn

    parsed = _head_json(
        _flat(coef, "coef", path), intercept, 0.5 if threshold is None else threshold,
        f"sklearn {type(obj).__name__} ({path.name}, scikit-learn {sklearn.__version__})",
    )
    _check_hidden(parsed, hidden, path)
    # The folded head must give predict_proba's numbers, or the conversion is wrong.
    probe = np.random.default_rng(0).normal(size=(16, hidden))
    mine = np.array([head_probability(parsed, x) for x in probe])
    theirs = estimator.predict_proba(probe)[:, 1]
    if np.max(np.abs(mine - theirs)) > 1e-9:
        raise ValueError(f"{path}: the converted head disagrees with predict_proba by {np.max(np.abs(mine - theirs)):.2e}")
    return Head(parsed, json.dumps(parsed), parsed["source"], estimator)


def head_from_npz(path: str | os.PathLike, hidden: int, threshold: float | None) -> Head:
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"--npz {path}: no such file")
    written = "write one with np.savez(path, coef=coef, intercept=intercept)"
    with open(path, "rb") as file:
        magic = file.read(6)
    if magic == b"\x93NUMPY":
        raise ValueError(f"--npz {path}: a single .npy array, not an .npz archive of named arrays; {written}")
    if magic[:4] != b"PK\x03\x04":
        raise ValueError(f"--npz {path}: not an .npz archive (those are zip files); {written}")
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = {"coef", "intercept"} - set(data.files)
            if missing:
                raise ValueError(f"{path}: missing arrays {sorted(missing)} (has {sorted(data.files)}); {written}")
            coef = _flat(data["coef"], "coef", path)
            intercept = _flat(np.atleast_1d(data["intercept"]), "intercept", path)
            stored = 0.5
            if "threshold" in data.files:
                threshold_values = _flat(np.atleast_1d(data["threshold"]), "threshold", path)
                if len(threshold_values) != 1:
                    raise ValueError(f"{path}: threshold has {len(threshold_values)} values; a head has one")
                stored = threshold_values[0]
    except (zipfile.BadZipFile, EOFError, KeyError) as err:
        raise ValueError(f"--npz {path}: a damaged .npz archive ({err}); {written}") from None
    check_threshold(stored, f"{path}: threshold")
    if len(intercept) != 1:
        raise ValueError(f"{path}: intercept has {len(intercept)} values; a binary head has one")
    parsed = _head_json(coef, intercept[0], stored if threshold is None else threshold, f"npz ({path.name})")
    _check_hidden(parsed, hidden, path)
    return Head(parsed, json.dumps(parsed), parsed["source"])


def head_from_json(path: str | os.PathLike, hidden: int, threshold: float | None) -> Head:
    parsed, text = load_head(path, hidden)
    if threshold is not None:
        parsed["threshold"] = threshold
        text = json.dumps(parsed)
    return Head(parsed, text, f"json ({Path(path).name})")


# ----------------------------------------------------------------------------- ONNX files


def _external(path: Path) -> bool:
    return path.with_name(path.name + ".data").exists()


def save_model(proto: onnx.ModelProto, out: Path, large: bool) -> None:
    """Save, with the weights in one `<out>.data` file next to it when they would not fit in protobuf."""
    data = out.with_name(out.name + ".data")
    data.unlink(missing_ok=True)
    if large:
        onnx.save(proto, str(out), save_as_external_data=True, all_tensors_to_one_file=True,
                  location=data.name, size_threshold=1024)
    else:
        onnx.save(proto, str(out))


def compact_names(proto: onnx.ModelProto) -> None:
    """Shorten internal tensor and node names in place (graph inputs, outputs and weights keep
    theirs). Same computation, a much smaller file: used for the committed test fixtures."""
    keep = {v.name for v in proto.graph.input} | {v.name for v in proto.graph.output}
    keep |= {t.name for t in proto.graph.initializer}
    renamed: dict[str, str] = {}

    def short(name: str) -> str:
        if not name or name in keep:
            return name
        return renamed.setdefault(name, f"t{len(renamed)}")

    for index, node in enumerate(proto.graph.node):
        node.name = f"n{index}"
        node.input[:] = [short(x) for x in node.input]
        node.output[:] = [short(x) for x in node.output]
    del proto.graph.value_info[:]


def finalize_onnx(
    out: str | os.PathLike, metadata: dict[str, str], compact: bool = False, external: bool = False,
    dest: str | os.PathLike | None = None,
) -> None:
    """Force ir_version 10, record metadata_props, optionally compact names, check and save to
    `dest` (default: in place)."""
    out = Path(out)
    dest = Path(dest) if dest is not None else out
    proto = onnx.load(str(out), load_external_data=True)
    proto.ir_version = IR_VERSION
    onnx.helper.set_model_props(proto, metadata)
    if compact:
        compact_names(proto)
    if external:
        save_model(proto, dest, large=True)
        onnx.checker.check_model(str(dest))
    else:
        onnx.checker.check_model(proto, full_check=True)
        save_model(proto, dest, large=False)


def set_metadata(path: Path, extra: dict[str, str]) -> None:
    """Add metadata_props to a written model without touching its (possibly external) weights."""
    proto = onnx.load(str(path), load_external_data=False)
    props = {p.key: p.value for p in proto.metadata_props}
    props.update(extra)
    onnx.helper.set_model_props(proto, props)
    onnx.save(proto, str(path))


def export_module(
    module: torch.nn.Module,
    out: str | os.PathLike,
    metadata: dict[str, str],
    output_axes: dict[str, dict[int, str]],
    input_names: list[str] = INPUT_NAMES,
    compact: bool = False,
) -> None:
    """Trace a module taking (input_ids, attention_mask) with the legacy TorchScript exporter,
    opset 17; `output_axes` names the outputs (in order) and their dynamic axes."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Trace with a padded batch (not an all-ones mask) so no padding shortcut is baked in.
    input_ids, attention_mask = pad_batch(["MKTAYIAKQR", "EVQ"])
    dynamic_axes = {name: {0: "batch", 1: "sequence"} for name in input_names}
    dynamic_axes.update(output_axes)
    external = is_large(module)
    # A large trace writes one external file per tensor: trace into a scratch folder, then save
    # the result as one model (+ one .data file) where it belongs.
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".trace-") as scratch:
        traced = Path(scratch) / out.name
        with torch.no_grad(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
            # aten::index here takes position ids, never negative; the check below runs the graph anyway.
            warnings.filterwarnings("ignore", message=".*aten::index operator of advanced indexing.*")
            # transformers' mask helper branches on (mask width - sequence length), which is 0 for
            # every input this contract allows; the check runs many widths to prove the trace holds.
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            torch.onnx.export(
                module.eval(),
                (torch.from_numpy(input_ids), torch.from_numpy(attention_mask)),
                str(traced),
                input_names=list(input_names),
                output_names=list(output_axes),
                dynamic_axes=dynamic_axes,
                opset_version=OPSET,
                do_constant_folding=True,
                dynamo=False,
            )
        finalize_onnx(traced, metadata, compact=compact, external=external, dest=out)


def is_large(module: torch.nn.Module) -> bool:
    return sum(p.numel() * p.element_size() for p in module.parameters()) > _EXTERNAL_DATA_BYTES


def export(model: EsmModel, out: str | os.PathLike, metadata: dict[str, str], compact: bool = False) -> None:
    """Write the contract model: (input_ids, attention_mask) -> last_hidden_state."""
    export_module(
        _LastHiddenState(model), out, metadata, {OUTPUT_NAME: {0: "batch", 1: "sequence"}}, compact=compact
    )


def to_fp16(src: Path, dest: Path) -> None:
    """float16 weights and compute, float32 graph inputs/outputs (Casts at the edges)."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    proto = onnx.load(str(src), load_external_data=True)
    # Shape inference is skipped: it refuses models over 2 GiB, and the converter does not need it.
    proto16 = convert_float_to_float16(proto, keep_io_types=True, disable_shape_infer=True)
    save_model(proto16, dest, large=proto16.ByteSize() > _EXTERNAL_DATA_BYTES)


def optimize(src: Path, dest: Path, config: EsmConfig) -> None:
    """onnxruntime.transformers graph fusions, written offline. opt_level 0 keeps ONNX Runtime's own
    (provider-specific) rewrites out of the file; only the Python-side fusions into contrib ops that
    the CPU provider implements (SkipLayerNormalization, BiasGelu, ...) are saved."""
    from onnxruntime.transformers.optimizer import optimize_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = optimize_model(
            str(src), model_type="bert", num_heads=config.num_attention_heads,
            hidden_size=config.hidden_size, opt_level=0, use_gpu=False,
        )
    fused = {k: v for k, v in model.get_fused_operator_statistics().items() if v}
    print(f"  --optimize fusions: {fused or 'none'}")
    model.save_model_to_file(str(dest), use_external_data_format=_external(src))


def weight_matmuls(path: Path, groups: list[str]) -> list[str]:
    """Names of the MatMuls with a constant weight that the --keep-fp32 `groups` name, in graph order;
    ValueError if a group names none (a graph not exported by this script, or renamed)."""
    graph = onnx.load(str(path), load_external_data=False).graph
    constants = {t.name for t in graph.initializer}
    names = [n.name for n in graph.node if n.op_type == "MatMul" and n.input[1] in constants]
    chosen = []
    for group in groups:
        found = [n for n in names if MATMUL_GROUPS[group].search(n)]
        if not found:
            raise ValueError(f"--keep-fp32 {group}: no MatMul of that group in the graph "
                             f"(expected names like {MATMUL_GROUPS[group].pattern})")
        chosen += [n for n in found if n not in chosen]
    return chosen


def quantize_int8(src: Path, dest: Path, vnni: bool = False, keep_fp32: list[str] | None = None) -> None:
    """Dynamic 8-bit quantisation of the MatMul weights (per output channel), activations quantised at
    run time. Unsigned weights with reduce_range (7 bits): on x86 without VNNI (AVX2) the u8 x s8 kernel
    sums pairs of products in saturating int16, and full-range signed per-channel weights lost up to
    0.14 mean |dp| on the ESM-2 8M architecture; u8 + reduce_range gave 0.008 (256 nanobody-like
    sequences), at the same speed. `vnni`: signed full-range weights, for CPUs whose VNNI instructions
    accumulate u8 x s8 products in int32 without that saturation; there ONNX Runtime's kernel is 1.4x
    to 2.0x faster than with reduce_range (ESM-2 8M graph, AVX-512 VNNI and AMX, scripts/bench.sh).
    Elsewhere on x86 the sessions that run it (esmbench's, and `_session` here) set
    session.x64quantprecision, which converts the signed weights to unsigned at load: exact (mean |dp|
    0.0059 on ESM-2 8M, as on VNNI), but no faster."""
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    class _NoPreprocessHint(logging.Filter):
        # quant_pre_process (shape inference + ORT optimisation) is left out on purpose: --optimize is
        # the optimisation step, and the check below measures the result either way.
        def filter(self, record: logging.LogRecord) -> bool:
            return "pre-processing before quantization" not in record.getMessage()

    hint = _NoPreprocessHint()
    logging.getLogger().addFilter(hint)
    try:
        _quantize(src, dest, quantize_dynamic, QuantType, vnni, keep_fp32 or [])
    finally:
        logging.getLogger().removeFilter(hint)


def _quantize(src: Path, dest: Path, quantize_dynamic, QuantType, vnni: bool, keep_fp32: list[str]) -> None:
    quantize_dynamic(
        str(src), str(dest), op_types_to_quantize=["MatMul"], per_channel=True, reduce_range=not vnni,
        nodes_to_exclude=keep_fp32,
        weight_type=QuantType.QInt8 if vnni else QuantType.QUInt8, use_external_data_format=_external(src),
        # After --optimize, shape inference cannot type the outputs of contrib ops (BiasGelu, ...);
        # they are all float32 here.
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )


def read_calibration(path: str) -> list[str]:
    """The sequences of a calibration CSV, cleaned as esmbench cleans them; an error names what is wrong."""
    try:
        sequences = [x for x in read_sequences(path)[0] if x]
    except KeyError:
        raise ValueError(f"{path}: no `sequence` column (the calibration CSV needs one)") from None
    if not sequences:
        raise ValueError(f"{path}: no sequences to calibrate on")
    return sequences


def bias_correct(fp32: Path, quantized: Path, sequences: list[str], dest: Path, batch: int = 16) -> str:
    """Takes the mean output shift that weight rounding causes, (W_int8 - W) . E[x], off the bias after
    each MatMulInteger, with E[x] the float32 graph's mean input over the residues of `sequences`.
    Returns a one-line summary. MatMuls without a separate constant bias (an Add, BiasGelu or
    SkipLayerNormalization input) are left as they are and counted."""
    import onnxruntime as ort
    from onnx import numpy_helper

    q = onnx.load(str(quantized))
    inits = {i.name: i for i in q.graph.initializer}
    producer = {o: n for n in q.graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for node in q.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    def constant(name: str) -> np.ndarray | None:
        while name not in inits and name in producer and producer[name].op_type == "Identity":
            name = producer[name].input[0]
        if name in inits:
            return numpy_helper.to_array(inits[name])
        if name in producer and producer[name].op_type == "Constant":
            return numpy_helper.to_array(producer[name].attribute[0].t)
        return None

    def only_consumer(name: str):
        found = consumers.get(name, [])
        return found[0] if len(found) == 1 else None

    plan, skipped = [], 0
    for node in q.graph.node:
        if node.op_type != "MatMulInteger":
            continue
        quantizer = producer.get(node.input[0])
        base = node.input[1][: -len("_quantized")] if node.input[1].endswith("_quantized") else None
        cast = only_consumer(node.output[0])
        scale = only_consumer(cast.output[0]) if cast is not None and cast.op_type == "Cast" else None
        user = only_consumer(scale.output[0]) if scale is not None and scale.op_type == "Mul" else None
        slot = None
        if user is not None and user.op_type == "Add":
            slot = next((k for k, i in enumerate(user.input) if i != scale.output[0]), None)
        elif user is not None and user.op_type == "BiasGelu":
            slot = 1
        elif user is not None and user.op_type == "SkipLayerNormalization" and len(user.input) == 5:
            slot = 4
        bias = constant(user.input[slot]) if slot is not None else None
        if (quantizer is None or quantizer.op_type != "DynamicQuantizeLinear" or base is None
                or base + "_scale" not in inits or bias is None):
            skipped += 1
            continue
        plan.append((quantizer.input[0], base, node.input[1], user, slot, bias))

    # The float32 graph with the MatMul inputs as extra outputs; weights stay where they are.
    probe = onnx.load(str(fp32), load_external_data=False)
    wanted = sorted({x for x, *_ in plan})
    present = {o.name for o in probe.graph.output}
    probe.graph.output.extend(onnx.helper.make_tensor_value_info(x, onnx.TensorProto.FLOAT, None)
                              for x in wanted if x not in present)
    probe_path = fp32.with_name("bias-probe.onnx")
    onnx.save(probe, str(probe_path))
    session = ort.InferenceSession(str(probe_path), providers=["CPUExecutionProvider"])
    sums = {x: 0.0 for x in wanted}
    tokens = 0
    for start in range(0, len(sequences), batch):
        ids, mask = pad_batch(sequences[start : start + batch])
        real = mask.astype(bool)
        for x, value in zip(wanted, session.run(wanted, {"input_ids": ids, "attention_mask": mask})):
            sums[x] = sums[x] + value[real].astype(np.float64).sum(axis=0)
        tokens += int(real.sum())
    del session
    probe_path.unlink()
    weights = {i.name: i for i in onnx.load(str(fp32)).graph.initializer}

    shifts = []
    for x, base, quantized_name, user, slot, bias in plan:
        w = numpy_helper.to_array(weights[base]).astype(np.float64)
        w_int8 = numpy_helper.to_array(inits[quantized_name]).astype(np.float64)
        zero = numpy_helper.to_array(inits[base + "_zero_point"]).astype(np.float64)
        step = numpy_helper.to_array(inits[base + "_scale"]).astype(np.float64)
        shift = (sums[x] / tokens) @ ((w_int8 - zero) * step - w)
        shifts.append(np.abs(shift).mean())
        # A new initializer per bias: random-init exports share one zero bias between layers.
        name = f"{user.name or user.output[0]}_bias_corrected"
        q.graph.initializer.append(numpy_helper.from_array((bias.astype(np.float64) - shift).astype(np.float32), name))
        user.input[slot] = name
    save_model(q, dest, _external(quantized))
    return (f"{len(plan)} MatMul biases corrected from {len(sequences)} sequences ({tokens} residues), "
            f"mean |shift| {np.mean(shifts) if shifts else 0:.2e}; {skipped} MatMuls without a separate bias left as they are")


# ----------------------------------------------------------------------------- check


# Sequences for the post-export check: several lengths, some with rare letters.
_CHECK_SEQUENCES = [
    "EVQLVESGGGLVQPGGSLRLSCAASGFTFSSYAMSWVRQAPGKGLEWVSAISGSGGSTYYADSVKGRFTISRDNSKNTLYLQMNSLRAEDTAVYYCAK",
    "QVQLQESGPGLVKPSETLSLTCTVSGGSISSYYWSWIRQPPGKGLEWIGYIYYSGSTNYNPSLKSRVTISVDTSKNQFSLKLSSVTAADTAVYYCARDRGYSSGWYFDYWGQGTLVTVSS",
    "MKTAYIAKQRQISFVKSHFSRQ",
    "A",
    "ACDXBZUO",
    "GFTFSSYAMS",
]


def _long_sequence() -> str:
    """MAX_RESIDUES residues: the longest input esmbench sends by default; for learned absolute
    positions (ESM-1v) it uses the last position embedding."""
    rng = np.random.default_rng(1022)
    return "".join(rng.choice(list("ACDEFGHIKLMNPQRSTVWY"), size=MAX_RESIDUES))


def check_batches() -> list[list[str]]:
    return [
        _CHECK_SEQUENCES[3:4],  # batch 1, 3 tokens
        _CHECK_SEQUENCES[2:3],  # batch 1, 24 tokens
        _CHECK_SEQUENCES[4:6],  # batch 2, padded
        _CHECK_SEQUENCES[0:3],  # batch 3, padded, up to 122 tokens
        _CHECK_SEQUENCES,  # batch 6, padded
        [_long_sequence(), _CHECK_SEQUENCES[3]],  # batch 2: 1024 tokens and one padded to it
    ]


def sample_sequences(rows: int) -> list[str]:
    """Nanobody-like sequences (scripts/make_synthetic_harvey.py, seed 0) for the fp16/int8 check."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from make_synthetic_harvey import _chunk

    sequences, _ = _chunk(np.random.default_rng(0), rows)
    return sequences


@dataclass
class CheckResult:
    max_abs: float = 0.0  # largest |ONNX - PyTorch| over non-padding positions of last_hidden_state
    max_ref: float = 0.0  # largest |PyTorch| value there (scale for the fp16 criterion)
    min_cosine: float = 1.0  # pooled embeddings
    p_diffs: list[float] = field(default_factory=list)
    label_agree: int = 0
    labels: int = 0

    @property
    def mean_p(self) -> float:
        return float(np.mean(self.p_diffs)) if self.p_diffs else float("nan")


def _signed_int8_products_saturate() -> bool:
    """esmbench's test (src/model/onnx.rs): an x86 CPU without AVX-512 VNNI or AVX-VNNI, where ONNX Runtime's
    u8 x s8 kernel adds pairs of products in saturating 16-bit integers. Where the flags cannot be read it
    answers yes: the conversion it leads to is exact everywhere, only slower on VNNI."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        return True
    return re.search(r"\b(avx512_vnni|avx_vnni)\b", cpuinfo) is None


def _session(path: Path, threads: int | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    # As esmbench runs every model: signed 8-bit weights (int8-vnni) are made unsigned at load on x86 CPUs
    # without VNNI, whose u8 x s8 kernel saturates, and only there (ONNX Runtime converts wherever the
    # option is set, which on a VNNI CPU costs the VNNI kernel); the check then measures what esmbench
    # computes on this machine.
    if _signed_int8_products_saturate():
        options.add_session_config_entry("session.x64quantprecision", "1")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _compare_batch(session, model: EsmModel, sequences: list[str], head: Head | None, result: CheckResult) -> float:
    input_ids, attention_mask = pad_batch(sequences)
    (got,) = session.run([OUTPUT_NAME], {"input_ids": input_ids, "attention_mask": attention_mask})
    want = torch_last_hidden_state(model, input_ids, attention_mask)
    if got.shape != want.shape or got.dtype != np.float32:
        raise RuntimeError(f"ONNX output {got.shape} {got.dtype}, PyTorch {want.shape} {want.dtype}")
    keep = attention_mask.astype(bool)
    diff = float(np.max(np.abs(got[keep].astype(np.float64) - want[keep])))
    result.max_abs = max(result.max_abs, diff)
    result.max_ref = max(result.max_ref, float(np.max(np.abs(want[keep]))))
    e_onnx, e_torch = pooled(got, sequences), pooled(want, sequences)
    cos = np.sum(e_onnx * e_torch, axis=1) / (
        np.linalg.norm(e_onnx, axis=1) * np.linalg.norm(e_torch, axis=1) + 1e-300)
    result.min_cosine = min(result.min_cosine, float(np.min(cos)))
    if head is not None:
        p_onnx, p_torch = head.probabilities(e_onnx), head.probabilities(e_torch)
        result.p_diffs.extend(np.abs(p_onnx - p_torch).tolist())
        result.label_agree += int(np.sum((p_onnx > head.threshold) == (p_torch > head.threshold)))
        result.labels += len(sequences)
    return diff


def check_against_torch(
    model: EsmModel, onnx_path: str | os.PathLike, head: Head | None = None, sample_rows: int = 0
) -> CheckResult:
    """Compares ONNX Runtime (CPU) with PyTorch float32 at batch sizes 1 to 6 and lengths 1 to 1022
    residues (padded and not), then, if sample_rows, on that many nanobody-like sequences."""
    session = _session(Path(onnx_path))
    result = CheckResult()
    for sequences in check_batches():
        input_ids, _ = pad_batch(sequences)
        diff = _compare_batch(session, model, sequences, head, result)
        print(f"  batch {len(sequences)} x {input_ids.shape[1]} tokens: max |ONNX - PyTorch| = {diff:.3e}")
    if sample_rows:
        samples = sample_sequences(sample_rows)
        worst = max(_compare_batch(session, model, samples[i : i + 16], head, result)
                    for i in range(0, len(samples), 16))
        print(f"  {len(samples)} nanobody-like sequences, batches of 16: max |ONNX - PyTorch| = {worst:.3e}")
    return result


def verdict(precision: str, result: CheckResult, tolerance: float, has_head: bool) -> tuple[float, str]:
    """(value compared with the tolerance, what it is) for a precision."""
    if precision == "fp32":
        return result.max_abs, "largest |ONNX - PyTorch|"
    if precision == "fp16":
        return result.max_abs / max(1.0, result.max_ref), "largest |ONNX - PyTorch| / max(1, largest |PyTorch|)"
    if has_head:
        return result.mean_p, "mean |p_ONNX - p_PyTorch|"
    return 1.0 - result.min_cosine, "1 - min cosine(pooled ONNX, pooled PyTorch)"


def report_check(precision: str, result: CheckResult, tolerance: float, has_head: bool) -> tuple[bool, str]:
    value, what = verdict(precision, result, tolerance, has_head)
    print(f"largest |ONNX - PyTorch| = {result.max_abs:.3e} (largest |PyTorch| value {result.max_ref:.3g})")
    print(f"pooled embeddings: min cosine similarity {result.min_cosine:.6f}")
    if result.labels:
        print(f"probabilities: mean |diff| {result.mean_p:.3e}, max |diff| {max(result.p_diffs):.3e}, "
              f"labels agree {result.label_agree}/{result.labels}")
    print(f"{precision} check: {what} = {value:.3e} (tolerance {tolerance:.1e})")
    summary = f"{what} = {value:.3e} (tolerance {tolerance:.1e})"
    if precision != "fp32":
        summary += f"; largest |ONNX - PyTorch| = {result.max_abs:.3e}"
    if result.labels:
        summary += f"; mean |dp| = {result.mean_p:.3e}, labels agree {result.label_agree}/{result.labels}"
    return value <= tolerance, summary


# ----------------------------------------------------------------------------- reference


@torch.no_grad()
def torch_embeddings(model: EsmModel, sequences: list[str], batch_size: int = 32) -> np.ndarray:
    """Pooled float64 embeddings from PyTorch, in batches of `batch_size` in file order."""
    out = []
    for start in range(0, len(sequences), batch_size):
        chunk = sequences[start : start + batch_size]
        input_ids, attention_mask = pad_batch(chunk)
        out.append(pooled(torch_last_hidden_state(model, input_ids, attention_mask), chunk))
    return np.concatenate(out) if out else np.zeros((0, model.config.hidden_size))


def write_reference(model: EsmModel, head: Head | None, data: str, out: str | None, embeddings_out: str | None) -> None:
    sequences, labels, ids = read_sequences(data)
    embeddings = torch_embeddings(model, sequences)
    if embeddings_out:
        np.save(embeddings_out, embeddings.astype(np.float32))
        print(f"wrote {embeddings_out} (PyTorch pooled embeddings, {len(sequences)} rows)")
    if out:
        if head is None:
            raise ValueError("--reference-out needs a head (--head, --sklearn or --npz)")
        probabilities = head.probabilities(embeddings)
        with open(out, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["row", "id", "label", "probability"])
            for i, p in enumerate(probabilities):
                writer.writerow([i, ids[i], labels[i], repr(float(p))])
        print(f"wrote {out} (PyTorch probabilities, {len(sequences)} rows)")


# ----------------------------------------------------------------------------- driver


def library_versions(extra: bool = False) -> dict[str, str]:
    import onnxruntime

    versions = {
        "esmbench.torch": torch.__version__,
        "esmbench.transformers": transformers.__version__,
        "esmbench.onnx": onnx.__version__,
        "esmbench.onnxruntime": onnxruntime.__version__,
        "esmbench.numpy": np.__version__,
        "esmbench.python": platform.python_version(),
    }
    if extra:
        import sklearn

        versions["esmbench.sklearn"] = sklearn.__version__
    return versions


def _remove(out: Path) -> None:
    out.unlink(missing_ok=True)
    out.with_name(out.name + ".data").unlink(missing_ok=True)


def export_and_check(
    model: EsmModel,
    out: str | os.PathLike,
    source: str,
    head_path: str | os.PathLike | Head | None = None,
    tolerance: float | None = None,
    compact: bool = False,
    *,
    precision: str = "fp32",
    optimize_graph: bool = False,
    checkpoint: str | None = None,
    revision: str | None = None,
    sample_rows: int | None = None,
    calibration: tuple[str, list[str]] | None = None,
    keep_fp32: list[str] | None = None,
) -> CheckResult:
    """Export, transform (optimize, then fp16 or int8), embed metadata, check against PyTorch;
    removes `out` and raises RuntimeError if the check is over tolerance."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if precision not in DEFAULT_TOLERANCE:
        raise ValueError(f"precision {precision} is not one of {sorted(DEFAULT_TOLERANCE)}")
    tolerance = DEFAULT_TOLERANCE[precision] if tolerance is None else tolerance
    head = head_path if isinstance(head_path, Head) or head_path is None else head_from_json(
        head_path, model.config.hidden_size, None)
    if sample_rows is None:
        sample_rows = 64 if precision != "fp32" else 0
    metadata = {
        "esmbench.source": source,
        "esmbench.checkpoint": checkpoint or source,
        "esmbench.revision": revision or "unknown",
        "esmbench.architecture": json.dumps(architecture_summary(model.config)),
        "esmbench.precision": precision,
        "esmbench.optimized": "onnxruntime.transformers fusions (opt_level 0, CPU)" if optimize_graph else "no",
        **library_versions(extra=head is not None and head.estimator is not None),
    }
    if precision in ("int8", "int8-vnni"):
        metadata["esmbench.bias_correction"] = (
            f"{len(calibration[1])} sequences from {calibration[0]}" if calibration else "none")
    if head is not None:
        metadata["esmbench.head"] = head.text
        metadata["esmbench.head_source"] = head.source
    _remove(out)
    try:
        with tempfile.TemporaryDirectory(dir=out.parent, prefix=".export-") as scratch:
            current = Path(scratch) / "fp32.onnx"
            export(model, current, metadata)
            if optimize_graph:
                optimize(current, Path(scratch) / "optimized.onnx", model.config)
                current = Path(scratch) / "optimized.onnx"
            if precision == "fp16":
                to_fp16(current, Path(scratch) / "fp16.onnx")
                current = Path(scratch) / "fp16.onnx"
            elif precision in ("int8", "int8-vnni"):
                kept = weight_matmuls(current, keep_fp32) if keep_fp32 else []
                metadata["esmbench.fp32_matmuls"] = (
                    f"{','.join(keep_fp32)} ({len(kept)} MatMuls)" if keep_fp32 else "none")
                if kept:
                    print(f"  kept in float32: {len(kept)} MatMuls ({', '.join(keep_fp32)})")
                quantize_int8(current, Path(scratch) / "int8.onnx", vnni=precision == "int8-vnni", keep_fp32=kept)
                if calibration:
                    summary = bias_correct(current, Path(scratch) / "int8.onnx", calibration[1],
                                           Path(scratch) / "corrected.onnx")
                    print(f"  bias correction: {summary}")
                    current = Path(scratch) / "corrected.onnx"
                else:
                    current = Path(scratch) / "int8.onnx"
            finalize_onnx(current, metadata, compact=compact, external=_external(current), dest=out)
        print(f"checking {out} ({precision}) against PyTorch float32 (onnxruntime CPU)")
        result = check_against_torch(model, out, head, sample_rows)
        ok, summary = report_check(precision, result, tolerance, head is not None)
        if not ok:
            raise RuntimeError(f"refusing export: {summary}")
        set_metadata(out, {"esmbench.check": summary})
    except BaseException:
        _remove(out)
        raise
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__[__doc__.index("Sources (one of):"):],
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", metavar="NAME_OR_DIR",
                        help="Hugging Face model name (facebook/esm2_*, facebook/esm1v_*) or save_pretrained folder")
    source.add_argument("--random-init", choices=sorted(ARCHS), metavar="ARCH",
                        help=f"random weights for one of: {', '.join(ARCHS)}")
    parser.add_argument("--revision", help="Hub branch, tag or commit for --checkpoint")
    parser.add_argument("--seed", type=int, default=None, help="torch seed for --random-init (default 0)")
    parser.add_argument("--out", required=True, help="output .onnx path (weights over 1.8 GB go to OUT.data)")
    heads = parser.add_mutually_exclusive_group()
    heads.add_argument("--head", metavar="H.json", help="head JSON to embed as metadata key esmbench.head")
    heads.add_argument("--sklearn", metavar="P.pkl",
                       help="pickled (pickle or joblib) LogisticRegression, or Pipeline of StandardScaler + it; "
                            "unpickling runs code, so only use files you trust")
    heads.add_argument("--npz", metavar="N.npz", help="numpy .npz with arrays coef, intercept (and optional threshold)")
    parser.add_argument("--threshold", type=float, help="decision threshold stored with the head (default: the head's, else 0.5)")
    parser.add_argument("--head-out", metavar="H.json", help="also write the embedded head JSON here")
    parser.add_argument("--fp16", action="store_true", help="float16 weights and compute, float32 inputs/outputs")
    parser.add_argument("--optimize", action="store_true", help="save onnxruntime.transformers graph fusions offline")
    parser.add_argument("--quantize", choices=["int8", "int8-vnni"],
                        help="dynamic int8 quantisation of MatMul weights (int8-vnni: signed full-range weights, "
                             "faster on CPUs with VNNI; exact but no faster than int8 on other x86 CPUs)")
    parser.add_argument("--calibration", metavar="D.csv",
                        help="with --quantize: sequences (column sequence, e.g. the training set) whose float32 "
                             "activations set the bias correction of the rounded weights")
    parser.add_argument("--keep-fp32", metavar="GROUP", action="append", choices=sorted(MATMUL_GROUPS),
                        help="with --quantize: leave this group of each layer's MatMuls in float32 (repeatable; "
                             + ", ".join(sorted(MATMUL_GROUPS)) + ")")
    parser.add_argument("--tolerance", type=float,
                        help="refusal threshold of the check (default 1e-4 fp32, 1e-2 fp16 relative, 0.05 int8)")
    parser.add_argument("--check-rows", type=int,
                        help="extra nanobody-like sequences in the check (default 64 for fp16/int8, 0 for fp32)")
    parser.add_argument("--reference-data", metavar="D.csv",
                        help="CSV (column sequence) to compute PyTorch references for after the export")
    parser.add_argument("--reference-out", metavar="P.csv",
                        help="write row,id,label,probability from PyTorch (+ the head) for --reference-data")
    parser.add_argument("--reference-embeddings", metavar="E.npy",
                        help="write PyTorch pooled embeddings [rows, hidden] for --reference-data")
    parser.add_argument("--torch-threads", type=int, help="PyTorch threads (default: up to 4)")
    parser.add_argument("--compact-names", action="store_true",
                        help="shorten internal tensor/node names (smaller file, same computation)")
    args = parser.parse_args(argv)
    if args.fp16 and args.quantize:
        parser.error("--fp16 and --quantize int8 are alternatives; pick one")
    if (args.reference_out or args.reference_embeddings) and not args.reference_data:
        parser.error("--reference-out/--reference-embeddings need --reference-data")
    # Each belongs to one source; given with the other it would be accepted and do nothing.
    if args.revision and not args.checkpoint:
        parser.error("--revision picks a Hub revision of --checkpoint; --random-init has none")
    if args.seed is not None and args.checkpoint:
        parser.error("--seed seeds --random-init's weights; a --checkpoint brings its own")
    if args.seed is None:
        args.seed = 0
    if args.calibration and not args.quantize:
        parser.error("--calibration corrects int8 weights; it needs --quantize")
    if args.keep_fp32 and not args.quantize:
        parser.error("--keep-fp32 picks MatMuls to leave out of int8; it needs --quantize")
    if args.threshold is not None and not (math.isfinite(args.threshold) and 0.0 <= args.threshold <= 1.0):
        parser.error(f"--threshold {args.threshold} is not a probability in [0, 1]")
    precision = "fp16" if args.fp16 else (args.quantize or "fp32")

    torch.set_num_threads(args.torch_threads or max(1, min(4, os.cpu_count() or 1)))
    try:
        if args.checkpoint:
            model = load_checkpoint(args.checkpoint, args.revision)
            checkpoint, revision = checkpoint_identity(model, args.checkpoint, args.revision)
            source_name = f"checkpoint:{checkpoint}@{revision}"
        else:
            model = random_init_model(args.random_init, args.seed)
            checkpoint, revision = f"random-init:{args.random_init}:seed={args.seed}", "random-init"
            source_name = checkpoint
        hidden = model.config.hidden_size
        head = None
        if args.head:
            head = head_from_json(args.head, hidden, args.threshold)
        elif args.sklearn:
            head = head_from_sklearn(args.sklearn, hidden, args.threshold)
        elif args.npz:
            head = head_from_npz(args.npz, hidden, args.threshold)
        if head is not None:
            print(f"head: {head.source}, {hidden} coefficients, threshold {head.threshold}")
            if args.head_out:
                Path(args.head_out).write_text(json.dumps(head.parsed, indent=1) + "\n", encoding="utf-8")
        export_and_check(
            model, args.out, source_name, head, args.tolerance, args.compact_names,
            precision=precision, optimize_graph=args.optimize, checkpoint=checkpoint,
            revision=revision, sample_rows=args.check_rows,
            calibration=(Path(args.calibration).name, read_calibration(args.calibration)) if args.calibration else None,
            keep_fp32=list(dict.fromkeys(args.keep_fp32)) if args.keep_fp32 else None,
        )
        print(f"wrote {args.out}" + (f" (+ {args.out}.data)" if _external(Path(args.out)) else ""))
        if args.reference_data:
            write_reference(model, head, args.reference_data, args.reference_out, args.reference_embeddings)
    except (RuntimeError, ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
