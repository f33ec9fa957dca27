"""Regenerate every committed test fixture under tests/fixtures/, deterministically.

This file owns:

* esm2_micro.onnx            - ``export_onnx.py --random-init micro --seed 7`` (names compacted)
* esm2_micro.head.json       - synthetic logistic head for it (seeded numpy RNG)
* esm2_micro_with_head.onnx  - the same model with the head in metadata key ``esmbench.head``
* esm2_micro.reference.json  - PyTorch reference (input_ids, embedding, probability) for
                               12 sequences, each run alone (batch 1, no padding)
* contract/*.onnx            - small models that break or vary the ONNX contract:
    wrong_input_name.onnx    inputs ``ids``, ``attention_mask`` (micro encoder otherwise)
    int32_ids.onnx           ``input_ids`` is int32 (micro encoder behind a Cast)
    pooled_output.onnx       output ``embedding`` [batch, hidden]: residue mean pooled in-graph
    logits_output.onnx       output ``logits`` [batch, 2] = [0, z], z = coef . embedding + intercept
    probability_output.onnx  output ``probability`` [batch] = sigmoid(z)
    no_known_output.onnx     output ``foo`` [batch, 3] (nothing esmbench can use)
    external_data.onnx       the micro encoder with its weights in external_data.onnx.data beside it,
                             as a float32 export over 2 GiB (ESM-1v, ESM-2 650M) is written
    eight_token_vocabulary.onnx  last_hidden_state [batch, sequence, 4] gathered from a table of 8 rows:
                             it loads, and fails at run time in its Gather on any token id above 7
                             (every residue but L, A, G and V), like a model exported with a cut
                             vocabulary or too few learned positions
    nan_probability.onnx     output ``probability`` [batch] = log(max(input_ids) - 100): NaN on every row,
                             as a float16 export that overflows gives
    unbounded_probability.onnx  output ``probability`` [batch] = the row's token count: not in [0, 1]
    short_sequence_output.onnx  last_hidden_state [batch, 2, 4] whatever the sequence length: a graph
                             whose output does not follow its input's axes
    int8_signed_weights.onnx the micro encoder through ``export_onnx.quantize_int8(vnni=True)``:
                             MatMulInteger with signed 8-bit weights, which saturate in ONNX
                             Runtime's u8 x s8 kernel on x86 CPUs without VNNI unless the session
                             makes them unsigned (checked here for structure, not accuracy)

All ONNX files are opset 17, ir_version 10. After writing, every fixture is loaded and
run with ONNX Runtime (CPU) at batch 1 and batch 3, and the encoder, pooled, logits and
probability fixtures must reproduce the reference within 1e-5.

    python scripts/make_fixtures.py [--out-dir tests/fixtures]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
import transformers
from onnx import TensorProto, helper
from transformers import EsmTokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
import export_onnx as ex  # noqa: E402
from make_test_datasets import vh_domain  # noqa: E402

MODEL_ARCH, MODEL_SEED = "micro", 7
HEAD_SEED = 7
REFERENCE_SEED = 2024
TOLERANCE = 1e-5
STANDARD_AA = "ACDEFGHIKLMNPQRSTVWY"
REPO = Path(__file__).resolve().parent.parent


# ----------------------------------------------------------------------------- reference


def reference_sequences() -> list[str]:
    """12 sequences: random standard residues at lengths 1..130, two with X/B/Z/U/O, two VH-like."""
    rng = np.random.default_rng(REFERENCE_SEED)
    seqs = ["".join(rng.choice(list(STANDARD_AA), size=n)) for n in (1, 2, 5, 17, 40, 63, 120, 130)]
    for n, rare in ((12, "XB"), (30, "ZUOX")):
        residues = list(rng.choice(list(STANDARD_AA), size=n))
        for letter, pos in zip(rare, rng.choice(n, size=len(rare), replace=False)):
            residues[pos] = letter
        seqs.append("".join(residues))
    seqs += [vh_domain(rng)[0] for _ in range(2)]
    return seqs


def esm_tokenizer(tmp: str) -> EsmTokenizer:
    vocab = Path(tmp) / "vocab.txt"
    vocab.write_text("\n".join(ex.ESM_VOCAB) + "\n", encoding="utf-8")
    return EsmTokenizer(vocab_file=str(vocab))


@torch.no_grad()
def single_embedding(model, input_ids: list[int]) -> np.ndarray:
    """Residue-mean embedding (float64) of one sequence run alone: batch 1, no padding."""
    ids = np.asarray([input_ids], dtype=np.int64)
    hidden = ex.torch_last_hidden_state(model, ids, np.ones_like(ids))[0]
    return ex.mean_residues(hidden, len(input_ids) - 2)


def check_batched(model, sequences: list[str], embeddings: list[np.ndarray]) -> float:
    """Padded-batch PyTorch pooling must equal the single runs (reference is batch independent)."""
    ids, mask = ex.pad_batch(sequences)
    hidden = ex.torch_last_hidden_state(model, ids, mask)
    worst = max(
        float(np.max(np.abs(ex.mean_residues(hidden[i], len(s)) - embeddings[i])))
        for i, s in enumerate(sequences)
    )
    assert worst <= TOLERANCE, f"batched pooling differs from single runs by {worst:.3e}"
    return worst


def make_head(model) -> dict:
    """Random coef (seeded), scaled so VH-like sequences spread over ~0.1..0.9, median ~0.5."""
    rng = np.random.default_rng(HEAD_SEED)
    hidden = model.config.hidden_size
    coef = rng.normal(size=hidden)
    vh = [vh_domain(rng)[0] for _ in range(64)]
    emb = np.stack([single_embedding(model, ex.tokenize(s)) for s in vh])
    z = emb @ coef
    coef *= 2 * math.log(9.0) / (np.percentile(z, 95) - np.percentile(z, 5))  # 5..95% -> 0.1..0.9
    coef = np.array([float(f"{c:.6g}") for c in coef])
    intercept = float(f"{-np.median(emb @ coef):.6g}")
    return {
        "type": "logistic_regression",
        "pooling": "mean_residues",
        "threshold": 0.5,
        "coef": coef.tolist(),
        "intercept": intercept,
        "trained_on": "synthetic fixture head",
    }


# ----------------------------------------------------------------------------- contract models


class PooledHead(torch.nn.Module):
    """Micro encoder + in-graph residue mean pooling (+ optional head), for contract fixtures."""

    def __init__(self, model, head: dict, output: str):
        super().__init__()
        self.model = model
        self.output = output
        self.register_buffer("coef", torch.tensor(head["coef"], dtype=torch.float32))
        self.register_buffer("intercept", torch.tensor(float(head["intercept"]), dtype=torch.float32))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        positions = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0)
        last = (attention_mask * positions).max(dim=1, keepdim=True).values  # last attended position
        residue = attention_mask.bool() & (positions != 0) & (positions != last)
        weights = residue.to(hidden.dtype).unsqueeze(-1)
        embedding = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)
        if self.output == "embedding":
            return embedding
        z = embedding @ self.coef + self.intercept
        if self.output == "logits":
            return torch.stack([torch.zeros_like(z), z], dim=-1)
        return torch.sigmoid(z)


def _rename_input(proto: onnx.ModelProto, old: str, new: str) -> None:
    for value in proto.graph.input:
        if value.name == old:
            value.name = new
    for node in proto.graph.node:
        node.input[:] = [new if x == old else x for x in node.input]


def make_wrong_input_name(encoder: Path, out: Path, metadata: dict) -> None:
    proto = onnx.load(str(encoder))
    _rename_input(proto, "input_ids", "ids")
    _save(proto, out, metadata)


def make_int32_ids(encoder: Path, out: Path, metadata: dict) -> None:
    proto = onnx.load(str(encoder))
    _rename_input(proto, "input_ids", "input_ids_int64")
    value = next(v for v in proto.graph.input if v.name == "input_ids_int64")
    value.name = "input_ids"
    value.type.tensor_type.elem_type = TensorProto.INT32
    cast = helper.make_node("Cast", ["input_ids"], ["input_ids_int64"], name="cast_ids", to=TensorProto.INT64)
    proto.graph.node.insert(0, cast)
    _save(proto, out, metadata)


def make_no_known_output(out: Path, metadata: dict) -> None:
    """foo[b, j] = float(input_ids[b, j] * attention_mask[b, j]) for j < 3 (sequences have >= 3 tokens)."""
    nodes = [
        helper.make_node("Mul", ["input_ids", "attention_mask"], ["masked"]),
        helper.make_node("Slice", ["masked", "zero", "three", "one"], ["first3"]),
        helper.make_node("Cast", ["first3"], ["foo"], to=TensorProto.FLOAT),
    ]
    inits = [
        helper.make_tensor("zero", TensorProto.INT64, [1], [0]),
        helper.make_tensor("three", TensorProto.INT64, [1], [3]),
        helper.make_tensor("one", TensorProto.INT64, [1], [1]),
    ]
    graph = helper.make_graph(
        nodes,
        "no_known_output",
        [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "sequence"]) for n in ex.INPUT_NAMES],
        [helper.make_tensor_value_info("foo", TensorProto.FLOAT, ["batch", 3])],
        initializer=inits,
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", ex.OPSET)])
    _save(proto, out, metadata)


def _two_input_graph(name: str, nodes: list, output, initializer: list) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "sequence"]) for n in ex.INPUT_NAMES],
        [output],
        initializer=initializer,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", ex.OPSET)])


def make_nan_probability(out: Path, metadata: dict) -> None:
    """probability[b] = log(max_j input_ids[b, j] - 100): token ids stay below 33, so NaN on every row."""
    nodes = [
        helper.make_node("ReduceMax", ["input_ids"], ["max_id"], axes=[1], keepdims=0),
        helper.make_node("Cast", ["max_id"], ["max_id_float"], to=TensorProto.FLOAT),
        helper.make_node("Sub", ["max_id_float", "hundred"], ["negative"]),
        helper.make_node("Log", ["negative"], ["probability"]),
    ]
    output = helper.make_tensor_value_info("probability", TensorProto.FLOAT, ["batch"])
    hundred = helper.make_tensor("hundred", TensorProto.FLOAT, [], [100.0])
    _save(_two_input_graph("nan_probability", nodes, output, [hundred]), out, metadata)


def make_unbounded_probability(out: Path, metadata: dict) -> None:
    """probability[b] = sum_j attention_mask[b, j]: the row's token count, 3 or more."""
    nodes = [
        helper.make_node("ReduceSum", ["attention_mask", "axis_one"], ["tokens"], keepdims=0),
        helper.make_node("Cast", ["tokens"], ["probability"], to=TensorProto.FLOAT),
    ]
    output = helper.make_tensor_value_info("probability", TensorProto.FLOAT, ["batch"])
    axis = helper.make_tensor("axis_one", TensorProto.INT64, [1], [1])
    _save(_two_input_graph("unbounded_probability", nodes, output, [axis]), out, metadata)


