"""``swiftformer export --io image``: artefacts an app loads unchanged (pixels in, probabilities and labels out),
run by their runtimes on raw decoded image files, by ``eval`` and ``bench``, and the one-line refusals."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from swiftformer.cli import main
from swiftformer.errors import SwiftFormerError

from .conftest import short_cifar_run, user_error

CLASSES = ("airplane", "automobile", "cat", "ship")
VAL_FILES = 25  # per class: 100 files for the agreement with predict


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict[str, Path]:
    """A short training run of ours on four classes of real photos at 32 px, and its image folders."""
    root = tmp_path_factory.mktemp("app")
    short_cifar_run(root, CLASSES, epochs=3, train_subset=1000)
    files = [path for name in CLASSES for path in sorted((root / "data" / "val" / name).iterdir())[:VAL_FILES]]
    return {"checkpoint": root / "run" / "last.pth", "log": root / "run" / "log.jsonl", "train": root / "data" / "train",
            "val": root / "data" / "val", "files": files, "printed": {}}


def cli(argv: list[str]) -> int:
    """LiteRT exports in a child process (JAX's threads make later forks of this process deadlock)."""
    if argv[0] != "export" or argv[argv.index("--format") + 1] != "litert":
        return main(argv)
    return subprocess.run([sys.executable, "-m", "swiftformer", *argv]).returncode


@pytest.fixture(scope="module")
def exported(run, tmp_path_factory):
    """``exported(fmt, precision)``: the run's artefact written by ``swiftformer export`` without ``--io`` (the
    format's default: image), once per module."""
    folder, done = tmp_path_factory.mktemp("artefacts"), {}

    def get(fmt: str, precision: str = "fp32", capsys: pytest.CaptureFixture | None = None) -> Path:
        from swiftformer.formats import FORMATS

        if (fmt, precision) not in done:
            out = folder / f"xs-{precision}{FORMATS[fmt].suffix}"
            calibration = ["--calibration", str(run["train"]), "--calibration-size", "64"] if precision == "int8" else []
            assert cli(["export", "--model", "swiftformer_xs", "--checkpoint", str(run["checkpoint"]), "--format", fmt,
                        "--precision", precision, "--out", str(out), "--check-data", str(run["val"]),
                        "--check-size", "100", "--author", "Test Author", "--license", "MIT", *calibration]) == 0
            done[fmt, precision] = out
            if capsys is not None:  # what the command printed, for the test that asked first
                run["printed"][out] = capsys.readouterr().out
        return done[fmt, precision]

    return get


def raw_pixels(files: list[Path]) -> np.ndarray:
    """The files decoded to uint8 RGB ``(N, H, W, 3)`` as an app gets them: no transform of ours."""
    return np.stack([np.asarray(Image.open(path).convert("RGB"), dtype=np.uint8) for path in files])


def predicted_labels(run: dict, capsys: pytest.CaptureFixture) -> list[str]:
    """``swiftformer predict``'s top-1 class name of each file, from the checkpoint."""
    capsys.readouterr()
    assert main(["predict", *map(str, run["files"]), "--checkpoint", str(run["checkpoint"]), "--topk", "1",
                 "--json"]) == 0
    return [json.loads(line)["top"][0]["class"] for line in capsys.readouterr().out.splitlines() if line.startswith("{")]


def agreement(labels: list[str], reference: list[str]) -> float:
    assert len(labels) == len(reference) == len(CLASSES) * VAL_FILES
    return sum(a == b for a, b in zip(labels, reference)) / len(reference)


def last_top1(run: dict) -> float:
    return [json.loads(line) for line in run["log"].read_text().splitlines()][-1]["val_top1"]


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_onnx_runtime_runs_the_image_form_on_raw_files(run, exported, capsys, precision):
    import onnxruntime as ort

    path = exported("onnx", precision, capsys)
    assert f"inside: 4 labels, RGB 32x32 NHWC pixels 0..255 in, probabilities out, top-1 {last_top1(run):.2f} %" in \
        run["printed"][path]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    labels = meta["swiftformer.labels"].split("\n")
    assert labels == list(CLASSES) and meta["swiftformer.layout"] == "NHWC"
    assert (meta["swiftformer.author"], meta["swiftformer.license"]) == ("Test Author", "MIT")
    assert float(meta["swiftformer.top1"]) == pytest.approx(last_top1(run))
    assert session.get_inputs()[0].type == "tensor(uint8)"
    probabilities = np.concatenate([session.run(None, {"image": image[None]})[0] for image in raw_pixels(run["files"])])
    assert np.allclose(probabilities.sum(1), 1, atol=1e-4)
    assert agreement([labels[i] for i in probabilities.argmax(1)], predicted_labels(run, capsys)) >= 0.98


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_openvino_runs_the_image_form_on_raw_files(run, exported, capsys, precision):
    import openvino as ov

    path = exported("openvino", precision)
    model = ov.Core().read_model(str(path))
    labels = model.get_rt_info(["swiftformer", "labels"]).astype(str).split("\n")
    assert labels == list(CLASSES)
    assert model.get_rt_info(["model_info", "labels"]).astype(str) == " ".join(CLASSES)
    assert model.input(0).get_element_type() == ov.Type.u8
    compiled = ov.Core().compile_model(model, "CPU")
    probabilities = np.concatenate([compiled(image[None])[0] for image in raw_pixels(run["files"])])
    assert agreement([labels[i] for i in probabilities.argmax(1)], predicted_labels(run, capsys)) >= 0.98


def test_executorch_program_says_labels_size_and_normalisation(run, exported, capsys):
    pytest.importorskip("executorch")
    from executorch.runtime import Runtime

    from swiftformer.data_config import resolve_data_config
    from swiftformer.inference import load_model

    program = Runtime.get().load_program(str(exported("executorch")))
    constant = {name: program.load_method(name).execute([]) for name in ("labels", "input_size", "layout", "mean", "std")}
    config = resolve_data_config(load_model(str(run["checkpoint"])).model)
    assert constant["labels"][0].split("\n") == list(CLASSES)
    assert list(constant["input_size"]) == [32, 32] and constant["layout"] == ["NHWC"]
    assert list(constant["mean"]) == pytest.approx(config["mean"]) and list(constant["std"]) == pytest.approx(config["std"])
    forward = program.load_method("forward")
    probabilities = torch.cat([forward.execute([torch.from_numpy(image[None])])[0]
                               for image in raw_pixels(run["files"])])
    labels = [CLASSES[i] for i in probabilities.argmax(1)]
    assert agreement(labels, predicted_labels(run, capsys)) >= 0.98


def eval_top1(path: Path, data: Path, capsys: pytest.CaptureFixture) -> float:
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(path), "--data", str(data), "--device", "cpu", "--workers", "0", "--json"]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])["top1"]


