import pytest
import torch

from chimerax.modelangelo.config import CNNConfig
from chimerax.modelangelo.model.cnn import CAUNet
from chimerax.modelangelo.model.weights import load_weights, save_weights


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(1)


def test_output_shape_and_divisor():
    cfg = CNNConfig(widths=(4, 8, 8), crop_size=16)
    model = CAUNet(cfg).eval()
    assert model.divisor == 4
    x = torch.randn(2, 1, 16, 24, 32)
    assert model(x).shape == (2, 4, 16, 24, 32)


def test_channels_last_bf16_matches_fp32():
    cfg = CNNConfig(widths=(4, 8, 8))
    torch.manual_seed(0)
    model = CAUNet(cfg).eval()
    x = torch.randn(1, 1, 16, 16, 16)
    ref = model(x)
    model_cl = model.to(memory_format=torch.channels_last_3d)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model_cl(x.contiguous(memory_format=torch.channels_last_3d)).float()
    assert torch.allclose(out, ref, atol=0.1, rtol=0.05)


def test_weights_round_trip_fp16(tmp_path):
    cfg = CNNConfig(widths=(4, 8, 8))
    model = CAUNet(cfg).eval()
    path = tmp_path / "cnn.pt"
    save_weights(path, model.state_dict(), {"cnn": cfg.__dict__}, {"steps": 1})
    blob = load_weights(path)
    again = CAUNet(cfg).eval()
    again.load_state_dict(blob["state_dict"])
    x = torch.randn(1, 1, 16, 16, 16)
    assert torch.allclose(model(x), again(x), atol=2e-2)
    assert blob["record"] == {"steps": 1}
    raw = torch.load(path, weights_only=False)["state_dict"]  # fp16 on disk
    assert {v.dtype for v in raw.values() if v.is_floating_point()} == {torch.float16}
