"""User errors through the command line: one line on stderr, exit code 2, no traceback; bugs keep theirs."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import swiftformer
from swiftformer.cli import main

from .conftest import user_error as _user_error

TINY_TRAIN = ["--config", "demo_digits", "--dataset", "digits", "--img-size", "32", "--epochs", "1",
              "--batch-size", "8", "--workers", "0", "--no-progress", "--device", "cpu",
              "--set", "train_subset=16", "--set", "val_subset=8"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    """Native SwiftFormer-XS weights with a 7-class head."""
    path = tmp_path_factory.mktemp("weights") / "xs7.safetensors"
    return swiftformer.save_checkpoint(swiftformer.create_model("swiftformer_xs", num_classes=7), path)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A one-epoch training run on 16 digits (10 classes)."""
    output_dir = tmp_path_factory.mktemp("cli") / "run"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    assert main(["train", *TINY_TRAIN, "--output-dir", str(output_dir)]) == 0
    torch.set_num_threads(threads)
    return output_dir


def test_unknown_model_suggests_the_closest_names(tmp_path, capsys):
    _user_error(["export", "--io", "tensor", "--model", "swiftformer_xxs", "--format", "onnx", "--out", str(tmp_path / "m.onnx")],
                capsys, "swiftformer_xxs", "swiftformer_xs")
    _user_error(["train", *TINY_TRAIN, "--model", "swiftformer_l2", "--output-dir", str(tmp_path / "r")],
                capsys, "swiftformer_l1", "swiftformer_l3")


def test_missing_paths_are_named(tmp_path, capsys):
    missing = tmp_path / "missing"
    _user_error(["eval", "--checkpoint", f"{missing}.pth"], capsys, f"checkpoint not found: {missing}.pth")
    _user_error(["export", "--io", "tensor", "--checkpoint", f"{missing}.pth", "--format", "onnx", "--out", str(tmp_path / "m.onnx")],
                capsys, f"checkpoint not found: {missing}.pth")  # not "give --model": the file is not there
    _user_error(["eval", "--model", "swiftformer_xs", "--checkpoint", f"{missing}.safetensors"], capsys, f"{missing}.safetensors")
    _user_error(["predict", f"{missing}.jpg", "--model", "swiftformer_xs", "--checkpoint", f"{missing}.pth"], capsys, f"{missing}.pth")
    _user_error(["export", "--io", "tensor", "--model", "swiftformer_xs", "--checkpoint", f"{missing}.pth", "--format", "onnx",
                 "--out", str(tmp_path / "m.onnx")], capsys, f"{missing}.pth")
    _user_error(["train", "--resume", f"{missing}.pth"], capsys, f"{missing}.pth")
    _user_error(["train", *TINY_TRAIN, "--finetune", f"{missing}.pth", "--output-dir", str(tmp_path / "r")], capsys, f"{missing}.pth")
    _user_error(["train", *TINY_TRAIN, "--dataset", "folder", "--data", str(missing), "--output-dir", str(tmp_path / "r")],
                capsys, str(missing / "train"))
    _user_error(["train", "--config", str(tmp_path / "recipe.yaml")], capsys, str(tmp_path / "recipe.yaml"))


def test_predict_names_a_missing_image(run, tmp_path, capsys):
    _user_error(["predict", str(tmp_path / "nope.jpg"), "--checkpoint", str(run / "last.pth")], capsys, str(tmp_path / "nope.jpg"))


def test_a_checkpoint_of_another_variant_is_refused(weights, run, tmp_path, capsys):
    for argv in (["eval", "--model", "swiftformer_s", "--dataset", "digits", "--checkpoint", str(weights)],
                 ["export", "--io", "tensor", "--model", "swiftformer_s", "--checkpoint", str(weights), "--format", "onnx",
                  "--out", str(tmp_path / "s.onnx")]):
        _user_error(argv, capsys, "xs7.safetensors holds a swiftformer_xs, not a swiftformer_s")  # its metadata says
    _user_error(["train", *TINY_TRAIN, "--model", "swiftformer_s", "--resume", str(run / "last.pth"), "--epochs", "2",
                 "--output-dir", str(tmp_path / "r")], capsys, "model 'swiftformer_s' (the run's: 'swiftformer_xs')")
    _user_error(["eval", "--model", "swiftformer_s", "--checkpoint", str(run / "last.pth")], capsys,
                "holds a swiftformer_xs, not a swiftformer_s")
    assert not (tmp_path / "s.onnx").exists()


def test_a_checkpoint_with_another_class_count_is_refused(weights, run, tmp_path, capsys):
    _user_error(["eval", "--model", "swiftformer_xs", "--dataset", "digits", "--checkpoint", str(weights)], capsys,
                "the data has 10 classes, the model predicts 7")
    _user_error(["train", *TINY_TRAIN, "--num-classes", "7", "--resume", str(run / "last.pth"), "--epochs", "2",
                 "--output-dir", str(tmp_path / "r")], capsys, "--num-classes 7 does not match the data", "has 10 classes")


