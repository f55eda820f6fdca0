"""The committed splits: disjoint by sequence, _b/_u together, dev-map look-alikes apart.

Similarity is re-checked here independently of the phmmer search that made the splits:
a Smith-Waterman local alignment (identity scoring, linear gaps) in numpy, run on the
cross-split sequence pairs that share the most 3-mers.
"""

import json
from pathlib import Path

import numpy as np
import pytest

from chimerax.modelangelo.errors import ModelAngeloError
from chimerax.modelangelo.training.splits import (
    SPLITS,
    alignment_identity,
    assign,
    clusters,
    is_similar,
    load_split,
    partner_key,
)

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
MANIFEST = json.loads((DATA / "structures_manifest.json").read_text())
BY_NAME = {e["name"]: e for e in MANIFEST}
MATCH, MISMATCH, GAP = 4, -1, 4
# A 30%-identical stretch scores ~0.5 per column; shuffled (unrelated) sequences of
# 100-1,000 residues reach 16-35, so 50 is significant.
MIN_SCORE = 50


def local_identity(a: str, b: str) -> tuple[float, int, int]:
    """``(identity, aligned columns, score)`` of the best local alignment of a and b."""
    x = np.frombuffer(a.encode(), np.uint8)
    y = np.frombuffer(b.encode(), np.uint8)
    n, m = len(x), len(y)
    sub = np.where(x[:, None] == y[None, :], MATCH, MISMATCH).astype(np.int32)  # [n, m]
    h = np.zeros((n + 1, m + 1), np.int32)
    ramp = GAP * np.arange(m + 1, dtype=np.int32)
    for i in range(1, n + 1):
        t = np.zeros(m + 1, np.int32)
        t[1:] = np.maximum(h[i - 1, :-1] + sub[i - 1], h[i - 1, 1:] - GAP)
        t = np.maximum(t, 0)
        h[i] = np.maximum.accumulate(t + ramp) - ramp  # left gaps, linear penalty
    i, j = np.unravel_index(int(h.argmax()), h.shape)
    score = int(h[i, j])
    ident = cols = 0
    while i > 0 and j > 0 and h[i, j] > 0:
        if h[i, j] == h[i - 1, j - 1] + sub[i - 1, j - 1]:
            cols += 1
            ident += bool(x[i - 1] == y[j - 1])
            i, j = i - 1, j - 1
        elif h[i, j] == h[i - 1, j] - GAP:
            i -= 1
        else:
            j -= 1
    return ident / max(cols, 1), cols, score


def similar(a: str, b: str) -> bool:
    ident, cols, score = local_identity(a, b)
    need = min(30, max(1, min(len(a), len(b)) // 2))
    return score >= MIN_SCORE and cols >= need and ident >= 0.30


def kmers(s: str, k: int = 3) -> set[str]:
    return {s[i : i + k] for i in range(len(s) - k + 1)}


def test_reference_aligner_can_tell():
    rng = np.random.default_rng(0)
    aa = np.array(list("ACDEFGHIKLMNPQRSTVWY"))
    a = "".join(rng.choice(aa, 200))
    b = list(a)
    for k in rng.choice(200, 120, replace=False):  # 40% of positions kept
        b[k] = rng.choice(aa)
    b = "".join(b)
    c = "".join(rng.choice(aa, 200))
    assert similar(a, a) and similar(a, b)
    assert not similar(a, c)
    assert local_identity(a, a)[:2] == (1.0, 200)


def test_splits_partition_the_manifest():
    lists = {name: load_split(name) for name in SPLITS}
    all_names = [n for v in lists.values() for n in v]
    assert len(all_names) == len(set(all_names)) == len(MANIFEST)
    assert set(all_names) == set(BY_NAME)
    n = len(MANIFEST) - len(lists["dev_similar"])
    assert 0.80 * n <= len(lists["train"]) <= 0.90 * n
    assert 0.05 * n <= len(lists["val"]) <= 0.10 * n
    assert 0.05 * n <= len(lists["test"]) <= 0.10 * n
    with pytest.raises(ModelAngeloError):
        load_split("everything")


def test_partners_together_and_dev_similar_apart():
    where = {n: s for s in SPLITS for n in load_split(s)}
    by_key: dict[str, set[str]] = {}
    for name, split in where.items():
        by_key.setdefault(partner_key(name), set()).add(split)
    assert all(len(v) == 1 for v in by_key.values())
    assert sum(name.endswith("_u") for name in where) > 100  # the keys do pair things up
    flagged = {e["name"] for e in MANIFEST if e["similar_to_dev_maps"]}
    assert flagged and flagged <= set(load_split("dev_similar"))
    for split in ("train", "val", "test"):
        assert not flagged & set(load_split(split))


def test_no_similar_chains_across_splits():
    seqs = {s: {c for n in load_split(s) for c in BY_NAME[n]["chains"].values()}
            for s in ("train", "val", "test")}
    assert not seqs["train"] & seqs["val"] and not seqs["train"] & seqs["test"]
    assert not seqs["val"] & seqs["test"]
    train = sorted(seqs["train"])
    train_k = [kmers(s) for s in train]
    checked = 0
    for held_out, others in (("val", train), ("test", train),
                             ("val", sorted(seqs["test"]))):
        others_k = train_k if others is train else [kmers(s) for s in others]
        for q in sorted(seqs[held_out]):
            qk = kmers(q)
            shared = np.array([len(qk & ok) / max(1, min(len(qk), len(ok))) for ok in others_k])
            for t in np.argsort(-shared)[:2]:  # the two most k-mer-similar partners
                assert not similar(q, others[t]), (held_out, q[:30], others[t][:30])
                checked += 1
    assert checked > 150


def test_assignment_rules_on_a_toy_manifest():
    toy = [
        {"name": "db55_1AAA_b", "chains": {"A": "AAAA"}, "similar_to_dev_maps": []},
        {"name": "db55_1AAA_u", "chains": {"A": "CCCC"}, "similar_to_dev_maps": ["x"]},
        {"name": "dips_1", "chains": {"A": "CCCC", "B": "DDDD"}, "similar_to_dev_maps": []},
        {"name": "dips_2", "chains": {"A": "EEEE"}, "similar_to_dev_maps": []},
        {"name": "dips_3", "chains": {"A": "FFFF"}, "similar_to_dev_maps": []},
    ]
    seqs = sorted({s for e in toy for s in e["chains"].values()})
    pair = (seqs.index("EEEE"), seqs.index("FFFF"))  # pretend E and F are homologous
    comps = clusters(toy, {pair}, seqs)
    assert ["dips_2", "dips_3"] in comps
    assert ["db55_1AAA_b", "db55_1AAA_u", "dips_1"] in comps  # partner + shared chain
    out = assign(toy, comps)
    assert out["dev_similar"] == ["db55_1AAA_b", "db55_1AAA_u"]  # whole pair, flag on one
    where = {n: s for s, v in out.items() for n in v}
    assert where["dips_2"] == where["dips_3"]


def test_identity_rule():
    assert alignment_identity("ACDE-F", "ACDQGF") == (4, 5)
    assert is_similar(9, 30, 300, 300) and not is_similar(8, 30, 300, 300)
    assert not is_similar(20, 20, 300, 300)  # too short an alignment
    assert is_similar(10, 20, 40, 300)  # ... unless the shorter sequence is short
