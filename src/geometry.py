"""Rigid frames, ideal residue geometry and torsions <-> atoms (torch, differentiable).

Conventions
-----------
* A rigid frame is a pair ``(rot [..., 3, 3], trans [..., 3])`` mapping local to global
  coordinates: ``x_global = rot @ x_local + trans``. The columns of ``rot`` are the local
  axes expressed in global coordinates.
* A residue's backbone frame follows AlphaFold2's Algorithm 21: origin at CA, x axis
  towards C, N in the xy plane on the +y side, z = x cross y.
* Torsions are AlphaFold2's seven angles per residue, in this order:
  ``omega, phi, psi, chi1, chi2, chi3, chi4`` (:data:`TORSION_NAMES`), stored as
  ``(sin, cos)``. omega and phi need the previous residue; psi is measured through this
  residue's carbonyl oxygen: ``psi = dihedral(N, CA, C, O) - 180 deg``, which equals
  ``dihedral(N, CA, C, N_next)`` for a planar peptide and needs no neighbour.
* Dihedral signs follow IUPAC (clockwise looking along the central bond is positive).

All rotation arithmetic is written with elementwise products and sums rather than
``matmul``, so that under bf16 autocast coordinates stay in the dtype of the inputs
(fp32 positions stay fp32: bf16 has ~0.5 A precision at 100 A).

Ideal geometry
--------------
Bond lengths and angles are Engh & Huber (1991, Acta Cryst A47:392) values. Each
heavy atom is described by internal coordinates (three parent atoms, bond length, bond
angle, dihedral); the Cartesian positions of every rigid group are derived from them
here at import time (NeRF placement), not typed in. Where a dihedral offset between
two atoms on the same centre follows from the bond angles (a tetrahedral branch such as
VAL CG2, or CB itself), it is computed from those angles (:func:`_branch_dihedral`);
the sign of each branch encodes the stereochemistry (L-amino acids, IUPAC naming of
CG1/CG2, OG1/CG2, CD1/CD2). Means measured on the development structures
(``/work/shared/data/structures``, ~20,000 residues) agree with these values to within
~0.01 A and ~1 deg (branch offsets: VAL +122.4, ILE -122.3, THR -120.7, LEU +122.0,
C-N-CA-CB -122.0 deg measured; derived: +123.0, -122.7, -121.2, +122.7, -122.6).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch

from . import residue_constants as rc

# ----------------------------------------------------------------------------------
# Rigid frames
# ----------------------------------------------------------------------------------


def rot_vec(rot: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``rot @ v``: rot [..., 3, 3], v [..., 3] (broadcast) -> [..., 3]."""
    return (rot * v[..., None, :]).sum(-1)