def make_short_sequence_output(out: Path, metadata: dict) -> None:
    """last_hidden_state[b, j, k] = float(input_ids[b, j]) for j < 2 only: the sequence axis is cut to 2."""
    nodes = [
        helper.make_node("Slice", ["input_ids", "zero", "two", "one"], ["first_two"]),
        helper.make_node("Cast", ["first_two"], ["first_two_float"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["first_two_float", "minus_one"], ["column"]),
        helper.make_node("Mul", ["column", "ones"], ["last_hidden_state"]),
    ]
    output = helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["batch", "sequence", 4])
    inits = [
        helper.make_tensor("zero", TensorProto.INT64, [1], [0]),
        helper.make_tensor("two", TensorProto.INT64, [1], [2]),
        helper.make_tensor("one", TensorProto.INT64, [1], [1]),
        helper.make_tensor("minus_one", TensorProto.INT64, [1], [-1]),
        helper.make_tensor("ones", TensorProto.FLOAT, [4], [1.0] * 4),
    ]
    _save(_two_input_graph("short_sequence_output", nodes, output, inits), out, metadata)


def make_external_data(encoder: Path, out: Path, metadata: dict) -> None:
    """The encoder saved with every tensor of 256 bytes or more in `<out>.data`."""
    proto = onnx.load(str(encoder))
    proto.ir_version = ex.IR_VERSION
    del proto.metadata_props[:]
    helper.set_model_props(proto, metadata)
    data = out.with_name(out.name + ".data")
    data.unlink(missing_ok=True)
    onnx.save(proto, str(out), save_as_external_data=True, all_tensors_to_one_file=True,
              location=data.name, size_threshold=256)
    onnx.checker.check_model(str(out), full_check=True)


