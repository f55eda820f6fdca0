import argparse
import dataclasses

import esm
import pytest
import torch
from esm.model.esm2 import ESM2

from chimerax.modelangelo.config import GNNConfig
from chimerax.modelangelo.errors import ModelAngeloError
from chimerax.modelangelo.model.esm_encoder import ESMEncoder, load_pretrained_esm
from chimerax.modelangelo.model.gnn import GNN

torch.set_num_threads(1)

class Opaque:
    """A class torch.load(weights_only=True) refuses to unpickle."""


SEQS = ["MKTAYIAKQRQISFVKSHFSRQ", "GSHMXXLE", "ACDEFGHIKLMNPQRSTVWY"]


def _save_fair_esm_checkpoint(model: ESM2, path, with_regression: bool) -> None:
    """Write ``model`` the way fair-esm's ESM2 release files are laid out."""
    cfg = argparse.Namespace(encoder_layers=model.num_layers,
                             encoder_embed_dim=model.embed_dim,
                             encoder_attention_heads=model.attention_heads,
                             token_dropout=model.token_dropout)
    state = {"encoder.sentence_encoder." + k: v for k, v in model.state_dict().items()
             if not k.startswith("contact_head.regression")}
    torch.save({"cfg": {"model": cfg}, "model": state}, path)
    if with_regression:
        reg = {k: v for k, v in model.state_dict().items()
               if k.startswith("contact_head.regression")}
        torch.save({"model": reg}, path.with_name(path.stem + "-contact-regression.pt"))


@pytest.fixture()
def tiny_esm():
    torch.manual_seed(0)
    return ESM2(num_layers=2, embed_dim=64, attention_heads=4,
                alphabet=esm.Alphabet.from_architecture("ESM-1b"), token_dropout=True).eval()


@pytest.mark.parametrize("with_regression", [True, False])
def test_pretrained_checkpoint_roundtrip(tmp_path, tiny_esm, with_regression):
    path = tmp_path / "esm2_t2_64_test.pt"
    _save_fair_esm_checkpoint(tiny_esm, path, with_regression)
    enc = load_pretrained_esm(path, out_dim=32)
    tokens = enc.tokenize(SEQS)
    with torch.no_grad():
        want = tiny_esm(tokens, repr_layers=[2])["representations"][2]
        got = enc.esm(tokens, repr_layers=[2])["representations"][2]
    assert torch.equal(want, got)
    emb, mask = enc.embed(SEQS)
    assert emb.shape == (sum(map(len, SEQS)), 32) and mask.all()
    # frozen language model, trainable projection
    assert not any(p.requires_grad for p in enc.esm.parameters())
    assert all(p.requires_grad for p in enc.proj.parameters())
    if with_regression:  # fair-esm's own loader reads the same file to the same model
        with torch.serialization.safe_globals([argparse.Namespace]):
            ref, _ = esm.pretrained.load_model_and_alphabet_local(str(path))
        with torch.no_grad():
            assert torch.equal(ref(tokens, repr_layers=[2])["representations"][2], want)


def test_gnn_takes_pretrained_esm_of_matching_architecture(tmp_path, tiny_esm):
    path = tmp_path / "esm2_t2_64_test.pt"
    _save_fair_esm_checkpoint(tiny_esm, path, False)
    cfg = GNNConfig(hidden=32, num_layers=1, heads=4, k_neighbours=4, cube_size=3,
                    cube_channels=(4,), seq_embed_dim=16, esm_layers=2, esm_embed_dim=64,
                    esm_heads=4, esm_token_dropout=True, esm_frozen=True)
    gnn = GNN(cfg)
    gnn.load_pretrained_esm(path)
    tokens = gnn.seq_encoder.tokenize(SEQS)
    with torch.no_grad():
        assert torch.equal(gnn.seq_encoder.esm(tokens, repr_layers=[2])["representations"][2],
                           tiny_esm(tokens, repr_layers=[2])["representations"][2])
    emb, _ = gnn.embed_sequences(SEQS)
    assert emb.shape == (sum(map(len, SEQS)), 16)
    # the state dict rebuilds from the config alone
    GNN(cfg).load_state_dict(gnn.state_dict())
    wrong = GNN(dataclasses.replace(cfg, esm_token_dropout=False))
    with pytest.raises(ModelAngeloError, match="esm_token_dropout"):
        wrong.load_pretrained_esm(path)


def test_small_encoder_embeds_and_trains():
    enc = ESMEncoder.small(num_layers=1, embed_dim=32, heads=4)
    tokens = enc.tokenize(["ACD", "J1*"])  # odd letters become X
    a = enc.alphabet
    assert tokens[0, 0] == a.cls_idx and tokens[0, 4] == a.eos_idx
    assert tokens[1, 1] == a.get_idx("X") and tokens[1, 3] == a.get_idx("X")
    assert tokens[1, 4] == a.eos_idx and tokens.shape == (2, 5)
    assert enc.tokenize(["A", "MKV"])[0, 3] == a.padding_idx
    emb, mask = enc.embed(["ACD", "", "MKV"])
    assert emb.shape == (6, 32) and mask.dtype == torch.bool
    emb.sum().backward()
    assert enc.esm.embed_tokens.weight.grad is not None
    empty, m = enc.embed([])
    assert empty.shape == (0, 32) and m.shape == (0,)


def test_bad_checkpoints_are_user_errors(tmp_path):
    with pytest.raises(ModelAngeloError, match="does not exist"):
        load_pretrained_esm(tmp_path / "missing.pt")
    p = tmp_path / "notesm.pt"
    torch.save({"weights": torch.zeros(2)}, p)
    with pytest.raises(ModelAngeloError, match="not a fair-esm checkpoint"):
        load_pretrained_esm(p)
    q = tmp_path / "pickled.pt"
    torch.save({"model": {}, "cfg": {"model": Opaque()}}, q)
    with pytest.raises(ModelAngeloError, match="allow_pickle"):
        load_pretrained_esm(q)
