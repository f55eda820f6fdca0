"""Writing built models as mmCIF (gemmi), readable by ChimeraX, Coot and Phenix.

What :func:`write_mmcif` writes:

* ``_atom_site``: atom37 atoms with PDB atom names and elements, B-factors from
  ``Protein.b_factors`` (build_models puts the residue confidence 0-100 there), occupancy 1;
  ``auth_seq_id`` = :attr:`Protein.residue_number`; ``auth_asym_id`` = ``label_asym_id`` =
  the chain name. Each chain's last residue gets its terminal ``OXT`` (placed in the
  CA-C-O plane, 1.25 A from C, opposite the bisector of C->CA and C->O) unless it already
  has one.
* ``_entity``, ``_entity_poly``, ``_entity_poly_seq``, ``_struct_asym``: a chain assigned to
  a FASTA record (``chain_entity[i]`` = index into ``entities``) points at that record's
  entity (homo-oligomers share one), with ``label_seq_id`` = residue number = position in
  the FASTA sequence; such a chain must match its sequence (numbers in range, residue
  types equal; ``X`` in a sequence is ``UNK``), else ``ValueError``. Every other chain
  gets its own entity whose sequence is the chain's built residues (``label_seq_id``
  1..n). Only entities with chains are written; the FASTA name is ``pdbx_description``.
* ``_cell`` (1 1 1 90 90 90) and ``_symmetry`` (P 1), as cryo-EM models have them;
  ``_chem_comp`` with the peptide-linking types.
* ``_software`` (name and version from ``metadata["software"]``) and a
  ``_modelangelo_run`` key/value loop holding every ``metadata`` entry (nested dicts
  flattened with dots, lists as JSON), plus the UTC date, so a model records the map,
  the thresholds and the weights it was built with.

Chain names beyond 62 chains: :func:`chain_id` gives A..Z, a..z, 0..9, then two-character
IDs (AA, AB, ...), which mmCIF allows (PDB format does not, so none is written).
"""

from __future__ import annotations

import datetime
import json
import os
from collections.abc import Sequence
from pathlib import Path

import gemmi
import numpy as np

from . import residue_constants as rc
from .errors import OutputError
from .protein import Protein

CHAIN_ALPHABET = ("ABCDEFGHIJKLMNOPQRSTUVWXYZ" "abcdefghijklmnopqrstuvwxyz" "0123456789")
OXT_IDX = rc.ATOM_ORDER["OXT"]
_C_OXT_BOND = 1.25


def chain_id(index: int) -> str:
    """Chain name of the ``index``-th chain (0-based): A..Z, a..z, 0..9, AA, AB, ..."""
    if index < 0:
        raise ValueError("chain index must be >= 0")
    k = len(CHAIN_ALPHABET)
    width, first = 1, 0
    while index >= first + k**width:
        first += k**width
        width += 1
    n = index - first
    chars = []
    for _ in range(width):
        n, r = divmod(n, k)
        chars.append(CHAIN_ALPHABET[r])
    return "".join(reversed(chars))


def _residue_name(aatype: int) -> str:
    return rc.RESTYPE_1TO3[rc.RESTYPES[aatype]] if 0 <= aatype < rc.NUM_RESTYPES else "UNK"


def _letter_name(letter: str) -> str:
    return rc.RESTYPE_1TO3.get(letter.upper(), "UNK")


def oxt_position(ca: np.ndarray, c: np.ndarray, o: np.ndarray) -> np.ndarray:
    """Terminal carboxylate OXT from CA, C and O (trigonal, in their plane)."""
    u = (ca - c) / max(np.linalg.norm(ca - c), 1e-6)
    v = (o - c) / max(np.linalg.norm(o - c), 1e-6)
    d = -(u + v)
    norm = np.linalg.norm(d)
    if norm < 1e-6:  # degenerate input: put it opposite CA
        d, norm = -u, 1.0
    return c + _C_OXT_BOND * d / norm


