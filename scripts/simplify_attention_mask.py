"""Rewrite an existing ESM ONNX export so every attention layer adds one broadcast key mask.

This file owns that rewrite, for models exported elsewhere (without their PyTorch checkpoint at hand):
transformers' exporter path builds a [batch, 1, queries, keys] additive mask inside every layer with
Expand/And/Where nodes and guards each softmax with Where(IsNaN(p), 0, p). On ONNX Runtime's CPU
provider those elementwise nodes over [batch, heads, queries, keys] cost about 30% of the ESM-2 8M
graph's time and most of its arena. scripts/export_onnx.py traces the cheap form directly; this script
gives an existing file the same form:

- every Softmax(Add(scores, mask)) gets mask = (1 - attention_mask[:, None, None, :]) * float32 min,
  computed once from the graph input;
- every Where(IsNaN(p), 0, p) is replaced by p (esmbench never sends a row with no attended key:
  <cls> and <eos> are always there, so no softmax row is all padding);
- nodes nothing uses any more are removed.

It then runs both graphs with ONNX Runtime on padded batches of several lengths and writes the result
only if last_hidden_state agrees within --tolerance (default 1e-5) at every attended position.

A model whose weights are in external data (a float32 export over 2 GB, such as ESM-1v, writes them to
IN.onnx.data) is rewritten without loading them: OUT.onnx names the same data files, which are linked
(or copied) beside it when OUT is in another folder.

Usage: python scripts/simplify_attention_mask.py IN.onnx OUT.onnx [--tolerance 1e-5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

# ONNX Runtime 1.31 otherwise contacts Microsoft's telemetry collector; an explicit value is kept.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from onnx.external_data_helper import ExternalDataInfo, uses_external_data

MASK = "esmbench_additive_key_mask"


def _producers(graph: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    return {out: node for node in graph.node for out in node.output}


def _has_matmul_ancestor(name: str, producers: dict[str, onnx.NodeProto], seen: set[str]) -> bool:
    stack = [name]
    while stack:
        current = stack.pop()
        if current in seen:
            continue
        seen.add(current)
        node = producers.get(current)
        if node is None:
            continue
        if node.op_type in ("MatMul", "Gemm"):
            return True
        stack.extend(node.input)
    return False


def _mask_nodes(input_name: str) -> list[onnx.NodeProto]:
    """(1 - float(attention_mask)[:, None, None, :]) * float32 min, as graph nodes."""
    minimum = float(np.finfo(np.float32).min)
    consts = [
        helper.make_node("Constant", [], [f"{MASK}/axes"], value=numpy_helper.from_array(np.array([1, 2], np.int64))),
        helper.make_node("Constant", [], [f"{MASK}/one"], value=numpy_helper.from_array(np.array(1.0, np.float32))),
        helper.make_node("Constant", [], [f"{MASK}/min"], value=numpy_helper.from_array(np.array(minimum, np.float32))),
    ]
    return consts + [
        helper.make_node("Cast", [input_name], [f"{MASK}/float"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", [f"{MASK}/float", f"{MASK}/axes"], [f"{MASK}/keys"]),
        helper.make_node("Sub", [f"{MASK}/one", f"{MASK}/keys"], [f"{MASK}/padding"]),
        helper.make_node("Mul", [f"{MASK}/padding", f"{MASK}/min"], [MASK]),
    ]


def external_locations(model: onnx.ModelProto) -> list[str]:
    """The external data files the model's initializers name, in order, once each."""
    found: list[str] = []
    for tensor in model.graph.initializer:
        if uses_external_data(tensor):
            location = ExternalDataInfo(tensor).location
            if location not in found:
                found.append(location)
    return found


def check(model: onnx.ModelProto, folder: Path) -> None:
    """onnx.checker on an in-memory model, whose external data locations it resolves from the working
    directory: run it from the folder they are relative to."""
    here = os.getcwd()
    os.chdir(folder)
    try:
        onnx.checker.check_model(model)
    finally:
        os.chdir(here)