def make_eight_token_vocabulary(out: Path, metadata: dict) -> None:
    """last_hidden_state[b, j] = table[input_ids[b, j]] with an 8-row table: a kernel error at run time."""
    table = np.arange(32, dtype=np.float32).reshape(8, 4) / 32.0
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "input_ids"], ["last_hidden_state"], name="token_table_gather")],
        "eight_token_vocabulary",
        [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "sequence"]) for n in ex.INPUT_NAMES],
        [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["batch", "sequence", 4])],
        initializer=[onnx.numpy_helper.from_array(table, "table")],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", ex.OPSET)])
    _save(proto, out, metadata)


def make_int8_signed_weights(encoder: Path, out: Path, metadata: dict) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        quantized = Path(tmp) / "int8.onnx"
        ex.quantize_int8(encoder, quantized, vnni=True)
        proto = onnx.load(str(quantized))
    _save(proto, out, metadata)


def _save(proto: onnx.ModelProto, out: Path, metadata: dict) -> None:
    proto.ir_version = ex.IR_VERSION
    del proto.metadata_props[:]
    helper.set_model_props(proto, metadata)
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(out))


# ----------------------------------------------------------------------------- verification


def _run(path: Path, sequences: list[str], int32: bool = False) -> tuple[np.ndarray, np.ndarray, str]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ids, mask = ex.pad_batch(sequences)
    names = [i.name for i in session.get_inputs()]
    feeds = {names[0]: ids.astype(np.int32) if int32 else ids, names[1]: mask}
    (out,) = session.run(None, feeds)
    return out, mask, session.get_outputs()[0].name