def test_unsupported_export_combinations(tmp_path, capsys):
    _user_error(["export", "--io", "tensor", "--model", "swiftformer_xs", "--format", "coreml", "--out", str(tmp_path / "m.onnx")],
                capsys, "coreml writes a .mlpackage file")
    _user_error(["export", "--io", "tensor", "--model", "swiftformer_xs", "--format", "onnx", "--out", str(tmp_path / "m.onnx"),
                 "--batch", "0"], capsys, "argument --batch: must be a positive integer, got 0")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("size", ["0", "-64", "16", "31"])
def test_an_image_size_the_model_cannot_take(size, run, tmp_path, capsys):
    expected = f"image size {size} is too small"
    _user_error(["export", "--io", "tensor", "--model", "swiftformer_xs", "--format", "onnx", "--out", str(tmp_path / "m.onnx"),
                 "--img-size", "64", size], capsys, expected)
    _user_error(["train", *TINY_TRAIN, "--img-size", size, "--output-dir", str(tmp_path / "r")], capsys, expected)
    _user_error(["eval", "--checkpoint", str(run / "last.pth"), "--img-size", size], capsys, expected)
    image = tmp_path / "digit.png"
    from PIL import Image

    Image.new("RGB", (40, 40)).save(image)
    _user_error(["predict", str(image), "--checkpoint", str(run / "last.pth"), "--img-size", size], capsys, expected)
    assert not (tmp_path / "r").exists() and not (tmp_path / "m.onnx").exists()


def test_a_user_error_raised_in_a_loader_worker_is_its_own_line():
    """torch re-raises a worker's exception as its type with the worker's traceback in the message; the CLI
    prints the message line (dense datasets read images and labels in workers)."""
    from torch.utils.data import DataLoader, Dataset

    from swiftformer.cli import worker_message
    from swiftformer.errors import DataError

    class Broken(Dataset):
        def __len__(self) -> int:
            return 2

        def __getitem__(self, index: int):
            raise DataError("label.png holds label 3, outside the 2 classes")

    with pytest.raises(DataError) as caught:
        list(DataLoader(Broken(), num_workers=1))
    assert "\n" in str(caught.value) and worker_message(caught.value) == "label.png holds label 3, outside the 2 classes"
    assert worker_message(DataError("a: b")) == "a: b"


def test_internal_errors_keep_their_traceback(monkeypatch):
    """Only errors a user can fix are shortened: a bug must stay debuggable."""

    def broken_run(args):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr("swiftformer.cli.info.run", broken_run)
    with pytest.raises(ZeroDivisionError, match="a bug"):
        main(["info"])


