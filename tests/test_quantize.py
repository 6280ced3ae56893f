"""Reduced-precision artefacts: written, run by their runtime, and close to fp32 PyTorch on held-out real images.

A SwiftFormer-XS is trained here, at 32 px on four CIFAR-10 classes of ../shared/data/cifar10-mini, so that its
logits are far from uniform: on random weights every artefact would "agree" with PyTorch and prove nothing.
"""
from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import logging
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch

from swiftformer.agreement import compare, model_labels, top1_loss_warning
from swiftformer.artefacts import is_artefact, read_info, sidecar
from swiftformer.calibration import calibration_and_check, calibration_images, folder_images, load_batch
from swiftformer.checkpoint import save_checkpoint
from swiftformer.cli import main
from swiftformer.data import eval_transform
from swiftformer.errors import DataError, SwiftFormerError
from swiftformer.export import staged_output
from swiftformer.formats import check_precision
from swiftformer.inference import load_model, run_config

from .conftest import randomize, shared_data, short_cifar_run, user_error

CLASSES = ("airplane", "automobile", "cat", "ship")
CALIBRATION = ["--calibration-size", "32", "--check-size", "120"]


@pytest.fixture(scope="session")
def run(tmp_path_factory) -> dict[str, Path]:
    """A training run of ours on real photos (the cifar10_mini recipe, shortened) and its image folders."""
    root = tmp_path_factory.mktemp("quant")
    short_cifar_run(root, CLASSES, epochs=4, train_subset=1200)
    checkpoint = root / "run" / "last.pth"
    loaded = load_model(str(checkpoint))
    val = folder_images(root / "data" / "val").take(list(range(0, 400, 10)))
    with torch.no_grad():
        confidence = loaded.model(load_batch(val, eval_transform(loaded.model, run_config(loaded, {}))).images).softmax(1).amax(1)
    assert float(confidence.mean()) > 0.4, "the trained model is still near uniform (1/4): train longer"
    return {"checkpoint": checkpoint, "train": root / "data" / "train", "val": root / "data" / "val", "dir": root}


def cli(argv: list[str]) -> int:
    """``swiftformer ARGV`` in this process, but LiteRT exports in a child process: litert-torch imports JAX, whose
    threads make any later ``os.fork`` of the test process (DataLoader workers of later tests) liable to deadlock."""
    if argv[0] != "export" or argv[argv.index("--format") + 1] != "litert":
        return main(argv)
    child = subprocess.run([sys.executable, "-m", "swiftformer", *argv], capture_output=True, text=True)
    sys.stdout.write(child.stdout)
    sys.stderr.write(child.stderr)
    return child.returncode


def export(run: dict[str, Path], fmt: str, precision: str, out: Path, *extra: str) -> int:
    return cli([
        "export", "--io", "tensor", "--model", "swiftformer_xs", "--checkpoint", str(run["checkpoint"]), "--format", fmt,
        "--precision", precision, "--out", str(out), "--calibration", str(run["train"]), "--check-data",
        str(run["val"]), *CALIBRATION, *extra,
    ])


@pytest.fixture(scope="session")
def exported(run, tmp_path_factory):
    """``exported(fmt, precision, suffix)``: the run's artefact and what ``swiftformer export`` printed, written
    once per session (the agreement and the eval/predict tests read the same artefacts)."""
    folder, done = tmp_path_factory.mktemp("artefacts"), {}

    def get(fmt: str, precision: str, suffix: str) -> tuple[Path, str]:
        if (fmt, precision) not in done:
            out, printed, logged = folder / f"xs-{precision}{suffix}", io.StringIO(), io.StringIO()
            with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(logged):
                assert export(run, fmt, precision, out) == 0, logged.getvalue()
            assert "training mode" not in logged.getvalue(), logged.getvalue()  # a converter doubting the graph
            done[fmt, precision] = out, printed.getvalue()
        return done[fmt, precision]

    return get


def printed_agreement(output: str) -> float:
    """The agree % column of the table ``swiftformer export`` prints."""
    row = next(line for line in output.splitlines() if line.split()[:1] and line.split()[0] in
               ("onnx", "openvino", "executorch", "litert"))
    return float(row.split()[3])


def installed(*modules: str) -> bool:
    return all(importlib.util.find_spec(m) is not None for m in modules)


RUNNABLE = [
    ("onnx", "int8", ".onnx", ("onnxruntime",)),
    ("openvino", "int8", ".xml", ("openvino", "nncf")),
    ("openvino", "bf16", ".xml", ("openvino",)),
    ("openvino", "fp16", ".xml", ("openvino",)),
    ("executorch", "int8", ".pte", ("executorch",)),
    ("litert", "int8", ".tflite", ("litert_torch", "ai_edge_litert")),
]


# Fast: folders, splits, agreement, refusals --------------------------------------------------------------------
def test_calibration_and_check_images_are_seeded_and_disjoint():
    folder = shared_data("cifar10-mini") / "val"
    first, check = calibration_and_check(folder, 50, check_size=200, seed=3)
    again, _ = calibration_and_check(folder, 50, check_size=200, seed=3)
    other, _ = calibration_and_check(folder, 50, check_size=200, seed=4)
    assert first.paths == again.paths and first.paths != other.paths
    assert len(first.paths) == 50 and len(check.paths) == 200
    assert not set(first.paths) & set(check.paths)
    assert first.class_names == sorted(p.name for p in folder.iterdir())
    assert len(set(first.labels)) > 5  # a random draw spans the classes, not the first folder