@pytest.mark.parametrize("fmt", ["onnx", "openvino", "executorch", "litert"])
def test_eval_of_the_image_form_gives_the_checkpoints_top1(run, exported, capsys, fmt):
    from swiftformer.artefacts import read_info
    from swiftformer.bench import available_backends

    backend = {"onnx": "onnxruntime"}.get(fmt, fmt)
    if not available_backends([backend]):
        pytest.skip(f"{backend} is not installed here")
    path = exported(fmt)
    assert read_info(path).io == "image"  # the sidecar says which form it is
    reference = eval_top1(run["checkpoint"], run["val"], capsys)
    assert abs(eval_top1(path, run["val"], capsys) - reference) <= 2.0  # the 98 % agreement bound


def test_image_form_takes_the_pixels_its_platform_gives(tmp_path):
    """The ONNX image form is checked against PyTorch and records its form; ``ArtefactModel`` feeds it 0..1 images
    and answers log-probabilities."""
    from swiftformer.artefacts import ArtefactModel, read_info
    from swiftformer.export import export_model
    from swiftformer.pretrained import create_model

    model = create_model("swiftformer_xs", num_classes=3).eval()
    result = export_model(model, "onnx", tmp_path / "xs.onnx", img_size=(32, 32), io="image", dynamic_batch=True,
                          class_names=["a", "b", "c"], author="A")
    assert result.io == "image" and result.max_abs_diff <= 1e-4
    artefact = ArtefactModel(result.path, read_info(result.path))
    assert artefact.pretrained_cfg["mean"] == (0.0, 0.0, 0.0)  # eval/predict feed it unnormalised images
    log_probabilities = artefact(torch.rand(3, 3, 32, 32))  # batch 3: the dynamic batch was not specialised
    assert torch.allclose(log_probabilities.exp().sum(1), torch.ones(3), atol=1e-4)


def test_labels_that_do_not_match_the_head_are_refused_before_writing(tmp_path):
    from swiftformer.export import export_model
    from swiftformer.pretrained import create_model

    model = create_model("swiftformer_xs", num_classes=4).eval()
    with pytest.raises(SwiftFormerError, match="2 labels for a head of 4 classes"):
        export_model(model, "onnx", tmp_path / "xs.onnx", img_size=(32, 32), io="image", class_names=["a", "b"])
    assert list(tmp_path.iterdir()) == []


def test_bad_io_requests_are_one_line(tmp_path, capsys):
    base = ["--model", "swiftformer_xs", "--random-weights", "--img-size", "32"]
    user_error(["export", *base, "--format", "torchscript", "--io", "image", "--out", str(tmp_path / "x.pt")], capsys,
               "--format torchscript has no image form", "--io image is written by --format onnx, openvino")
    user_error(["export", *base, "--format", "onnx", "--io", "tensor", "--author", "me", "--out",
                str(tmp_path / "x.onnx")], capsys, "use --io image")
    user_error(["bench", "--models", "swiftformer_xs", "--backends", "onnxruntime", "--io", "pixels"], capsys,
               "--io pixels: a comma-separated subset of image,tensor")
    assert list(tmp_path.iterdir()) == []


def test_bench_times_both_forms_of_a_runtime():
    from swiftformer.bench import run_benchmark

    result = run_benchmark(["swiftformer_xs"], ["fused", "onnxruntime"], img_size=32, threads=1, rounds=1, iters=1,
                           warmup=1, ios=("image", "tensor"))
    assert {(r.backend, r.io) for r in result.records} == {("fused", "tensor"), ("onnxruntime", "image"),
                                                            ("onnxruntime", "tensor")}
