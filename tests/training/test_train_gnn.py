"""GNN trainer: steps, checkpoint/resume (same steps, same RNG), validation, export."""

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from chimerax.modelangelo import residue_constants as rc
from chimerax.modelangelo.cli import make_parser
from chimerax.modelangelo.config import Config, GNNConfig, SimulationConfig
from chimerax.modelangelo.geometry import frames_from_backbone
from chimerax.modelangelo.model.common import knn
from chimerax.modelangelo.model.loading import load_gnn
from chimerax.modelangelo.protein import load_protein
from chimerax.modelangelo.training.gnn_data import GNNDataConfig, edge_targets, make_example
from chimerax.modelangelo.training.train_gnn import GNNTrainer, learning_rate
from chimerax.modelangelo.training.validate_gnn import GNNValidator, example_metrics, summarise

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
torch.set_num_threads(1)

TRAIN = ["db55_1A2K_b", "db55_1ACB_b"]
VAL = ["db55_1A2K_u"]


def tiny_config() -> Config:
    cfg = Config()
    cfg.gnn = GNNConfig(hidden=32, num_layers=2, heads=4, k_neighbours=8, esm_layers=1,
                        seq_embed_dim=32, esm_heads=4, cube_channels=(4, 8, 8), recycles=1,
                        edge_pair_dim=16)
    cfg.train.checkpoint_every = 2
    cfg.train.validate_every = 3
    cfg.simulation = dataclasses.replace(SimulationConfig(), detergent_prob=0.0)
    return cfg


DCFG = GNNDataConfig(crop_nodes=40)


def trainer(run_dir, **kw) -> GNNTrainer:
    return GNNTrainer(run_dir, tiny_config(), DCFG, train_names=TRAIN, log=lambda s: None, **kw)


def params(model) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_train_checkpoint_and_resume(tmp_path):
    a = trainer(tmp_path / "a")
    before = params(a.model)
    a.train(3)
    assert a.step == 3
    ckpt = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=False)
    assert set(ckpt) == {"model", "opt", "step", "best_score", "rng", "torch_rng", "config",
                         "data_config", "elapsed", "skipped"}  # what live runs resume from
    assert ckpt["step"] == 3 and ckpt["data_config"]["crop_nodes"] == 40
    assert any(not torch.equal(before[k], v) for k, v in params(a.model).items())
    assert not (tmp_path / "a" / "log.jsonl").exists()  # a log line every 10 steps

    # Records of steps run after the checkpoint (a stopped run) are dropped on resume.
    log = tmp_path / "a" / "log.jsonl"
    log.write_text('{"step": 2, "loss": 1.0}\n{"step": 10, "loss": 1.0}\n'
                   '{"validation": {"score": 0.5, "step": 10}}\n')
    b = trainer(tmp_path / "a")  # resumes
    assert b.step == 3
    assert [json.loads(x)["step"] for x in log.read_text().splitlines()] == [2]
    assert b.rng.bit_generator.state == a.rng.bit_generator.state
    for k, v in params(a.model).items():
        assert torch.equal(v, b.model.state_dict()[k])
    b.train(5)

    # Resuming gives exactly what an uninterrupted run gives.
    c = trainer(tmp_path / "c")
    c.train(5)
    assert c.step == b.step == 5
    assert c.rng.bit_generator.state == b.rng.bit_generator.state
    for k, v in params(c.model).items():
        torch.testing.assert_close(v, b.model.state_dict()[k], rtol=0, atol=1e-6)


def test_learning_rate_warms_up():
    assert learning_rate(0, 1e-3) < learning_rate(50, 1e-3) < learning_rate(5000, 1e-3) == 1e-3


def perfect_outputs(ex, k=8):
    """Outputs of an oracle GNN: true frames, types, torsions, edges (for metric checks)."""
    pos = torch.from_numpy(ex.atom_positions)
    rot, trans = frames_from_backbone(pos[:, rc.N_IDX], pos[:, rc.CA_IDX], pos[:, rc.C_IDX])
    e_idx, _ = knn(trans, k)
    nb, nxt = edge_targets(e_idx, torch.from_numpy(ex.prev_node), torch.from_numpy(ex.next_node))
    n = len(ex)
    from chimerax.modelangelo.geometry import backbone_from_frames

    return {
        "rotations": rot, "translations": trans, "backbone": backbone_from_frames(rot, trans),
        "aa_logits": torch.nn.functional.one_hot(torch.from_numpy(ex.aatype).clamp(0, 19),
                                                 20).float() * 10,
        "torsions": torch.from_numpy(ex.torsions)[:, None].expand(n, 20, 7, 2),
        "edge_index": e_idx, "edge_logits": nb * 20 - 10, "next_logits": nxt * 20 - 10,
        "confidence": torch.full((n,), 90.0) + torch.rand(n),
        "seq_position": _pointer(ex.seq_position, sum(len(q) for q in ex.sequences)),
    }