def simplify(model: onnx.ModelProto, folder: Path = Path(".")) -> tuple[onnx.ModelProto, int, int]:
    """Returns (model, softmax masks replaced, NaN guards removed); raises ValueError if the graph
    does not have the expected attention shape. `folder` is where its external data files are."""
    graph = model.graph
    inputs = {i.name for i in graph.input}
    outputs = {o.name for o in graph.output}
    if not {"input_ids", "attention_mask"} <= inputs or "last_hidden_state" not in outputs:
        raise ValueError(f"inputs {sorted(inputs)} and outputs {sorted(outputs)} are not esmbench's encoder contract "
                         "(input_ids, attention_mask -> last_hidden_state)")
    producers = _producers(graph)
    masks = 0
    for softmax in [n for n in graph.node if n.op_type == "Softmax"]:
        add = producers.get(softmax.input[0])
        if add is None or add.op_type != "Add":
            raise ValueError(f"softmax {softmax.name!r} does not take Add(scores, mask)")
        sides = [_has_matmul_ancestor(i, producers, set()) for i in add.input]
        if sides.count(True) != 1:
            raise ValueError(f"cannot tell scores from mask at {add.name!r}")
        add.input[sides.index(False)] = MASK
        masks += 1
    if masks == 0:
        raise ValueError("no Softmax(Add(scores, mask)) found: not an ESM attention graph")

    guards = 0
    replace: dict[str, str] = {}
    for node in graph.node:
        if node.op_type != "Where":
            continue
        condition = producers.get(node.input[0])
        if condition is not None and condition.op_type == "IsNaN" and condition.input[0] == node.input[2]:
            replace[node.output[0]] = node.input[2]
            guards += 1
    for node in graph.node:
        for k, name in enumerate(node.input):
            if name in replace:
                node.input[k] = replace[name]
    for output in graph.output:
        if output.name in replace:
            raise ValueError("a NaN guard feeds a graph output directly")

    new_nodes = _mask_nodes("attention_mask")
    kept = list(new_nodes) + list(graph.node)
    # Drop what no longer feeds an output (repeat until stable).
    while True:
        used = {o.name for o in graph.output} | {i for n in kept for i in n.input}
        alive = [n for n in kept if any(o in used for o in n.output)]
        if len(alive) == len(kept):
            break
        kept = alive
    del graph.node[:]
    graph.node.extend(kept)
    live_inputs = {i for n in kept for i in n.input}
    initializers = [t for t in graph.initializer if t.name in live_inputs]
    del graph.initializer[:]
    graph.initializer.extend(initializers)
    check(model, folder)
    return model, masks, guards


def _batches() -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(0)
    out = []
    for lengths in ([1], [10, 3], [122, 97, 40], [300, 5, 130, 64]):
        width = max(lengths) + 2
        ids = np.ones((len(lengths), width), np.int64)
        mask = np.zeros((len(lengths), width), np.int64)
        for row, n in enumerate(lengths):
            ids[row, 0], ids[row, 1 : n + 1], ids[row, n + 1] = 0, rng.integers(4, 24, n), 2
            mask[row, : n + 2] = 1
        out.append((ids, mask))
    return out


def largest_difference(before: bytes, after: bytes, folder: Path = Path(".")) -> float:
    """Largest |before - after| of last_hidden_state at attended positions; `folder` is where the models'
    external data files are."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.add_session_config_entry("session.model_external_initializers_file_folder_path", str(folder))
    sessions = [ort.InferenceSession(m, options, providers=["CPUExecutionProvider"]) for m in (before, after)]
    worst = 0.0
    for ids, mask in _batches():
        a, b = (s.run(["last_hidden_state"], {"input_ids": ids, "attention_mask": mask})[0] for s in sessions)
        keep = mask.astype(bool)
        worst = max(worst, float(np.max(np.abs(a[keep].astype(np.float64) - b[keep]))))
    return worst


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, help="ONNX model to read (esmbench's contract, float32)")
    parser.add_argument("out", type=Path, help="where to write the rewritten model")
    parser.add_argument("--tolerance", type=float, default=1e-5,
                        help="largest |before - after| of last_hidden_state accepted (default 1e-5)")
    args = parser.parse_args(argv)
    # The weights stay where they are: a model over protobuf's 2 GB cannot be serialized with them.
    original = onnx.load(str(args.model), load_external_data=False)
    folder = args.model.resolve().parent
    locations = external_locations(original)
    before = original.SerializeToString()
    try:
        model, masks, guards = simplify(original, folder)
    except ValueError as err:
        print(f"error: {args.model}: {err}; nothing written", file=sys.stderr)
        return 1
    after = model.SerializeToString()
    diff = largest_difference(before, after, folder)
    print(f"{args.model}: {masks} attention masks now one broadcast key mask, {guards} NaN guards removed; "
          f"nodes {len(onnx.load_from_string(before).graph.node)} -> {len(model.graph.node)}")
    print(f"rewrite check: largest |before - after| = {diff:.3e} (tolerance {args.tolerance:.0e})")
    if not diff <= args.tolerance:
        print(f"error: the rewritten graph differs by {diff:.3e}; nothing written", file=sys.stderr)
        return 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for location in locations:
        source, target = folder / location, args.out.resolve().parent / location
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            if not os.path.samefile(source, target):
                print(f"error: {target} exists and is not {source}, whose weights {args.out.name} reads; "
                      "nothing written (write OUT to another folder)", file=sys.stderr)
                return 1
            continue
        try:
            os.link(source, target)
            how = "linked"
        except OSError:
            shutil.copyfile(source, target)
            how = "copied"
        print(f"{how} {source} to {target}")
    args.out.write_bytes(after)
    print(f"wrote {args.out}" + (f" (its weights in {', '.join(locations)})" if locations else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