def test_a_flat_folder_is_unlabelled_and_a_used_up_folder_is_an_error(tmp_path):
    source = shared_data("cifar10-mini") / "val" / "cat"
    for path in sorted(source.iterdir())[:5]:
        (tmp_path / path.name).symlink_to(path)
    images = folder_images(tmp_path)
    assert len(images.paths) == 5 and images.labels is None
    with pytest.raises(DataError, match="all used for calibration"):
        calibration_and_check(tmp_path, 5)
    # calibrating without a check (bench) takes the same seeded draw, all of a folder smaller than asked for
    assert sorted(calibration_images(tmp_path, 256).paths) == sorted(images.paths)
    assert calibration_images(tmp_path, 3, seed=1).paths == calibration_and_check(tmp_path, 3, seed=1)[0].paths
    with pytest.raises(DataError, match="is not a folder"):
        folder_images(tmp_path / "missing")
    # the root eval --data takes would be two "classes", train and val: the run's training images in the check
    with pytest.raises(DataError, match=r"is a dataset root \(train/, val/ of class folders\): give one split"):
        folder_images(shared_data("cifar10-mini"))


def test_an_unreadable_calibration_image_is_named_with_a_remedy_the_command_has(tmp_path):
    """export and bench have no --skip-bad-images: the error must not send the user to it."""
    from swiftformer.recipes import TrainConfig

    for path in sorted((shared_data("cifar10-mini") / "val" / "cat").iterdir())[:3]:
        (tmp_path / path.name).symlink_to(path)
    (tmp_path / "broken.jpg").write_text("not an image")
    with pytest.raises(DataError, match="broken.jpg") as error:
        load_batch(folder_images(tmp_path), eval_transform(None, TrainConfig(img_size=32)))
    assert "remove or replace it" in str(error.value) and "--skip-bad-images" not in str(error.value)


def test_agreement_counts_top1_changes_and_probability_differences():
    reference = torch.tensor([[4.0, 0.0, 0.0], [0.0, 4.0, 0.0], [0.0, 0.0, 4.0], [4.0, 0.0, 0.0]])
    artefact = reference.clone()
    artefact[3] = torch.tensor([0.0, 4.0, 0.0])  # one of four flips
    result = compare(reference, artefact, torch.tensor([0, 1, 2, 1]))
    assert result.agreement == pytest.approx(0.75)
    assert result.reference_top1 == pytest.approx(75.0) and result.artefact_top1 == pytest.approx(100.0)
    assert result.top1_change_se == pytest.approx(100.0 * (0.25 * 0.75) ** 0.5 / 2)  # one of four images fixed
    assert top1_loss_warning(result) == ""  # a gain
    assert result.max_prob_diff == pytest.approx(float(reference[0].softmax(0)[0] - reference[0].softmax(0)[1]))
    assert model_labels(torch.tensor([0, 1]), ["dog", "cat"], ["cat", "dog"]).tolist() == [1, 0]
    assert model_labels(torch.tensor([0]), ["emu"], ["cat", "dog"]) is None


def test_a_top1_loss_beyond_the_images_noise_is_a_warning():
    """30 of 1,000 images broken, none fixed: -3 points at 0.54 standard error; 3 broken and 2 fixed is noise."""
    labels = torch.zeros(1000, dtype=torch.long)
    right, wrong = torch.tensor([4.0, 0.0]), torch.tensor([0.0, 4.0])
    reference = right.repeat(1000, 1)
    broken = reference.clone()
    broken[:30] = wrong
    warning = top1_loss_warning(compare(reference, broken, labels))
    assert "top-1 fell 3.00 points below fp32 on these 1000 images, 5.6 standard errors" in warning
    assert "check on more images (--check-data DIR, --check-size N)" in warning  # 2 SE happen 1 time in 40
    noisy_reference, noisy = reference.clone(), reference.clone()
    noisy_reference[:2] = wrong
    noisy[2:5] = wrong
    assert top1_loss_warning(compare(noisy_reference, noisy, labels)) == ""