def _pointer(position: np.ndarray, length: int) -> torch.Tensor:
    """Log-probabilities [M, L] peaked at ``position`` (uniform where it is -1)."""
    logits = torch.zeros(len(position), length)
    has = np.nonzero(position >= 0)[0]
    logits[has, position[has]] = 20.0
    return torch.log_softmax(logits, dim=-1)


def test_metrics_of_a_perfect_and_a_poor_prediction():
    protein = load_protein(DATA / "structures" / "db55_1A2K_u.cif.gz")
    cfg = tiny_config()
    cfg.simulation = dataclasses.replace(cfg.simulation, drop_chain_prob=0.0,
                                         drop_segment_prob=0.0)
    ex = make_example(protein, np.random.default_rng(2), cfg,
                      GNNDataConfig(crop_nodes=60, no_sequence_prob=0.0), mode="noise")
    out = perfect_outputs(ex)
    m = summarise([example_metrics(out, ex)], [0.0])
    assert m["ca_rmsd"] < 1e-3 and m["aa_accuracy"] == 1.0 and m["edge_f1"] == 1.0
    assert m["seq_position_accuracy"] == 1.0
    assert m["backbone_rmsd"] < 0.1 and m["full_atom_rmsd"] < 0.4
    assert m["torsion_mae_deg"] < 0.5 and m["direction_accuracy"] == 1.0
    assert m["input_ca_rmsd"] == pytest.approx(1.0, abs=0.25)
    assert m["score"] == pytest.approx(1.0 + 0.25 - 0.2 * m["ca_rmsd"], abs=1e-3)
    # Worse everything: CAs moved 2 A, wrong types, no edges, confidence anti-correlated.
    bad = dict(out)
    shift = torch.randn(len(ex), 3)
    shift = 2 * shift / shift.norm(dim=-1, keepdim=True) * torch.rand(len(ex), 1)
    bad["translations"] = out["translations"] + shift
    bad["aa_logits"] = out["aa_logits"].roll(1, dims=1)
    bad["edge_logits"] = torch.full_like(out["edge_logits"], -5.0)
    bad["confidence"] = 40 * shift.norm(dim=-1)  # most confident where most wrong
    bad["seq_position"] = out["seq_position"].roll(1, dims=1)
    mb = summarise([example_metrics(bad, ex)], [0.0])
    assert mb["ca_rmsd"] > 0.8 and mb["aa_accuracy"] == 0.0 and mb["edge_f1"] == 0.0
    assert mb["seq_position_accuracy"] == 0.0
    assert mb["confidence_corr"] == pytest.approx(-1.0, abs=1e-3)
    assert mb["score"] < m["score"] - 1


def test_validation_examples_draw_independently(monkeypatch):
    """Each validation example has its own random stream: one example drawing more (a new
    CNN finding more peaks, say) leaves the later examples unchanged."""
    from chimerax.modelangelo.training import validate_gnn

    cfg = tiny_config()
    a = validate_gnn.validation_examples(cfg, DCFG, n_maps=3, names=VAL)
    real = validate_gnn.make_example
    calls = []

    def greedy(protein, rng, *args, **kw):  # the first example draws 100 numbers more
        if not calls:
            rng.random(100)
        calls.append(1)
        return real(protein, rng, *args, **kw)

    monkeypatch.setattr(validate_gnn, "make_example", greedy)
    b = validate_gnn.validation_examples(cfg, DCFG, n_maps=3, names=VAL)
    assert not np.allclose(a[0].node_xyz, b[0].node_xyz)
    for ea, eb in zip(a[1:], b[1:]):
        assert ea.mode == eb.mode and np.array_equal(ea.node_xyz, eb.node_xyz)
        assert np.array_equal(ea.grid.data, eb.grid.data)


