"""Export a Hugging Face ESM encoder (transformers EsmModel) to ONNX for esmbench.

This file owns the ONNX model contract that the Rust side (src/) relies on:

* inputs  ``input_ids`` and ``attention_mask``: int64, shape [batch, sequence]
  (dynamic axes named ``batch`` and ``sequence``);
* output  ``last_hidden_state``: float32, shape [batch, sequence, hidden];
* opset 17, ``ir_version`` forced to 10 (older ONNX Runtime builds reject newer IR);
* metadata_props ``esmbench.source``, ``esmbench.torch``, ``esmbench.transformers``
  and, with ``--head``, ``esmbench.head`` (the full head JSON text).

It also owns the random-init ESM-2 architectures (real ESM-2 sizes plus the
``tiny`` and ``micro`` test sizes), the 33-token ESM alphabet, and the
post-export check that compares ONNX Runtime (CPU) against PyTorch at several
sequence lengths and batch sizes and refuses the export (non-zero exit, file
removed) when the largest difference exceeds ``--tolerance``.

Usage:
    python scripts/export_onnx.py --checkpoint facebook/esm2_t6_8M_UR50D --out M.onnx
    python scripts/export_onnx.py --random-init esm2_t6_8M --seed 0 --out M.onnx [--head H.json] [--compact-names]

Head JSON (same format as the shared *.head.json files):
    {"type": "logistic_regression", "pooling": "mean_residues", "threshold": 0.5,
     "coef": [hidden floats], "intercept": float}
probability = sigmoid(coef . embedding + intercept), where embedding is the mean of
last_hidden_state over residue positions 1..=len (no <cls>, <eos> or padding).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
import transformers
from transformers import EsmConfig, EsmModel

OPSET = 17
IR_VERSION = 10
INPUT_NAMES = ["input_ids", "attention_mask"]
OUTPUT_NAME = "last_hidden_state"

# The ESM-2 alphabet, ids 0..32 in this order.
ESM_VOCAB = [
    "<cls>", "<pad>", "<eos>", "<unk>",
    "L", "A", "G", "V", "S", "E", "R", "T", "I", "D", "P", "K", "Q", "N",
    "F", "Y", "M", "H", "W", "C", "X", "B", "U", "Z", "O", ".", "-",
    "<null_1>", "<mask>",
]
CLS_ID, PAD_ID, EOS_ID, UNK_ID, MASK_ID = 0, 1, 2, 3, 32
_TOKEN_ID = {tok: i for i, tok in enumerate(ESM_VOCAB)}

# name -> (layers, hidden, heads, ffn)
ARCHS = {
    "esm2_t6_8M": (6, 320, 20, 1280),
    "esm2_t12_35M": (12, 480, 20, 1920),
    "esm2_t30_150M": (30, 640, 20, 2560),
    "esm2_t33_650M": (33, 1280, 20, 5120),
    "tiny": (2, 32, 4, 64),
    "micro": (1, 8, 2, 16),
}

# Protobuf cannot hold more than 2 GiB in one file; above this, weights go to external data.
_EXTERNAL_DATA_BYTES = 1_800_000_000


def esm2_config(arch: str) -> EsmConfig:
    """EsmConfig for one of ARCHS, with the real ESM-2 hyper-parameters."""
    layers, hidden, heads, ffn = ARCHS[arch]
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
        position_embedding_type="rotary",
        layer_norm_eps=1e-5,
        emb_layer_norm_before=False,
        token_dropout=True,
        vocab_list=list(ESM_VOCAB),
    )


def _eager(model: EsmModel) -> EsmModel:
    model.config._attn_implementation = "eager"
    return model.eval()


def random_init_model(arch: str, seed: int) -> EsmModel:
    """torch.manual_seed(seed), then EsmModel(config, add_pooling_layer=False)."""
    config = esm2_config(arch)
    config._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = EsmModel(config, add_pooling_layer=False)
    return _eager(model)


def load_checkpoint(name_or_dir: str) -> EsmModel:
    """EsmModel from a Hugging Face hub name or a local checkpoint directory."""
    model = EsmModel.from_pretrained(
        name_or_dir, add_pooling_layer=False, attn_implementation="eager"
    )
    return _eager(model.float())


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


class _LastHiddenState(torch.nn.Module):
    """Wraps EsmModel so the traced graph has exactly the contract's inputs and output."""

    def __init__(self, model: EsmModel):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