def test_an_unsupported_pair_names_the_formats_that_can(tmp_path, capsys):
    with pytest.raises(SwiftFormerError, match="bf16 is written by --format openvino$"):
        check_precision("onnx", "bf16")
    code = main(["export", "--io", "tensor", "--model", "swiftformer_xs", "--format", "torchscript", "--precision", "int8",
                 "--out", str(tmp_path / "xs.pt")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "int8 is written by --format onnx, openvino, coreml, executorch, litert" in err
    assert not (tmp_path / "xs.pt").exists()


def test_int8_without_calibration_images_is_refused(tmp_path, capsys):
    code = main(["export", "--io", "tensor", "--model", "swiftformer_xs", "--format", "onnx", "--precision", "int8",
                 "--out", str(tmp_path / "xs.onnx"), "--img-size", "32", "32"])
    assert code == 2 and "calibrates activation ranges on real images" in capsys.readouterr().err
    assert not (tmp_path / "xs.onnx").exists()


def test_a_failed_write_leaves_nothing_under_the_name(tmp_path):
    out = tmp_path / "xs.xml"
    with pytest.raises(RuntimeError):
        with staged_output(out) as staged:
            staged.write_text("half")
            staged.with_suffix(".bin").write_text("half")
            raise RuntimeError("check failed")
    assert list(tmp_path.iterdir()) == []


def xs_onnx_and_photos(model: torch.nn.Module, tmp_path: Path) -> tuple[Path, torch.Tensor]:
    """``model`` fused (NCHW) and written as ONNX at 32 px, with 8 real photos to calibrate it on."""
    from swiftformer.deploy import onnx as onnx_runtime
    from swiftformer.models import reparameterize
    from swiftformer.recipes import TrainConfig

    fused = reparameterize(model.eval(), channels_last=False)
    transform = eval_transform(fused, TrainConfig(img_size=32, crop_pct=1.0))
    calibration = load_batch(folder_images(shared_data("cifar10-mini") / "val" / "ship").take(list(range(8))),
                             transform).images
    return onnx_runtime.write_fp32(fused, calibration[:1], tmp_path / "fp32.onnx"), calibration


def test_int8_keeps_the_stem_the_matmuls_and_the_skip_path_in_float(tmp_path, monkeypatch):
    """What measurement chose (docs/quantization.md): ONNX int8 quantizes the convolutions but the stem's two;
    OpenVINO int8 leaves the stem's two and the head in float; every other convolution is int8 in both, and
    OpenVINO's other weight MatMuls are int8 on a CPU with VNNI, float on one without."""
    import onnx
    import openvino as ov

    from swiftformer.cpu import CpuInfo
    from swiftformer.deploy import onnx as onnx_runtime
    from swiftformer.deploy import openvino as openvino_runtime
    from swiftformer.models import create_model

    fp32, calibration = xs_onnx_and_photos(create_model("swiftformer_xs"), tmp_path)

    graph = onnx.load(str(onnx_runtime.write_int8(fp32, tmp_path / "int8.onnx", calibration, 1))).graph
    producer = {out: node.op_type for node in graph.node for out in node.output}
    fed_int8 = [producer.get(node.input[0]) == "DequantizeLinear" for node in graph.node if node.op_type == "Conv"]
    assert fed_int8[:2] == [False, False] and all(fed_int8[2:]) and len(fed_int8) > 40
    assert not any(producer.get(name) == "DequantizeLinear" for node in graph.node
                   if node.op_type in ("MatMul", "Gemm") for name in node.input)
    # the skip path stays float: an Add reads int8-rounded values only where a convolution's int8 output feeds it
    rounded = {node.output[0]: node.input[0] for node in graph.node if node.op_type == "QuantizeLinear"}
    dequantized = {node.output[0]: rounded.get(node.input[0]) for node in graph.node if node.op_type == "DequantizeLinear"}
    add_inputs = [dequantized[name] for node in graph.node if node.op_type == "Add" for name in node.input
                  if name in dequantized]
    assert add_inputs and all(producer.get(name) == "Conv" for name in add_inputs)

    vnni = CpuInfo("Xeon", frozenset({"avx2", "avx512f", "avx512_vnni"}))
    monkeypatch.setattr(openvino_runtime, "cpu_info", lambda: vnni)
    model = ov.Core().read_model(str(openvino_runtime.write_reduced(fp32, tmp_path / "int8.xml", "int8", calibration,
                                                                    False, 1)))
    convs = [op for op in model.get_ordered_ops() if op.get_type_name() in ("Convolution", "GroupConvolution")]
    fed_fq = [op.input(0).get_source_output().get_node().get_type_name() == "FakeQuantize" for op in convs]
    assert fed_fq[:2] == [False, False] and all(fed_fq[2:])
    fp32_model = ov.convert_model(str(fp32))
    linears = {op.get_friendly_name() for op in fp32_model.get_ordered_ops()  # weights, not tokens
               if op.get_type_name() == "MatMul" and op.input(1).get_source_output().get_node().get_type_name() == "Constant"}
    fed_fq = [op.input(0).get_source_output().get_node().get_type_name() == "FakeQuantize"
              for op in model.get_ordered_ops() if op.get_friendly_name() in linears]
    assert not fed_fq[-1] and all(fed_fq[:-1]) and len(fed_fq) > 8  # the head, read by the logits, stays float

    avx2 = set(openvino_runtime.float_ops(fp32_model, CpuInfo("EPYC", frozenset({"avx2", "fma"}))))
    matmuls = {op.get_friendly_name() for op in fp32_model.get_ordered_ops() if op.get_type_name() == "MatMul"}
    assert linears <= matmuls <= avx2 and avx2 - matmuls == set(openvino_runtime.float_ops(fp32_model, vnni)) - matmuls


def test_openvino_int8_activation_ranges_cover_the_calibration_images(tmp_path):
    """Each activation quantizer's range spans what the calibration images put through it: NNCF's default range
    (the mean of each batch's min/max) clipped a trained XS's outliers and cost 1.7 points of agreement."""
    import numpy as np
    import openvino as ov

    from swiftformer.models import create_model
    from swiftformer.deploy.openvino import write_reduced

    torch.manual_seed(0)
    fp32, calibration = xs_onnx_and_photos(create_model("swiftformer_xs"), tmp_path)
    model = ov.Core().read_model(str(write_reduced(fp32, tmp_path / "int8.xml", "int8", calibration, False, 1)))
    # activations only (weights' quantizers read a Constant), and not NNCF's SmoothQuant rescaling of the attention's
    # inputs: its values sit after unit-norm tokens, where upstream int8 rounding moves the extremes most
    quantizers = [op for op in model.get_ordered_ops() if op.get_type_name() == "FakeQuantize"
                  and op.input(0).get_source_output().get_node().get_type_name() != "Constant"
                  and "smooth_quant" not in op.get_friendly_name()]
    model.add_outputs([op.input(0).get_source_output() for op in quantizers])
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    seen = [compiled(image.numpy()) for image in calibration.split(1)]
    assert len(quantizers) > 30
    for index, op in enumerate(quantizers):
        values = np.concatenate([outputs[1 + index].ravel() for outputs in seen])
        low, high = (op.input(i).get_source_output().get_node().get_data() for i in (1, 2))
        # upstream int8 rounding moves later layers' extremes by a few per cent; the default range missed by 38 %
        assert high.max() >= 0.9 * values.max() and low.min() <= 0.9 * values.min(), op.get_friendly_name()


def convolution_biases(model: object) -> dict[str, object]:
    """Each convolution's bias (the Constant its output Add adds) in an OpenVINO model, by the Add's name."""
    biases = {}
    for op in model.get_ordered_ops():
        if op.get_type_name() == "Add":
            source, other = (op.input(i).get_source_output().get_node() for i in (0, 1))
            if source.get_type_name() in ("Convolution", "GroupConvolution") and other.get_type_name() == "Constant":
                biases[op.get_friendly_name()] = other.get_data()
    return biases


def test_openvino_int8_keeps_the_biases(tmp_path):
    """No bias correction: fitted on the calibration images, it made a trained XS's agreement depend on how many
    there were (95.9 % with 64, 99.6 % with 256; docs/quantization.md)."""
    import numpy as np
    import openvino as ov

    from swiftformer.models import create_model
    from swiftformer.deploy.openvino import write_reduced

    fp32, calibration = xs_onnx_and_photos(randomize(create_model("swiftformer_xs"), seed=3), tmp_path)  # real biases
    core = ov.Core()
    before = convolution_biases(ov.convert_model(str(fp32)))  # what write_reduced quantizes
    after = convolution_biases(core.read_model(str(write_reduced(fp32, tmp_path / "int8.xml", "int8", calibration,
                                                                    False, 1))))
    assert len(before) > 40 and after.keys() == before.keys()
    for name, bias in before.items():
        np.testing.assert_array_equal(after[name], bias, err_msg=name)


def test_openvino_bf16_ir_holds_the_fp32_weights_rounded_once_to_bf16(tmp_path):
    """fp16-compressed weights, rounded again to bf16 when compiled, cost a trained 3-epoch L3 agreement (99.9 ->
    99.2 %, docs/quantization.md): the bf16 IR holds each weight rounded once, as the bf16 kernels read it."""
    import openvino as ov

    from swiftformer.models import create_model
    from swiftformer.deploy.openvino import WEIGHTED_OPS, write_reduced

    fp32, _ = xs_onnx_and_photos(randomize(create_model("swiftformer_xs"), seed=3), tmp_path)
    core = ov.Core()
    sources = [op.input(1).get_source_output().get_node() for op in ov.convert_model(str(fp32)).get_ordered_ops()
               if op.get_type_name() in WEIGHTED_OPS]
    expected = [node.get_data() if node.get_type_name() == "Constant" else None for node in sources]
    bf16 = core.read_model(str(write_reduced(fp32, tmp_path / "bf16.xml", "bf16", None, False, 1)))
    stored = [op.input(1).get_source_output().get_node() for op in bf16.get_ordered_ops()
              if op.get_type_name() in WEIGHTED_OPS]
    assert len(stored) == len(expected) > 80
    assert sum(weights is None for weights in expected) == 2 * 4  # two token products in each of XS's 4 attentions
    for convert, weights in zip(stored, expected):
        if weights is None:  # an attention product of two activations
            continue
        constant = convert.input(0).get_source_output().get_node()
        assert (convert.get_type_name(), constant.get_output_element_type(0)) == ("Convert", ov.Type.bf16)
        rounded = torch.from_numpy(constant.get_data().view("int16").copy()).view(torch.bfloat16).float()
        assert torch.equal(rounded, torch.from_numpy(weights).bfloat16().float()), convert.get_friendly_name()


# Slow: real exports of a model trained here ---------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("fmt,precision,suffix,modules", RUNNABLE, ids=[f"{f}-{p}" for f, p, _, _ in RUNNABLE])
def test_reduced_precision_artefact_agrees_with_fp32_on_held_out_photos(exported, fmt, precision, suffix, modules):
    if not installed(*modules):
        pytest.skip(f"{', '.join(modules)} not installed (pip install -e '.[dev]' installs them)")
    out, printed = exported(fmt, precision, suffix)
    bound = 99.5 if precision in ("fp16", "bf16") else 98.0
    assert printed_agreement(printed) >= bound, printed
    assert out.is_file() and is_artefact(out)
    info = read_info(out)
    assert (info.format, info.precision, info.input_size) == (fmt, precision, (3, 32, 32))
    assert info.class_names == list(CLASSES) and info.crop_pct == 1.0


INT8_WEIGHTS = [("onnx", ".onnx", ("onnxruntime",)), ("openvino", ".xml", ("openvino", "nncf")),
                ("executorch", ".pte", ("executorch",)), ("litert", ".tflite", ("litert_torch", "ai_edge_litert"))]


@pytest.mark.slow
@pytest.mark.parametrize("fmt,suffix,modules", INT8_WEIGHTS, ids=[f for f, _, _ in INT8_WEIGHTS])
def test_an_int8_artefact_stores_int8_weights(run, exported, fmt, suffix, modules):
    """Under half the bytes of the fp32 weights: an artefact that keeps fp32 weights and quantizes them at run time
    (LiteRT without the quantizer at conversion did), or leaves the 1x1 MLPs in float (ExecuTorch from the
    channels-last form did), agrees with fp32 as well, but is no int8 deployment."""
    if not installed(*modules):
        pytest.skip(f"{', '.join(modules)} not installed (pip install -e '.[dev]' installs them)")
    out, _ = exported(fmt, "int8", suffix)
    weights = out.with_suffix(".bin") if fmt == "openvino" else out
    fp32_bytes = 4 * sum(p.numel() for p in load_model(str(run["checkpoint"])).model.parameters())
    assert weights.stat().st_size < 0.5 * fp32_bytes, (weights.stat().st_size, fp32_bytes)


@pytest.mark.slow
def test_litert_int8_runs_as_one_xnnpack_partition_with_the_stem_in_float(exported):
    """An int8 op the XNNPACK delegate does not take (the GELUs litert-torch's PT2E flow made int8) splits the graph
    into partitions with the interpreter's own kernels between them: 21 for XS, 1.46x fp32 instead of 1.85x."""
    if not installed("litert_torch", "ai_edge_litert"):
        pytest.skip("litert-torch is not installed (pip install -e '.[dev]' installs it)")
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    out, _ = exported("litert", "int8", ".tflite")
    plain = Interpreter(model_path=str(out), experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    dtypes = {tensor["index"]: tensor["dtype"].__name__ for tensor in plain.get_tensor_details()}
    ops = Counter((op["op_name"], dtypes[op["inputs"][0]]) for op in plain._get_ops_details())  # the graph's own ops
    assert ops["CONV_2D", "float32"] == 2 and ops["CONV_2D", "int8"] > 20 and ops["DEPTHWISE_CONV_2D", "int8"] > 0
    assert ops["GELU", "float32"] > 0 and not {op for op, dtype in ops if dtype != "float32"} - {
        "CONV_2D", "DEPTHWISE_CONV_2D", "DEQUANTIZE"}, ops
    delegated = Interpreter(model_path=str(out), num_threads=2)
    delegated.allocate_tensors()  # the XNNPACK delegate takes its partitions here, each one node named DELEGATE
    assert sum(op["op_name"] == "DELEGATE" for op in delegated._get_ops_details()) == 1


@pytest.mark.slow
def test_coreml_reduced_precision_packages_validate(run, tmp_path, capsys):
    pytest.importorskip("coremltools")
    for precision in ("fp16", "int8"):
        out = tmp_path / f"xs-{precision}.mlpackage"
        assert export(run, "coreml", precision, out) == 0
        printed = capsys.readouterr().out
        assert out.is_dir() and f"Core ML {precision} runs on macOS only" in printed
        # fp16 and int8 (weights only) calibrate nothing, and no image check runs a package: no image is read
        assert "uses no image: it calibrates nothing, and no image check runs Core ML packages" in printed
        assert json.loads(sidecar(out).read_text())["precision"] == precision
    user_error(["eval", "--checkpoint", str(out), "--data", str(run["dir"] / "data")], capsys,
               "is a Core ML package, which runs on macOS only")


@pytest.mark.slow
def test_an_openvino_precision_this_cpu_cannot_compute_is_said_not_checked(run, tmp_path):
    """OpenVINO compiles an fp16 IR in another precision, without a word, on a CPU without fp16 kernels (f32 on
    AVX2, bf16 on AVX-512 without FP16): the export must say its check did not measure fp16 arithmetic. oneDNN's
    ISA cap makes any CPU such a one (AVX-512 at most), in a child process as it is read once per process."""
    pytest.importorskip("openvino")
    out = tmp_path / "xs-fp16.xml"
    child = subprocess.run(
        [sys.executable, "-m", "swiftformer", "export", "--io", "tensor", "--model", "swiftformer_xs", "--checkpoint",
         str(run["checkpoint"]), "--format", "openvino", "--precision", "fp16", "--out", str(out), "--check-data",
         str(run["val"]), "--check-size", "40", "--min-agreement", "0.9"],
        capture_output=True, text=True, env={**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX512_CORE"},
    )
    assert child.returncode == 0, child.stderr
    said = child.stdout + child.stderr
    assert "xs-fp16.xml: OpenVINO has no f16 kernels for this CPU and computes this fp16 IR in" in said, said
    assert "measure it on such a CPU" in said
    assert "note: checked in" not in said  # it was checked in the plugin's own fallback: nothing to tell it


@pytest.mark.slow
def test_a_rejected_artefact_is_not_written(run, tmp_path, capsys, monkeypatch):
    """An int8 artefact calibrated on ranges a thousand times too wide rounds the features to a few levels: it is
    refused, not written. (Ranges a thousand times too small are not bad enough on every CPU: on an AMD EPYC with
    AVX2 alone, with 7-bit weights, that artefact agreed 98.3 %.)"""
    from swiftformer.deploy import onnx as onnx_runtime

    write_int8 = onnx_runtime.write_int8
    monkeypatch.setattr(onnx_runtime, "write_int8", lambda fp32, out, calibration, batch: write_int8(
        fp32, out, calibration * 1e3, batch))
    out = tmp_path / "xs-int8.onnx"
    assert export(run, "onnx", "int8", out) == 2
    said = capsys.readouterr()
    assert "differ), below --min-agreement" in said.err
    assert printed_agreement(said.out) < 98.0  # the measurement that refused it is shown, not only the verdict
    assert f"calibration: 32 images of {run['train']} (class folders airplane, automobile, cat, ship)" in said.out
    assert f"check: 120 images of {run['val']} (class folders airplane" in said.out
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_a_check_on_the_runs_training_images_or_at_another_size_is_said_so(run, tmp_path, capsys):
    """Check images drawn from --calibration are held out from calibration, not from training: where that folder
    is the run's own training data, agreement and top-1 flatter the model. An artefact at another size than the
    run's is the model at that size, which agreement with PyTorch at the same size cannot show."""
    if not installed("openvino"):
        pytest.skip("openvino not installed (pip install -e '.[dev]' installs it)")
    assert cli(["export", "--io", "tensor", "--model", "swiftformer_xs", "--checkpoint", str(run["checkpoint"]), "--format", "openvino",
                "--precision", "bf16", "--out", str(tmp_path / "xs.xml"), "--calibration", str(run["train"]),
                "--check-size", "40", "--img-size", "48", "--min-agreement", "0.9"]) == 0
    printed = capsys.readouterr().out
    assert "check: agreement with fp32 PyTorch on the images of --calibration - OK" in printed
    assert f"warning: the check images ({run['train']}) are this run's training images" in printed
    assert "note: the run was trained at 32 px and this artefact takes 48x48" in printed
    assert cli(["export", "--io", "tensor", "--model", "swiftformer_xs", "--checkpoint", str(run["checkpoint"]), "--format", "openvino",
                "--precision", "bf16", "--out", str(tmp_path / "xs.xml"), "--check-data", str(run["val"]),
                "--check-size", "40", "--min-agreement", "0.9"]) == 0
    printed = capsys.readouterr().out
    assert "on the images of --check-data - OK" in printed
    assert "training images" not in printed and "note: the run was trained at" not in printed


@pytest.mark.slow
def test_a_precision_that_calibrates_nothing_checks_on_all_of_a_small_calibration_folder(run, tmp_path, capsys):
    """bf16 takes no calibration images, so a --calibration folder smaller than --calibration-size (default 256) is
    all check images, not refused as used up."""
    if not installed("openvino"):
        pytest.skip("openvino not installed (pip install -e '.[dev]' installs it)")
    photos = tmp_path / "photos"
    for name in CLASSES:
        (photos / name).mkdir(parents=True)
        for photo in sorted((run["val"] / name).iterdir())[:10]:
            (photos / name / photo.name).symlink_to(photo)
    out = tmp_path / "xs-bf16.xml"
    assert cli(["export", "--io", "tensor", "--model", "swiftformer_xs", "--checkpoint", str(run["checkpoint"]), "--format", "openvino",
                "--precision", "bf16", "--out", str(out), "--calibration", str(photos)]) == 0
    printed = capsys.readouterr().out
    assert "calibrates nothing: every image of --calibration is a check image" in printed
    row = next(line for line in printed.splitlines() if line.startswith("openvino bf16"))
    assert int(row.split()[2]) == 40 and float(row.split()[3]) >= 99.5 and out.is_file()
    assert "only 40 check images, so one disagreement is 2.5 % of them" in printed


@pytest.mark.slow
def test_a_check_without_labels_says_why_it_gives_no_top1(run, tmp_path, capsys):
    if not installed("openvino"):
        pytest.skip("openvino not installed (pip install -e '.[dev]' installs it)")
    flat = tmp_path / "flat"
    flat.mkdir()
    for name in CLASSES:
        for photo in sorted((run["val"] / name).iterdir())[:5]:
            (flat / f"{name}-{photo.name}").symlink_to(photo)
    assert cli(["export", "--io", "tensor", "--model", "swiftformer_xs", "--checkpoint", str(run["checkpoint"]), "--format", "openvino",
                "--precision", "bf16", "--out", str(tmp_path / "xs.xml"), "--check-data", str(flat)]) == 0
    printed = capsys.readouterr().out
    row = next(line for line in printed.splitlines() if line.startswith("openvino bf16"))
    assert row.split()[-2:] == ["-", "-"]
    assert "note: no top-1 (-) because the check images are not in class folders" in printed


def test_unlabelled_reason_names_the_missing_labels_or_the_foreign_class():
    from swiftformer.agreement import unlabelled_reason

    assert unlabelled_reason(["cat", "ship"], list(CLASSES)) == ""
    assert "not in class folders" in unlabelled_reason(None, list(CLASSES))
    assert "does not predict: wolf" in unlabelled_reason(["cat", "wolf"], list(CLASSES))
    assert model_labels(torch.tensor([1, 0]), ["cat", "wolf"], list(CLASSES)) is None
    assert model_labels(torch.tensor([1, 0]), ["cat", "ship"], list(CLASSES)).tolist() == [3, 2]


def eval_top1(*args: str, capsys, model: str = "swiftformer_xs") -> float:
    """The top-1 ``eval --json`` reports, after checking it names what it evaluated."""
    assert main(["eval", *args, "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["model"] == model
    return result["top1"]


@pytest.mark.slow
@pytest.mark.parametrize("fmt,suffix,precision", [("onnx", ".onnx", "int8"), ("openvino", ".xml", "int8"),
                                                  ("onnx", ".onnx", "fp32")])
def test_eval_and_predict_take_exported_artefacts(run, exported, fmt, suffix, precision, capsys):
    out, _ = exported(fmt, precision, suffix)
    data = str(run["dir"] / "data")
    reference = eval_top1("--checkpoint", str(run["checkpoint"]), "--data", data, "--workers", "0", capsys=capsys)
    deployed = eval_top1("--checkpoint", str(out), "--data", data, "--workers", "0", capsys=capsys,
                         model=f"swiftformer_xs ({fmt} {precision})")
    assert reference > 30.0  # the trained model, above chance (25 %)
    assert abs(deployed - reference) <= (0.0 if precision == "fp32" else 2.0)
    photo = next((run["val"] / "ship").iterdir())
    assert main(["predict", str(photo), "--checkpoint", str(out), "--topk", "2", "--json"]) == 0
    top = json.loads(capsys.readouterr().out)["top"]
    assert [entry["class"] for entry in top][0] in CLASSES and len(top) == 2
    user_error(["eval", "--model", "swiftformer_l3", "--checkpoint", str(out), "--data", data], capsys,
               "holds a swiftformer_xs, not a swiftformer_l3")
    user_error(["eval", "--checkpoint", str(out), "--data", data, "--amp", "bf16"], capsys,
               f"is an artefact that runs in the precision it was exported in ({precision})")


@pytest.mark.slow
def test_eval_and_predict_take_a_non_square_artefact(run, tmp_path, capsys):
    """An artefact exported at H != W is measured at its own size: eval's top-1 is the PyTorch model's on the same
    crops (its metadata's transform), and another --img-size is refused."""
    out = tmp_path / "xs-48x32.onnx"
    assert export(run, "onnx", "fp32", out, "--img-size", "48", "32") == 0
    info = read_info(out)
    assert info.input_size == (3, 48, 32)
    capsys.readouterr()
    data = str(run["dir"] / "data")
    deployed = eval_top1("--checkpoint", str(out), "--data", data, "--workers", "0", capsys=capsys,
                         model="swiftformer_xs (onnx fp32)")
    batch = load_batch(folder_images(run["val"]), info.transform())
    with torch.no_grad():
        hits = load_model(str(run["checkpoint"])).model(batch.images).argmax(1) == torch.as_tensor(batch.labels)
    assert deployed > 30.0 and abs(deployed - 100.0 * hits.float().mean().item()) <= 0.5  # one photo of 400
    photo = str(next((run["val"] / "ship").iterdir()))
    assert main(["predict", photo, "--checkpoint", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["top"][0]["class"] in CLASSES
    user_error(["predict", photo, "--checkpoint", str(out), "--img-size", "48"], capsys,
               "--img-size 48: the artefact runs 48x32 images only")


@pytest.mark.slow
def test_litert_fp32_matches_pytorch(run, tmp_path, capsys):
    if not installed("litert_torch", "ai_edge_litert"):
        pytest.skip("litert-torch is not installed (pip install -e '.[dev]' installs it)")
    out = tmp_path / "xs.tflite"
    assert cli(["export", "--io", "tensor", "--model", "swiftformer_xs", "--checkpoint", str(run["checkpoint"]), "--format", "litert",
                 "--out", str(out), "--check-data", str(run["val"]), "--check-size", "60"]) == 0
    printed, logged = capsys.readouterr()
    # the converter's ~40 lines of progress and its per-op lowering lines would bury the result
    assert "LiteRT-Torch Convert" not in printed and "Use JAX lowering" not in logged
    assert float(printed.split("max abs diff vs PyTorch = ")[1].split()[0]) <= 1e-4
    assert printed_agreement(printed) == 100.0 and read_info(out).format == "litert"


# Quantization-aware fine-tuning --------------------------------------------------------------------------------
def test_qat_fake_quantizes_the_convolutions_but_the_stems():
    """The QAT graph simulates the int8 rule the exports apply: every convolution's weight and input go through a
    fake quantizer but the stem's two; the attentions' matmuls and the head stay float."""
    from swiftformer.models import create_model
    from swiftformer.qat import prepare_qat

    prepared = prepare_qat(create_model("swiftformer_xs", num_classes=4), img_size=32)
    nodes = list(prepared.graph.nodes)
    fake_quantized = {node.name for node in nodes if node.op == "call_module" and "activation_post_process" in node.target}

    def quantized(node) -> bool:
        return all(isinstance(arg, torch.fx.Node) and arg.name in fake_quantized for arg in node.args[:2])

    convs = [node for node in nodes if node.target == torch.ops.aten.conv2d.default]
    assert [quantized(node) for node in convs[:2]] == [False, False] and all(map(quantized, convs[2:]))
    assert len(convs) > 40
    matmuls = [node for node in nodes if node.target in (torch.ops.aten.linear.default, torch.ops.aten.matmul.default)]
    assert matmuls and not any(quantized(node) for node in matmuls)
    prepared.eval()  # train()/eval() work on the captured graph as on any module
    assert prepared(torch.randn(3, 3, 32, 32)).shape == (3, 4)


def test_qat_needs_trained_weights(tmp_path, capsys):
    user_error(["train", "--config", "cifar10_mini", "--qat", "--data", str(tmp_path), "--output-dir",
                str(tmp_path / "run")], capsys, "--qat", "--finetune")


def test_qat_at_a_training_rate_is_warned_before_it_starts(caplog):
    from swiftformer import qat
    from swiftformer.recipes import load_recipe

    with caplog.at_level(logging.WARNING, logger="swiftformer.qat"):
        qat.warn_if_fast(load_recipe("cifar10_mini", {}).lr)  # the recipe's rate, what --qat runs without --lr
        assert "give --lr 1e-5" in caplog.text
        caplog.clear()
        qat.warn_if_fast(1e-5)
        assert caplog.text == ""


@pytest.mark.slow
def test_qat_at_another_size_than_the_run_it_refines_is_warned(run, caplog):
    from swiftformer import qat
    from swiftformer.checkpoint import training_run

    finetuned = training_run(run["checkpoint"])
    with caplog.at_level(logging.WARNING, logger="swiftformer.qat"):
        qat.warn_if_resized(str(run["checkpoint"]), finetuned, 32)  # the run's own size
        assert caplog.text == ""
        qat.warn_if_resized(str(run["checkpoint"]), finetuned, 64)
    assert "--qat at 64 px refines" in caplog.text and "trained at 32 px" in caplog.text
    assert "give --img-size 32" in caplog.text


@pytest.mark.slow
def test_qat_refuses_a_float_model_of_other_classes(run, tmp_path, capsys):
    """Fine-tuning would give the run a fresh head for other classes: QAT would distil from an untrained head."""
    for split in ("train", "val"):
        for name in ("cat", "ship"):
            (tmp_path / "data" / split).mkdir(parents=True, exist_ok=True)
            (tmp_path / "data" / split / name).symlink_to(run[split] / name)
    hf_folder = save_checkpoint(load_model(str(run["checkpoint"])).model, tmp_path / "hf", format="hf")
    for finetune in (run["checkpoint"], hf_folder):  # our run names its classes; a Hugging Face folder counts them
        user_error(["train", "--config", "cifar10_mini", "--qat", "--finetune", str(finetune), "--data",
                    str(tmp_path / "data"), "--workers", "0", "--output-dir", str(tmp_path / "run")], capsys,
                   "predicts 4 classes", "has 2")


@pytest.mark.slow
def test_qat_run_resumes_stays_with_fp32_and_exports_int8(run, tmp_path, capsys):
    """``train --qat`` from the trained run: it stops and resumes like any run, its float weights still predict as
    the fp32 model does (it distils from it), and its int8 ONNX export passes the agreement check."""
    from swiftformer.checkpoint import safe_torch_load
    from swiftformer.models.fused import FusedModel

    qat_run = tmp_path / "qat"
    argv = ["train", "--config", "cifar10_mini", "--qat", "--finetune", str(run["checkpoint"]), "--data",
            str(run["dir"] / "data"), "--epochs", "2", "--lr", "5e-5", "--batch-size", "32", "--workers", "0",
            "--set", "train_subset=320", "--set", "warmup_epochs=0", "--no-progress", "--output-dir", str(qat_run)]
    assert main([*argv, "--stop-after", "1"]) == 0
    assert main(["train", "--resume", str(qat_run / "last.pth"), "--no-progress"]) == 0
    checkpoint = safe_torch_load(qat_run / "last.pth")
    assert checkpoint["epoch"] == 2 and any(key.startswith("activation_post_process_") for key in checkpoint["model"])
    records = [json.loads(line) for line in (qat_run / "log.jsonl").read_text().splitlines()]
    assert [record["epoch"] for record in records] == [1, 2]
    assert all(record["val_fp32_agreement"] >= 95.0 for record in records)  # the simulated int8 model vs fp32

    fp32, tuned = load_model(str(run["checkpoint"])), load_model(str(qat_run / "last.pth"))
    assert isinstance(tuned.model, FusedModel) and tuned.class_names == fp32.class_names
    val = load_batch(folder_images(run["val"]).take(list(range(0, 400, 4))), eval_transform(fp32.model, run_config(fp32)))
    with torch.no_grad():
        assert compare(fp32.model(val.images), tuned.model(val.images)).agreement >= 0.95

    capsys.readouterr()
    out = tmp_path / "qat-int8.onnx"
    assert main(["export", "--io", "tensor", "--model", "swiftformer_xs", "--checkpoint", str(qat_run / "last.pth"), "--format", "onnx",
                 "--precision", "int8", "--out", str(out), "--calibration", str(run["train"]), "--check-data",
                 str(run["val"]), *CALIBRATION]) == 0
    assert printed_agreement(capsys.readouterr().out) >= 98.0 and read_info(out).precision == "int8"
