"""What the graph network hands to post-processing (numpy, one entry per node)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class GraphPrediction:
    """Per-node output of the GNN, in the map file's frame (Angstrom).

    Torsions follow AlphaFold2's seven angles per residue, (omega, phi, psi, chi1..chi4),
    stored as (sin, cos) and predicted for every one of the 20 residue types.
    """

    rotations: np.ndarray  # [N, 3, 3] backbone frame of each node (columns = local axes)
    translations: np.ndarray  # [N, 3] CA position
    backbone: np.ndarray  # [N, 3, 3] N, CA, C positions
    aa_logits: np.ndarray  # [N, 20] residue-type logits
    torsions: np.ndarray  # [N, 20, 7, 2] (sin, cos) for each residue type
    edge_index: np.ndarray  # [N, k] int64 neighbour node indices (-1 = none)
    edge_logits: np.ndarray  # [N, k] logit that the neighbour is the next or previous residue
    confidence: np.ndarray  # [N] 0..100, higher = more confident (predicted local accuracy)
    # Optional learned direction (logit that neighbour is the *next* residue), [N, k].
    next_logits: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.translations.shape[0])

    @property
    def aa_probs(self) -> np.ndarray:  # [N, 20]
        z = self.aa_logits - self.aa_logits.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)
