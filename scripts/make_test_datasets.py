"""Regenerate the small synthetic datasets committed under test_datasets/.

This file owns test_datasets/demo_antibodies.csv (96 rows, columns id,sequence,label)
and the synthetic VH-domain generator behind it (`vh_domain`, also used by
scripts/make_fixtures.py to scale the fixture head). Sequences are built like human
VH domains: germline-like framework segments (FR1..FR4) around random CDR stretches
of varied length, 110-130 residues in all. The label is 1 for the 38 rows (about 40%)
with the highest noisy count of R/K/W in the CDRs, so it is learnable but not trivial.

Output is deterministic for a given --seed (default 0):
    python scripts/make_test_datasets.py [--out-dir test_datasets] [--seed 0]
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

FR1 = [
    "EVQLVESGGGLVQPGGSLRLSCAAS",
    "EVQLLESGGGLVQPGGSLRLSCAAS",
    "QVQLVQSGAEVKKPGASVKVSCKAS",
    "QVQLQESGPGLVKPSETLSLTCTVS",
    "QVQLVESGGGVVQPGRSLRLSCAAS",
]
FR2 = ["MSWVRQAPGKGLEWVS", "MHWVRQAPGQGLEWMG", "WSWIRQPPGKGLEWIG", "MHWVRQAPGKGLEWVA"]
FR3 = [
    "YYADSVKGRFTISRDNSKNTLYLQMNSLRAEDTAVYYC",
    "NYAQKFQGRVTMTRDTSTSTVYMELSSLRSEDTAVYYC",
    "NYNPSLKSRVTISVDTSKNQFSLKLSSVTAADTAVYYC",
]
FR4 = ["WGQGTLVTVSS", "WGQGTMVTVSS", "WGQGTTVTVSS"]

# CDR residue alphabet with rough antibody-CDR frequencies (Y/S/G/D-rich).
CDR_AA = list("ACDEFGHIKLMNPQRSTVWY")
CDR_P = np.array([6, 1, 8, 3, 3, 12, 2, 3, 3, 4, 2, 5, 3, 2, 4, 12, 6, 4, 3, 14], dtype=float)
CDR_P /= CDR_P.sum()
CHARGED = np.array([aa in "RKW" for aa in CDR_AA])

N_ROWS = 96
N_POSITIVE = 38


def _cdr(rng: np.random.Generator, length: int, rkw_boost: float) -> str:
    """Random CDR stretch; `rkw_boost` > 1 makes R/K/W more frequent in this sequence."""
    p = np.where(CHARGED, CDR_P * rkw_boost, CDR_P)
    p /= p.sum()
    return "".join(rng.choice(CDR_AA, size=length, p=p))


def vh_domain(rng: np.random.Generator) -> tuple[str, int]:
    """One synthetic VH-like sequence (110-130 residues) and its CDR R/K/W count."""
    rkw_boost = float(rng.lognormal(0.0, 0.7))
    while True:
        cdr1 = "G" + _cdr(rng, int(rng.integers(6, 9)), rkw_boost)
        cdr2 = _cdr(rng, int(rng.integers(7, 10)), rkw_boost)
        cdr3 = "AR" + _cdr(rng, int(rng.integers(5, 19)), rkw_boost) + rng.choice(["DY", "DV", "FDY", "MDV"])
        seq = (
            rng.choice(FR1) + cdr1 + rng.choice(FR2) + cdr2 + rng.choice(FR3) + cdr3 + rng.choice(FR4)
        )
        if 110 <= len(seq) <= 130:
            rkw = sum(cdr.count(a) for cdr in (cdr1, cdr2, cdr3) for a in "RKW") - 1  # minus the AR 'R'
            return seq, rkw


def demo_rows(seed: int = 0) -> list[tuple[str, str, int]]:
    """(id, sequence, label) rows of demo_antibodies.csv."""
    rng = np.random.default_rng(seed)
    seqs, scores = [], []
    for _ in range(N_ROWS):
        seq, rkw = vh_domain(rng)
        seqs.append(seq)
        scores.append(rkw + rng.normal(0.0, 1.5))
    positive = set(np.argsort(-np.asarray(scores), kind="stable")[:N_POSITIVE].tolist())
    return [(f"demo-{i + 1:03d}", s, int(i in positive)) for i, s in enumerate(seqs)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Regenerate test_datasets/ (synthetic, deterministic).")
    parser.add_argument("--out-dir", default=str(Path(__file__).resolve().parent.parent / "test_datasets"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "demo_antibodies.csv"
    rows = demo_rows(args.seed)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["id", "sequence", "label"])
        writer.writerows(rows)
    lengths = [len(s) for _, s, _ in rows]
    print(f"wrote {path}: {len(rows)} rows, {sum(r[2] for r in rows)} positive, "
          f"lengths {min(lengths)}-{max(lengths)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
