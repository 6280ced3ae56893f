"""One module per runtime (swiftformer.deploy): each runtime's session is built in one place, and the export's check,
``eval``/``predict`` and ``bench`` run an artefact through that one runner, with the same settings and outputs."""
from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import swiftformer
from swiftformer import bench
from swiftformer.artefacts import ArtefactModel, read_info
from swiftformer.deploy.quiet import quiet
from swiftformer.export import check_inputs, export_model
from swiftformer.formats import FORMATS

from .conftest import randomize

SIZE = (32, 32)
# How each runtime's session, compiled model, program or interpreter is made, and the module that alone makes it.
CONSTRUCTORS = {"InferenceSession": "onnx", "compile_model": "openvino", "Runtime.get": "executorch",
                "Interpreter": "litert"}


def constructions(root: Path) -> dict[str, list[str]]:
    """Each constructor of :data:`CONSTRUCTORS` -> the ``file:line`` of every call of it under ``root``."""
    found: dict[str, list[str]] = {name: [] for name in CONSTRUCTORS}
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name == "get" and isinstance(func, ast.Attribute) and getattr(func.value, "id", "") == "Runtime":
                name = "Runtime.get"
            if name in found:
                found[name].append(f"{path.relative_to(root.parent)}:{node.lineno}")
    return found


def test_each_runtime_is_constructed_in_its_own_module_only():
    root = Path(swiftformer.__file__).parent
    for name, places in constructions(root).items():
        module = f"swiftformer/deploy/{CONSTRUCTORS[name]}.py"
        assert len(places) == 1 and places[0].startswith(f"{module}:"), (name, places)


def test_every_format_points_at_a_runtime_module_that_writes_runs_and_reads_back():
    for fmt in FORMATS.values():
        assert fmt.runtime.__name__ == f"swiftformer.deploy.{fmt.name}"
        assert all(callable(getattr(fmt.runtime, name)) for name in ("write", "runner", "stored_precision"))


@pytest.fixture(scope="module")
def artefacts(tmp_path_factory) -> dict[str, Path]:
    """XS (random weights) at 32 px in each format that runs here and is installed, but LiteRT (its converter
    imports JAX, whose threads make a later fork of the test process liable to deadlock: test_bench runs it in a
    child process)."""
    import importlib.util

    folder = tmp_path_factory.mktemp("deploy")
    model = randomize(swiftformer.create_model("swiftformer_xs"), seed=2)
    formats = [fmt for fmt in ("onnx", "openvino", "executorch") if importlib.util.find_spec(fmt)]
    return {fmt: export_model(model, fmt, folder / f"xs{FORMATS[fmt].suffix}", img_size=SIZE).path for fmt in formats}


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx", "openvino", "executorch"])
def test_bench_and_eval_run_an_artefact_through_the_same_runner_with_the_same_outputs(fmt, artefacts, monkeypatch):
    """bench's timed call and ArtefactModel (eval, predict) each build their runner with the runtime module's one
    ``runner`` and give the same logits for the same images, bit for bit."""
    if fmt not in artefacts:
        pytest.skip(f"{fmt} is not installed")
    runtime = FORMATS[fmt].runtime
    built, outputs = [], []
    runner = runtime.runner

    def recording(path: Path, threads: int | None = None, precision: str = "fp32"):
        run = runner(path, threads, precision)
        built.append((Path(path), precision))

        def recorded(x: torch.Tensor) -> torch.Tensor:
            outputs.append(run(x))
            return outputs[-1]

        return recorded

    monkeypatch.setattr(runtime, "runner", recording)
    path, images = artefacts[fmt], check_inputs(1, SIZE, seed=5)
    timed = bench.artefact_runner(fmt, path, images, threads=1, precision="fp32")
    assert timed() > 0
    from_bench = outputs[-1]
    from_eval = ArtefactModel(path, read_info(path))(images)
    assert built == [(path, "fp32")] * 2
    assert torch.equal(from_bench, from_eval)


@pytest.mark.slow
def test_eval_sessions_do_not_spin_as_benchs_do_not(artefacts, monkeypatch):
    """The settings bench chose for ONNX Runtime (idle threads sleep) hold for every session, eval's too."""
    import onnxruntime as ort

    built = []

    class Recording(ort.InferenceSession):
        def __init__(self, path: str, sess_options: ort.SessionOptions | None = None, **kwargs: object) -> None:
            built.append(sess_options)
            super().__init__(path, sess_options, **kwargs)

    monkeypatch.setattr(ort, "InferenceSession", Recording)
    ArtefactModel(artefacts["onnx"], read_info(artefacts["onnx"]))
    bench.artefact_runner("onnx", artefacts["onnx"], check_inputs(1, SIZE), threads=1, precision="fp32")
    assert len(built) == 2
    for options in built:
        assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
        assert options.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL and options.inter_op_num_threads == 1


def test_quiet_leaves_out_the_noise_lines_and_keeps_every_other(capfd):
    with quiet(lines=re.compile(r"^\[cpuinfo_utils\.cpp:\d+\]")):
        os.write(2, b"[cpuinfo_utils.cpp:71] Reading file /sys/devices/soc0/image_version\n")
        os.write(2, b"E: a real error of the library\n")
    err = capfd.readouterr().err
    assert "cpuinfo_utils" not in err and "E: a real error of the library" in err


def quiet_run(command: list[str]) -> str:
    """The stderr of ``swiftformer COMMAND`` in a process of its own (the runtimes print their lines once per
    process), which must succeed."""
    child = subprocess.run([sys.executable, "-m", "swiftformer", *command], capture_output=True, text=True,
                           env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})
    assert child.returncode == 0, child.stderr[-2000:]
    return child.stderr


@pytest.mark.slow
def test_executorch_export_and_predict_print_none_of_the_runtimes_noise(tmp_path):
    """The five cpuinfo lines XNNPACK's thread pool writes on every load, and torch's pytree deprecation note on
    torchao's import, are left out of an export and of a prediction."""
    pytest.importorskip("executorch")
    from .conftest import shared_data

    out = tmp_path / "xs.pte"
    for command in (
        ["export", "--io", "tensor", "--model", "swiftformer_xs", "--random-weights", "--format", "executorch", "--img-size", "32",
         "--out", str(out)],
        ["predict", str(shared_data("cifar10-mini") / "val" / "ship" / "0000.jpg"), "--checkpoint", str(out)],
    ):
        err = quiet_run(command)
        assert not any(noise in err for noise in ("cpuinfo_utils", "_pytree.py", "is an Enum subclass")), err[-2000:]


@pytest.mark.slow
def test_openvino_int8_export_does_not_warn_of_a_missing_cuda(tmp_path):
    """NNCF's backend detection imports torch's C++ extension helpers, which warn on a machine without a GPU."""
    pytest.importorskip("nncf")
    from .conftest import shared_data

    photos = shared_data("cifar10-mini") / "val" / "ship"
    err = quiet_run(["export", "--io", "tensor", "--model", "swiftformer_xs", "--random-weights", "--format", "openvino", "--precision",
                     "int8", "--calibration", str(photos), "--calibration-size", "8", "--check-size", "8",
                     "--min-agreement", "0", "--img-size", "32", "--out", str(tmp_path / "xs.xml")])
    assert "No CUDA runtime" not in err, err[-2000:]
