"""An artefact whose metadata or files do not fit together is one line and exit code 2, never a traceback or a
prediction under the wrong name: the ``.json`` beside an artefact is a file users copy, edit and mix up."""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
from PIL import Image

import swiftformer
from swiftformer.artefacts import read_info, sidecar
from swiftformer.export import export_model

from .conftest import randomize, user_error

SIZE = (64, 64)
NAMES = [f"class {i}" for i in range(1000)]


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[str, Path]:
    """XS (random weights: only the plumbing is under test) as ONNX and OpenVINO IR at 64 px, and a photo."""
    folder = tmp_path_factory.mktemp("artefacts")
    model = randomize(swiftformer.create_model("swiftformer_xs"), seed=1)
    paths = {fmt: export_model(model, fmt, folder / f"xs{suffix}", img_size=SIZE).path
             for fmt, suffix in (("onnx", ".onnx"), ("openvino", ".xml"))}
    Image.new("RGB", (80, 60), (120, 30, 200)).save(folder / "photo.png")
    return {**paths, "photo": folder / "photo.png"}


def copy_of(exported: dict[str, Path], fmt: str, folder: Path) -> Path:
    """A copy of the ``fmt`` artefact with its companions (``.bin``, ``.json``) in ``folder``."""
    source = exported[fmt]
    for path in source.parent.glob(f"{source.stem}.*"):
        shutil.copy(path, folder / path.name)
    return folder / source.name


def edit(path: Path, **fields) -> None:
    metadata = json.loads(sidecar(path).read_text())
    sidecar(path).write_text(json.dumps({**metadata, **fields}))


EDITS = [
    ({"class_names": NAMES[:5]}, "predicts 1000 classes; its metadata (xs.{}.json) names 5"),
    ({"class_names": [*NAMES, "zebra"]}, "predicts 1000 classes; its metadata (xs.{}.json) names 1001"),
    ({"input_size": [3, 96, 96]}, "does not take the [1, 3, 96, 96] input its metadata"),
    ({"batch": 4}, "does not take the [4, 3, 64, 64] input its metadata"),
    ({"mean": "abc"}, "mean ['a', 'b', 'c'] / std"),
    ({"std": [0, 0, 0]}, "std [0, 0, 0] are not three numbers each, std above 0"),
    ({"interpolation": "foo"}, "interpolation 'foo' is none of nearest, bilinear"),
    ({"crop_pct": -1}, "crop_pct -1 is not in (0, 1]"),
    ({"precision": "int4"}, "precision 'int4' is none of fp32"),
    ({"precision": "int8"}, "xs.{0}.json says precision int8, but xs.{0} holds fp32 (the .json belongs to another"),
]


@pytest.mark.parametrize("fmt,suffix", [("onnx", "onnx"), ("openvino", "xml")])
@pytest.mark.parametrize("fields,expected", EDITS, ids=[next(iter(f)) + str(i) for i, (f, _) in enumerate(EDITS)])
def test_edited_metadata_is_one_line(exported, fmt, suffix, fields, expected, tmp_path, capsys):
    artefact = copy_of(exported, fmt, tmp_path)
    edit(artefact, **fields)
    user_error(["predict", str(exported["photo"]), "--checkpoint", str(artefact)], capsys, expected.format(suffix))


def test_metadata_of_another_format_is_refused(exported, tmp_path, capsys):
    artefact = copy_of(exported, "openvino", tmp_path)
    edit(artefact, format="onnx")
    user_error(["predict", str(exported["photo"]), "--checkpoint", str(artefact)], capsys,
               "xs.xml.json: format 'onnx', but xs.xml has the suffix of openvino")


def test_an_onnx_sidecar_that_differs_from_the_embedded_metadata_is_a_warning(exported, tmp_path, caplog):
    artefact = copy_of(exported, "onnx", tmp_path)
    edit(artefact, class_names=NAMES[::-1])
    with caplog.at_level(logging.WARNING, logger="swiftformer.artefacts"):
        assert read_info(artefact).class_names == NAMES[::-1]
    assert "xs.onnx.json differs from the metadata inside xs.onnx in class_names: using the .json" in caplog.text


def test_an_ir_without_its_weights_or_with_another_models_is_one_line(exported, tmp_path, capsys):
    artefact = copy_of(exported, "openvino", tmp_path)
    artefact.with_suffix(".bin").unlink()
    user_error(["predict", str(exported["photo"]), "--checkpoint", str(artefact)], capsys,
               "its weights xs.bin are not beside it")
    artefact.with_suffix(".bin").write_bytes(b"\0" * 4096)  # a .bin, but not this IR's
    user_error(["predict", str(exported["photo"]), "--checkpoint", str(artefact)], capsys,
               "xs.xml: its runtime cannot load it")


@pytest.mark.parametrize("fmt", ["onnx", "openvino"])
def test_a_truncated_artefact_is_one_line(exported, fmt, tmp_path, capsys):
    artefact = copy_of(exported, fmt, tmp_path)
    damaged = artefact.with_suffix(".bin") if fmt == "openvino" else artefact
    damaged.write_bytes(damaged.read_bytes()[:10_000])
    expected = "not a readable ONNX model" if fmt == "onnx" else "its runtime cannot load it"
    user_error(["predict", str(exported["photo"]), "--checkpoint", str(artefact)], capsys, expected)


def test_options_that_change_a_pytorch_model_are_refused_for_an_artefact(exported, capsys):
    user_error(["predict", str(exported["photo"]), "--checkpoint", str(exported["onnx"]), "--attention", "mhsa"],
               capsys, "is an exported artefact, whose graph holds the attention it was exported with")


def test_a_sound_artefact_still_predicts(exported, capsys):
    from swiftformer.cli import main

    assert main(["predict", str(exported["photo"]), "--checkpoint", str(exported["openvino"]), "--topk", "1"]) == 0
    assert capsys.readouterr().out.startswith(f"{exported['photo']}: class ")


def test_an_artefact_of_random_weights_says_so_wherever_it_runs(exported, tmp_path, caplog):
    """``export --random-weights`` tries a toolchain; its artefact classifies nothing, and predict/eval must not
    answer with it as if it did."""
    from swiftformer.cli import main

    out = tmp_path / "random.onnx"
    assert main(["export", "--model", "swiftformer_xs", "--random-weights", "--format", "onnx", "--io", "tensor",
                 "--out", str(out), "--img-size", "64"]) == 0
    assert read_info(out).random_weights and not read_info(exported["onnx"]).random_weights
    with caplog.at_level(logging.WARNING, logger="swiftformer.inference"):
        assert main(["predict", str(exported["photo"]), "--checkpoint", str(exported["onnx"])]) == 0
        assert "random-weights" not in caplog.text
        assert main(["predict", str(exported["photo"]), "--checkpoint", str(out)]) == 0
    assert f"{out} was exported with --random-weights: it runs, but its answers mean nothing" in caplog.text
