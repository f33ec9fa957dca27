"""Write a Harvey-size synthetic nanobody (VHH) CSV for esmbench scale tests.

This file owns the synthetic stand-in for the full Harvey et al. 2022 set (141,021
nanobodies), which is not available here. Rows are id,sequence,label: VHH-like
sequences (llama germline-like frameworks with the VHH hallmark FR2 "WFRQAPGKEREFVA"
and friends, random CDRs, CDR3 3-20 residues; 110-130 residues in all) and a 0/1 label,
roughly balanced, that depends noisily on CDR hydrophobicity and R/K content.

The output is written streaming, in chunks, in a few seconds, and is deterministic for a
given --seed. It is NOT committed to the repository (it is about 19 MB at full size):
regenerate it where needed, e.g.

    python scripts/make_synthetic_harvey.py --rows 141021 --seed 0 --out harvey_synthetic.csv
    python scripts/make_synthetic_harvey.py --rows 50 --seed 1 --out small.csv   # for tests
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

FR1 = ["QVQLQESGGGLVQAGGSLRLSCAAS", "EVQLVESGGGLVQPGGSLRLSCAAS", "QVQLVESGGGLVQAGGSLRLSCAAS",
       "QVKLEESGGGLVQAGGSLRLSCAAS"]
FR2 = ["MGWFRQAPGKEREFVA", "MGWYRQAPGKQRELVA", "MAWFRQAPGKEREGVA", "IGWFRQAPGKEREGVS"]
FR3 = ["YYADSVKGRFTISRDNAKNTVYLQMNSLKPEDTAVYYC", "NYADSVKGRFTISRDNAKNTVYLQMNSLKPEDTAVYYC",
       "YYADSVKGRFTISRDNAKNTLYLQMNSLKPEDTAVYYC", "SYADSVKGRFTISRDNAKNTVYLQMNSLRPEDTAVYYC"]
FR4 = ["WGQGTQVTVSS", "YWGQGTQVTVSS", "WGKGTQVTVSS"]

AA = np.array(list("ACDEFGHIKLMNPQRSTVWY"))
AA_P = np.array([6, 1, 7, 4, 3, 11, 2, 4, 3, 4, 2, 5, 4, 2, 5, 10, 7, 5, 3, 12], dtype=float)
AA_P /= AA_P.sum()
# Per-residue contribution to the label score: hydrophobic and R/K up, D/E down.
SCORE = {"R": 1.0, "K": 0.8, "W": 0.8, "F": 0.5, "I": 0.5, "L": 0.5, "V": 0.3, "Y": 0.2,
         "D": -0.9, "E": -0.9}
AA_SCORE = np.array([SCORE.get(a, 0.0) for a in AA])

CHUNK = 20_000


def _chunk(rng: np.random.Generator, n: int) -> tuple[list[str], np.ndarray]:
    """n sequences (each 110-130 residues) and their 0/1 labels."""
    l1 = rng.integers(6, 10, n)
    l2 = rng.integers(6, 10, n)
    l3 = rng.integers(3, 21, n)
    fr = [rng.integers(0, len(x), n) for x in (FR1, FR2, FR3, FR4)]
    width = 9 + 9 + 20
    cdr = rng.choice(len(AA), size=(n, width), p=AA_P)
    letters = AA[cdr]
    scores = AA_SCORE[cdr]
    seqs, raw = [], np.empty(n)
    for i in range(n):
        head = FR1[fr[0][i]] + "G" + "".join(letters[i, : l1[i]]) + FR2[fr[1][i]]
        head += "".join(letters[i, 9 : 9 + l2[i]]) + FR3[fr[2][i]] + "AA"
        tail = "DY" + FR4[fr[3][i]]
        l3[i] = min(l3[i], 130 - len(head) - len(tail))  # keep every sequence within 110-130
        seqs.append(head + "".join(letters[i, 18 : 18 + l3[i]]) + tail)
        raw[i] = (scores[i, : l1[i]].sum() + scores[i, 9 : 9 + l2[i]].sum()
                  + scores[i, 18 : 18 + l3[i]].sum())
    p = 1.0 / (1.0 + np.exp(-(raw - 2.6) / 1.5))
    labels = (rng.random(n) < p).astype(int)
    return seqs, labels


def write(out: str, rows: int, seed: int) -> int:
    """Stream `rows` rows to `out`; returns the number of positive labels."""
    rng = np.random.default_rng(seed)
    digits = max(6, len(str(rows)))
    positives = 0
    with open(out, "w", encoding="utf-8", newline="") as f:
        f.write("id,sequence,label\n")
        done = 0
        while done < rows:
            n = min(CHUNK, rows - done)
            seqs, labels = _chunk(rng, n)
            f.write("".join(f"hsyn-{done + i + 1:0{digits}d},{s},{y}\n"
                            for i, (s, y) in enumerate(zip(seqs, labels))))
            positives += int(labels.sum())
            done += n
    return positives


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write a synthetic Harvey-like nanobody CSV.")
    parser.add_argument("--rows", type=int, default=141_021, help="number of rows (default 141021)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="output CSV path (not committed)")
    args = parser.parse_args(argv)
    if args.rows < 0:
        parser.error("--rows must be >= 0")
    start = time.perf_counter()
    positives = write(args.out, args.rows, args.seed)
    print(f"wrote {args.out}: {args.rows} rows, {positives} positive, "
          f"{time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