def test_validation_best_and_export_loadable(tmp_path, capsys):
    run = tmp_path / "run"
    t = trainer(run)
    val = GNNValidator(t.cfg, t.dcfg, n_maps=2, names=VAL)
    assert [ex.mode for ex in val.examples] == ["noise", "cnn-like"]
    t.train(3, validate=val)
    best = torch.load(run / "best.pt", weights_only=False)
    assert set(best) == {"model", "config", "data_config", "step", "validation"}
    assert best["step"] == 3
    for key in ("ca_rmsd", "aa_accuracy", "backbone_rmsd", "torsion_mae_deg", "edge_f1",
                "confidence_corr", "score"):
        assert key in best["validation"]
    per_res = best["validation"]["by_resolution"]  # the two examples' resolutions
    assert set(per_res) == {f"{ex.resolution:.1f}" for ex in val.examples} == {"2.5", "3.0"}
    assert all(0.0 <= r["aa_accuracy"] <= 1.0 for r in per_res.values())
    per_mode = best["validation"]["by_mode"]  # one example of each mode
    assert set(per_mode) == {"noise", "cnn-like"}
    for mode, ex in zip(("noise", "cnn-like"), val.examples):  # = that example's figures
        assert per_mode[mode] == per_res[f"{ex.resolution:.1f}"]
    log = (run / "log.jsonl").read_text()
    assert '"validation"' in log

    out = tmp_path / "gnn.pt"
    args = make_parser(["train-gnn"]).parse_args(
        ["train-gnn", "--run-dir", str(run), "--export", str(out), "--note", "test",
         "--threads", "1"])
    from chimerax.modelangelo.cli import train_gnn

    assert train_gnn.main(args) == 0
    blob = torch.load(out, weights_only=False)
    assert blob["record"]["steps"] == 3 and blob["record"]["note"] == "test"
    md = out.with_suffix(".md").read_text()
    assert "| by_resolution 3.0 | aa_accuracy " in md
    assert "| by_mode cnn-like | aa_accuracy " in md
    halves = [v.dtype for k, v in blob["state_dict"].items() if "inv_freq" not in k]
    assert set(halves) <= {torch.float16, torch.int64, torch.bool}
    model, gcfg = load_gnn(torch.device("cpu"), out)
    assert gcfg == t.cfg.gnn
    assert not model.training
    for k, v in best["model"].items():
        got = model.state_dict()[k]
        if "inv_freq" in k:
            assert torch.equal(got, v)  # kept fp32 exactly
        else:
            torch.testing.assert_close(got, v.float(), rtol=1e-3, atol=1e-3)

    # --score: the exported file on the run's validation set; no training, nothing recorded,
    # the run's log untouched (a training job may be appending to it meanwhile)
    assert not (run / "commands.txt").exists()
    with open(run / "log.jsonl", "a") as fh:  # a step the running job logged after its checkpoint
        fh.write(json.dumps({"step": 4, "loss": 1.0}) + "\n")
    log_before = (run / "log.jsonl").read_text()
    args = make_parser(["train-gnn"]).parse_args(
        ["train-gnn", "--run-dir", str(run), "--score", str(out), "--val-maps", "1",
         "--cnn-nodes-prob", "0", "--threads", "1"])
    assert train_gnn.main(args) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith('{"weights"')]
    assert len(lines) == 1
    scored = json.loads(lines[0])
    assert scored["weights"] == str(out) and np.isfinite(scored["score"])
    assert 0.0 <= scored["aa_accuracy"] <= 1.0
    assert not (run / "commands.txt").exists()
    assert (run / "log.jsonl").read_text() == log_before
    assert torch.load(run / "checkpoint.pt", weights_only=False)["step"] == 3


def test_validation_runs_in_fp32_whatever_training_uses(tmp_path):
    """Validation figures must compare across machines (bf16 autocast is on only where
    the CPU has it natively) and match inference, which runs in fp32."""
    t = trainer(tmp_path)
    val = GNNValidator(t.cfg, t.dcfg, n_maps=1, names=VAL)
    fp32 = val(t.model, t.cfg)
    bf16_cfg = dataclasses.replace(t.cfg, train=dataclasses.replace(t.cfg.train, bf16=True))
    assert GNNValidator(bf16_cfg, t.dcfg, n_maps=1, names=VAL)(t.model, bf16_cfg) == fp32
    assert val(t.model, bf16_cfg) == fp32


def test_cli_arguments_registered():
    args = make_parser(["train-gnn"]).parse_args(
        ["train-gnn", "--run-dir", "x", "--steps", "7", "--cnn-nodes-prob", "0.3",
         "--hidden", "128", "--layers", "4", "--minutes", "5", "--esm-layers", "3",
         "--esm-dim", "160", "--esm-heads", "8"])
    assert args.steps == 7 and args.cnn_nodes_prob == 0.3 and args.hidden == 128
    assert (args.esm_layers, args.esm_dim, args.esm_heads) == (3, 160, 8)
    assert isinstance(args, argparse.Namespace) and args.export is None