def verify(out_dir: Path, reference: dict, head: dict) -> None:
    contract = out_dir / "contract"
    rows = reference["sequences"]
    seqs = [r["sequence"] for r in rows]
    want_emb = [np.asarray(r["embedding"]) for r in rows]
    want_p = [r["probability"] for r in rows]
    batches = [[i] for i in range(len(seqs))] + [list(range(k, k + 3)) for k in range(0, len(seqs), 3)]
    checks = {
        "esm2_micro.onnx": out_dir / "esm2_micro.onnx",
        "esm2_micro_with_head.onnx": out_dir / "esm2_micro_with_head.onnx",
        "contract/wrong_input_name.onnx": contract / "wrong_input_name.onnx",
        "contract/int32_ids.onnx": contract / "int32_ids.onnx",
        "contract/pooled_output.onnx": contract / "pooled_output.onnx",
        "contract/logits_output.onnx": contract / "logits_output.onnx",
        "contract/probability_output.onnx": contract / "probability_output.onnx",
        "contract/no_known_output.onnx": contract / "no_known_output.onnx",
        "contract/external_data.onnx": contract / "external_data.onnx",
    }
    for label, path in checks.items():
        proto = onnx.load(str(path))
        assert proto.ir_version == ex.IR_VERSION and proto.opset_import[0].version == ex.OPSET, label
        worst = 0.0
        for batch in batches:
            got, mask, name = _run(path, [seqs[i] for i in batch], int32="int32" in label)
            assert got.shape[0] == len(batch) and got.dtype == np.float32, label
            for row, i in enumerate(batch):
                if name == "last_hidden_state":
                    value = ex.mean_residues(got[row], len(seqs[i]))
                    diff = np.max(np.abs(value - want_emb[i]))
                    diff = max(diff, abs(ex.head_probability(head, value) - want_p[i]))
                elif name == "embedding":
                    diff = np.max(np.abs(got[row] - want_emb[i]))
                    diff = max(diff, abs(ex.head_probability(head, got[row].astype(np.float64)) - want_p[i]))
                elif name == "logits":
                    p = float(np.exp(got[row, 1]) / np.exp(got[row]).sum())
                    diff = max(abs(got[row, 0]), abs(p - want_p[i]))
                elif name == "probability":
                    diff = abs(float(got[row]) - want_p[i])
                else:
                    assert name == "foo" and got.shape[1] == 3, label
                    diff = 0.0
                worst = max(worst, float(diff))
        assert worst <= TOLERANCE, f"{label}: differs from the reference by {worst:.3e}"
        print(f"  {label:34s} {path.stat().st_size:6d} bytes  max diff vs reference {worst:.2e}")
    verify_int8(contract / "int8_signed_weights.onnx", seqs)
    verify_eight_token_vocabulary(contract / "eight_token_vocabulary.onnx")
    verify_bad_outputs(contract)
    meta = ort.InferenceSession(str(out_dir / "esm2_micro_with_head.onnx")).get_modelmeta()
    embedded = json.loads(meta.custom_metadata_map["esmbench.head"])
    assert embedded == head, "embedded head differs from esm2_micro.head.json"


