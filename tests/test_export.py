"""Every export format is written from the fused model and matches PyTorch when run by its own runtime."""
from __future__ import annotations

import copy
import functools
import sys

import numpy as np
import pytest
import torch

import swiftformer
from swiftformer.cli import main
from swiftformer.errors import SwiftFormerError
from swiftformer.deploy import executorch as executorch_runtime
from swiftformer.deploy import openvino as openvino_runtime
from swiftformer.export import ExportCheckError, check_inputs, export_model

from .conftest import VARIANT_NAMES, randomize, user_error

IMG_SIZE = (128, 96)  # non-square and small: export time does not depend on it, the check does


@functools.lru_cache(maxsize=None)
def randomized(name: str) -> torch.nn.Module:
    return randomize(swiftformer.create_model(name), seed=3)


def unfused_logits(name: str, batch: int) -> torch.Tensor:
    with torch.no_grad():
        return randomized(name)(check_inputs(batch, IMG_SIZE, seed=1))


@pytest.mark.parametrize("name", VARIANT_NAMES)
def test_onnx_matches_the_unfused_model(name, tmp_path):
    """XS is exported with a dynamic batch (checked at 1, 3 and 5 images), the others at batch 2."""
    import onnxruntime as ort

    dynamic = name == "swiftformer_xs"
    result = export_model(
        randomized(name), "onnx", tmp_path / f"{name}.onnx", batch=2, dynamic_batch=dynamic, img_size=IMG_SIZE
    )
    assert result.dynamic_batch == dynamic
    assert result.max_abs_diff is not None and result.max_abs_diff <= 1e-4
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    for batch in (1, 5) if dynamic else (2,):
        (got,) = session.run(None, {"image": check_inputs(batch, IMG_SIZE, seed=1).numpy()})
        expected = unfused_logits(name, batch)
        assert got.shape == (batch, 1000)
        assert expected.abs().max() > 1e-2  # the randomized weights make the logits non-trivial
        assert np.abs(got - expected.numpy()).max() <= 1e-4


@pytest.mark.parametrize("name", VARIANT_NAMES)
def test_torchscript_matches_the_unfused_model(name, tmp_path):
    result = export_model(randomized(name), "torchscript", tmp_path / f"{name}.pt", batch=2, img_size=IMG_SIZE)
    assert result.max_abs_diff is not None and result.max_abs_diff <= 1e-4
    scripted = torch.jit.load(str(result.path))
    with torch.no_grad():
        got = scripted(check_inputs(2, IMG_SIZE, seed=1))
    assert (got - unfused_logits(name, 2)).abs().max() <= 1e-4


@pytest.mark.parametrize("name", ["swiftformer_xs", "swiftformer_l3"])
def test_openvino_ir_matches_the_unfused_model_in_fp32(name, tmp_path):
    """XS with a dynamic batch (run at 1 and 5 images), L3 at batch 2; the IR keeps every weight in fp32."""
    import openvino as ov

    dynamic = name == "swiftformer_xs"
    result = export_model(
        randomized(name), "openvino", tmp_path / f"{name}.xml", batch=2, dynamic_batch=dynamic, img_size=IMG_SIZE
    )
    assert result.max_abs_diff is not None and result.max_abs_diff <= 1e-4
    assert result.path.with_suffix(".bin").is_file()
    constants = [op for op in ov.Core().read_model(str(result.path)).get_ops() if op.get_type_name() == "Constant"]
    assert {op.get_element_type() for op in constants if op.get_element_type().is_real()} == {ov.Type.f32}
    compiled = openvino_runtime.compiled_model(result.path, threads=1)
    for batch in (1, 5) if dynamic else (2,):
        got = compiled(check_inputs(batch, IMG_SIZE, seed=1).numpy())[0]
        assert np.abs(got - unfused_logits(name, batch).numpy()).max() <= 1e-4
    # the export says how to run it as checked exactly when OpenVINO's own default would not (bf16 on AMX CPUs)
    plain = ov.Core().compile_model(str(result.path), "CPU").get_property("INFERENCE_PRECISION_HINT").to_string()
    assert bool(result.run_as_checked) == (plain != "f32")
    assert plain == "f32" or "{'INFERENCE_PRECISION_HINT': 'f32'}" in result.run_as_checked