def test_a_real_process_prints_one_line_and_exits_2(tmp_path):
    """End to end through ``python -m swiftformer``: exit status 2, one stderr line, no traceback."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "swiftformer", "export", "--io", "tensor", "--model", "swiftformer_xss", "--format",
                           "onnx", "--out", str(tmp_path / "m.onnx")], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 2 and done.stdout == "", done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr and "swiftformer_xs" in done.stderr, done.stderr


def test_eval_takes_the_folder_of_class_folders_too(run, tmp_path, capsys):
    """``eval --data MYDATA/val`` said "MYDATA/val/val is not a folder"; it is the same data as ``--data MYDATA``."""
    for name in ("3", "7"):
        for index in range(2):
            _png((tmp_path / "MYDATA/val" / name).mkdir(parents=True, exist_ok=True) or
                 tmp_path / "MYDATA/val" / name / f"{index}.png")
    outputs = []
    for data in ("MYDATA", "MYDATA/val"):
        assert main(["eval", "--checkpoint", str(run / "last.pth"), "--dataset", "folder", "--data",
                     str(tmp_path / data), "--workers", "0"]) == 0
        outputs.append(capsys.readouterr().out.replace(str(tmp_path / data), "DATA"))  # the note names the --data
    assert outputs[0] == outputs[1] and "images: 4" in outputs[0], outputs


def test_eval_ema_says_it_used_the_ema_weights(run, capsys):
    assert main(["eval", "--checkpoint", str(run / "last.pth"), "--ema", "--workers", "0"]) == 0
    assert capsys.readouterr().out.splitlines()[0].endswith("last.pth (its EMA weights)")


def _openmp_settings(tmp_path: Path, **env: str) -> dict[str, str]:
    """The settings OpenMP started with in a ``python -m swiftformer`` process (GNU OpenMP prints them on request)."""
    environment = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"} | env | {"OMP_DISPLAY_ENV": "VERBOSE"}
    done = subprocess.run([sys.executable, "-m", "swiftformer", "eval", "--checkpoint", str(tmp_path / "none.pth")],
                          capture_output=True, text=True, env=environment, timeout=300)
    assert done.returncode == 2, done.stderr
    if "OPENMP DISPLAY ENVIRONMENT" not in done.stderr:
        pytest.skip("torch does not run on GNU OpenMP here, which is what displays its settings")
    pairs = (line.strip().split(" = ", 1) for line in done.stderr.splitlines() if " = '" in line)
    return {key: value.strip("'") for key, value in pairs}


def test_the_cli_starts_openmp_passive_and_a_users_setting_wins(tmp_path):
    """OpenMP's default wait policy spins (GOMP_SPINCOUNT 300000) on cores other work needs: 2-5x slower training
    on busy cores (benchmarks/bench_omp_wait.py). The CLI sets PASSIVE before torch loads OpenMP."""
    default = _openmp_settings(tmp_path)
    assert (default["OMP_WAIT_POLICY"], default["GOMP_SPINCOUNT"]) == ("PASSIVE", "0")
    assert _openmp_settings(tmp_path, OMP_WAIT_POLICY="ACTIVE")["OMP_WAIT_POLICY"] == "ACTIVE"


def test_version(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out == f"swiftformer {swiftformer.__version__}\n"


# Corrupt images are refused, or skipped when asked (issue 15, item 1) ---------------------------------------
def _png(path: Path) -> Path:
    from PIL import Image

    pixels = torch.randint(0, 256, (48, 48, 3), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    Image.fromarray(pixels.numpy()).save(path)
    return path


def _garbage_in_the_middle(path: Path) -> Path:
    data = _png(path).read_bytes()
    noise = bytes(torch.randint(0, 256, (2000,), generator=torch.Generator().manual_seed(1)).tolist())
    path.write_bytes(data[: len(data) // 2] + noise + data[len(data) // 2 :])
    return path


def _garbage_idat(path: Path) -> Path:
    """A well-formed PNG (valid chunk CRCs) whose compressed pixel data is noise."""
    import struct
    import zlib

    data = bytearray(_png(path).read_bytes())
    start = data.index(b"IDAT") - 4
    (length,) = struct.unpack(">I", data[start : start + 4])
    noise = bytes(torch.randint(0, 256, (length,), generator=torch.Generator().manual_seed(2)).tolist())
    chunk = b"IDAT" + noise
    data[start + 4 : start + 12 + length] = chunk + struct.pack(">I", zlib.crc32(chunk))
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("corrupt", [_garbage_in_the_middle, _garbage_idat])
def test_predict_refuses_a_corrupt_image_and_can_skip_it(corrupt, run, tmp_path, capsys, caplog):
    bad, good = corrupt(tmp_path / "bad.png"), _png(tmp_path / "good.png")
    _user_error(["predict", str(bad), "--checkpoint", str(run / "last.pth")], capsys, f"cannot read image {bad}: ",
                "--skip-bad-images")
    assert main(["predict", str(bad), str(good), "--checkpoint", str(run / "last.pth"), "--skip-bad-images"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith(f"{good}: ") and len(out.splitlines()) == 1, out
    assert "skipped 1 unreadable image(s) of 2" in err and f"skipping image {bad}: " in caplog.text, (err, caplog.text)
    _user_error(["predict", str(bad), "--checkpoint", str(run / "last.pth"), "--skip-bad-images"], capsys,
                "none of the 1 image(s) could be read")


def test_predict_on_a_decompression_bomb_is_one_line(run, tmp_path, capsys, monkeypatch):
    from PIL import Image

    image = _png(tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 48 * 48 // 3)  # 48x48 is then over twice the limit: a bomb
    _user_error(["predict", str(image), "--checkpoint", str(run / "last.pth")], capsys,
                f"cannot read image {image}: ", "decompression bomb")


def test_predict_runs_legacy_hugging_face_weights_with_their_attention(tmp_path, capsys):
    """Weights of transformers' port need ``--attention additive_legacy``; predict takes it (issue 15, item 10)."""
    legacy = swiftformer.create_model("swiftformer_xs", num_classes=3, attention="additive_legacy")
    folder = swiftformer.save_checkpoint(legacy, tmp_path / "hf", format="hf")
    image = _png(tmp_path / "image.png")
    outputs = {}
    for attention in ("additive_legacy", "additive"):
        assert main(["predict", str(image), "--model", "swiftformer_xs", "--checkpoint", str(folder), "--json",
                     "--attention", attention]) == 0
        outputs[attention] = capsys.readouterr().out
    import json

    from swiftformer.data import eval_transform, load_image
    from swiftformer.inference import predict
    from swiftformer.recipes import TrainConfig

    expected, _ = predict(legacy.eval(), eval_transform(legacy, TrainConfig())(load_image(image))[None], 3)
    got = [entry["probability"] for entry in json.loads(outputs["additive_legacy"])["top"]]
    assert got == pytest.approx(expected[0].tolist(), abs=1e-6) and outputs["additive"] != outputs["additive_legacy"]