def test_cnn_nodes_without_weights_is_an_error(tmp_path):
    from chimerax.modelangelo.cli import main

    rc_ = main(["train-gnn", "--run-dir", str(tmp_path / "r"), "--cnn-nodes-prob", "0.5",
                "--cnn-weights", str(tmp_path / "missing.pt"), "--steps", "1", "--threads", "1"])
    assert rc_ == 2
    assert not (tmp_path / "r" / "checkpoint.pt").exists()


def test_examples_depend_on_the_step_only_and_workers_make_the_same(tmp_path):
    a = trainer(tmp_path / "a")
    b = trainer(tmp_path / "b", data_workers=1)
    try:
        for step in (0, 1, 4):
            a.step = b.step = step
            (ea, ra), (eb, rb) = a.next_example(), b.next_example()
            assert ea.params["name"] == eb.params["name"] and ra == rb
            np.testing.assert_array_equal(ea.node_xyz, eb.node_xyz)
            np.testing.assert_array_equal(ea.grid.data, eb.grid.data)
        a.step = 1
        assert not np.array_equal(a.next_example()[0].node_xyz, ea.node_xyz)
    finally:
        b.close()


@pytest.mark.parametrize("extra, message", [
    (["--data-workers", "-1"], "--data-workers"),
    (["--device", "tpu"], "unknown device"),
    (["--ema-decay", "1.5"], "--ema-decay"),
] + ([] if torch.cuda.is_available() else [(["--device", "cuda"], "no CUDA GPU")]))
def test_bad_run_options_are_clear_errors(tmp_path, capsys, extra, message):
    from chimerax.modelangelo.cli import main

    rc_ = main(["train-gnn", "--run-dir", str(tmp_path / "r"), "--steps", "1",
                "--threads", "1", *extra])
    assert rc_ == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "r" / "checkpoint.pt").exists()


def test_checkpoints_hold_cpu_tensors_and_name_the_device(tmp_path):
    t = trainer(tmp_path / "a", device="cpu")
    assert t.device == torch.device("cpu")
    assert next(t.model.parameters()).device == t.device
    t.train(2)
    ckpt = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=False)
    tensors = [v for v in ckpt["model"].values()]
    tensors += [v for st in ckpt["opt"]["state"].values() for v in st.values()
                if isinstance(v, torch.Tensor)]
    assert tensors and all(v.device.type == "cpu" for v in tensors)


def test_weight_average_is_validated_kept_and_resumed(tmp_path):
    def ema_trainer(decay):
        cfg = tiny_config()
        cfg.train.ema_decay = decay
        return GNNTrainer(tmp_path / "run", cfg, DCFG, train_names=TRAIN, log=lambda s: None)

    a = ema_trainer(0.5)
    w0 = params(a.model)
    assert all(torch.equal(a.ema[k], w0[k]) for k in w0)  # starts from the weights
    a.train(1)
    w1 = params(a.model)
    changed = [k for k in w0 if w0[k].is_floating_point() and not torch.equal(w0[k], w1[k])]
    assert changed
    for k in changed:
        torch.testing.assert_close(a.ema[k], 0.5 * w0[k] + 0.5 * w1[k])

    seen = {}

    def validate(model, cfg):
        seen.update(params(model))
        return {"score": 1.0}

    a.validate(validate)
    for k in changed:  # validation scored the average; training goes on from the raw weights
        assert torch.equal(seen[k], a.ema[k]) and torch.equal(params(a.model)[k], w1[k])
    best = torch.load(tmp_path / "run" / "best.pt", weights_only=False)
    assert all(torch.equal(best["model"][k], a.ema[k]) for k in changed)
    assert best["validation"]["weights"] == "ema 0.5"

    b = ema_trainer(0.5)  # resumed: the average comes back from checkpoint.pt
    assert all(torch.equal(b.ema[k], a.ema[k]) for k in a.ema)
    c = ema_trainer(0.0)  # turned off: no average kept or written
    assert c.ema is None
    c.checkpoint()
    assert "ema" not in torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)


