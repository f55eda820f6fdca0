"""GNN (method 3.2): shapes, frames, SE(3) equivariance, sequence path, losses, overfitting,
cropped inference. Tiny configs (hidden 32, 2 layers, ~30 nodes) keep each test to seconds."""

import dataclasses
import resource
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from chimerax.modelangelo import geometry as geo
from chimerax.modelangelo import residue_constants as rc
from chimerax.modelangelo.config import GNNConfig
from chimerax.modelangelo.model.common import DensityGrid, knn
from chimerax.modelangelo.model.gnn import (
    GNN,
    gnn_loss,
    initial_rotations,
    plan_crops,
    targets_from_protein,
)
from chimerax.modelangelo.prediction import GraphPrediction
from chimerax.modelangelo.protein import load_protein

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"

torch.set_num_threads(1)

TINY = GNNConfig(hidden=32, num_layers=2, heads=4, k_neighbours=8, cube_size=5,
                 cube_channels=(4, 8, 8), rect_length=5, rect_width=3, ipa_query_points=2,
                 ipa_value_points=2, seq_embed_dim=32, esm_layers=1, esm_heads=4,
                 edge_pair_dim=16, recycles=1, crop_nodes=400, crop_overlap=100)


def simulate_density(positions: np.ndarray, origin: np.ndarray, shape, voxel: float,
                     sigma: float = 1.0) -> np.ndarray:
    """Gaussian blobs at atoms on a [nz, ny, nx] grid (x, y, z origin, cubic voxels)."""
    nz, ny, nx = shape
    z, y, x = np.meshgrid(np.arange(nz), np.arange(ny), np.arange(nx), indexing="ij")
    pts = np.stack([x, y, z], -1).reshape(-1, 3) * voxel + origin  # [V, 3]
    out = np.zeros(len(pts))
    for a in positions:
        out += np.exp(-((pts - a) ** 2).sum(-1) / (2 * sigma ** 2))
    return out.reshape(nz, ny, nx).astype(np.float32)


@pytest.fixture(scope="module")
def small():
    """30 residues of a real structure, their simulated map and noisy CA nodes."""
    p = load_protein(DATA / "structures" / "db55_1A2K_b.cif.gz")
    keep = np.zeros(len(p), bool)
    keep[np.nonzero(p.chain_index == 1)[0][:30]] = True
    p = p.select(keep)
    atoms = p.atom_positions[p.atom_mask]
    origin = atoms.min(0) - 6.0
    shape = tuple((np.ceil((atoms.max(0) + 6.0 - origin) / 1.0).astype(int) + 1)[::-1])
    data = simulate_density(atoms, origin, shape, 1.0)
    data = (data - data.mean()) / data.std()
    rng = np.random.default_rng(0)
    nodes = p.ca + rng.normal(0, 1 / np.sqrt(3), p.ca.shape).astype(np.float32)
    return {"protein": p, "density": DensityGrid.from_numpy(data, origin, 1.0),
            "data": data, "origin": origin, "nodes": torch.tensor(nodes),
            "sequence": p.chain_sequences()[p.chain_names[0]]}


def _randomise_zero_layers(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give zero-initialised output layers random weights (an untrained GNN is the identity)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Linear) and not m.weight.any():
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * 0.3
                               / m.weight.shape[1] ** 0.5)
    return model


def _model(seed: int = 0, cfg: GNNConfig = TINY, randomise: bool = True) -> GNN:
    torch.manual_seed(seed)
    m = GNN(cfg)
    return _randomise_zero_layers(m, seed) if randomise else m


