"""The one typed configuration of the pipeline and its networks.

Every threshold and size lives here, nowhere else. A trained weight file stores the
config section it was trained with (``to_dict``), and loading weights rebuilds the
network from that stored section, so code defaults and shipped weights cannot drift
apart.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass
class MapConfig:
    voxel_size: float = 1.5  # working voxel size of every network, Angstrom
    # Resampling: "fourier" (exact band-limited, crops/pads the FFT) or "trilinear".
    resample_method: str = "fourier"
    max_voxels: int = 600**3  # larger working grids are refused with a clear message
    # The graph network reads a sharpened copy (mapio.auto_sharpen) when the map's Guinier
    # B (10-4 A, on the working grid) exceeds the target: by (B - target), at most max
    # (A^2). None: off. Target = median over simulated training maps (20-47 quartiles),
    # so maps blurrier than the training data are brought into its range; EMD-6272
    # (B 67) is: residue types on deposited CAs 35.5 -> 40.6 % at -30 (DEVELOPING.md).
    gnn_sharpen_target_b: float | None = 40.0
    gnn_sharpen_max_b: float = 60.0


@dataclass
class CNNConfig:
    """Residual 3D U-Net that marks voxels holding a CA atom (method 3.1)."""

    widths: tuple[int, ...] = (16, 32, 64, 64)
    blocks_per_level: int = 1
    crop_size: int = 64  # training crop and inference tile edge, voxels
    tile_stride: int = 48  # inference tile stride, voxels (overlap = crop - stride)
    tile_batch: int = 4  # tiles per forward pass at inference (bounds memory)
    target_radius: float = 1.0  # voxels within this distance (A) of a CA are positives... see training
    peak_threshold: float = 0.1  # minimum CA probability of a peak (tuned on validation)
    peak_min_distance: float = 2.5  # non-maximum suppression radius, Angstrom


@dataclass
class GNNConfig:
    """Graph network refining nodes into residues (method 3.2).

    The shipped size (hidden 128, 4 layers, ESM2 3 x 160) was chosen from step-time
    measurements on 2 CPU cores, where all training happens: ~1.2 s per 400-node step
    against ~2.75 s for the paper-like 256 / 8 layers (see src/weights/gnn.md).
    """

    num_layers: int = 4
    hidden: int = 128
    heads: int = 8
    k_neighbours: int = 20
    cube_size: int = 9  # density cube edge (voxels) sampled in each node's frame
    cube_spacing: float = 1.0  # Angstrom between cube samples
    rect_length: int = 10  # samples along each node->neighbour vector
    rect_width: int = 3  # samples across it (rect_width x rect_width)
    ipa_query_points: int = 4
    ipa_value_points: int = 4
    cube_channels: tuple[int, ...] = (16, 32, 64)  # cube CNN widths (stride 1, then 2, 2)
    transition_factor: int = 2  # transition MLP width / hidden
    edge_pair_dim: int = 64  # width of the edge head's pair MLP
    seq_embed_dim: int = 160  # width of the sequence encoder output
    esm_layers: int = 3  # small ESM2 trained here (0 = caller supplies embeddings)
    esm_heads: int = 8
    esm_embed_dim: int = 0  # ESM2 width; 0 = seq_embed_dim (else a projection follows)
    esm_token_dropout: bool = False  # True for pretrained ESM2 checkpoints
    esm_frozen: bool = False  # keep the ESM2 weights fixed (pretrained use)
    recycles: int = 2
    crop_nodes: int = 400  # nodes per inference crop
    crop_overlap: int = 100  # outer nodes of a crop used as context only
    # A node's residue types, torsions, confidence and edges are averaged over every crop
    # holding it at least this far (A) inside, besides its owner crop (inf: owner only).
    crop_average_margin: float = 10.0
    init_seed: int = 0  # random initial frames at inference (reproducible)
    # Confidence: bins of predicted CA error (A); score = 100 / (1 + (err / d0)^2).
    confidence_bins: tuple[float, ...] = (0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0)
    confidence_d0: float = 1.5
    # Loss weights (per-layer terms are averaged over layers) and distance clamp (A).
    loss_ca: float = 1.0
    loss_backbone: float = 1.0
    loss_aa: float = 1.0
    loss_torsion: float = 1.0
    loss_torsion_norm: float = 0.02
    loss_edge: float = 1.0
    loss_full_atom: float = 1.0
    loss_confidence: float = 0.1
    loss_clamp: float = 10.0
    # Sequence attention as a pointer (sequence_attention.py): the first
    # seq_position_heads heads of every layer are trained (cross-entropy, averaged over
    # layers, weight loss_seq_position) to attend to the node's own residue in the
    # sequence. Without it the network used the sequence only for its composition: a
    # shuffled sequence gave the same residue types (EMD-2566 40.8 %, none 36.4 %).
    seq_position_heads: int = 2
    loss_seq_position: float = 0.5


@dataclass
class SimulationConfig:
    """Simulated training maps (see training/simulate.py)."""

    resolution_range: tuple[float, float] = (2.0, 4.5)
    voxel_size_range: tuple[float, float] = (0.8, 1.4)  # before resampling to 1.5 A
    noise_level_range: tuple[float, float] = (0.05, 0.8)  # noise RMS / signal RMS (protein)
    b_factor_extra_range: tuple[float, float] = (0.0, 100.0)  # global blur B (EMD-6272: ~80)
    ligand_blob_prob: float = 0.5
    detergent_prob: float = 0.3
    drop_chain_prob: float = 0.15
    # Added with training/simulate.py (all B-factors in A^2, as in exp(-B s^2 / 4)):
    atom_b_base_range: tuple[float, float] = (5.0, 35.0)  # per-atom B before extras
    atom_b_spread_range: tuple[float, float] = (0.0, 20.0)  # x z-score of deposited B
    atom_b_max: float = 80.0  # cap of the per-atom B splatted in real space
    local_b_range: tuple[float, float] = (0.0, 150.0)  # extra B of the worst (surface) parts
    sharpen_prob: float = 0.3  # chance of an over-sharpened map (negative global B)
    sharpen_b_range: tuple[float, float] = (10.0, 60.0)  # how much is subtracted then
    anisotropic_prob: float = 0.3
    anisotropic_b_range: tuple[float, float] = (10.0, 80.0)  # extra B along one random axis
    noise_b_range: tuple[float, float] = (-40.0, 40.0)  # spectral tilt of the noise
    noise_unfiltered_prob: float = 0.5  # chance the noise is not low-passed (reaches Nyquist)
    lowpass_shift_range: tuple[float, float] = (0.85, 1.05)  # low-pass edge x 1/resolution
    mask_prob: float = 0.4  # solvent masked (zero) instead of noisy
    zone_mask_share: float = 0.5  # of masked maps: hard zone around the atoms (else soft)
    zone_radius_range: tuple[float, float] = (3.5, 7.0)  # zone distance from atoms, A
    drop_segment_prob: float = 0.2  # a stretch of 5-30 residues missing from map and target
    # Side chains fade along the chain in real maps (mobility, radiation damage): density at
    # CB/CG/CD/beyond is 0.82/0.59-0.72/0.48-0.69/0.47-0.65 of the backbone's on the three
    # EMDB test maps, 0.8-0.95 in maps simulated without this. Extra B per bond from CA
    # (CB 1x, CG 2x, CD 3x, ...), and extra B on carboxylate oxygens (Asp, Glu).
    sidechain_b_step_range: tuple[float, float] = (5.0, 35.0)
    carboxylate_b_range: tuple[float, float] = (0.0, 40.0)
    # B alone (capped at atom_b_max) left the ends too strong: relative to CA, density at
    # Asp/Glu carboxylate O, Ile CD1 and Lys NZ is 0.10-0.22 / 0.21-0.23 / 0.09-0.31 on
    # EMD-6272 and EMD-2566, 0.42-0.48 / 0.46 / 0.39 in maps simulated with B only.
    # Partial occupancy on top: Asp/Glu carboxylate O (one factor per map), and side-chain
    # atoms from CD on of residues without rigid rings (one factor per residue, uniform
    # between the map's drawn lower bound and 1). Simulated from the deposited models of
    # EMD-6272/2566 with these ranges (mean of 4 maps): 0.22-0.31 / 0.39 / 0.28-0.32.
    carboxylate_occupancy_range: tuple[float, float] = (0.05, 0.6)
    flexible_occupancy_low_range: tuple[float, float] = (0.0, 0.6)


@dataclass
class PostprocessConfig:
    """Chain building, alignment and pruning (method 3.3)."""

    # --- chain linking (chains.py) ---
    edge_prob_threshold: float = 0.5
    max_peptide_bond: float = 2.5  # C(i-1)-N(i) longer than this never links (A)
    max_ca_ca: float = 4.5  # CA-CA longer than this never links (A)
    edge_cost_weight: float = 1.0  # link cost = C-N length (A) + weight * -ln(edge prob)
    duplicate_distance: float = 1.0  # nodes with CAs closer than this (A): keep the more confident
    ca_only_ca_ca: float = 3.8  # CA-only fallback: ideal CA-CA distance (A) ...
    ca_only_tolerance: float = 0.6  # ... and the accepted deviation from it (A)
    # The unpruned model keeps everything built, single residues too (benchmarks/tuning.md).
    unpruned_min_chain_length: int = 1  # shorter chains are left out of the unpruned model
    # --- sequence alignment (alignment.py) ---
    # Match emissions = w * network probabilities + (1 - w) * background, with w growing
    # linearly with the node's confidence (0..100) from the first to the second value.
    hmm_prob_weight: tuple[float, float] = (0.5, 0.9)
    hmm_gap_open: float = 0.02  # M->I and M->D probability of the chain profiles
    hmm_gap_extend: float = 0.4  # I->I and D->D probability
    hmm_evalue: float = 1e-2  # alignment E-value below which a chain is assigned (benchmarks/tuning.md)
    # Gap filling (postprocess.fill_sequence_gaps): a chain left unassigned is aligned to the
    # stretches of a sequence that the assigned chains leave uncovered; it is assigned when
    # the E-value (over those stretches) is at most gap_fill_evalue and its aligned ends
    # can reach the assigned residues that flank the stretch: CA distance at most
    # ca_only_ca_ca * (residues between) + reach_slack, one of them at most
    # reach_max_separation residues away.
    gap_fill_evalue: float = 1.0  # 0: no gap filling (benchmarks/tuning.md)
    reach_slack: float = 2.0  # A
    reach_max_separation: int = 60  # residues (benchmarks/tuning.md)
    # Pruned fragments of one sequence join into one chain (numbering gaps between them)
    # when each next fragment starts after the previous one ends, within
    # reach_max_separation residues, and its first CA can reach the previous one's last
    # (the reach rule above); otherwise they stay separate chains (postprocess.merge_fragments).
    merge_pruned_fragments: bool = True
    # --- pruning (postprocess.py): a chain is kept when it is assigned (E-value above)
    # and all three hold; only its aligned residues are kept ---
    min_chain_length: int = 4  # shorter chains are dropped from the pruned model
    prune_min_aligned_fraction: float = 0.5  # aligned nodes / chain nodes
    # network's most probable type == sequence, over aligned nodes; off (0): the E-value
    # already tests the match, and on EMD-6272 this filter (at 0.3) dropped two correctly
    # registered chains (77 and 59 residues, E < 1e-10; pruned recall 36 -> 61 % without it)
    prune_min_identity: float = 0.0


@dataclass
class TrainConfig:
    lr: float = 3e-4
    weight_decay: float = 1e-4
    batch_size: int = 4
    num_threads: int = 2
    bf16: bool = False  # train-* commands: on where native (training.common.native_bf16)
    checkpoint_every: int = 50  # steps
    validate_every: int = 500  # steps
    seed: int = 0
    # > 0: keep an exponential moving average of the weights (decay per step); it is what
    # validation scores, best.pt holds and --export ships (training.trainer)
    ema_decay: float = 0.0


@dataclass
class Config:
    map: MapConfig = field(default_factory=MapConfig)
    cnn: CNNConfig = field(default_factory=CNNConfig)
    gnn: GNNConfig = field(default_factory=GNNConfig)
    simulation: SimulationConfig = field(default_factory=SimulationConfig)
    postprocess: PostprocessConfig = field(default_factory=PostprocessConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Config:
        return cls(**{f.name: section_from_dict(f.type_obj, d.get(f.name, {}))
                      for f in _fields(cls)})


class _F:
    def __init__(self, name: str, type_obj: type):
        self.name, self.type_obj = name, type_obj


def _fields(cls) -> list[_F]:
    defaults = cls()
    return [_F(f.name, type(getattr(defaults, f.name))) for f in dataclasses.fields(cls)]


def section_from_dict(cls: type[T], d: dict[str, Any]) -> T:
    """Build a config section from a dict, ignoring unknown keys and restoring tuples."""
    kwargs = {}
    names = {f.name: f for f in dataclasses.fields(cls)}
    defaults = cls()
    for key, value in (d or {}).items():
        if key not in names:
            continue
        if isinstance(getattr(defaults, key), tuple) and isinstance(value, list):
            value = tuple(value)
        kwargs[key] = value
    return cls(**kwargs)