def test_openvino_missing_is_a_user_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # as if not installed
    with pytest.raises(SwiftFormerError, match="needs the openvino package"):
        openvino_runtime.write_ir(tmp_path / "xs.onnx", tmp_path / "xs.xml")


def test_coreml_mlprogram_converts_and_its_spec_validates(tmp_path):
    import coremltools as ct

    result = export_model(randomized("swiftformer_xs"), "coreml", tmp_path / "xs.mlpackage", img_size=IMG_SIZE)
    spec = ct.models.MLModel(str(result.path), skip_model_load=True).get_spec()
    assert spec.WhichOneof("Type") == "mlProgram"
    assert [i.name for i in spec.description.input] == ["image"]
    assert list(spec.description.input[0].type.multiArrayType.shape) == [1, 3, *IMG_SIZE]
    ops = {op.type for op in spec.mlProgram.functions["main"].block_specializations["CoreML6"].operations}
    assert "l2_norm" not in ops and {"rsqrt", "matmul", "conv"} <= ops  # normalisation from primitive ops
    if result.max_abs_diff is None:
        assert "macOS" in result.note
    else:
        assert result.max_abs_diff <= 1e-4


def test_executorch_pte_runs_and_matches(tmp_path):
    pytest.importorskip("executorch")
    result = export_model(randomized("swiftformer_xs"), "executorch", tmp_path / "xs.pte", img_size=IMG_SIZE)
    assert result.path.stat().st_size > 1e6 and result.max_abs_diff <= 1e-4


def test_executorch_dynamic_batch_says_and_takes_the_batches_its_program_was_planned_for(tmp_path):
    """Lowering narrows the exported batch range 1..64 (torch 2.14: to 15, a 1x1 convolution's backend choice
    guards batch < 16); the metadata and the result carry the real bound, so eval and predict chunk by it."""
    pytest.importorskip("executorch")
    from swiftformer.artefacts import open_artefact, read_info

    result = export_model(randomized("swiftformer_xs"), "executorch", tmp_path / "xs.pte", dynamic_batch=True,
                          img_size=(64, 64))
    bound = executorch_runtime.max_batch(result.path)
    assert result.max_abs_diff <= 1e-4 and result.max_batch == read_info(result.path).max_batch == min(bound, 64)
    images = check_inputs(2 * result.max_batch + 1, (64, 64), seed=4)
    with torch.no_grad():
        expected = swiftformer.reparameterize(randomized("swiftformer_xs"))(images)
    got = open_artefact(result.path, read_info(result.path))(images)
    assert (got - expected).abs().max() <= 1e-4


def test_xnnpack_takes_every_convolution_and_matrix_product():
    """What XNNPACK does not take runs in ExecuTorch's portable kernels, ten times slower (README)."""
    pytest.importorskip("executorch")
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.devtools.backend_debug import get_delegation_info
    from executorch.exir import to_edge_transform_and_lower

    fused = swiftformer.reparameterize(randomized("swiftformer_xs")).to(memory_format=torch.contiguous_format)
    program = torch.export.export(fused, (check_inputs(1, IMG_SIZE),))
    lowered = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
    table = get_delegation_info(lowered.exported_program().graph_module).get_operator_delegation_dataframe()
    left_out = set(table.loc[table["occurrences_in_non_delegated_graphs"] > 0, "op_type"])
    heavy = {op for op in left_out if any(k in op for k in ("mm", "linear", "convolution", "gelu", "sum", "mean"))}
    assert not heavy, f"left to the portable kernels: {sorted(heavy)}"


def test_onnx_graph_is_nchw_without_layout_transposes(tmp_path):
    """ONNX has no strides: the exported graph keeps NCHW maps and transposes only the attention's tokens."""
    import onnx

    result = export_model(randomized("swiftformer_xs"), "onnx", tmp_path / "xs.onnx", img_size=IMG_SIZE)
    ops = [node.op_type for node in onnx.load(str(result.path)).graph.node]
    attention_blocks = 4
    assert ops.count("Transpose") <= 3 * attention_blocks, ops.count("Transpose")
    assert ops.count("Conv") >= 2 + 3 + 2 * 16  # stem, downsamples, and each block's 3x3 and 1x1 convolutions