def test_forward_shapes_and_orthonormal_frames(small):
    m = _model()
    emb, mask = m.embed_sequences([small["sequence"]])
    n = len(small["nodes"])
    o = m(small["nodes"], small["density"], emb, mask,
          init_rotations=torch.tensor(initial_rotations(n, 0)))
    assert len(o["layers"]) == TINY.num_layers
    for lo in o["layers"]:
        assert geo.is_rotation(lo["rotations"], atol=1e-5)
        assert lo["translations"].shape == (n, 3)
        assert lo["aa_logits"].shape == (n, 20)
        assert lo["torsions"].shape == (n, 20, 7, 2)
        assert torch.allclose(lo["torsions"].norm(dim=-1), torch.ones(n, 20, 7), atol=1e-3)
        assert lo["edge_index"].shape == (n, TINY.k_neighbours)
        assert lo["edge_logits"].shape == lo["next_logits"].shape == (n, TINY.k_neighbours)
    assert o["backbone"].shape == (n, 3, 3)
    assert torch.allclose(o["backbone"][:, 1], o["translations"])
    assert ((o["confidence"] >= 0) & (o["confidence"] <= 100)).all()
    # nodes moved from their start, frames changed
    assert (o["translations"] - small["nodes"]).norm(dim=-1).mean() > 1e-3


def _move(x, rot, t):
    return x @ rot.T + t


@pytest.mark.parametrize("exact_grid", [False, True])
def test_se3_equivariance(small, exact_grid):
    """Moving nodes, initial frames and map together moves the outputs; logits invariant."""
    m = _model(1).double()
    n = len(small["nodes"])
    nodes = small["nodes"].double()
    rot0 = torch.tensor(initial_rotations(n, 3)).double()
    emb, mask = m.embed_sequences([small["sequence"]])
    dens = DensityGrid(small["density"].data.double(), small["density"].origin.double(),
                       small["density"].voxel_size.double())
    if exact_grid:
        # 90 deg about z (grid points map onto grid points) + a non-integer shift: the
        # rotated map is re-simulated on the rotated grid, checking axis conventions.
        q = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
        shift = torch.tensor([3.3, -7.1, 2.4], dtype=torch.float64)
        p = small["protein"]
        atoms = torch.tensor(p.atom_positions[p.atom_mask], dtype=torch.float64)
        data = small["data"]
        nz, ny, nx = data.shape
        o = small["origin"]
        new_origin = np.array([-(o[1] + (ny - 1)), o[0], o[2]]) + shift.numpy()
        new = simulate_density(_move(atoms, q, shift).numpy(), new_origin, (nz, nx, ny), 1.0)
        raw = simulate_density(atoms.numpy(), o, data.shape, 1.0)
        assert np.allclose(np.sort(new.ravel()), np.sort(raw.ravel()), atol=1e-5)
        new = (new - raw.mean()) / raw.std()
        moved = DensityGrid.from_numpy(new, new_origin, 1.0, dtype=torch.float64)
    else:
        q = geo.random_rotations(1, generator=torch.Generator().manual_seed(7),
                                 dtype=torch.float64)[0]
        shift = torch.tensor([10.0, -4.0, 25.0], dtype=torch.float64)
        moved = dens.transformed(q, shift)
    with torch.no_grad():
        a = m(nodes, dens, emb.double(), mask, init_rotations=rot0)
        b = m(_move(nodes, q, shift), moved, emb.double(), mask,
              init_rotations=torch.einsum("ij,njk->nik", q, rot0))
    tol = 1e-4 if exact_grid else 1e-6
    assert torch.equal(a["edge_index"], b["edge_index"])
    assert torch.allclose(_move(a["translations"], q, shift), b["translations"], atol=tol)
    assert torch.allclose(torch.einsum("ij,njk->nik", q, a["rotations"]), b["rotations"],
                          atol=tol)
    for key in ("aa_logits", "edge_logits", "next_logits", "confidence", "torsions"):
        assert torch.allclose(a[key], b[key], atol=tol * 10), key
    # the outputs did depend on the map (so the check is not vacuous)
    with torch.no_grad():
        c = m(nodes, DensityGrid(dens.data * 0.0, dens.origin, dens.voxel_size), emb.double(),
              mask, init_rotations=rot0)
    assert (c["aa_logits"] - a["aa_logits"]).abs().max() > 1e-3