def verify_eight_token_vocabulary(path: Path) -> None:
    """The fixture loads and runs rows of L, A, G and V, and fails at run time on any other residue."""
    out, _, name = _run(path, ["LAGV", "GG"])
    assert name == "last_hidden_state" and out.shape == (2, 6, 4), path
    try:
        _run(path, ["LAGVS"])
    except Exception as error:  # onnxruntime raises its own Fail type
        assert "out of" in str(error) and "bounds" in str(error), error
    else:
        raise AssertionError(f"{path}: a row with S ran, but it must fail in the Gather")
    print(f"  contract/eight_token_vocabulary.onnx  {path.stat().st_size:6d} bytes  fails at run time past token 7")


def verify_bad_outputs(contract: Path) -> None:
    """The three fixtures with outputs esmbench must refuse give exactly those outputs in ONNX Runtime."""
    rows = ["LAGV", "ACDEFGHIK"]  # 6 and 11 tokens
    out, _, name = _run(contract / "nan_probability.onnx", rows)
    assert name == "probability" and out.shape == (2,) and np.isnan(out).all(), out
    out, _, name = _run(contract / "unbounded_probability.onnx", rows)
    assert name == "probability" and out.tolist() == [6.0, 11.0], out
    out, _, name = _run(contract / "short_sequence_output.onnx", rows)
    assert name == "last_hidden_state" and out.shape == (2, 2, 4), out.shape
    for fixture in ("nan_probability", "unbounded_probability", "short_sequence_output"):
        size = (contract / f"{fixture}.onnx").stat().st_size
        print(f"  contract/{fixture}.onnx  {size:6d} bytes  runs and gives the output esmbench must refuse")


