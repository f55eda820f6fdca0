"""Amino-acid and atom naming constants shared by every stage.

Residue order follows AlphaFold2 (``ARNDCQEGHILKMFPSTWYV``, index 20 = unknown) and
atoms use the 37-slot "atom37" layout, so positions of any residue fit one array
``[N_res, 37, 3]``. Geometry (ideal bond lengths, angles, rigid groups) lives in
:mod:`.geometry`, not here.
"""

from __future__ import annotations

RESTYPES: str = "ARNDCQEGHILKMFPSTWYV"
NUM_RESTYPES: int = len(RESTYPES)  # 20
UNK_INDEX: int = NUM_RESTYPES  # 20

RESTYPE_1TO3: dict[str, str] = {
    "A": "ALA", "R": "ARG", "N": "ASN", "D": "ASP", "C": "CYS", "Q": "GLN", "E": "GLU",
    "G": "GLY", "H": "HIS", "I": "ILE", "L": "LEU", "K": "LYS", "M": "MET", "F": "PHE",
    "P": "PRO", "S": "SER", "T": "THR", "W": "TRP", "Y": "TYR", "V": "VAL",
}
RESTYPE_3TO1: dict[str, str] = {v: k for k, v in RESTYPE_1TO3.items()}
# Common modified residues read as their parent amino acid.
MODIFIED_3TO1: dict[str, str] = {
    "MSE": "M", "SEP": "S", "TPO": "T", "PTR": "Y", "HYP": "P", "MLY": "K", "CSO": "C",
    "CME": "C", "KCX": "K", "LLP": "K", "SEC": "C", "PYL": "K", "CSD": "C", "M3L": "K",
}
RESTYPE_ORDER: dict[str, int] = {aa: i for i, aa in enumerate(RESTYPES)}

ATOM_TYPES: list[str] = [
    "N", "CA", "C", "CB", "O", "CG", "CG1", "CG2", "OG", "OG1", "SG", "CD", "CD1", "CD2",
    "ND1", "ND2", "OD1", "OD2", "SD", "CE", "CE1", "CE2", "CE3", "NE", "NE1", "NE2", "OE1",
    "OE2", "CH2", "NH1", "NH2", "OH", "CZ", "CZ2", "CZ3", "NZ", "OXT",
]
ATOM_ORDER: dict[str, int] = {name: i for i, name in enumerate(ATOM_TYPES)}
NUM_ATOM_TYPES: int = len(ATOM_TYPES)  # 37
N_IDX, CA_IDX, C_IDX, CB_IDX, O_IDX = 0, 1, 2, 3, 4

# Heavy atoms of each residue type in PDB naming (OXT excluded).
RESIDUE_ATOMS: dict[str, list[str]] = {
    "ALA": ["N", "CA", "C", "O", "CB"],
    "ARG": ["N", "CA", "C", "O", "CB", "CG", "CD", "NE", "CZ", "NH1", "NH2"],
    "ASN": ["N", "CA", "C", "O", "CB", "CG", "OD1", "ND2"],
    "ASP": ["N", "CA", "C", "O", "CB", "CG", "OD1", "OD2"],
    "CYS": ["N", "CA", "C", "O", "CB", "SG"],
    "GLN": ["N", "CA", "C", "O", "CB", "CG", "CD", "OE1", "NE2"],
    "GLU": ["N", "CA", "C", "O", "CB", "CG", "CD", "OE1", "OE2"],
    "GLY": ["N", "CA", "C", "O"],
    "HIS": ["N", "CA", "C", "O", "CB", "CG", "ND1", "CD2", "CE1", "NE2"],
    "ILE": ["N", "CA", "C", "O", "CB", "CG1", "CG2", "CD1"],
    "LEU": ["N", "CA", "C", "O", "CB", "CG", "CD1", "CD2"],
    "LYS": ["N", "CA", "C", "O", "CB", "CG", "CD", "CE", "NZ"],
    "MET": ["N", "CA", "C", "O", "CB", "CG", "SD", "CE"],
    "PHE": ["N", "CA", "C", "O", "CB", "CG", "CD1", "CD2", "CE1", "CE2", "CZ"],
    "PRO": ["N", "CA", "C", "O", "CB", "CG", "CD"],
    "SER": ["N", "CA", "C", "O", "CB", "OG"],
    "THR": ["N", "CA", "C", "O", "CB", "OG1", "CG2"],
    "TRP": ["N", "CA", "C", "O", "CB", "CG", "CD1", "CD2", "NE1", "CE2", "CE3", "CZ2", "CZ3", "CH2"],
    "TYR": ["N", "CA", "C", "O", "CB", "CG", "CD1", "CD2", "CE1", "CE2", "CZ", "OH"],
    "VAL": ["N", "CA", "C", "O", "CB", "CG1", "CG2"],
}


def aatype_from_sequence(sequence: str) -> list[int]:
    """Indices into :data:`RESTYPES` for a one-letter sequence; anything else is UNK (20)."""
    return [RESTYPE_ORDER.get(ch, UNK_INDEX) for ch in sequence.upper()]


def sequence_from_aatype(aatype) -> str:
    """One-letter sequence for residue-type indices (UNK written as ``X``)."""
    return "".join(RESTYPES[i] if 0 <= i < NUM_RESTYPES else "X" for i in aatype)