def test_a_wrong_artefact_is_reported(tmp_path, monkeypatch):
    """A converter that gets the graph wrong (here: tracing records a model whose head bias is off by 0.01) is
    caught by the check at the default tolerance."""
    trace = torch.jit.trace

    def wrong_trace(model, example, **kwargs):
        broken = copy.deepcopy(model)
        with torch.no_grad():
            broken.body[-1].head.bias.add_(0.01)
        return trace(broken, example, **kwargs)

    monkeypatch.setattr(torch.jit, "trace", wrong_trace)
    with pytest.raises(ExportCheckError, match="differs from PyTorch by 0.01"):
        export_model(randomized("swiftformer_xs"), "torchscript", tmp_path / "xs.pt", img_size=IMG_SIZE)


def test_bad_arguments_are_user_errors(tmp_path):
    with pytest.raises(SwiftFormerError, match="unknown export format"):
        export_model(randomized("swiftformer_xs"), "tflite", tmp_path / "xs.tflite")
    with pytest.raises(SwiftFormerError, match="at least 1"):
        export_model(randomized("swiftformer_xs"), "onnx", tmp_path / "xs.onnx", batch=0)


def test_cli_export_prints_the_check(tmp_path, capsys):
    checkpoint = tmp_path / "xs.safetensors"
    swiftformer.save_checkpoint(randomized("swiftformer_xs"), checkpoint)
    out = tmp_path / "xs.pt"
    code = main([
        "export", "--io", "tensor", "--model", "swiftformer_xs", "--checkpoint", str(checkpoint), "--format", "torchscript",
        "--out", str(out), "--img-size", *map(str, IMG_SIZE), "--batch", "3",
    ])
    printed = capsys.readouterr().out
    assert code == 0 and out.is_file()
    assert "batch 3" in printed and "max abs diff vs PyTorch" in printed
    assert main(["export", "--io", "tensor", "--model", "swiftformer_q", "--format", "onnx", "--out", str(tmp_path / "q.onnx")]) == 2


def test_cli_export_img_size_is_one_side_or_two(tmp_path, capsys):
    """``--img-size N`` is square, as in every other command; ``H W`` is any shape; three sides are one line."""
    checkpoint = tmp_path / "xs.safetensors"
    swiftformer.save_checkpoint(randomized("swiftformer_xs"), checkpoint)
    base = ["export", "--io", "tensor", "--model", "swiftformer_xs", "--checkpoint", str(checkpoint), "--format", "torchscript"]
    for sides, expected in ((["48"], (48, 48)), (["48", "32"], (48, 32))):
        out = tmp_path / f"xs-{'x'.join(sides)}.pt"
        assert main([*base, "--out", str(out), "--img-size", *sides]) == 0
        assert list(torch.jit.load(str(out))(torch.randn(1, 3, *expected)).shape) == [1, 1000]
        assert f"input [3, {expected[0]}, {expected[1]}]" in capsys.readouterr().out
    user_error([*base, "--out", str(tmp_path / "xs.pt"), "--img-size", "48", "32", "64"], capsys,
               "--img-size 48 32 64: give N (square) or H W")
    assert not (tmp_path / "xs.pt").exists()


def test_cli_export_takes_the_variant_from_a_run_and_asks_for_it_otherwise(tmp_path, capsys):
    """Weights that do not name their variant need --model (never a silent XS), a native file names its own; an
    artefact is not re-exported."""
    checkpoint = tmp_path / "l1.safetensors"
    swiftformer.save_checkpoint(randomized("swiftformer_l1"), checkpoint, format="timm")
    out = str(tmp_path / "m.pt")
    user_error(["export", "--io", "tensor", "--checkpoint", str(checkpoint), "--format", "torchscript", "--out", out], capsys,
               "l1.safetensors is not a training run of ours", "give --model")
    user_error(["export", "--io", "tensor", "--random-weights", "--format", "torchscript", "--out", out], capsys,
               "--model: which variant to export with --random-weights")
    assert main(["export", "--io", "tensor", "--model", "swiftformer_l1", "--checkpoint", str(checkpoint), "--format", "torchscript",
                 "--out", out, "--img-size", "64"]) == 0
    capsys.readouterr()
    user_error(["export", "--io", "tensor", "--checkpoint", out, "--format", "onnx", "--out", str(tmp_path / "m.onnx")], capsys,
               "m.pt is an exported artefact: export from the checkpoint it was made from")