def verify_int8(path: Path, seqs: list[str]) -> None:
    """The int8 fixture exists for its structure: every MatMulInteger takes a signed 8-bit weight initializer."""
    proto = onnx.load(str(path))
    int8 = {t.name for t in proto.graph.initializer if t.data_type == TensorProto.INT8}
    weights = [n.input[1] for n in proto.graph.node if n.op_type == "MatMulInteger"]
    assert weights and all(w in int8 for w in weights), f"{path}: MatMulInteger weights are not all int8"
    out, _, name = _run(path, seqs[:3])
    assert name == "last_hidden_state" and np.isfinite(out).all(), path
    print(f"  contract/int8_signed_weights.onnx  {path.stat().st_size:6d} bytes  {len(weights)} MatMulInteger, signed int8 weights")


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Regenerate tests/fixtures/ deterministically.")
    parser.add_argument("--out-dir", default=str(REPO / "tests" / "fixtures"))
    args = parser.parse_args(argv)
    out_dir = Path(args.out_dir)
    contract = out_dir / "contract"
    contract.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)  # bit-stable float32 reductions from run to run

    model = ex.random_init_model(MODEL_ARCH, MODEL_SEED)
    source = f"random-init:{MODEL_ARCH}:seed={MODEL_SEED}"
    versions = {"esmbench.torch": torch.__version__, "esmbench.transformers": transformers.__version__}

    head = make_head(model)
    head_path = out_dir / "esm2_micro.head.json"
    head_path.write_text(json.dumps(head, indent=1) + "\n", encoding="utf-8")

    print("esm2_micro.onnx")
    ex.export_and_check(model, out_dir / "esm2_micro.onnx", source, tolerance=1e-4, compact=True)
    print("esm2_micro_with_head.onnx")
    ex.export_and_check(model, out_dir / "esm2_micro_with_head.onnx", source, head_path, 1e-4, compact=True)

    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = esm_tokenizer(tmp)
        rows = []
        for seq in reference_sequences():
            input_ids = list(tokenizer(seq)["input_ids"])
            assert input_ids == ex.tokenize(seq), f"EsmTokenizer disagrees with export_onnx.tokenize on {seq}"
            embedding = single_embedding(model, input_ids)
            rows.append({
                "sequence": seq,
                "input_ids": input_ids,
                "embedding": embedding.tolist(),
                "probability": ex.head_probability(head, embedding),
            })
    batched = check_batched(model, [r["sequence"] for r in rows], [np.asarray(r["embedding"]) for r in rows])
    print(f"batched (padded) PyTorch pooling vs single runs: max diff {batched:.2e}")
    layers, hidden, heads, ffn = ex.ARCHS[MODEL_ARCH]
    reference = {
        "model": {
            "file": "esm2_micro.onnx",
            "with_head": "esm2_micro_with_head.onnx",
            "source": source,
            "layers": layers, "hidden": hidden, "heads": heads, "ffn": ffn,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        },
        "head": "esm2_micro.head.json",
        "tolerance_note": (
            "PyTorch float32 forward of each sequence alone (batch 1, no padding); embedding = "
            "mean of last_hidden_state over residue positions 1..=len, in float64; probability = "
            "sigmoid(coef . embedding + intercept) in float64. ONNX Runtime (float32, any batch "
            "size or padding) should match embedding and probability within 1e-5 absolute."
        ),
        "sequences": rows,
    }
    (out_dir / "esm2_micro.reference.json").write_text(json.dumps(reference, indent=1) + "\n", encoding="utf-8")

    encoder = out_dir / "esm2_micro.onnx"
    meta = lambda name: {"esmbench.source": f"contract-fixture:{name} ({source})", **versions}  # noqa: E731
    make_wrong_input_name(encoder, contract / "wrong_input_name.onnx", meta("wrong_input_name"))
    make_int32_ids(encoder, contract / "int32_ids.onnx", meta("int32_ids"))
    for name, output, axes in (
        ("pooled_output", "embedding", {"embedding": {0: "batch"}}),
        ("logits_output", "logits", {"logits": {0: "batch"}}),
        ("probability_output", "probability", {"probability": {0: "batch"}}),
    ):
        ex.export_module(PooledHead(model, head, output), contract / f"{name}.onnx", meta(name), axes, compact=True)
    make_no_known_output(contract / "no_known_output.onnx", meta("no_known_output"))
    make_int8_signed_weights(encoder, contract / "int8_signed_weights.onnx", meta("int8_signed_weights"))
    make_eight_token_vocabulary(contract / "eight_token_vocabulary.onnx", meta("eight_token_vocabulary"))
    make_external_data(encoder, contract / "external_data.onnx", meta("external_data"))
    make_nan_probability(contract / "nan_probability.onnx", meta("nan_probability"))
    make_unbounded_probability(contract / "unbounded_probability.onnx", meta("unbounded_probability"))
    make_short_sequence_output(contract / "short_sequence_output.onnx", meta("short_sequence_output"))

    print("verifying with onnxruntime", ort.__version__)
    verify(out_dir, reference, head)
    total = sum(p.stat().st_size for p in out_dir.rglob("*") if p.is_file())
    print(f"fixtures OK, {total} bytes in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
