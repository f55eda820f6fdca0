import json

from chimerax.modelangelo.config import CNNConfig, Config, section_from_dict


def test_round_trip_through_json():
    cfg = Config()
    cfg.cnn.widths = (8, 16, 32)
    cfg.gnn.hidden = 64
    again = Config.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    assert isinstance(again.cnn.widths, tuple)


def test_unknown_and_missing_keys():
    cnn = section_from_dict(CNNConfig, {"widths": [4, 8], "no_such_field": 3})
    assert cnn.widths == (4, 8)
    assert cnn.crop_size == CNNConfig().crop_size