@torch.no_grad()
def torch_last_hidden_state(model: EsmModel, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
    out = model(
        input_ids=torch.from_numpy(input_ids), attention_mask=torch.from_numpy(attention_mask)
    ).last_hidden_state
    return out.numpy()


def mean_residues(last_hidden_state: np.ndarray, length: int) -> np.ndarray:
    """Mean over residue positions 1..=length of one [sequence, hidden] array, in float64."""
    return last_hidden_state[1 : length + 1].astype(np.float64).mean(axis=0)


def head_probability(head: dict, embedding: np.ndarray) -> float:
    z = float(np.dot(np.asarray(head["coef"], dtype=np.float64), embedding)) + float(head["intercept"])
    return 1.0 / (1.0 + math.exp(-z))


def load_head(path: str | os.PathLike, hidden: int) -> tuple[dict, str]:
    """Read and sanity-check a head JSON file; returns (parsed, exact text)."""
    text = Path(path).read_text(encoding="utf-8")
    head = json.loads(text)
    if head.get("type") != "logistic_regression" or head.get("pooling") != "mean_residues":
        raise ValueError(f"{path}: expected type logistic_regression with pooling mean_residues")
    if len(head.get("coef", [])) != hidden:
        raise ValueError(f"{path}: coef has {len(head.get('coef', []))} values, model hidden size is {hidden}")
    float(head["intercept"])
    return head, text


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
    out: str | os.PathLike, metadata: dict[str, str], compact: bool = False, external: bool = False
) -> None:
    """Force ir_version 10, record metadata_props, optionally compact names, check and re-save."""
    proto = onnx.load(str(out), load_external_data=False)
    proto.ir_version = IR_VERSION
    onnx.helper.set_model_props(proto, metadata)
    if compact:
        compact_names(proto)
    if external:
        onnx.save(proto, str(out))  # keeps the relative external-data references next to it
        onnx.checker.check_model(str(out))
    else:
        onnx.checker.check_model(proto, full_check=True)
        onnx.save(proto, str(out))


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
    n_bytes = sum(p.numel() * p.element_size() for p in module.parameters())
    external = n_bytes > _EXTERNAL_DATA_BYTES
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        torch.onnx.export(
            module.eval(),
            (torch.from_numpy(input_ids), torch.from_numpy(attention_mask)),
            str(out),
            input_names=list(input_names),
            output_names=list(output_axes),
            dynamic_axes=dynamic_axes,
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
    finalize_onnx(out, metadata, compact=compact, external=external)


def export(model: EsmModel, out: str | os.PathLike, metadata: dict[str, str], compact: bool = False) -> None:
    """Write the contract model: (input_ids, attention_mask) -> last_hidden_state."""
    export_module(
        _LastHiddenState(model), out, metadata, {OUTPUT_NAME: {0: "batch", 1: "sequence"}}, compact=compact
    )


# Sequences for the post-export check: several lengths, some with rare letters.
_CHECK_SEQUENCES = [
    "EVQLVESGGGLVQPGGSLRLSCAASGFTFSSYAMSWVRQAPGKGLEWVSAISGSGGSTYYADSVKGRFTISRDNSKNTLYLQMNSLRAEDTAVYYCAK",
    "QVQLQESGPGLVKPSETLSLTCTVSGGSISSYYWSWIRQPPGKGLEWIGYIYYSGSTNYNPSLKSRVTISVDTSKNQFSLKLSSVTAADTAVYYCARDRGYSSGWYFDYWGQGTLVTVSS",
    "MKTAYIAKQRQISFVKSHFSRQ",
    "A",
    "ACDXBZUO",
    "GFTFSSYAMS",
]


def check_against_torch(model: EsmModel, onnx_path: str | os.PathLike) -> float:
    """Largest |ONNX - PyTorch| over non-padding positions, for batch sizes 1, 2, 3 and 6."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    batches = [
        _CHECK_SEQUENCES[3:4],  # batch 1, 3 tokens
        _CHECK_SEQUENCES[2:3],  # batch 1, 24 tokens
        _CHECK_SEQUENCES[4:6],  # batch 2, padded
        _CHECK_SEQUENCES[0:3],  # batch 3, padded, up to 122 tokens
        _CHECK_SEQUENCES,  # batch 6, padded
    ]
    worst = 0.0
    for sequences in batches:
        input_ids, attention_mask = pad_batch(sequences)
        (got,) = session.run([OUTPUT_NAME], {"input_ids": input_ids, "attention_mask": attention_mask})
        want = torch_last_hidden_state(model, input_ids, attention_mask)
        if got.shape != want.shape or got.dtype != np.float32:
            raise RuntimeError(f"ONNX output {got.shape} {got.dtype}, PyTorch {want.shape} {want.dtype}")
        keep = attention_mask.astype(bool)
        diff = float(np.max(np.abs(got[keep] - want[keep])))
        print(f"  batch {len(sequences)} x {input_ids.shape[1]} tokens: max |ONNX - PyTorch| = {diff:.3e}")
        worst = max(worst, diff)
    return worst


def export_and_check(
    model: EsmModel,
    out: str | os.PathLike,
    source: str,
    head_path: str | os.PathLike | None = None,
    tolerance: float = 1e-4,
    compact: bool = False,
) -> float:
    """Export, embed metadata, check against PyTorch; removes `out` and raises if over tolerance."""
    metadata = {
        "esmbench.source": source,
        "esmbench.torch": torch.__version__,
        "esmbench.transformers": transformers.__version__,
    }
    if head_path is not None:
        _, text = load_head(head_path, model.config.hidden_size)
        metadata["esmbench.head"] = text
    export(model, out, metadata, compact=compact)
    print(f"checking {out} against PyTorch (onnxruntime CPU)")
    worst = check_against_torch(model, out)
    print(f"largest |ONNX - PyTorch| = {worst:.3e} (tolerance {tolerance:.1e})")
    if not worst <= tolerance:
        Path(out).unlink(missing_ok=True)
        raise RuntimeError(f"refusing export: largest difference {worst:.3e} exceeds tolerance {tolerance:.1e}")
    return worst


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="Hugging Face model name or local checkpoint directory")
    source.add_argument("--random-init", choices=sorted(ARCHS), metavar="ARCH",
                        help=f"random weights for one of: {', '.join(ARCHS)}")
    parser.add_argument("--seed", type=int, default=0, help="torch seed for --random-init (default 0)")
    parser.add_argument("--out", required=True, help="output .onnx path")
    parser.add_argument("--head", help="head JSON to embed as metadata key esmbench.head")
    parser.add_argument("--tolerance", type=float, default=1e-4,
                        help="largest allowed |ONNX - PyTorch| (default 1e-4)")
    parser.add_argument("--compact-names", action="store_true",
                        help="shorten internal tensor/node names (smaller file, same computation)")
    args = parser.parse_args(argv)

    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    if args.checkpoint:
        model, source_name = load_checkpoint(args.checkpoint), args.checkpoint
    else:
        model = random_init_model(args.random_init, args.seed)
        source_name = f"random-init:{args.random_init}:seed={args.seed}"
    try:
        export_and_check(model, args.out, source_name, args.head, args.tolerance, args.compact_names)
    except (RuntimeError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
