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


@dataclass
class CNNConfig:
    """Residual 3D U-Net that marks voxels holding a CA atom (method 3.1)."""

    widths: tuple[int, ...] = (16, 32, 64, 64)
    blocks_per_level: int = 1
    crop_size: int = 64  # training crop and inference tile edge, voxels
    tile_stride: int = 48  # inference tile stride, voxels (overlap = crop - stride)
    tile_batch: int = 4  # tiles per forward pass at inference (bounds memory)
    target_radius: float = 1.0  # voxels within this distance (A) of a CA are positives... see training
    peak_threshold: float = 0.35  # minimum CA probability of a peak
    peak_min_distance: float = 2.8  # non-maximum suppression radius, Angstrom


@dataclass
class GNNConfig:
    """Graph network refining nodes into residues (method 3.2)."""

    num_layers: int = 8
    hidden: int = 256
    heads: int = 8
    k_neighbours: int = 20
    cube_size: int = 9  # density cube edge (voxels) sampled in each node's frame
    cube_spacing: float = 1.0  # Angstrom between cube samples
    rect_length: int = 10  # samples along each node->neighbour vector
    rect_width: int = 3  # samples across it (rect_width x rect_width)
    ipa_query_points: int = 4
    seq_embed_dim: int = 320  # width of the sequence encoder output
    esm_layers: int = 6  # small ESM2 trained here
    esm_heads: int = 20
    recycles: int = 2
    crop_nodes: int = 400  # nodes per inference crop
    crop_overlap: int = 100


@dataclass
class SimulationConfig:
    """Simulated training maps (see training/simulate.py)."""

    resolution_range: tuple[float, float] = (2.0, 4.5)
    voxel_size_range: tuple[float, float] = (0.8, 1.4)  # before resampling to 1.5 A
    noise_level_range: tuple[float, float] = (0.05, 0.6)  # noise RMS / signal RMS
    b_factor_extra_range: tuple[float, float] = (0.0, 60.0)
    ligand_blob_prob: float = 0.5
    detergent_prob: float = 0.3
    drop_chain_prob: float = 0.15


@dataclass
class PostprocessConfig:
    """Chain building, alignment and pruning (method 3.3)."""

    edge_prob_threshold: float = 0.5
    max_peptide_bond: float = 2.5  # C(i-1)-N(i) longer than this never links (A)
    max_ca_ca: float = 4.5  # CA-CA longer than this never links (A)
    min_chain_length: int = 4  # shorter chains are dropped from the pruned model
    hmm_evalue: float = 1e-3  # alignment E-value below which a chain is assigned
    prune_min_aligned_fraction: float = 0.5
    prune_min_identity: float = 0.3


@dataclass
class TrainConfig:
    lr: float = 3e-4
    weight_decay: float = 1e-4
    batch_size: int = 4
    num_threads: int = 2
    bf16: bool = True
    checkpoint_every: int = 50  # steps
    validate_every: int = 500  # steps
    seed: int = 0


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