def _flatten(prefix: str, value, out: list[tuple[str, str]]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    elif isinstance(value, (list, tuple)):
        out.append((prefix, json.dumps(list(value), default=str)))
    elif isinstance(value, (np.generic,)):
        out.append((prefix, str(value.item())))
    else:
        out.append((prefix, str(value)))


def _split_software(text: str) -> tuple[str, str | None]:
    parts = text.rsplit(" ", 1)
    if len(parts) == 2 and parts[1][:1].isdigit():
        return parts[0], parts[1]
    return text, None


def _check_chain_matches(name: str, seq: str, numbers: np.ndarray, aatype: np.ndarray,
                         entity_name: str) -> None:
    if len(numbers) and (numbers.min() < 1 or numbers.max() > len(seq)):
        raise ValueError(f"chain {name}: residue numbers outside 1..{len(seq)} of "
                         f"entity '{entity_name}'")
    if np.any(np.diff(numbers) <= 0):
        raise ValueError(f"chain {name}: residue numbers must increase along the chain")
    for num, aa in zip(numbers.tolist(), aatype.tolist()):
        if _residue_name(aa) != _letter_name(seq[num - 1]):
            raise ValueError(f"chain {name}: residue {num} is {_residue_name(aa)} but "
                             f"entity '{entity_name}' has {seq[num - 1]}")


def build_structure(
    protein: Protein,
    *,
    entities: Sequence | None = None,
    chain_entity: Sequence[int | None] | None = None,
    name: str = "model",
) -> tuple[gemmi.Structure, list[tuple[str, str, list[str]]]]:
    """The gemmi structure of ``protein`` and its entities ``(id, description, residues)``."""
    n_chains = len(protein.chain_names)
    if chain_entity is None:
        chain_entity = [None] * n_chains
    if len(chain_entity) != n_chains:
        raise ValueError("chain_entity needs one entry per chain")
    if any(e is not None for e in chain_entity) and not entities:
        raise ValueError("chain_entity refers to entities but none were given")
    if len(set(protein.chain_names)) != n_chains:
        raise ValueError("chain names must be unique")

    st = gemmi.Structure()
    st.name = name
    st.cell = gemmi.UnitCell(1.0, 1.0, 1.0, 90.0, 90.0, 90.0)
    st.spacegroup_hm = "P 1"
    model = gemmi.Model(1)

    # Entities: used FASTA records first (in FASTA order), then one per unassigned chain.
    used = sorted({e for e in chain_entity if e is not None})
    entity_id = {e: str(i + 1) for i, e in enumerate(used)}
    entity_rows: list[tuple[str, str, list[str]]] = [
        (entity_id[e], entities[e].name, [_letter_name(ch) for ch in entities[e].sequence])
        for e in used]
    subchains: dict[str, list[str]] = {entity_id[e]: [] for e in used}

    for ci, cname in enumerate(protein.chain_names):
        rows = np.flatnonzero(protein.chain_index == ci)
        if len(rows) == 0:
            continue
        numbers = protein.residue_number[rows]
        ent = chain_entity[ci]
        if ent is not None:
            _check_chain_matches(cname, entities[ent].sequence.upper(), numbers,
                                 protein.aatype[rows], entities[ent].name)
            eid = entity_id[ent]
            label_seq = numbers.tolist()
        else:
            eid = str(len(entity_rows) + 1)
            entity_rows.append((eid, f"built chain {cname}",
                                [_residue_name(int(a)) for a in protein.aatype[rows]]))
            subchains[eid] = []
            label_seq = list(range(1, len(rows) + 1))
            if np.any(np.diff(numbers) <= 0):
                raise ValueError(f"chain {cname}: residue numbers must increase")
        subchains[eid].append(cname)
        chain = gemmi.Chain(cname)
        for k, (row, lseq) in enumerate(zip(rows.tolist(), label_seq)):
            res = gemmi.Residue()
            res.name = _residue_name(int(protein.aatype[row]))
            res.seqid = gemmi.SeqId(int(protein.residue_number[row]), " ")
            res.label_seq = int(lseq)
            res.subchain = cname
            res.entity_type = gemmi.EntityType.Polymer
            pos = protein.atom_positions[row].astype(np.float64)
            mask = protein.atom_mask[row].astype(bool).copy()
            bf = float(protein.b_factors[row][mask].max()) if mask.any() else 0.0
            if (k == len(rows) - 1 and not mask[OXT_IDX]
                    and mask[[rc.CA_IDX, rc.C_IDX, rc.O_IDX]].all()):
                pos[OXT_IDX] = oxt_position(pos[rc.CA_IDX], pos[rc.C_IDX], pos[rc.O_IDX])
                mask[OXT_IDX] = True
            for j in np.flatnonzero(mask):
                atom = gemmi.Atom()
                atom.name = rc.ATOM_TYPES[j]
                atom.element = gemmi.Element(rc.ATOM_TYPES[j][0])
                atom.pos = gemmi.Position(*np.round(pos[j], 3))
                atom.occ = 1.0
                b = float(protein.b_factors[row, j]) if protein.atom_mask[row, j] else bf
                atom.b_iso = round(b, 2)
                res.add_atom(atom)
            chain.add_residue(res)
        model.add_chain(chain)
    st.add_model(model)

    for eid, _desc, residues in entity_rows:
        ent = gemmi.Entity(eid)
        ent.entity_type = gemmi.EntityType.Polymer
        ent.polymer_type = gemmi.PolymerType.PeptideL
        ent.full_sequence = residues
        ent.subchains = subchains[eid]
        st.entities.append(ent)
    return st, entity_rows


def _document(st: gemmi.Structure, entity_rows, metadata: dict) -> gemmi.cif.Document:
    doc = st.make_mmcif_document()
    block = doc.sole_block()
    block.set_mmcif_category("_entity.", {
        "id": [e[0] for e in entity_rows],
        "type": ["polymer"] * len(entity_rows),
        "src_method": ["man"] * len(entity_rows),
        "pdbx_description": [e[1] for e in entity_rows],
    })
    seq_tab = block.find_mmcif_category("_entity_poly_seq.")
    if seq_tab:
        col = seq_tab.find_column("hetero")
        for i in range(len(col)):
            col[i] = "n"
    comps = sorted({r for e in entity_rows for r in e[2]})
    block.set_mmcif_category("_chem_comp.", {
        "id": comps,
        "type": ["peptide linking" if c == "GLY" else "L-peptide linking" for c in comps],
        "mon_nstd_flag": ["yes" if c != "UNK" else "no" for c in comps],
    })
    meta = dict(metadata or {})
    meta.setdefault("date", datetime.datetime.now(datetime.timezone.utc)
                    .strftime("%Y-%m-%dT%H:%M:%SZ"))
    software, version = _split_software(str(meta.get("software", "ChimeraX-ModelAngelo")))
    block.set_mmcif_category("_software.", {
        "pdbx_ordinal": ["1"],
        "name": [software],
        "version": [version],
        "classification": ["model building"],
        "description": ["automated model building in cryo-EM maps (ModelAngelo method)"],
    })
    pairs: list[tuple[str, str]] = []
    _flatten("", meta, pairs)
    block.set_mmcif_category("_modelangelo_run.", {
        "key": [k for k, _ in pairs] or ["none"],
        "value": [v if v != "" else None for _, v in pairs] or [None],
    })
    return doc


def write_mmcif(
    protein: Protein,
    path: str | Path,
    *,
    entities: Sequence | None = None,
    chain_entity: Sequence[int | None] | None = None,
    metadata: dict | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``protein`` as mmCIF (see the module docstring); returns the path.

    ``entities``: FASTA records (``.name``, ``.sequence``); ``chain_entity``: per chain of
    ``protein``, the index of its record or None. Refuses (``OutputError``) to replace an
    existing file unless ``overwrite``; writes to a temporary file first.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputError(f"{path} already exists; pass overwrite to replace it")
    if path.exists() and path.is_dir():
        raise OutputError(f"{path} is a folder")
    st, entity_rows = build_structure(protein, entities=entities, chain_entity=chain_entity,
                                      name=path.stem.split(".")[0] or "model")
    doc = _document(st, entity_rows, metadata or {})
    tmp = path.with_name(path.name + ".tmp")
    try:
        doc.write_file(str(tmp))
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"cannot write {path}: {exc}") from exc
    return path