def test_density_sampling_axes():
    """DensityGrid follows MapGrid's convention: data [z, y, x], voxel at origin + (i, j, k) v."""
    nz, ny, nx = 6, 7, 8
    z, y, x = np.meshgrid(np.arange(nz), np.arange(ny), np.arange(nx), indexing="ij")
    origin, v = np.array([1.0, -2.0, 3.0]), 1.5
    wx, wy, wz = origin[0] + x * v, origin[1] + y * v, origin[2] + z * v
    data = (wx + 10 * wy + 100 * wz).astype(np.float32)  # linear: trilinear is exact
    g = DensityGrid.from_numpy(data, origin, v)
    pts = torch.tensor([[3.1, 1.7, 6.2], [9.0, 5.0, 9.9]])
    want = pts[:, 0] + 10 * pts[:, 1] + 100 * pts[:, 2]
    assert torch.allclose(g.sample(pts), want, rtol=1e-5)
    assert g.sample(torch.tensor([[-50.0, 0.0, 0.0]])).item() == 0.0  # outside


def test_sequence_attention_path(small):
    m = _model(2)
    n = len(small["nodes"])
    r0 = torch.tensor(initial_rotations(n, 0))
    emb, mask = m.embed_sequences([small["sequence"], "MKV"])
    assert emb.shape == (len(small["sequence"]) + 3, TINY.seq_embed_dim) and mask.all()
    with torch.no_grad():
        none = m(small["nodes"], small["density"], None, None, r0)
        masked = m(small["nodes"], small["density"], emb, torch.zeros_like(mask), r0)
        seq = m(small["nodes"], small["density"], emb, mask, r0)
        padded = m(small["nodes"], small["density"],
                   torch.cat([emb, torch.randn(5, emb.shape[1])]),
                   torch.cat([mask, torch.zeros(5, dtype=torch.bool)]), r0)
    assert torch.equal(none["aa_logits"], masked["aa_logits"])
    assert (seq["aa_logits"] - none["aa_logits"]).abs().max() > 1e-4
    assert torch.allclose(seq["aa_logits"], padded["aa_logits"], atol=1e-5)
    assert m.embed_sequences(None) == (None, None)


def test_sequence_pointer_is_a_distribution_and_learns_positions(small):
    """The pointer heads give log-probabilities over the unmasked sequence positions, and
    training on the position loss alone teaches them where each node sits in the sequence."""
    n = len(small["nodes"])
    seq = small["sequence"]
    assert len(seq) == n  # the 30 residues, in order
    r0 = torch.tensor(initial_rotations(n, 0))
    m = _model(5)
    emb, mask = m.embed_sequences([seq, "MKV"])
    mask[-3:] = False  # the second sequence masked out
    with torch.no_grad():
        o = m(small["nodes"], small["density"], emb, mask, r0)
    for lo in o["layers"]:
        lp = lo["seq_position"]  # [N, L]
        assert lp.shape == (n, n + 3)
        assert torch.isneginf(lp[:, -3:]).all()
        assert torch.allclose(lp[:, :-3].exp().sum(-1), torch.ones(n), atol=1e-5)
    off = _model(5, dataclasses.replace(TINY, seq_position_heads=0))
    with torch.no_grad():
        assert off(small["nodes"], small["density"], emb, mask, r0)["seq_position"] is None

    torch.manual_seed(0)
    cfg = dataclasses.replace(TINY, loss_ca=0.0, loss_backbone=0.0, loss_aa=0.0, loss_torsion=0.0,
                              loss_torsion_norm=0.0, loss_edge=0.0, loss_full_atom=0.0,
                              loss_confidence=0.0, loss_seq_position=1.0)
    m = GNN(cfg)
    tg = targets_from_protein(small["protein"])
    tg["seq_position"] = torch.arange(n)
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    nll, acc = [], []
    for _ in range(40):
        emb, mask = m.embed_sequences([seq])
        total, terms = gnn_loss(m(small["nodes"], small["density"], emb, mask, r0), tg, cfg)
        opt.zero_grad()
        total.backward()
        opt.step()
        nll.append(terms["seq_position"].item())
        acc.append(terms["seq_position_accuracy"].item())
    print(f"pointer: nll {nll[0]:.2f} -> {nll[-1]:.2f}, top-1 {acc[0]:.2f} -> {acc[-1]:.2f}")
    assert nll[0] > 0.9 * np.log(n)  # starts near uniform over 30 positions
    assert np.mean(nll[-5:]) < 0.5 * nll[0]
    assert np.mean(acc[-5:]) > 0.3  # chance is 1/30
    # no sequence (or no targets): the term is zero and keeps the graph
    total, terms = gnn_loss(m(small["nodes"], small["density"], None, None, r0), tg, cfg)
    assert terms["seq_position"].item() == 0.0 and "seq_position_accuracy" not in terms


