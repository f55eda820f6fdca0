"""Train / validation / test splits of the training structures, by sequence.

The committed lists live in ``training/splits/<name>.txt`` (one structure name a line,
``#`` comments) for ``name`` in :data:`SPLITS`; read them with :func:`load_split`.

How they were made (``python -m chimerax.modelangelo.training.splits --write``, about a
minute on one core):

1. Every unique chain sequence of ``structures_manifest.json`` is searched against all
   others with pyhmmer's ``phmmer`` (E-value <= 1e-3). Two sequences are *similar* when a
   local alignment has >= 30% identical columns (:data:`MIN_IDENTITY`) over at least
   :data:`MIN_ALIGNED` columns, or over half of the shorter sequence when that is shorter.
2. Entries are linked when they hold similar (or identical) chains, and a ``_b`` entry is
   linked to its ``_u`` partner (same PDB code); the connected components are the
   clusters. No two entries in different clusters share a similar chain.
3. Entries flagged ``similar_to_dev_maps`` (and their ``_b``/``_u`` partners) go to
   ``dev_similar`` and nowhere else: keep them out of training whenever results on the
   real maps are reported.
4. The other clusters are ordered by a hash of their names and dealt to ``val`` and
   ``test`` (small clusters only, up to :data:`HELD_OUT_FRACTION` of the entries each);
   everything else is ``train``. Deterministic.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
from collections import defaultdict
from pathlib import Path

from ..errors import ModelAngeloError

SPLITS = ("train", "val", "test", "dev_similar")
SPLIT_DIR = Path(__file__).resolve().parent / "splits"
MIN_IDENTITY = 0.30
MIN_ALIGNED = 30  # alignment columns (or half the shorter sequence, if less)
HELD_OUT_FRACTION = 0.075  # of the (non dev_similar) entries, for each of val and test
MAX_HELD_OUT_CLUSTER = 12  # entries; larger clusters always go to train
EVALUE = 1e-3


def load_split(name: str) -> list[str]:
    """Structure names of one split (``train``, ``val``, ``test`` or ``dev_similar``)."""
    if name not in SPLITS:
        raise ModelAngeloError(f"unknown split {name!r}; choose one of {', '.join(SPLITS)}")
    path = SPLIT_DIR / f"{name}.txt"
    lines = path.read_text().splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]


def partner_key(name: str) -> str:
    """``db55_1A2K_b`` and ``db55_1A2K_u`` share the key ``db55_1A2K``; others are their own."""
    m = re.fullmatch(r"(db55_[0-9A-Za-z]{4})_[bu]", name)
    return m.group(1) if m else name


def alignment_identity(query_aln: str, target_aln: str) -> tuple[int, int]:
    """``(identical columns, aligned columns)`` of two aligned strings (gaps '-' or '.')."""
    ident = cols = 0
    for a, b in zip(query_aln, target_aln):
        if a in "-." or b in "-.":
            continue
        cols += 1
        ident += a.upper() == b.upper()
    return ident, cols


def is_similar(ident: int, cols: int, len_a: int, len_b: int) -> bool:
    """The similarity rule of step 1 (see module docstring)."""
    need = min(MIN_ALIGNED, max(1, min(len_a, len_b) // 2))
    return cols >= need and ident >= MIN_IDENTITY * cols


def similar_pairs(seqs: list[str], cpus: int = 1) -> set[tuple[int, int]]:
    """Index pairs ``(i < j)`` of similar sequences (all-vs-all phmmer)."""
    import pyhmmer

    alphabet = pyhmmer.easel.Alphabet.amino()
    digital = [
        pyhmmer.easel.TextSequence(name=str(i).encode(), sequence=s).digitize(alphabet)
        for i, s in enumerate(seqs)
    ]
    block = pyhmmer.easel.DigitalSequenceBlock(alphabet, digital)
    pairs: set[tuple[int, int]] = set()
    for q, hits in enumerate(pyhmmer.hmmer.phmmer(block, block, cpus=cpus, E=EVALUE)):
        for hit in hits:
            t = int(hit.name.decode() if isinstance(hit.name, bytes) else hit.name)
            if t == q or not hit.included:
                continue
            for dom in hit.domains:
                aln = dom.alignment
                ident, cols = alignment_identity(aln.hmm_sequence, aln.target_sequence)
                if is_similar(ident, cols, len(seqs[q]), len(seqs[t])):
                    pairs.add((min(q, t), max(q, t)))
                    break
    return pairs


def _find(parent: dict, x):
    while parent[x] != x:
        parent[x] = parent[parent[x]]
        x = parent[x]
    return x


def clusters(manifest: list[dict], pairs: set[tuple[int, int]], seqs: list[str]
             ) -> list[list[str]]:
    """Connected components of entries (shared similar chains, _b/_u partners)."""
    seq_index = {s: i for i, s in enumerate(seqs)}
    parent = {e["name"]: e["name"] for e in manifest}

    def union(a: str, b: str) -> None:
        ra, rb = _find(parent, a), _find(parent, b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)

    holders: dict[int, list[str]] = defaultdict(list)
    by_key: dict[str, list[str]] = defaultdict(list)
    for e in manifest:
        for s in e["chains"].values():
            holders[seq_index[s]].append(e["name"])
        by_key[partner_key(e["name"])].append(e["name"])
    for names in list(holders.values()) + list(by_key.values()):
        for other in names[1:]:
            union(names[0], other)
    for i, j in pairs:
        if holders[i] and holders[j]:
            union(holders[i][0], holders[j][0])
    comps: dict[str, list[str]] = defaultdict(list)
    for e in manifest:
        comps[_find(parent, e["name"])].append(e["name"])
    return sorted((sorted(c) for c in comps.values()), key=lambda c: c[0])


def _hash(names: list[str]) -> str:
    return hashlib.sha1("\n".join(names).encode()).hexdigest()


def assign(manifest: list[dict], comps: list[list[str]]) -> dict[str, list[str]]:
    """Clusters -> splits (steps 3 and 4 of the module docstring)."""
    flagged_keys = {partner_key(e["name"]) for e in manifest if e.get("similar_to_dev_maps")}
    out: dict[str, list[str]] = {name: [] for name in SPLITS}
    rest: list[list[str]] = []
    for comp in comps:
        dev = [n for n in comp if partner_key(n) in flagged_keys]
        out["dev_similar"] += dev
        left = [n for n in comp if partner_key(n) not in flagged_keys]
        if left:
            rest.append(left)
    total = sum(len(c) for c in rest)
    target = HELD_OUT_FRACTION * total
    for comp in sorted(rest, key=_hash):
        if len(comp) <= MAX_HELD_OUT_CLUSTER and len(out["val"]) + len(comp) <= target + 1:
            out["val"] += comp
        elif len(comp) <= MAX_HELD_OUT_CLUSTER and len(out["test"]) + len(comp) <= target + 1:
            out["test"] += comp
        else:
            out["train"] += comp
    return {k: sorted(v) for k, v in out.items()}


def build_splits(manifest_path: str | Path, cpus: int = 1
                 ) -> tuple[dict[str, list[str]], list[list[str]], set[tuple[int, int]], list[str]]:
    """``(splits, clusters, similar index pairs, unique sequences)`` from the manifest."""
    manifest = json.loads(Path(manifest_path).read_text())
    seqs = sorted({s for e in manifest for s in e["chains"].values()})
    pairs = similar_pairs(seqs, cpus=cpus)
    comps = clusters(manifest, pairs, seqs)
    return assign(manifest, comps), comps, pairs, seqs


def write_splits(splits: dict[str, list[str]], comps: list[list[str]], n_pairs: int,
                 out_dir: Path = SPLIT_DIR) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    header = (
        "# Made by `python -m chimerax.modelangelo.training.splits --write` (see splits.py):\n"
        f"# phmmer all-vs-all, similar = >= {MIN_IDENTITY:.0%} identity over >= {MIN_ALIGNED}"
        " aligned columns;\n"
        f"# {len(comps)} clusters of entries, {n_pairs} similar sequence pairs.\n"
    )
    for name, names in splits.items():
        (out_dir / f"{name}.txt").write_text(header + "".join(n + "\n" for n in names))
    # Clusters, one a line, for tests and inspection.
    (out_dir / "clusters.txt").write_text(header + "".join(" ".join(c) + "\n" for c in comps))


def main(argv: list[str] | None = None) -> int:
    from .simulate import default_data_root

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--manifest", type=Path,
                   default=default_data_root() / "structures_manifest.json")
    p.add_argument("--write", action="store_true", help="write the lists to training/splits/")
    p.add_argument("--cpus", type=int, default=1)
    args = p.parse_args(argv)
    splits, comps, pairs, _ = build_splits(args.manifest, cpus=args.cpus)
    for name in SPLITS:
        print(f"{name}: {len(splits[name])} entries")
    sizes = sorted((len(c) for c in comps), reverse=True)
    print(f"{len(comps)} clusters; largest {sizes[:10]}; {len(pairs)} similar pairs")
    if args.write:
        write_splits(splits, comps, len(pairs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