def rot_t_vec(rot: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``rot^T @ v``: rot [..., 3, 3], v [..., 3] (broadcast) -> [..., 3]."""
    return (rot * v[..., :, None]).sum(-2)


def rot_mul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` for [..., 3, 3] rotations (broadcast)."""
    return (a[..., :, :, None] * b[..., None, :, :]).sum(-2)


def apply_frame(rot: torch.Tensor, trans: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Local -> global: rot [..., 3, 3], trans [..., 3], points [..., 3] -> [..., 3]."""
    return rot_vec(rot, points) + trans


def invert_apply_frame(rot: torch.Tensor, trans: torch.Tensor,
                       points: torch.Tensor) -> torch.Tensor:
    """Global -> local: ``rot^T (points - trans)``; shapes as :func:`apply_frame`."""
    return rot_t_vec(rot, points - trans)


def compose_frames(rot1: torch.Tensor, trans1: torch.Tensor, rot2: torch.Tensor,
                   trans2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Frame ``1 o 2`` (apply 2 first): ``(rot1 rot2, rot1 trans2 + trans1)``."""
    return rot_mul(rot1, rot2), rot_vec(rot1, trans2) + trans1


def invert_frame(rot: torch.Tensor, trans: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse frame: ``(rot^T, -rot^T trans)``."""
    rot_inv = rot.transpose(-1, -2)
    return rot_inv, -rot_vec(rot_inv, trans)


def frames_from_backbone(n: torch.Tensor, ca: torch.Tensor, c: torch.Tensor,
                         eps: float = 1e-8) -> tuple[torch.Tensor, torch.Tensor]:
    """Backbone frames by Gram-Schmidt (AF2 Algorithm 21): n, ca, c [..., 3].

    Returns ``(rot [..., 3, 3], trans [..., 3])`` with trans = CA, x towards C and the
    N atom in the xy plane (y > 0).
    """
    v1 = c - ca  # [..., 3]
    v2 = n - ca  # [..., 3]
    e1 = v1 / torch.sqrt((v1 * v1).sum(-1, keepdim=True) + eps)
    u2 = v2 - e1 * (e1 * v2).sum(-1, keepdim=True)
    e2 = u2 / torch.sqrt((u2 * u2).sum(-1, keepdim=True) + eps)
    e3 = torch.linalg.cross(e1, e2, dim=-1)
    rot = torch.stack([e1, e2, e3], dim=-1)  # [..., 3, 3], columns = axes
    return rot, ca


def random_rotations(n: int, *, generator: torch.Generator | None = None,
                     device: torch.device | str | None = None,
                     dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``n`` uniformly distributed rotation matrices [n, 3, 3] (normalised Gaussian quaternions)."""
    q = torch.randn(n, 4, generator=generator, device=device, dtype=dtype)  # [n, 4]
    q = q / q.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return quaternion_to_rotation(q)


def quaternion_to_rotation(q: torch.Tensor) -> torch.Tensor:
    """Unit quaternions (w, x, y, z) [..., 4] -> rotation matrices [..., 3, 3]."""
    w, x, y, z = q.unbind(-1)
    rows = [
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ]
    return torch.stack([torch.stack(r, dim=-1) for r in rows], dim=-2)


def rotation_x(sin: torch.Tensor, cos: torch.Tensor) -> torch.Tensor:
    """Rotation about the local x axis by the angle with (sin, cos): [...] -> [..., 3, 3]."""
    one, zero = torch.ones_like(sin), torch.zeros_like(sin)
    rows = [[one, zero, zero], [zero, cos, -sin], [zero, sin, cos]]
    return torch.stack([torch.stack(r, dim=-1) for r in rows], dim=-2)


def dihedral_sincos(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, d: torch.Tensor,
                    eps: float = 1e-8) -> torch.Tensor:
    """Dihedral a-b-c-d as (sin, cos) [..., 2]; inputs [..., 3]. No atan2 (smooth gradients)."""
    b1 = c - b
    b1 = b1 / torch.sqrt((b1 * b1).sum(-1, keepdim=True) + eps)
    v = (a - b) - b1 * ((a - b) * b1).sum(-1, keepdim=True)  # a's component normal to b1
    w = (d - c) - b1 * ((d - c) * b1).sum(-1, keepdim=True)  # d's component normal to b1
    x = (v * w).sum(-1)
    y = (torch.linalg.cross(b1, v, dim=-1) * w).sum(-1)
    norm = torch.sqrt(x * x + y * y + eps)
    return torch.stack([y / norm, x / norm], dim=-1)


def is_rotation(rot: torch.Tensor, atol: float = 1e-4) -> bool:
    """True when every [..., 3, 3] matrix is orthonormal with determinant +1."""
    eye = torch.eye(3, dtype=rot.dtype, device=rot.device)
    ortho = (rot_mul(rot.transpose(-1, -2), rot) - eye).abs().amax() <= atol
    det = (torch.linalg.det(rot.double()) - 1).abs().amax() <= atol
    return bool(ortho and det)


# ----------------------------------------------------------------------------------
# Ideal geometry: constants (Engh & Huber 1991)
# ----------------------------------------------------------------------------------

TORSION_NAMES = ("omega", "phi", "psi", "chi1", "chi2", "chi3", "chi4")
NUM_TORSIONS = 7
# Rigid groups of a residue: 0 backbone (N, CA, C, CB), 1 psi (O), 2..5 chi1..chi4.
NUM_GROUPS = 6
GROUP_TORSION = (None, 2, 3, 4, 5, 6)  # torsion index rotating each group
GROUP_PARENT = (None, 0, 0, 2, 3, 4)

# Backbone (Engh & Huber 1991; trans peptide).
N_CA_BOND = 1.458
CA_C_BOND = 1.525
C_O_BOND = 1.231
C_N_BOND = 1.329  # peptide bond
N_CA_C_ANGLE = 111.2
CA_C_O_ANGLE = 120.8
CA_C_N_ANGLE = 116.2
C_N_CA_ANGLE = 121.7

# Residue-independent local backbone positions (in the backbone frame).
IDEAL_N_LOCAL = (N_CA_BOND * math.cos(math.radians(N_CA_C_ANGLE)),
                 N_CA_BOND * math.sin(math.radians(N_CA_C_ANGLE)), 0.0)
IDEAL_CA_LOCAL = (0.0, 0.0, 0.0)
IDEAL_C_LOCAL = (CA_C_BOND, 0.0, 0.0)


def _branch_dihedral(angle_sibling: float, angle_self: float, angle_between: float,
                     sign: int) -> float:
    """Dihedral offset (deg) of a branch atom Y from its sibling S around the bond B->X.

    X is the centre bearing S and Y; B is X's parent. ``angle_sibling`` = B-X-S,
    ``angle_self`` = B-X-Y, ``angle_between`` = S-X-Y. ``sign`` (+1/-1) picks the
    stereoisomer: dihedral(A, B, X, Y) = dihedral(A, B, X, S) + sign * result.
    """
    a, b, g = (math.radians(v) for v in (angle_sibling, angle_self, angle_between))
    cos_d = (math.cos(g) - math.cos(a) * math.cos(b)) / (math.sin(a) * math.sin(b))
    return sign * math.degrees(math.acos(max(-1.0, min(1.0, cos_d))))


# CB: (CA-CB bond, N-CA-CB angle, C-CA-CB angle). L-amino acids: the CB dihedral
# C-N-CA-CB is negative (about -122 deg).
_CB_DEFAULT = (1.530, 110.5, 110.1)  # CH1E-CH2E (most residues)
_CB_BETA_BRANCHED = (1.540, 111.5, 109.1)  # CH1E-CH1E (ILE, THR, VAL)
CB_GEOMETRY: dict[str, tuple[float, float, float]] = {
    "ALA": (1.521, 110.4, 110.5),  # CH1E-CH3E
    "ILE": _CB_BETA_BRANCHED, "THR": _CB_BETA_BRANCHED, "VAL": _CB_BETA_BRANCHED,
    "PRO": (1.530, 103.0, 111.7),  # ring-constrained N-CA-CB
}


def _chi(k: int, offset: float = 0.0) -> tuple[str, int, float]:
    """Dihedral = chi_k + offset (deg)."""
    return ("chi", k, offset)


def _fixed(value: float) -> tuple[str, int, float]:
    """Dihedral fixed at ``value`` (deg) by the chemistry (planar rings and groups)."""
    return ("fixed", -1, value)


# Side-chain internal coordinates per residue type, in build order:
# (atom, (A, B, C) parents, bond C-atom (A), angle B-C-atom (deg), dihedral A-B-C-atom).
# The parents A, B, C of the atom defining chi_k are that chi's first three atoms.
SIDECHAIN_ICS: dict[str, list[tuple[str, tuple[str, str, str], float, float, tuple]]] = {
    "ALA": [],
    "GLY": [],
    "ARG": [
        ("CG", ("N", "CA", "CB"), 1.520, 114.1, _chi(1)),
        ("CD", ("CA", "CB", "CG"), 1.520, 111.3, _chi(2)),
        ("NE", ("CB", "CG", "CD"), 1.460, 112.0, _chi(3)),
        ("CZ", ("CG", "CD", "NE"), 1.329, 124.2, _chi(4)),
        ("NH1", ("CD", "NE", "CZ"), 1.326, 120.0, _fixed(0.0)),
        ("NH2", ("CD", "NE", "CZ"), 1.326, 120.0, _fixed(180.0)),
    ],
    "ASN": [
        ("CG", ("N", "CA", "CB"), 1.516, 112.6, _chi(1)),
        ("OD1", ("CA", "CB", "CG"), 1.231, 120.8, _chi(2)),
        ("ND2", ("CA", "CB", "CG"), 1.328, 116.4, _chi(2, 180.0)),
    ],
    "ASP": [
        ("CG", ("N", "CA", "CB"), 1.516, 112.6, _chi(1)),
        ("OD1", ("CA", "CB", "CG"), 1.249, 118.4, _chi(2)),
        ("OD2", ("CA", "CB", "CG"), 1.249, 118.4, _chi(2, 180.0)),
    ],
    "CYS": [
        ("SG", ("N", "CA", "CB"), 1.808, 114.4, _chi(1)),
    ],
    "GLN": [
        ("CG", ("N", "CA", "CB"), 1.520, 114.1, _chi(1)),
        ("CD", ("CA", "CB", "CG"), 1.516, 112.6, _chi(2)),
        ("OE1", ("CB", "CG", "CD"), 1.231, 120.8, _chi(3)),
        ("NE2", ("CB", "CG", "CD"), 1.328, 116.4, _chi(3, 180.0)),
    ],
    "GLU": [
        ("CG", ("N", "CA", "CB"), 1.520, 114.1, _chi(1)),
        ("CD", ("CA", "CB", "CG"), 1.516, 112.6, _chi(2)),
        ("OE1", ("CB", "CG", "CD"), 1.249, 118.4, _chi(3)),
        ("OE2", ("CB", "CG", "CD"), 1.249, 118.4, _chi(3, 180.0)),
    ],
    "HIS": [
        ("CG", ("N", "CA", "CB"), 1.497, 113.8, _chi(1)),
        ("ND1", ("CA", "CB", "CG"), 1.378, 122.7, _chi(2)),
        ("CD2", ("CA", "CB", "CG"), 1.354, 131.0, _chi(2, 180.0)),
        ("CE1", ("CB", "CG", "ND1"), 1.321, 109.0, _fixed(180.0)),
        ("NE2", ("CB", "CG", "CD2"), 1.374, 107.2, _fixed(180.0)),
    ],
    "ILE": [
        ("CG1", ("N", "CA", "CB"), 1.530, 110.4, _chi(1)),
        ("CG2", ("N", "CA", "CB"), 1.521, 110.5,
         _chi(1, _branch_dihedral(110.4, 110.5, 110.7, -1))),
        ("CD1", ("CA", "CB", "CG1"), 1.513, 113.8, _chi(2)),
    ],
    "LEU": [
        ("CG", ("N", "CA", "CB"), 1.530, 116.3, _chi(1)),
        ("CD1", ("CA", "CB", "CG"), 1.521, 110.7, _chi(2)),
        ("CD2", ("CA", "CB", "CG"), 1.521, 110.7,
         _chi(2, _branch_dihedral(110.7, 110.7, 110.8, +1))),
    ],
    "LYS": [
        ("CG", ("N", "CA", "CB"), 1.520, 114.1, _chi(1)),
        ("CD", ("CA", "CB", "CG"), 1.520, 111.3, _chi(2)),
        ("CE", ("CB", "CG", "CD"), 1.520, 111.3, _chi(3)),
        ("NZ", ("CG", "CD", "CE"), 1.489, 111.9, _chi(4)),
    ],
    "MET": [
        ("CG", ("N", "CA", "CB"), 1.520, 114.1, _chi(1)),
        ("SD", ("CA", "CB", "CG"), 1.803, 112.7, _chi(2)),
        ("CE", ("CB", "CG", "SD"), 1.791, 100.9, _chi(3)),
    ],
    "PHE": [
        ("CG", ("N", "CA", "CB"), 1.502, 113.8, _chi(1)),
        ("CD1", ("CA", "CB", "CG"), 1.384, 120.7, _chi(2)),
        ("CD2", ("CA", "CB", "CG"), 1.384, 120.7, _chi(2, 180.0)),
        ("CE1", ("CB", "CG", "CD1"), 1.382, 120.7, _fixed(180.0)),
        ("CE2", ("CB", "CG", "CD2"), 1.382, 120.7, _fixed(180.0)),
        ("CZ", ("CG", "CD1", "CE1"), 1.382, 120.0, _fixed(0.0)),
    ],
    "PRO": [
        ("CG", ("N", "CA", "CB"), 1.492, 104.5, _chi(1)),
        ("CD", ("CA", "CB", "CG"), 1.503, 106.1, _chi(2)),
    ],
    "SER": [
        ("OG", ("N", "CA", "CB"), 1.417, 111.1, _chi(1)),
    ],
    "THR": [
        ("OG1", ("N", "CA", "CB"), 1.433, 109.6, _chi(1)),
        ("CG2", ("N", "CA", "CB"), 1.521, 110.5,
         _chi(1, _branch_dihedral(109.6, 110.5, 109.3, -1))),
    ],
    "TRP": [
        ("CG", ("N", "CA", "CB"), 1.498, 113.6, _chi(1)),
        ("CD1", ("CA", "CB", "CG"), 1.365, 127.0, _chi(2)),
        ("CD2", ("CA", "CB", "CG"), 1.433, 126.6, _chi(2, 180.0)),
        ("NE1", ("CB", "CG", "CD1"), 1.374, 110.2, _fixed(180.0)),
        ("CE2", ("CB", "CG", "CD2"), 1.409, 107.2, _fixed(180.0)),
        ("CE3", ("CB", "CG", "CD2"), 1.398, 133.9, _fixed(0.0)),
        ("CZ2", ("CG", "CD2", "CE2"), 1.394, 122.4, _fixed(180.0)),
        ("CZ3", ("CG", "CD2", "CE3"), 1.382, 118.7, _fixed(180.0)),
        ("CH2", ("CD2", "CE2", "CZ2"), 1.368, 117.5, _fixed(0.0)),
    ],
    "TYR": [
        ("CG", ("N", "CA", "CB"), 1.512, 113.9, _chi(1)),
        ("CD1", ("CA", "CB", "CG"), 1.389, 120.8, _chi(2)),
        ("CD2", ("CA", "CB", "CG"), 1.389, 120.8, _chi(2, 180.0)),
        ("CE1", ("CB", "CG", "CD1"), 1.382, 121.2, _fixed(180.0)),
        ("CE2", ("CB", "CG", "CD2"), 1.382, 121.2, _fixed(180.0)),
        ("CZ", ("CG", "CD1", "CE1"), 1.378, 119.6, _fixed(0.0)),
        ("OH", ("CD1", "CE1", "CZ"), 1.376, 119.9, _fixed(180.0)),
    ],
    "VAL": [
        ("CG1", ("N", "CA", "CB"), 1.521, 110.5, _chi(1)),
        ("CG2", ("N", "CA", "CB"), 1.521, 110.5,
         _chi(1, _branch_dihedral(110.5, 110.5, 110.8, +1))),
    ],
}

# chi angles whose sign flips under a 180 deg rotation of a symmetric end group.
PI_PERIODIC_CHIS: dict[str, tuple[int, ...]] = {
    "ASP": (2,), "GLU": (3,), "PHE": (2,), "TYR": (2,),
}
# Atom pairs exchanged by that rotation (for symmetric full-atom losses).
SYMMETRIC_ATOM_SWAPS: dict[str, tuple[tuple[str, str], ...]] = {
    "ASP": (("OD1", "OD2"),),
    "GLU": (("OE1", "OE2"),),
    "PHE": (("CD1", "CD2"), ("CE1", "CE2")),
    "TYR": (("CD1", "CD2"), ("CE1", "CE2")),
}


# ----------------------------------------------------------------------------------
# Ideal geometry: derived tables (numpy, built once at import)
# ----------------------------------------------------------------------------------

def _place_atom(a: np.ndarray, b: np.ndarray, c: np.ndarray, bond: float, angle_deg: float,
                dihedral_deg: float) -> np.ndarray:
    """NeRF: position of D with |CD| = bond, angle B-C-D, dihedral A-B-C-D (float64)."""
    bc = c - b
    bc /= np.linalg.norm(bc)
    normal = np.cross(b - a, bc)
    normal /= np.linalg.norm(normal)
    m = np.stack([bc, np.cross(normal, bc), normal], axis=1)  # columns
    th, ph = math.radians(angle_deg), math.radians(dihedral_deg)
    d_local = np.array([-bond * math.cos(th), bond * math.sin(th) * math.cos(ph),
                        bond * math.sin(th) * math.sin(ph)])
    return c + m @ d_local


def _frame_np(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Torsion frame for dihedral a-b-c-*: origin c, x along b->c, a in the xy plane (+y)."""
    e1 = (c - b) / np.linalg.norm(c - b)
    u = a - b
    u = u - e1 * (u @ e1)
    e2 = u / np.linalg.norm(u)
    return np.stack([e1, e2, np.cross(e1, e2)], axis=1), c


def _ideal_residue(res: str) -> dict[str, tuple[np.ndarray, int]]:
    """Ideal atoms of ``res`` in its backbone frame with every torsion 0: name -> (pos, group)."""
    atoms: dict[str, tuple[np.ndarray, int]] = {
        "N": (np.array(IDEAL_N_LOCAL), 0),
        "CA": (np.array(IDEAL_CA_LOCAL), 0),
        "C": (np.array(IDEAL_C_LOCAL), 0),
    }
    pos = {k: v[0] for k, v in atoms.items()}
    # O: psi = dihedral(N, CA, C, O) - 180, so psi 0 puts O trans to N.
    atoms["O"] = (_place_atom(pos["N"], pos["CA"], pos["C"], C_O_BOND, CA_C_O_ANGLE, 180.0), 1)
    if res in ("GLY", "UNK"):
        return atoms
    bond, ang_n, ang_c = CB_GEOMETRY.get(res, _CB_DEFAULT)
    cb_dih = _branch_dihedral(N_CA_C_ANGLE, ang_n, ang_c, -1)  # C-N-CA-CB
    atoms["CB"] = (_place_atom(pos["C"], pos["N"], pos["CA"], bond, ang_n, cb_dih), 0)
    for name, (pa, pb, pc), bond, angle, (kind, k, value) in SIDECHAIN_ICS[res]:
        dih = value  # every torsion is 0 here: chi atoms sit at their offset
        p = _place_atom(atoms[pa][0], atoms[pb][0], atoms[pc][0], bond, angle, dih)
        group = 1 + k if kind == "chi" else atoms[pc][1]
        atoms[name] = (p, group)
    return atoms


def _chi_atom_names(res: str) -> list[tuple[str, str, str, str]]:
    """The four atoms defining each chi of ``res``, from the internal coordinates."""
    out = []
    for name, parents, _b, _a, (kind, k, value) in SIDECHAIN_ICS.get(res, []):
        if kind == "chi" and value == 0.0:
            assert k == len(out) + 1, (res, name)
            out.append((*parents, name))
    return out


def _build_tables() -> dict[str, np.ndarray]:
    n_types = rc.NUM_RESTYPES + 1  # 20 = unknown: backbone + O only
    group_rot = np.tile(np.eye(3), (n_types, NUM_GROUPS, 1, 1))  # [21, 6, 3, 3]
    group_trans = np.zeros((n_types, NUM_GROUPS, 3))  # [21, 6, 3]
    atom_group = np.zeros((n_types, rc.NUM_ATOM_TYPES), np.int64)  # [21, 37]
    atom_local = np.zeros((n_types, rc.NUM_ATOM_TYPES, 3))  # [21, 37, 3]
    atom_exists = np.zeros((n_types, rc.NUM_ATOM_TYPES), bool)  # [21, 37]
    chi_atoms = np.zeros((n_types, 4, 4), np.int64)  # [21, 4, 4] atom37 indices
    chi_mask = np.zeros((n_types, 4), bool)  # [21, 4]
    chi_pi_periodic = np.zeros((n_types, 4), bool)  # [21, 4]
    swap = np.tile(np.arange(rc.NUM_ATOM_TYPES), (n_types, 1))  # [21, 37] permutation
    for t in range(n_types):
        res = rc.RESTYPE_1TO3[rc.RESTYPES[t]] if t < rc.NUM_RESTYPES else "UNK"
        atoms = _ideal_residue(res)
        pos = {k: v[0] for k, v in atoms.items()}
        # Group frames at zero torsion, in backbone coordinates.
        frames: dict[int, tuple[np.ndarray, np.ndarray]] = {0: (np.eye(3), np.zeros(3))}
        frames[1] = _frame_np(pos["N"], pos["CA"], pos["C"])
        chis = _chi_atom_names(res)
        for k, (a, b, c, _d) in enumerate(chis, start=1):
            frames[1 + k] = _frame_np(pos[a], pos[b], pos[c])
            ci = [rc.ATOM_ORDER[x] for x in (a, b, c, _d)]
            chi_atoms[t, k - 1] = ci
            chi_mask[t, k - 1] = True
        for k in PI_PERIODIC_CHIS.get(res, ()):
            chi_pi_periodic[t, k - 1] = True
        for a1, a2 in SYMMETRIC_ATOM_SWAPS.get(res, ()):
            i1, i2 = rc.ATOM_ORDER[a1], rc.ATOM_ORDER[a2]
            swap[t, i1], swap[t, i2] = i2, i1
        # Default frame of each group relative to its parent group.
        for g, (r_g, t_g) in frames.items():
            if g == 0:
                continue
            r_p, t_p = frames[GROUP_PARENT[g]]
            group_rot[t, g] = r_p.T @ r_g
            group_trans[t, g] = r_p.T @ (t_g - t_p)
        for name, (p, g) in atoms.items():
            j = rc.ATOM_ORDER[name]
            r_g, t_g = frames[g]
            atom_group[t, j] = g
            atom_local[t, j] = r_g.T @ (p - t_g)
            atom_exists[t, j] = True
    return {
        "group_rot": group_rot, "group_trans": group_trans, "atom_group": atom_group,
        "atom_local": atom_local, "atom_exists": atom_exists, "chi_atoms": chi_atoms,
        "chi_mask": chi_mask, "chi_pi_periodic": chi_pi_periodic, "swap": swap,
    }


IDEAL_TABLES: dict[str, np.ndarray] = _build_tables()


@lru_cache(maxsize=16)
def _tables(device: torch.device, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The ideal-geometry tables as tensors on ``device`` (floats in ``dtype``)."""
    out = {}
    for k, v in IDEAL_TABLES.items():
        t = torch.from_numpy(v)
        out[k] = t.to(device=device, dtype=dtype) if t.is_floating_point() else t.to(device)
    return out


def ideal_backbone_local(device=None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Ideal N, CA, C in the backbone frame: [3, 3] (rows N, CA, C)."""
    return torch.tensor([IDEAL_N_LOCAL, IDEAL_CA_LOCAL, IDEAL_C_LOCAL], device=device,
                        dtype=dtype)


def backbone_from_frames(rot: torch.Tensor, trans: torch.Tensor) -> torch.Tensor:
    """Ideal N, CA, C positions [..., 3, 3] (atom axis second to last) from frames."""
    local = ideal_backbone_local(trans.device, trans.dtype)  # [3, 3]
    return apply_frame(rot[..., None, :, :], trans[..., None, :], local)


# ----------------------------------------------------------------------------------
# Torsions <-> atoms
# ----------------------------------------------------------------------------------


def _normalise_sincos(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    return x / torch.sqrt((x * x).sum(-1, keepdim=True) + eps)


def atom37_from_frames(rotations: torch.Tensor, translations: torch.Tensor,
                       aatype: torch.Tensor,
                       torsions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """All heavy atoms from backbone frames and torsions (differentiable).

    rotations [N, 3, 3], translations [N, 3], aatype [N] (0..19, 20 = unknown),
    torsions [N, 7, 2] (sin, cos; normalised here; omega and phi are not used: they
    place no heavy atom of this residue). Returns positions [N, 37, 3] (zeros where
    the atom does not exist) and mask [N, 37] (bool).
    """
    tab = _tables(translations.device, translations.dtype)
    aat = aatype.clamp(0, rc.NUM_RESTYPES)  # [N]
    sc = _normalise_sincos(torsions[:, 2:7].to(translations.dtype))  # [N, 5, 2] psi, chi1-4
    rot_tor = rotation_x(sc[..., 0], sc[..., 1])  # [N, 5, 3, 3]
    rel_rot = tab["group_rot"][aat]  # [N, 6, 3, 3]
    rel_trans = tab["group_trans"][aat]  # [N, 6, 3]
    rots, transs = [rotations], [translations]
    for g in range(1, NUM_GROUPS):
        p = GROUP_PARENT[g]
        r, t = compose_frames(rots[p], transs[p], rel_rot[:, g], rel_trans[:, g])
        rots.append(rot_mul(r, rot_tor[:, g - 1]))
        transs.append(t)
    group_rot = torch.stack(rots, dim=1)  # [N, 6, 3, 3]
    group_trans = torch.stack(transs, dim=1)  # [N, 6, 3]
    gidx = tab["atom_group"][aat]  # [N, 37]
    n = aat.shape[0]
    ar = torch.arange(n, device=aat.device)[:, None]  # [N, 1]
    atom_rot = group_rot[ar, gidx]  # [N, 37, 3, 3]
    atom_trans = group_trans[ar, gidx]  # [N, 37, 3]
    pos = apply_frame(atom_rot, atom_trans, tab["atom_local"][aat])  # [N, 37, 3]
    mask = tab["atom_exists"][aat]  # [N, 37]
    return pos * mask[..., None].to(pos.dtype), mask


def torsions_from_atom37(positions: torch.Tensor, mask: torch.Tensor, aatype: torch.Tensor,
                         prev_index: torch.Tensor | None = None,
                         max_peptide_bond: float = 2.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Torsion angles of real residues (training targets).

    positions [N, 37, 3], mask [N, 37], aatype [N]. ``prev_index`` [N] gives the row of
    each residue's predecessor in the chain (-1 = none); when None, row i-1 is taken as
    the predecessor if its C is within ``max_peptide_bond`` A of this N. Returns
    torsions [N, 7, 2] (sin, cos; (0, 1) where undefined) and torsion_mask [N, 7] (bool).
    """
    tab = _tables(positions.device, positions.dtype)
    mask = mask.bool()
    n = positions.shape[0]
    aat = aatype.clamp(0, rc.NUM_RESTYPES)
    dev = positions.device
    ni, cai, ci, oi = rc.N_IDX, rc.CA_IDX, rc.C_IDX, rc.O_IDX
    if prev_index is None:
        prev = torch.arange(n, device=dev) - 1
        if n > 0:
            gap = (positions[:, ni] - positions[prev.clamp_min(0), ci]).norm(dim=-1)
            prev = torch.where((prev >= 0) & (gap < max_peptide_bond), prev,
                               torch.full_like(prev, -1))
    else:
        prev = prev_index.to(dev).long()
    has_prev = prev >= 0
    pc = prev.clamp_min(0)
    prev_pos, prev_mask = positions[pc], mask[pc] & has_prev[:, None]  # [N, 37, 3], [N, 37]

    def atoms(idx_pairs):  # list of (use_prev, atom index) -> 4 x [N, 3], [N]
        ps, ms = [], []
        for use_prev, j in idx_pairs:
            src_p, src_m = (prev_pos, prev_mask) if use_prev else (positions, mask)
            ps.append(src_p[:, j])
            ms.append(src_m[:, j])
        return ps, torch.stack(ms, -1).all(-1)

    tors, tmask = [], []
    p, m = atoms([(True, cai), (True, ci), (False, ni), (False, cai)])
    tors.append(dihedral_sincos(*p))
    tmask.append(m)
    p, m = atoms([(True, ci), (False, ni), (False, cai), (False, ci)])
    tors.append(dihedral_sincos(*p))
    tmask.append(m)
    p, m = atoms([(False, ni), (False, cai), (False, ci), (False, oi)])
    tors.append(-dihedral_sincos(*p))  # psi = dihedral(N, CA, C, O) - 180 deg
    tmask.append(m)
    chi_idx = tab["chi_atoms"][aat]  # [N, 4, 4]
    ar = torch.arange(n, device=dev)[:, None, None]
    chi_pos = positions[ar, chi_idx]  # [N, 4, 4, 3]
    chi_ok = mask[ar, chi_idx].all(-1) & tab["chi_mask"][aat]  # [N, 4]
    chi = dihedral_sincos(chi_pos[:, :, 0], chi_pos[:, :, 1], chi_pos[:, :, 2],
                          chi_pos[:, :, 3])  # [N, 4, 2]
    torsions = torch.cat([torch.stack(tors, 1), chi], dim=1)  # [N, 7, 2]
    tmask_all = torch.cat([torch.stack(tmask, 1), chi_ok], dim=1)  # [N, 7]
    identity = torch.tensor([0.0, 1.0], device=dev, dtype=positions.dtype)
    torsions = torch.where(tmask_all[..., None], torsions, identity)
    return torsions, tmask_all


def pi_periodic_mask(aatype: torch.Tensor) -> torch.Tensor:
    """[N, 7] bool: torsions whose value is defined only modulo 180 deg (symmetric ends)."""
    tab = _tables(aatype.device, torch.float32)
    chi = tab["chi_pi_periodic"][aatype.clamp(0, rc.NUM_RESTYPES)]  # [N, 4]
    return torch.cat([torch.zeros_like(chi[:, :3]), chi], dim=1)


def torsion_alternatives(torsions: torch.Tensor, aatype: torch.Tensor) -> torch.Tensor:
    """Torsions [N, 7, 2] with pi-periodic chis (ASP chi2, GLU chi3, PHE/TYR chi2) shifted 180 deg."""
    flip = pi_periodic_mask(aatype)[..., None]  # [N, 7, 1]
    return torch.where(flip, -torsions, torsions)


def swap_symmetric_atoms(positions: torch.Tensor, mask: torch.Tensor,
                         aatype: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Atom37 positions [N, 37, 3] / mask [N, 37] with symmetric atom names exchanged
    (ASP OD1/OD2, GLU OE1/OE2, PHE and TYR CD1/CD2 and CE1/CE2)."""
    perm = _tables(positions.device, positions.dtype)["swap"][aatype.clamp(0, rc.NUM_RESTYPES)]
    ar = torch.arange(positions.shape[0], device=positions.device)[:, None]
    return positions[ar, perm], mask[ar, perm]