def test_loss_terms_and_false_positive_nodes(small):
    m = _model(3, randomise=False)
    p = small["protein"]
    tg = targets_from_protein(p)
    n = len(p)
    # chain neighbours from consecutive residues
    assert int((tg["next_node"] >= 0).sum()) == n - 1
    assert tg["prev_node"][0] == -1 and tg["next_node"][0] == 1
    # append 5 false-positive nodes
    extra = 5
    nodes = torch.cat([small["nodes"], small["nodes"][:extra] + 6.0])
    tg2 = {k: torch.cat([v, torch.zeros((extra, *v.shape[1:]), dtype=v.dtype)])
           for k, v in tg.items()}
    tg2["prev_node"][n:] = -1
    tg2["next_node"][n:] = -1
    emb, mask = m.embed_sequences([small["sequence"]])
    o = m.forward_recycled(nodes, small["density"], emb, mask, recycles=1)
    total, terms = gnn_loss(o, tg2, TINY)
    assert torch.isfinite(total)
    want = {"ca", "backbone", "aa", "torsion", "torsion_norm", "edge", "next", "full_atom",
            "confidence", "ca_rmsd", "aa_accuracy", "seq_position"}
    assert want <= set(terms)
    assert 0.4 < terms["ca_rmsd"] < 2.0  # noisy start, untrained (identity) network
    total.backward()
    grads = [p_.grad for p_ in m.parameters() if p_.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    # the false positives only change the edge / confidence terms
    o1 = {**o, "layers": [{k: (v[:n] if k != "edge_index" else v[:n]) for k, v in lo.items()}
                          for lo in o["layers"]]}
    o1["confidence_logits"] = o["confidence_logits"][:n]
    _, t1 = gnn_loss(o1, {k: v[:n] for k, v in tg2.items()}, TINY)
    for k in ("ca", "backbone", "aa", "torsion", "full_atom"):
        assert torch.allclose(t1[k], terms[k], atol=1e-5), k


def test_overfits_one_small_structure(small):
    """A tiny GNN overfits noisy CAs of 30 residues on a simulated map in 50 steps."""
    torch.manual_seed(0)
    m = GNN(TINY)
    tg = targets_from_protein(small["protein"])
    n = len(small["nodes"])
    r0 = torch.tensor(initial_rotations(n, 0))
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    losses, rmsd, acc = [], [], []
    t0 = time.perf_counter()
    for _ in range(50):
        emb, mask = m.embed_sequences([small["sequence"]])
        o = m(small["nodes"], small["density"], emb, mask, init_rotations=r0)
        total, terms = gnn_loss(o, tg, TINY)
        opt.zero_grad()
        total.backward()
        opt.step()
        losses.append(total.item())
        rmsd.append(terms["ca_rmsd"].item())
        acc.append(terms["aa_accuracy"].item())
    dt = time.perf_counter() - t0
    print(f"overfit: loss {losses[0]:.2f} -> {losses[-1]:.2f}, CA RMSD {rmsd[0]:.2f} -> "
          f"{rmsd[-1]:.2f} A, aa accuracy {acc[0]:.2f} -> {acc[-1]:.2f}, {dt:.1f} s")
    assert losses[-1] < 0.6 * losses[0]  # ~0.45 for seeds 0-2
    assert np.mean(rmsd[-5:]) < 0.85 * rmsd[0]  # ~0.97 -> ~0.65 A
    assert np.mean(acc[-5:]) > 0.3


def test_cropped_equals_uncropped_for_small_graph(small):
    m = _model(4).eval()
    nodes = small["nodes"].numpy()
    a = m.predict(nodes, small["density"], [small["sequence"]])
    b = m.predict_cropped(nodes, small["density"], [small["sequence"]])
    assert isinstance(a, GraphPrediction) and len(a) == len(nodes)
    for f in dataclasses.fields(GraphPrediction):
        va, vb = getattr(a, f.name), getattr(b, f.name)
        assert np.array_equal(va, vb), f.name
    assert a.edge_index.shape == (len(nodes), TINY.k_neighbours)
    assert np.all((a.confidence >= 0) & (a.confidence <= 100))
    assert np.allclose(np.linalg.norm(a.torsions, axis=-1), 1.0, atol=1e-3)


def test_cropped_inference_covers_every_node(small):
    cfg = dataclasses.replace(TINY, crop_nodes=12, crop_overlap=4)
    m = _model(5, cfg).eval()
    nodes = small["nodes"].numpy()
    crops, owner = plan_crops(nodes, 12, 4)
    assert len(crops) >= 3 and all(len(c) == 12 for c in crops)
    assert (owner >= 0).all()
    for i in range(len(nodes)):
        assert i in crops[owner[i]]
    pred = m.predict_cropped(nodes, small["density"], None, progress=lambda f: None)
    assert np.isfinite(pred.translations).all() and np.isfinite(pred.aa_logits).all()
    assert (pred.edge_index < len(nodes)).all()
    valid = pred.edge_index >= 0
    assert valid.sum(1).min() >= 7  # each node keeps (almost) all of its k = 8 neighbours
    # neighbours are real nodes near the node
    d = np.linalg.norm(nodes[:, None] - nodes[np.where(valid, pred.edge_index, 0)], axis=-1)
    assert d[valid].max() < 20.0
    with pytest.raises(RuntimeError, match="stop"):
        m.predict_cropped(nodes, small["density"], None,
                          should_stop=lambda: (_ for _ in ()).throw(RuntimeError("stop")))


def test_cropped_inference_averages_overlapping_crops(small):
    """Residue types are the mean log-probabilities over the owner crop and every crop that
    holds the node deep enough inside; geometry comes from the owner crop alone."""
    from chimerax.modelangelo.model.gnn import crop_margins

    nodes = small["nodes"].numpy()
    base = dataclasses.replace(TINY, crop_nodes=14, crop_overlap=6)
    m = _model(7, base).eval()
    crops, owner = plan_crops(nodes, 14, 6)
    rot0 = initial_rotations(len(nodes), base.init_seed)
    runs = []
    for idx in crops:  # every crop on its own, as predict_cropped runs them
        o = m._run_numpy(nodes[idx], small["density"], None, None, rot0[idx], "cpu", False)
        runs.append(m._to_prediction(o, idx))
    owner_only = m.predict_cropped(nodes, small["density"], None)  # default margin 10 A
    m.cfg = dataclasses.replace(base, crop_average_margin=float("inf"))
    strict = m.predict_cropped(nodes, small["density"], None)
    m.cfg = dataclasses.replace(base, crop_average_margin=0.0)  # every crop holding a node
    every = m.predict_cropped(nodes, small["density"], None)

    def logp(x):
        return x - np.log(np.exp(x - x.max(1, keepdims=True)).sum(1, keepdims=True)) - x.max(1, keepdims=True)

    n_shared = 0
    for i in range(len(nodes)):
        own = runs[owner[i]]
        row = int(np.nonzero(crops[owner[i]] == i)[0][0])
        holders = [(c, int(np.nonzero(idx == i)[0][0])) for c, idx in enumerate(crops) if i in idx]
        n_shared += len(holders) > 1
        # geometry and neighbour lists: the owner crop's, whatever the margin
        for pred in (strict, every, owner_only):
            assert np.allclose(pred.translations[i], own.translations[row], atol=1e-5)
            assert np.array_equal(pred.edge_index[i], own.edge_index[row])
        # margin inf: the owner crop alone (as log-probabilities)
        assert np.allclose(strict.aa_logits[i], logp(own.aa_logits[row:row + 1])[0], atol=1e-4)
        assert np.isclose(strict.confidence[i], own.confidence[row], atol=1e-4)
        # margin 0: the mean over all holders
        want = np.mean([logp(runs[c].aa_logits[r:r + 1])[0] for c, r in holders], axis=0)
        assert np.allclose(every.aa_logits[i], want, atol=1e-4)
        want_conf = np.mean([runs[c].confidence[r] for c, r in holders])
        assert np.isclose(every.confidence[i], want_conf, atol=1e-3)
        # edge logits: averaged where both crops list the same neighbour
        j = own.edge_index[row, 0]
        vals = [runs[c].edge_logits[r][runs[c].edge_index[r] == j] for c, r in holders]
        want_edge = np.mean([v[0] for v in vals if len(v)])
        assert np.isclose(every.edge_logits[i, 0], want_edge, atol=1e-4)
        # the default margin: each holder deep enough inside counts, the owner always
        deep = [(c, r) for c, r in holders
                if c == owner[i] or crop_margins(nodes, crops[c])[r] >= base.crop_average_margin]
        want = np.mean([logp(runs[c].aa_logits[r:r + 1])[0] for c, r in deep], axis=0)
        assert np.allclose(owner_only.aa_logits[i], want, atol=1e-4)
    assert n_shared >= 5  # the test exercises real overlaps
    assert np.allclose(np.linalg.norm(every.torsions, axis=-1), 1.0, atol=1e-3)


def test_bf16_autocast_forward_backward(small):
    m = _model(6)
    n = len(small["nodes"])
    tg = targets_from_protein(small["protein"])
    emb, mask = m.embed_sequences([small["sequence"]])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        o = m(small["nodes"], small["density"], emb, mask,
              init_rotations=torch.tensor(initial_rotations(n, 0)))
        total, _ = gnn_loss(o, tg, TINY)
    total.backward()
    assert o["translations"].dtype == torch.float32  # positions never drop to bf16
    assert torch.isfinite(total)
    assert geo.is_rotation(o["rotations"], atol=1e-4)


def test_knn_and_tiny_graphs(small):
    x = small["nodes"]
    idx, dist = knn(x, 5)
    full = torch.cdist(x, x) + torch.eye(len(x)) * 1e9
    want = full.topk(5, largest=False).values
    assert torch.allclose(dist, want, atol=1e-3)
    assert (idx != torch.arange(len(x))[:, None]).all()
    m = _model(7).eval()
    for n in (1, 2):
        pred = m.predict(x[:n].numpy(), small["density"], None)
        assert np.isfinite(pred.translations).all()
        assert (pred.edge_index[:, n - 1:] == -1).all()


def test_parameter_count_reported():
    cfg = GNNConfig()
    m = GNN(cfg)
    total = sum(p.numel() for p in m.parameters())
    esm = sum(p.numel() for p in m.seq_encoder.parameters())
    per_layer = sum(p.numel() for p in m.layers[0].parameters())
    print(f"default GNN: {total / 1e6:.2f}M parameters ({esm / 1e6:.2f}M ESM2, "
          f"{per_layer / 1e6:.2f}M per layer)")
    assert total > 0


@pytest.mark.slow
def test_time_and_memory_2000_nodes():
    """Shipped config, 2,000 nodes, cropped inference (printed, not asserted)."""
    p = load_protein(DATA / "structures" / "db55_1A2K_b.cif.gz")
    rng = np.random.default_rng(0)
    base = p.ca
    # 2,000 nodes: copies of the structure side by side
    nodes = np.concatenate([base + np.array([60.0 * i, 0, 0]) for i in range(5)])[:2000]
    nodes = nodes + rng.normal(0, 0.5, nodes.shape)
    origin = nodes.min(0) - 10
    shape = tuple((np.ceil((nodes.max(0) + 10 - origin) / 1.5).astype(int) + 1)[::-1])
    data = rng.normal(size=shape).astype(np.float32)
    m = GNN(GNNConfig()).eval()
    dens = DensityGrid.from_numpy(data, origin, 1.5)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    pred = m.predict_cropped(nodes, dens, [rc.sequence_from_aatype(p.aatype)])  # fp32, as builds run
    dt = time.perf_counter() - t0
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    crops, _ = plan_crops(nodes, m.cfg.crop_nodes, m.cfg.crop_overlap)
    print(f"2000 nodes, {len(crops)} crops, recycles {m.cfg.recycles}: {dt:.1f} s, "
          f"peak RSS {rss1 / 1024:.0f} MB (+{(rss1 - rss0) / 1024:.0f} MB)")
    assert len(pred) == 2000
