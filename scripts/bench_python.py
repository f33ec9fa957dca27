"""The Python side of scripts/bench.sh: the contenders esmbench is compared with, and the fp32 ceiling.

This file owns, for the benchmark:

* ``pytorch``  PyTorch eager (transformers EsmModel, float32, no torch.compile): batches of 32 in
               file order, the same tokens (scripts/export_onnx.py), residue-mean pooling and head;
* ``ort``      a plain onnxruntime Python loop over the same ONNX file, either batches of 32 in
               file order (``--order file``) or length-sorted batches under a token budget
               (``--order sorted --max-tokens N``, esmbench's own batching rule);
* ``bound``    onnxruntime alone: esmbench's batches (length-sorted under its token budget), padded
               before the clock starts, run K at once on one session (esmbench's parallel batches)
               through the graph esmbench runs (its load-time rewrite, made by
               simplify_attention_mask.py); only ``session.run`` and the pooling are timed. No tool built
               on this runtime and graph can score faster, so it bounds what work around the model can win;
* ``profile``  where the time inside the model goes: the ``bound`` run again, on the first ``--rows`` rows,
               with ONNX Runtime's profiler on; its kernel times summed by op type, and the MatMuls'
               achieved GFLOP/s from their shapes;
* ``verify``   that the PyTorch weights are the ONNX model's: last_hidden_state of both on the
               export check sequences, and (with ``--reexport``) the initializers of a fresh
               ``export_onnx.py --random-init`` export against the model's, tensor by tensor;
* ``ceiling``  measured float32 matmul GFLOP/s (torch and numpy) on N threads, and the FLOPs per
               sequence of an architecture, from which the best seq/s the hardware allows follows.

Every command that scores writes ``row,id,label,probability`` (input order) and a JSON file with
``rows``, ``load_seconds`` (imports excluded: those are in the process wall time that bench.sh
measures), ``loop_seconds`` (first batch to last prediction) and settings. The PyTorch model comes
from ``--torch-source``: ``random-init:ARCH:SEED`` or ``checkpoint:NAME_OR_DIR``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402


def _load_head(path: str) -> tuple[np.ndarray, float, float]:
    head = json.loads(Path(path).read_text(encoding="utf-8"))
    coef = np.asarray(head["coef"], dtype=np.float64).reshape(-1)
    intercept = float(np.asarray(head["intercept"], dtype=np.float64).reshape(-1)[0])
    return coef, intercept, float(head.get("threshold", 0.5))


def _head_from_model(path: str) -> str | None:
    # onnxruntime reads the metadata without importing onnx (or torch) into the ORT contender.
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    return session.get_modelmeta().custom_metadata_map.get("esmbench.head")


def _resolve_head(args) -> tuple[np.ndarray, float, float]:
    if args.head:
        return _load_head(args.head)
    text = _head_from_model(args.model) if getattr(args, "model", None) else None
    if text is None:
        raise SystemExit("bench_python: no head (--head, or esmbench.head in the model's metadata)")
    head = json.loads(text)
    coef = np.asarray(head["coef"], dtype=np.float64).reshape(-1)
    intercept = float(np.asarray(head["intercept"], dtype=np.float64).reshape(-1)[0])
    return coef, intercept, float(head.get("threshold", 0.5))


def _probabilities(embeddings: np.ndarray, coef: np.ndarray, intercept: float) -> np.ndarray:
    z = embeddings.astype(np.float64) @ coef + intercept
    return 1.0 / (1.0 + np.exp(-z))


def _write(out: str, ids: list[str], labels: list[str], p: np.ndarray) -> None:
    with open(out, "w", encoding="utf-8") as f:
        f.write("row,id,label,probability\n")
        for i, (rid, label, prob) in enumerate(zip(ids, labels, p)):
            f.write(f"{i},{rid},{label},{float(prob)!r}\n")


def _pool(hidden: np.ndarray, lengths: list[int]) -> np.ndarray:
    # float64 sums over residue positions 1..=len, like esmbench (src/model/pooling.rs).
    return np.stack([hidden[i, 1 : n + 1].astype(np.float64).mean(axis=0) for i, n in enumerate(lengths)])


def torch_model(source: str, attn: str):
    """EsmModel for --torch-source, float32, eval, with the attention implementation asked for."""
    import export_onnx as ex

    kind, _, rest = source.partition(":")
    if kind == "random-init":
        arch, _, seed = rest.rpartition(":")
        model = ex.random_init_model(arch, int(seed.removeprefix("seed=")))
    elif kind == "checkpoint":
        model = ex.load_checkpoint(rest)
    else:
        raise SystemExit(f"bench_python: --torch-source {source}: expected random-init:ARCH:SEED or checkpoint:NAME")
    # random_init_model/load_checkpoint pick eager attention (what the ONNX export traces); a user of
    # from_pretrained gets sdpa by default, the faster PyTorch path, which is the fairer baseline.
    model.config._attn_implementation = attn
    return model.eval()


def cmd_pytorch(args) -> None:
    import torch

    import export_onnx as ex

    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    coef, intercept, _ = _resolve_head(args)
    sequences, labels, ids = ex.read_sequences(args.data)
    started = time.perf_counter()
    dtype = {"float32": torch.float32, "float16": torch.float16}[args.dtype]
    model = torch_model(args.torch_source, args.attn).to(device=args.device, dtype=dtype)
    load_seconds = time.perf_counter() - started
    loop_start = time.perf_counter()
    model_seconds = 0.0
    probabilities = []
    with torch.inference_mode():
        for start in range(0, len(sequences), args.batch):
            chunk = sequences[start : start + args.batch]
            input_ids, attention_mask = ex.pad_batch(chunk)
            in_model = time.perf_counter()
            hidden = model(input_ids=torch.from_numpy(input_ids).to(args.device),
                           attention_mask=torch.from_numpy(attention_mask).to(args.device)
                           ).last_hidden_state.float().cpu().numpy()
            pooled = _pool(hidden, [len(s) for s in chunk])
            model_seconds += time.perf_counter() - in_model
            probabilities.append(_probabilities(pooled, coef, intercept))
    loop_seconds = time.perf_counter() - loop_start
    p = np.concatenate(probabilities)
    _write(args.out, ids, labels, p)
    _dump(args.json, {
        "contender": "pytorch", "rows": len(sequences), "load_seconds": load_seconds,
        "loop_seconds": loop_seconds, "model_seconds": model_seconds, "threads": args.threads, "batch": args.batch,
        "attention": args.attn, "torch": torch.__version__, "torch_source": args.torch_source,
        "device": args.device, "dtype": args.dtype,
    })


def _sorted_batches(lengths: list[int], max_tokens: int) -> list[list[int]]:
    """esmbench's rule: length-sorted rows, a batch grows while rows x (longest + 2) <= max_tokens."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches, current = [], []
    for i in order:
        width = lengths[i] + 2
        if current and (len(current) + 1) * width > max_tokens:
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def ort_session(model: str | bytes, threads: int, level: str = "all", profile_prefix: str | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    if profile_prefix:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    options.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[level]
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def cmd_ort(args) -> None:
    import onnxruntime as ort

    import esm_tokens as ex  # numpy only: this contender must not pay for importing torch

    coef, intercept, _ = _resolve_head(args)
    sequences, labels, ids = ex.read_sequences(args.data)
    started = time.perf_counter()
    session = ort_session(args.model, args.threads, args.level)
    load_seconds = time.perf_counter() - started
    if args.order == "file":
        batches = [list(range(s, min(s + args.batch, len(sequences)))) for s in range(0, len(sequences), args.batch)]
    else:
        batches = _sorted_batches([len(s) for s in sequences], args.max_tokens)
    p = np.empty(len(sequences))
    loop_start = time.perf_counter()
    model_seconds = 0.0
    for batch in batches:
        chunk = [sequences[i] for i in batch]
        input_ids, attention_mask = ex.pad_batch(chunk)
        in_model = time.perf_counter()
        (hidden,) = session.run(["last_hidden_state"], {"input_ids": input_ids, "attention_mask": attention_mask})
        pooled = _pool(hidden, [len(s) for s in chunk])
        model_seconds += time.perf_counter() - in_model
        p[batch] = _probabilities(pooled, coef, intercept)
    loop_seconds = time.perf_counter() - loop_start
    _write(args.out, ids, labels, p)
    _dump(args.json, {
        "contender": f"ort-{args.order}", "rows": len(sequences), "load_seconds": load_seconds,
        "loop_seconds": loop_seconds, "model_seconds": model_seconds, "threads": args.threads, "batches": len(batches),
        "batch": args.batch if args.order == "file" else None,
        "max_tokens": args.max_tokens if args.order == "sorted" else None,
        "graph_optimization_level": args.level, "onnxruntime": ort.__version__,
    })


def _pool_batch(hidden: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """[batch, hidden] float64 residue means in one vectorised pass (positions 1..=len): `_pool`'s numbers
    without its per-row Python loop, which under the GIL would lower the bound with work esmbench does not do.
    The peers keep `_pool`, the loop a user writes."""
    positions = np.arange(hidden.shape[1])
    residues = ((positions >= 1) & (positions <= lengths[:, None])).astype(np.float64)
    return np.einsum("bt,bth->bh", residues, hidden.astype(np.float64)) / lengths[:, None]


def _run_in_parallel(session, items: list[tuple], parallel: int, done=None) -> float:
    """Runs each (input_ids, attention_mask, *rest) item through `session`, `parallel` at once; calls
    done(hidden, *rest) after each. Returns the wall seconds. onnxruntime releases the GIL inside run(),
    so K Python threads keep K batches in flight."""
    import queue
    import threading

    work: queue.SimpleQueue = queue.SimpleQueue()
    for item in items:
        work.put(item)

    def worker() -> None:
        while True:
            try:
                input_ids, attention_mask, *rest = work.get_nowait()
            except queue.Empty:
                return
            (hidden,) = session.run(["last_hidden_state"], {"input_ids": input_ids, "attention_mask": attention_mask})
            if done is not None:
                done(hidden, *rest)

    threads = [threading.Thread(target=worker) for _ in range(parallel)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - started


def cmd_bound(args) -> None:
    import onnxruntime as ort

    import esm_tokens as ex

    coef, intercept, _ = _resolve_head(args)
    sequences, labels, ids = ex.read_sequences(args.data)
    started = time.perf_counter()
    session = ort_session(args.model, max(1, args.threads // args.parallel))
    load_seconds = time.perf_counter() - started
    batches = _sorted_batches([len(s) for s in sequences], args.max_tokens)
    # Everything a tool does before the model (reading, tokenising, padding) happens before the clock starts.
    padded = [(*ex.pad_batch([sequences[i] for i in batch]), batch, np.array([len(sequences[i]) for i in batch]))
              for batch in batches]
    pooled = np.empty((len(sequences), len(coef)))

    def pool(hidden, batch, lengths) -> None:
        pooled[batch] = _pool_batch(hidden, lengths)

    loop_seconds = _run_in_parallel(session, padded, args.parallel, pool)
    _write(args.out, ids, labels, _probabilities(pooled, coef, intercept))
    _dump(args.json, {
        "contender": "ort-bound", "rows": len(sequences), "load_seconds": load_seconds,
        "loop_seconds": loop_seconds, "model_seconds": loop_seconds, "threads": args.threads,
        "parallel_batches": args.parallel, "batches": len(batches), "max_tokens": args.max_tokens,
        "onnxruntime": ort.__version__,
    })


def _matmul_flops(event: dict) -> float:
    """2 x M x N x K of one MatMul / FusedMatMul / Gemm kernel event, from the shapes the profiler records."""
    try:
        shapes = [next(iter(t.values())) for t in event["args"]["input_type_shape"]]
        out = next(iter(event["args"]["output_type_shape"][0].values()))
    except (KeyError, IndexError, StopIteration):
        return 0.0
    if len(shapes) < 1 or not shapes[0] or not out:
        return 0.0
    # The inner dimension is the first input's last (the profiler does not record Gemm's transA; ESM exports
    # have none).
    return 2.0 * float(np.prod(out)) * shapes[0][-1]


def summarize_profile(events: list[dict], rows: int) -> dict:
    """Kernel time by op type (``*_kernel_time`` events of category Node), largest first. Times are summed
    over the threads that ran batches at once, so they are thread time, not wall time."""
    by_op: dict[str, dict] = {}
    for e in events:
        if e.get("cat") != "Node" or not e.get("name", "").endswith("_kernel_time"):
            continue
        op = e.get("args", {}).get("op_name", "?")
        entry = by_op.setdefault(op, {"op_type": op, "microseconds": 0, "kernels": 0, "flops": 0.0})
        entry["microseconds"] += e.get("dur", 0)
        entry["kernels"] += 1
        if op in ("MatMul", "FusedMatMul", "Gemm", "MatMulInteger", "DynamicQuantizeMatMul"):
            entry["flops"] += _matmul_flops(e)
    total = sum(v["microseconds"] for v in by_op.values()) or 1
    ops = sorted(by_op.values(), key=lambda v: -v["microseconds"])
    for v in ops:
        v["share"] = v["microseconds"] / total
        v["thread_ms_per_1k_rows"] = v["microseconds"] / rows  # µs per row = ms per 1,000 rows
        v["gflops"] = v["flops"] / (v["microseconds"] * 1e-6) / 1e9 if v["flops"] and v["microseconds"] else None
    return {"rows": rows, "kernel_microseconds": total, "ops": ops}


def cmd_profile(args) -> None:
    import onnxruntime as ort

    import esm_tokens as ex

    sequences, _, _ = ex.read_sequences(args.data)
    sequences = sequences[: args.rows]
    kernel_threads = max(1, args.threads // args.parallel)
    session = ort_session(args.model, kernel_threads,
                          profile_prefix=str(Path(args.json).with_suffix("")) + "-onnxruntime")
    batches = _sorted_batches([len(s) for s in sequences], args.max_tokens)
    padded = [ex.pad_batch([sequences[i] for i in b]) for b in batches]
    wall = _run_in_parallel(session, padded, args.parallel)
    trace = session.end_profiling()
    summary = summarize_profile(json.loads(Path(trace).read_text()), len(sequences))
    Path(trace).unlink()
    if args.torch_source:
        # The profiler's MatMul FLOPs against the architecture's own count on the same batches: a check that
        # the shapes were read right, so the GFLOP/s column can be trusted.
        _, layers, hidden, ffn = architecture(args.torch_source)
        summary["matmul_flops_expected"] = sum(ids.shape[0] * flops_per_sequence(layers, hidden, ffn, ids.shape[1])
                                               for ids, _ in padded)
        summary["matmul_flops_counted"] = sum(v["flops"] for v in summary["ops"])
    summary.update({"wall_seconds": wall, "batches": len(batches), "max_tokens": args.max_tokens,
                    "threads": args.threads, "parallel_batches": args.parallel,
                    "kernel_threads": kernel_threads, "onnxruntime": ort.__version__,
                    # Kernel time over the time the batch threads were busy: the rest is ONNX Runtime's own
                    # work between kernels (and the profiler's).
                    "kernel_fraction": summary["kernel_microseconds"] * 1e-6 / (wall * min(args.parallel, len(batches)))})
    _dump(args.json, summary)
    for v in summary["ops"][:8]:
        rate = f", {v['gflops']:.0f} GFLOP/s" if v["gflops"] else ""
        print(f"profile: {v['op_type']:<24} {100 * v['share']:5.1f}%  {v['thread_ms_per_1k_rows']:8.1f} thread-ms per 1k rows{rate}")


def _initializer_digests(path: str) -> list[tuple[str, tuple, str]]:
    import hashlib

    import onnx
    from onnx import numpy_helper

    proto = onnx.load(path)
    out = []
    for tensor in proto.graph.initializer:
        array = numpy_helper.to_array(tensor)
        out.append((str(array.dtype), tuple(array.shape), hashlib.sha256(array.tobytes()).hexdigest()))
    return sorted(out)


def cmd_verify(args) -> None:
    """Exit 1 when the PyTorch model is not the ONNX model's weights."""
    import torch

    import export_onnx as ex

    torch.set_num_threads(args.threads)
    model = torch_model(args.torch_source, "eager")
    session = ort_session(args.model, args.threads)
    worst = 0.0
    for sequences in ex.check_batches()[:5]:
        input_ids, attention_mask = ex.pad_batch(sequences)
        (got,) = session.run(["last_hidden_state"], {"input_ids": input_ids, "attention_mask": attention_mask})
        want = ex.torch_last_hidden_state(model, input_ids, attention_mask)
        keep = attention_mask.astype(bool)
        worst = max(worst, float(np.max(np.abs(got[keep] - want[keep]))))
    result = {"max_abs_last_hidden_state": worst, "torch_source": args.torch_source}
    if args.reexport:
        mine, theirs = _initializer_digests(args.reexport), _initializer_digests(args.model)
        result["initializers"] = {"model": len(theirs), "reexport": len(mine), "identical": mine == theirs}
    _dump(args.json, result)
    print(f"verify: max |ONNX - PyTorch| last_hidden_state = {worst:.3e}"
          + (f"; initializers identical: {result['initializers']['identical']}" if args.reexport else ""))
    if worst > 1e-3 or (args.reexport and not result["initializers"]["identical"]):
        print(f"verify: the PyTorch weights ({args.torch_source}) are not the ONNX model's", file=sys.stderr)
        sys.exit(1)


def flops_per_sequence(layers: int, hidden: int, ffn: int, tokens: float) -> float:
    """Multiply-adds x 2 of one sequence of `tokens` tokens (with <cls>/<eos>) through the encoder:
    Q, K, V, O projections (4 h^2 per token), the FFN (2 h f per token), and attention scores plus
    weighted sum (2 L h per token). Embedding lookup, LayerNorm, softmax and GELU are left out: they
    are a few percent and not matmuls."""
    per_token = 4 * hidden * hidden + 2 * hidden * ffn + 2 * tokens * hidden
    return 2.0 * layers * tokens * per_token


def _gflops(fn, flops: float, repeats: int) -> float:
    fn()  # warm up: thread pool start, page faults
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return flops / best / 1e9


def architecture(source: str) -> tuple[str, int, int, int]:
    """(name, layers, hidden, ffn) of a --torch-source, without building the model."""
    import export_onnx as ex

    kind, _, rest = source.partition(":")
    if kind == "random-init":
        arch = rest.rpartition(":")[0]
        layers, hidden, _, ffn = ex.ARCHS[arch]
        return arch, layers, hidden, ffn
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(rest)
    return Path(rest).name, config.num_hidden_layers, config.hidden_size, config.intermediate_size


def _ort_matmul_gflops(a: np.ndarray, b: np.ndarray, threads: int, parallel: int, repeats: int) -> float:
    """ONNX Runtime's own float32 MatMul (the kernels esmbench's model runs) on a one-node graph: one session of
    threads // parallel intra-op threads, `parallel` runs of it at once as esmbench's batches (and the bound's)
    run; GFLOP/s summed over them. torch's and numpy's BLAS may pick narrower kernels than ONNX Runtime on the
    same CPU (MKL runs AVX2 code on AMD), so without this the ceiling can sit under what esmbench reaches."""
    import threading

    from onnx import TensorProto, helper

    (m, k), n = a.shape, b.shape[1]
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["c"])], "matmul",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [m, k]),
         helper.make_tensor_value_info("b", TensorProto.FLOAT, [k, n])],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [m, n])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10  # what onnxruntime 1.31 accepts
    session = ort_session(model.SerializeToString(), max(1, threads // parallel))

    flops = 2.0 * m * k * n
    # Each thread runs its session many times per timing (about 0.1 s at 200 GFLOP/s), so starting the
    # threads does not count against the model's small matmuls.
    runs = max(1, int(2e10 // flops))

    def run_many() -> None:
        for _ in range(runs):
            session.run(None, {"a": a, "b": b})

    def all_at_once() -> None:
        # onnxruntime releases the GIL inside run(), so the runs' kernels overlap.
        workers = [threading.Thread(target=run_many) for _ in range(parallel)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()

    return _gflops(all_at_once, flops * runs * parallel, repeats)


def cmd_ceiling(args) -> None:
    import torch

    import export_onnx as ex

    torch.set_num_threads(args.threads)
    name, layers, hidden, ffn = architecture(args.torch_source)
    sequences, _, _ = ex.read_sequences(args.data)
    mean_tokens = float(np.mean([len(s) + 2 for s in sequences]))
    rng = np.random.default_rng(0)
    results = {}
    # A large square sgemm (the machine's practical peak) and the model's own shapes: a batch of
    # max_tokens tokens through the QKV projection and the FFN up-projection.
    shapes = {
        "square_2048": (2048, 2048, 2048),
        "qkv_proj": (args.max_tokens, hidden, hidden),
        "ffn_up": (args.max_tokens, hidden, ffn),
    }
    for key, (m, k, n) in shapes.items():
        a = rng.standard_normal((m, k), dtype=np.float32)
        b = rng.standard_normal((k, n), dtype=np.float32)
        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        flops = 2.0 * m * k * n
        results[key] = {
            "shape": [m, k, n],
            "torch_gflops": _gflops(lambda: torch.matmul(ta, tb), flops, args.repeats),
            "numpy_gflops": _gflops(lambda: a @ b, flops, args.repeats),
            "onnxruntime_gflops": _ort_matmul_gflops(a, b, args.threads, args.parallel, args.repeats),
        }
    gflops = ("torch_gflops", "numpy_gflops", "onnxruntime_gflops")
    best = max(max(r[key] for key in gflops) for r in results.values())
    per_seq = flops_per_sequence(layers, hidden, ffn, mean_tokens)
    # The model's own shapes give the honest ceiling for this model: each kind of matmul at the speed
    # measured for its shape (attention's small batched matmuls at the best speed: still an upper bound).
    g = {k: max(results[k][key] for key in gflops) * 1e9 for k in ("qkv_proj", "ffn_up")}
    seconds = 2.0 * layers * mean_tokens * (4 * hidden * hidden / g["qkv_proj"] + 2 * hidden * ffn / g["ffn_up"]
                                            + 2 * mean_tokens * hidden / (best * 1e9))
    out = {
        "threads": args.threads, "onnxruntime_parallel": args.parallel, "matmul": results, "best_gflops": best,
        "torch": torch.__version__, "numpy": np.__version__, "architecture": {"name": name, "layers": layers, "hidden": hidden, "ffn": ffn},
        "mean_tokens": mean_tokens, "gflop_per_sequence": per_seq / 1e9,
        "ceiling_seq_per_s": best * 1e9 / per_seq,
        "ceiling_seq_per_s_model_shapes": 1.0 / seconds,
    }
    _dump(args.json, out)
    print(f"ceiling: best sgemm {best:.1f} GFLOP/s on {args.threads} threads, {per_seq / 1e9:.3f} GFLOP/sequence "
          f"-> {out['ceiling_seq_per_s']:.1f} seq/s")


def guess_source(model: str) -> str | None:
    """The --torch-source of a model: its export metadata (random-init only: a checkpoint name may not
    resolve on this machine), else the shared models' file names (esm2_t6_8M_seed0, esm2_tiny_seed0)."""
    import re

    import onnx

    import export_onnx as ex

    proto = onnx.load(model, load_external_data=False)
    meta = {p.key: p.value for p in proto.metadata_props}
    source = meta.get("esmbench.checkpoint", meta.get("esmbench.source", ""))
    if source.startswith("random-init:"):
        return source
    match = re.search(r"(esm2_t\d+_\d+M|esm2_tiny|esm2_micro|esm1v_tiny|esm1v_t33_650M)_seed(\d+)", Path(model).name)
    if match:
        arch = {"esm2_tiny": "tiny", "esm2_micro": "micro"}.get(match.group(1), match.group(1))
        if arch in ex.ARCHS:
            return f"random-init:{arch}:seed={match.group(2)}"
    return None


def cmd_source(args) -> None:
    source = guess_source(args.model)
    if source is None:
        raise SystemExit(f"bench_python: cannot tell which PyTorch weights {args.model} has; pass --torch-source "
                         "random-init:ARCH:seed=N or checkpoint:NAME_OR_DIR")
    print(source)


def cmd_settings(args) -> None:
    """settings.json of one bench section: what the results file says about the setup."""
    import export_onnx as ex

    sequences, _, _ = ex.read_sequences(args.data)
    name, layers, hidden, ffn = architecture(args.torch_source)
    _, _, threshold = _resolve_head(args)
    _dump(args.json, {
        "model_name": Path(args.model).name,
        # Relative to the repository, so a committed results file names no machine's folders.
        "model_path": os.path.relpath(Path(args.model).resolve(), Path(__file__).resolve().parent.parent),
        "head_name": Path(args.head).name if args.head else "model metadata",
        "architecture": f"{name}: {layers} layers, hidden {hidden}, FFN {ffn}",
        "rows": len(sequences), "seed": args.seed,
        "mean_residues": float(np.mean([len(s) for s in sequences])) if sequences else 0.0,
        "threads": args.threads, "max_tokens": args.max_tokens, "torch_source": args.torch_source,
        "threshold": threshold,
    })


def _dump(path: str | None, data: dict) -> None:
    if path:
        Path(path).write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def scoring(p, model_required: bool) -> None:
        p.add_argument("--data", required=True)
        p.add_argument("--model", required=model_required, help="ONNX model (also the head's metadata)")
        p.add_argument("--head", help="head JSON (default: esmbench.head in the model's metadata)")
        p.add_argument("--threads", type=int, required=True)
        p.add_argument("--batch", type=int, default=32)
        p.add_argument("--out", required=True, help="row,id,label,probability CSV")
        p.add_argument("--json", help="timings and settings")

    p = sub.add_parser("pytorch", help="PyTorch eager, batches of --batch in file order")
    scoring(p, model_required=False)
    p.add_argument("--torch-source", required=True)
    p.add_argument("--attn", choices=["sdpa", "eager"], default="sdpa")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--dtype", choices=["float32", "float16"], default="float32",
                   help="weights and compute (float16 is the usual choice on a GPU)")
    p.set_defaults(fn=cmd_pytorch)

    p = sub.add_parser("ort", help="onnxruntime Python loop")
    scoring(p, model_required=True)
    p.add_argument("--order", choices=["file", "sorted"], default="file")
    p.add_argument("--max-tokens", type=int, default=2048)
    p.add_argument("--level", choices=["disable", "basic", "extended", "all"], default="all")
    p.set_defaults(fn=cmd_ort)

    p = sub.add_parser("bound", help="onnxruntime alone on esmbench's batches, padded beforehand")
    scoring(p, model_required=True)
    p.add_argument("--max-tokens", type=int, required=True)
    p.add_argument("--parallel", type=int, required=True, help="batches at once (esmbench's parallel_batches)")
    p.set_defaults(fn=cmd_bound)

    p = sub.add_parser("profile", help="ONNX Runtime's kernel time by op type on esmbench's batches")
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--rows", type=int, default=500, help="profile the first N rows (the trace grows with them)")
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--max-tokens", type=int, required=True)
    p.add_argument("--parallel", type=int, default=1, help="batches at once (esmbench's parallel_batches)")
    p.add_argument("--torch-source", help="the architecture, to check the MatMul FLOPs read from the profile")
    p.add_argument("--json", required=True)
    p.set_defaults(fn=cmd_profile)

    p = sub.add_parser("verify", help="the PyTorch weights are the ONNX model's")
    p.add_argument("--model", required=True)
    p.add_argument("--torch-source", required=True)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--reexport", help="a fresh export of --torch-source whose initializers must equal the model's")
    p.add_argument("--json")
    p.set_defaults(fn=cmd_verify)

    p = sub.add_parser("ceiling", help="measured matmul GFLOP/s and FLOPs per sequence")
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--torch-source", required=True, help="the architecture")
    p.add_argument("--data", required=True, help="for the mean token count")
    p.add_argument("--max-tokens", type=int, default=2048)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--parallel", type=int, default=1,
                   help="ONNX Runtime's MatMul as this many runs at once, the threads split among them (as esmbench ran)")
    p.add_argument("--json")
    p.set_defaults(fn=cmd_ceiling)

    p = sub.add_parser("source", help="print the --torch-source of a model (metadata or shared file name)")
    p.add_argument("--model", required=True)
    p.set_defaults(fn=cmd_source)

    p = sub.add_parser("settings", help="write a bench section's settings.json")
    p.add_argument("--model", required=True)
    p.add_argument("--head")
    p.add_argument("--data", required=True)
    p.add_argument("--torch-source", required=True)
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--max-tokens", type=int, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", required=True)
    p.set_defaults(fn=cmd_settings)

    args = parser.parse_args(argv)
    args.fn(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