def test_a_deeper_run_starts_from_a_shallower_ones_weights(tmp_path, capsys):
    """--init-from: a 3-layer run from a 2-layer run's weight average predicts exactly
    what the 2-layer network did (the new layer starts as the identity), then trains;
    resuming keeps its own weights and remembers where they came from."""
    from chimerax.modelangelo.cli import main
    from chimerax.modelangelo.training.train_gnn import run_model

    cfg = tiny_config()
    cfg.train.ema_decay = 0.5
    a = GNNTrainer(tmp_path / "a", cfg, DCFG, train_names=TRAIN, log=lambda s: None)
    a.train(2)
    source = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=False)

    deeper = tiny_config()
    deeper.gnn = dataclasses.replace(deeper.gnn, num_layers=3)
    b = GNNTrainer(tmp_path / "b", deeper, DCFG, train_names=TRAIN, log=lambda s: None,
                   init_weights=("run a", source["ema"]))
    assert len(b.model.layers) == 3 and b.init_from == "run a"
    shallow = GNNTrainer(tmp_path / "s", tiny_config(), DCFG, train_names=TRAIN,
                         log=lambda s: None, init_weights=("run a", source["ema"]))
    ex, _ = b.next_example()
    outs = [run_model(t.model.eval(), ex, 0, bf16=False) for t in (shallow, b)]
    for key in ("aa_logits", "translations", "rotations", "confidence"):
        torch.testing.assert_close(outs[1][key], outs[0][key], rtol=0, atol=1e-5)
    assert not torch.equal(outs[0]["aa_logits"],
                           run_model(trainer(tmp_path / "fresh").model.eval(), ex, 0,
                                     bf16=False)["aa_logits"])  # the weights did arrive

    b.model.train()
    b.train(1)
    ckpt = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=False)
    assert ckpt["init_from"] == "run a" and ckpt["step"] == 1
    changed = params(b.model)
    resumed = GNNTrainer(tmp_path / "b", deeper, DCFG, train_names=TRAIN, log=lambda s: None,
                         init_weights=("run a", source["ema"]))  # resumes: not applied again
    assert resumed.step == 1 and resumed.init_from == "run a"
    assert all(torch.equal(v, resumed.model.state_dict()[k]) for k, v in changed.items())

    # An exported (fp16) weight file serves as well, with its network and data settings.
    from chimerax.modelangelo.cli.train_gnn import _initial_weights
    from chimerax.modelangelo.model.weights import save_weights

    save_weights(tmp_path / "w.pt", source["ema"], source["config"], {})
    (what, state), gnn_cfg, _ = _initial_weights(tmp_path / "w.pt", GNNDataConfig())
    assert gnn_cfg == tiny_config().gnn and "w.pt" in what
    assert all(v.dtype == torch.float32 for k, v in state.items() if v.is_floating_point())
    torch.testing.assert_close(state["node_init"], source["ema"]["node_init"], rtol=1e-3,
                               atol=1e-4)

    # The CLI: a run folder as the source, whose commands are copied into the new run's
    # record; another width is a clear error, not a traceback.
    (tmp_path / "a" / "commands.txt").write_text("2026-11-25 step 0: modelangelo train-gnn A\n")
    rc_ = main(["train-gnn", "--run-dir", str(tmp_path / "f"), "--init-from",
                str(tmp_path / "a"), "--layers", "3", "--steps", "0", "--threads", "1",
                "--cnn-nodes-prob", "0", "--val-maps", "1"])
    assert rc_ == 0
    lines = (tmp_path / "f" / "commands.txt").read_text().splitlines()
    assert "step 0: modelangelo" in lines[0]  # this command (pytest's argv here)
    assert lines[1:] == [f"# the weights came from {tmp_path / 'a'}, trained by these commands:",
                         "#   2026-11-25 step 0: modelangelo train-gnn A"]
    assert torch.load(tmp_path / "f" / "checkpoint.pt", weights_only=False)["config"]["gnn"][
        "num_layers"] == 3
    rc_ = main(["train-gnn", "--run-dir", str(tmp_path / "c"), "--init-from",
                str(tmp_path / "a"), "--layers", "3", "--hidden", "64", "--steps", "1",
                "--threads", "1", "--cnn-nodes-prob", "0"])
    assert rc_ == 2 and "only --layers" in capsys.readouterr().err
    wide = tiny_config()
    wide.gnn = dataclasses.replace(wide.gnn, hidden=48)
    with pytest.raises(Exception, match="do not fit this network"):
        GNNTrainer(tmp_path / "d", wide, DCFG, train_names=TRAIN, log=lambda s: None,
                   init_weights=("run a", source["model"]))
    assert not (tmp_path / "d" / "checkpoint.pt").exists()
    rc_ = main(["train-gnn", "--run-dir", str(tmp_path / "e"), "--init-from",
                str(tmp_path / "missing"), "--steps", "1", "--threads", "1"])
    assert rc_ == 2 and "no weights at" in capsys.readouterr().err
