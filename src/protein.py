"""Protein structures as arrays: reading deposited models (mmCIF/PDB, gzipped or not).

The array form (:class:`Protein`) is what training, simulation and evaluation use:
``atom_positions [N_res, 37, 3]`` in the atom37 layout of :mod:`.residue_constants`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import gemmi
import numpy as np

from . import residue_constants as rc
from .errors import ModelAngeloError


@dataclass
class Protein:
    """Protein residues of a structure (first model; waters, hydrogens, altlocs removed)."""

    atom_positions: np.ndarray  # [N, 37, 3] float32, Angstrom
    atom_mask: np.ndarray  # [N, 37] bool
    aatype: np.ndarray  # [N] int64, 0..19, 20 = unknown
    residue_number: np.ndarray  # [N] int64, author residue numbers
    chain_index: np.ndarray  # [N] int64 into chain_names
    chain_names: list[str]  # author chain IDs
    b_factors: np.ndarray  # [N, 37] float32
    # Non-protein heavy atoms kept for simulation (ligands, nucleic acids, ions).
    other_positions: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), np.float32))
    other_elements: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.aatype.shape[0])

    @property
    def ca(self) -> np.ndarray:  # [N, 3]
        return self.atom_positions[:, rc.CA_IDX]

    def chain_sequences(self) -> dict[str, str]:
        """One-letter sequence of the modelled residues of each chain."""
        return {
            name: rc.sequence_from_aatype(self.aatype[self.chain_index == i])
            for i, name in enumerate(self.chain_names)
        }

    def select(self, mask: np.ndarray) -> Protein:
        """A new Protein holding the residues where ``mask`` [N] is true."""
        mask = np.asarray(mask, bool)
        used = np.unique(self.chain_index[mask])
        remap = np.full(len(self.chain_names), -1, np.int64)
        remap[used] = np.arange(len(used))
        return Protein(
            atom_positions=self.atom_positions[mask],
            atom_mask=self.atom_mask[mask],
            aatype=self.aatype[mask],
            residue_number=self.residue_number[mask],
            chain_index=remap[self.chain_index[mask]],
            chain_names=[self.chain_names[i] for i in used],
            b_factors=self.b_factors[mask],
            other_positions=self.other_positions,
            other_elements=list(self.other_elements),
        )


def _residue_letter(res: gemmi.Residue) -> str | None:
    name = res.name.upper()
    if name in rc.RESTYPE_3TO1:
        return rc.RESTYPE_3TO1[name]
    if name in rc.MODIFIED_3TO1:
        return rc.MODIFIED_3TO1[name]
    info = gemmi.find_tabulated_residue(name)
    if info is not None and info.is_amino_acid():
        return "X"
    return None


def load_protein(path: str | Path) -> Protein:
    """Read the protein residues of the first model of an mmCIF/PDB file (``.gz`` allowed).

    Residues without a CA atom are skipped. Non-protein heavy atoms (ligands, nucleic
    acids, ions; not water) are returned in ``other_positions`` / ``other_elements``.
    """
    path = Path(path)
    try:
        st = gemmi.read_structure(str(path), merge_chain_parts=True)
    except (RuntimeError, ValueError, OSError) as exc:
        raise ModelAngeloError(f"cannot read structure {path}: {exc}") from exc
    st.setup_entities()
    st.remove_hydrogens()
    st.remove_waters()
    if len(st) == 0:
        raise ModelAngeloError(f"structure {path} has no models")
    model = st[0]

    positions, masks, aatypes, numbers, chain_idx, bfs = [], [], [], [], [], []
    chain_names: list[str] = []
    other_pos: list[list[float]] = []
    other_el: list[str] = []
    for chain in model:
        ci = None
        for res in chain:
            letter = _residue_letter(res)
            if letter is None:
                for atom in res:
                    if atom.altloc in ("\0", "A"):
                        other_pos.append([atom.pos.x, atom.pos.y, atom.pos.z])
                        other_el.append(atom.element.name)
                continue
            pos = np.zeros((rc.NUM_ATOM_TYPES, 3), np.float32)
            mask = np.zeros(rc.NUM_ATOM_TYPES, bool)
            bf = np.zeros(rc.NUM_ATOM_TYPES, np.float32)
            for atom in res:
                if atom.altloc not in ("\0", "A"):
                    continue
                name = "SD" if (res.name == "MSE" and atom.name == "SE") else atom.name
                j = rc.ATOM_ORDER.get(name)
                if j is None or mask[j]:
                    continue
                pos[j] = (atom.pos.x, atom.pos.y, atom.pos.z)
                mask[j] = True
                bf[j] = atom.b_iso
            if not mask[rc.CA_IDX]:
                continue
            if ci is None:
                ci = len(chain_names)
                chain_names.append(chain.name)
            positions.append(pos)
            masks.append(mask)
            aatypes.append(rc.RESTYPE_ORDER.get(letter, rc.UNK_INDEX))
            numbers.append(res.seqid.num)
            chain_idx.append(ci)
            bfs.append(bf)
    if not positions:
        raise ModelAngeloError(f"structure {path} holds no protein residues")
    return Protein(
        atom_positions=np.stack(positions),
        atom_mask=np.stack(masks),
        aatype=np.asarray(aatypes, np.int64),
        residue_number=np.asarray(numbers, np.int64),
        chain_index=np.asarray(chain_idx, np.int64),
        chain_names=chain_names,
        b_factors=np.stack(bfs),
        other_positions=np.asarray(other_pos, np.float32).reshape(-1, 3),
        other_elements=other_el,
    )