# A failed check leaves nothing; weights are never silently random; a run's image size (issue 15: 2, 11, 15) ---
@pytest.mark.parametrize("fmt,name", [("torchscript", "xs.pt"), ("openvino", "xs.xml")])
def test_a_failed_check_leaves_no_artefact_and_keeps_the_previous_one(fmt, name, tmp_path):
    previous = tmp_path / name
    previous.write_bytes(b"the artefact of an earlier export")
    with pytest.raises(ExportCheckError, match=f"artefact {previous} differs from PyTorch"):
        export_model(randomized("swiftformer_xs"), fmt, previous, img_size=IMG_SIZE, atol=-1.0)
    assert [p.name for p in tmp_path.iterdir()] == [name] and previous.read_bytes() == b"the artefact of an earlier export"


def _offline_hub(monkeypatch, cache) -> None:
    def no_download(*args, **kwargs):
        raise AssertionError("the Hub client was asked (it retries for half a minute offline)")

    def no_route(*args, **kwargs):
        raise OSError(101, "Network is unreachable")

    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(cache))
    monkeypatch.setattr("huggingface_hub.hf_hub_download", no_download)
    monkeypatch.setattr("socket.create_connection", no_route)
    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


def test_export_without_checkpoint_takes_the_released_weights(tmp_path, capsys, monkeypatch):
    from .test_checkpoint import _hub_cache

    released = randomize(swiftformer.create_model("swiftformer_xs"), seed=5)
    _hub_cache(released, tmp_path / "hub", "swiftformer_xs")
    _offline_hub(monkeypatch, tmp_path / "hub")
    out = tmp_path / "xs.pt"
    assert main(["export", "--io", "tensor", "--model", "swiftformer_xs", "--format", "torchscript", "--out", str(out),
                 "--img-size", *map(str, IMG_SIZE)]) == 0
    printed = capsys.readouterr().out
    assert "the released ImageNet weights" in printed and printed.rstrip().endswith("- OK"), printed
    x = check_inputs(1, IMG_SIZE)
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.load(str(out))(x), released(x), rtol=1e-4, atol=1e-4)


def test_export_offline_without_weights_fails_at_once_or_says_random(tmp_path, capsys, monkeypatch):
    _offline_hub(monkeypatch, tmp_path / "empty-hub")
    out = tmp_path / "xs.pt"
    assert main(["export", "--io", "tensor", "--model", "swiftformer_xs", "--format", "torchscript", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "the Hub is not reachable" in err and "--checkpoint" in err, err
    assert not out.exists()
    assert main(["export", "--io", "tensor", "--model", "swiftformer_xs", "--format", "torchscript", "--out", str(out),
                 "--img-size", *map(str, IMG_SIZE), "--random-weights"]) == 0
    printed = capsys.readouterr().out
    assert "RANDOM weights" in printed and printed.rstrip().endswith("OK, but of random weights"), printed


def test_export_of_a_training_run_takes_its_image_size(tmp_path, capsys):
    from swiftformer.checkpoint import atomic_torch_save
    from swiftformer.recipes import TrainConfig

    config = TrainConfig(model="swiftformer_xs", num_classes=10, img_size=64).to_dict()
    model = swiftformer.create_model("swiftformer_xs", num_classes=10)
    run = atomic_torch_save({"model": model.state_dict(), "config": config, "class_names": list("abcdefghij")},
                            tmp_path / "last.pth")
    assert main(["export", "--io", "tensor", "--model", "swiftformer_xs", "--checkpoint", str(run), "--format", "torchscript",
                 "--out", str(tmp_path / "xs.pt")]) == 0
    assert "input [3, 64, 64] as trained" in capsys.readouterr().out
