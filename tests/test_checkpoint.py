import dataclasses
import json
import pickle

import pytest
import torch

from spikeshot.events.binning import FrameGeometry
from spikeshot.models import ModelConfig, Network, Quantizer, checkpoint
from spikeshot.models.checkpoint import Checkpoint, CheckpointError, load, save
from spikeshot.service import cli

CFG = ModelConfig(ways=3, input_hw=(8, 8), bins=4, burn_in=1, channels=(4, 6), kernel=3)
GEOM = FrameGeometry(sensor_width=16, sensor_height=16, downsample=2, bins=4, window_us=4000)


def _ckpt():
    params = Network(CFG).init(0)
    return Checkpoint(
        CFG,
        GEOM,
        params,
        inner_lr={"out.bias": torch.tensor(0.5)},
        quantizer=Quantizer(bits=8),
        training={"dataset": "double_digits"},
        metrics={"val_accuracy": 0.5},
        name="tiny",
    )


def test_round_trip(tmp_path):
    ck = _ckpt()
    wpath, cpath = save(ck, tmp_path / "tiny")
    assert wpath.name == "tiny.safetensors" and cpath.name == "tiny.json"
    card = json.loads(cpath.read_text())
    assert card["model"]["channels"] == [4, 6] and card["geometry"]["downsample"] == 2
    assert card["quantization"]["bits"] == 8 and card["parameters"] > 0
    for name in ("tiny", "tiny.json", "tiny.safetensors"):
        back = load(tmp_path / name)
        assert back.config == CFG and back.geometry == GEOM and back.quantizer == Quantizer(8)
        assert all(torch.equal(back.params[k], ck.params[k]) for k in ck.params)
        assert torch.equal(back.inner_lr["out.bias"], torch.tensor(0.5))


def test_add_to_zoo_copies_a_runs_best_under_its_zoo_name(tmp_path, capsys):
    save(_ckpt(), tmp_path / "run" / "best")
    zoo = tmp_path / "zoo"
    zoo.mkdir()
    assert cli.main(["add-to-zoo", str(tmp_path / "run"), "mine", "--zoo", str(zoo)]) == 0
    assert "mine.json" in capsys.readouterr().out
    back = load(zoo / "mine")
    card, original = back.card(), _ckpt().card()
    assert card.pop("name") == "mine" and original.pop("name") == "tiny"
    assert card == original
    assert all(torch.equal(back.params[k], _ckpt().params[k]) for k in back.params)
    assert checkpoint.find([zoo])[0].name == "mine"
    before = (zoo / "mine.json").read_bytes()
    assert cli.main(["add-to-zoo", str(tmp_path / "run" / "best.json"), "mine", "--zoo", str(zoo)])
    assert "mine.safetensors and mine.json already in" in capsys.readouterr().err
    assert (zoo / "mine.json").read_bytes() == before
    args = ["add-to-zoo", str(tmp_path / "run"), "mine", "--zoo", str(zoo), "--replace"]
    assert cli.main(args) == 0
    assert cli.main(["add-to-zoo", str(tmp_path / "run"), "../up", "--zoo", str(zoo)])
    assert "a zoo name is letters, digits" in capsys.readouterr().err
    assert sorted(p.name for p in zoo.iterdir()) == ["mine.json", "mine.safetensors"]


def test_tensors_that_do_not_match_the_card(tmp_path):
    save(_ckpt(), tmp_path / "tiny")
    card = json.loads((tmp_path / "tiny.json").read_text())
    card["model"]["channels"] = [4, 8]
    (tmp_path / "tiny.json").write_text(json.dumps(card))
    with pytest.raises(
        CheckpointError, match=r"conv1.weight has shape \[6, 4, 3, 3\].*\[8, 4, 3, 3\]"
    ):
        load(tmp_path / "tiny")


def test_geometry_must_match_the_model(tmp_path):
    save(_ckpt(), tmp_path / "tiny")
    card = json.loads((tmp_path / "tiny.json").read_text())
    card["geometry"]["downsample"] = 1
    (tmp_path / "tiny.json").write_text(json.dumps(card))
    with pytest.raises(CheckpointError, match="geometry gives 4 bins of 16x16"):
        load(tmp_path / "tiny")


def test_a_pickle_is_refused_not_run(tmp_path):
    save(_ckpt(), tmp_path / "tiny")

    class Boom:
        def __reduce__(self):
            return (exec, ("raise SystemExit('pickle ran')",))

    (tmp_path / "tiny.safetensors").write_bytes(pickle.dumps({"conv0.weight": Boom()}))
    with pytest.raises(CheckpointError, match="cannot read safetensors"):
        load(tmp_path / "tiny")


def test_missing_and_malformed_files_are_named(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        load(tmp_path / "absent")
    save(_ckpt(), tmp_path / "tiny")
    (tmp_path / "tiny.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load(tmp_path / "tiny")


@pytest.mark.parametrize(
    "name",
    [
        "glyphs",
        "glyphs_ann",
        "glyphs_broad",
        "glyphs_broad_ann",
        "glyphs_broad_proto",
        "glyphs_broad_proto_ann",
        "glyphs_broad_protonet",
        "glyphs_broad_protonet_ann",
        "glyphs_broad_protonet_mid",
        "glyphs_broad_protonet_mid_ann",
        "glyphs_broad_protonet_wide",
        "glyphs_broad_protonet_wide_ann",
        "double_digits",
        "double_digits_ann",
    ],
)
def test_shipped_models_adapt_on_the_8_bit_grid_by_default(name):
    from spikeshot.service.engine import Engine

    card = json.loads((checkpoint.ZOO / f"{name}.json").read_text())
    assert card["quantization"] == {
        "bits": 8,
        "mode": "global",
        "rounding": "nearest",
        "frac_bits": None,
    }
    engine = Engine(checkpoint.find([checkpoint.ZOO / name]))
    (info,) = engine.list_models()
    assert info.weight_bits == 8
    default = engine.create_session().settings
    assert (default.weight_bits, default.grid, default.rounding) == (8, "global", "nearest")
    assert engine.create_session(weight_bits=0).settings.weight_bits == 0  # float32 on request


@pytest.mark.parametrize("recipe", sorted(checkpoint.ZOO.glob("*.toml")), ids=lambda p: p.stem)
def test_zoo_recipes_load_and_are_what_their_cards_record(recipe):
    """Each ``NAME.toml`` is a valid meta-training config; where ``NAME.json`` exists, its card's
    recipe is the toml's (keys the card predates excepted)."""
    from spikeshot.service.cli import load_run_config

    training = dataclasses.asdict(load_run_config(recipe, []).training)
    card = recipe.with_suffix(".json")
    if card.exists():
        recorded = json.loads(card.read_text())["training"]["recipe"]
        assert {k: training[k] for k in recorded} == recorded
