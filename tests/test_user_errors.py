"""Every user mistake, table-driven: exit code 2, exactly one line on stderr naming the problem, no traceback,
nothing lost (issue 15, item 17).

The table covers every sub-command's numeric options at 0, negative and absurd values (flags and ``--set``), every
kind of unreadable checkpoint file, every unwritable destination, and the environment mistakes (a missing
package, no network, no GPU, a full disk). All run in-process through ``swiftformer.cli.main``; each fails before
any real work, so the table takes seconds.
"""
from __future__ import annotations

import errno
import os
import re
import shutil
import subprocess
import sys
import urllib.error
from pathlib import Path

import pytest
import torch

from swiftformer.cli import main

from .test_reliability_cli import TINY_TRAIN

pytestmark = pytest.mark.usefixtures("one_thread")

EXPORT = ["export", "--io", "tensor", "--model", "swiftformer_xs", "--format", "onnx", "--out", "{tmp}/m.onnx", "--random-weights"]
PREDICT = ["predict", "{image}", "--checkpoint", "{run}/last.pth"]
DETECT_PREDICT = ["detect", "predict", "{run}/last.pth", "{image}", "--output", "{tmp}/drawn"]

# (command line, option or key, bad values); ``{name}`` fields are filled from the ``paths`` fixture.
NUMERIC = [
    (["info"], "--img-size", ["0", "-1", "16", "100000", "abc"]),
    (EXPORT, "--batch", ["0", "-1", "1e9"]),
    (EXPORT, "--atol", ["0", "-1", "nan", "inf"]),
    (["bench"], "--batch", ["0", "-2"]),
    (["bench"], "--threads", ["0", "-1"]),
    (["bench"], "--img-size", ["0", "100000"]),
    (["bench"], "--rounds", ["0", "-1"]),
    (["bench"], "--iters", ["0", "-1"]),
    (["train", *TINY_TRAIN], "--epochs", ["0", "-1", "1.5"]),
    (["train", *TINY_TRAIN], "--batch-size", ["0", "-3"]),
    (["train", *TINY_TRAIN], "--accum-steps", ["0", "-1"]),
    (["train", *TINY_TRAIN], "--img-size", ["0", "-32", "100000"]),
    (["train", *TINY_TRAIN], "--lr", ["0", "-1", "inf", "nan"]),
    (["train", *TINY_TRAIN], "--num-classes", ["0", "-1"]),
    (["train", *TINY_TRAIN], "--workers", ["-1", "1000000"]),
    (["train", *TINY_TRAIN], "--seed", ["-1"]),
    (["train", *TINY_TRAIN], "--stop-after", ["0", "-1"]),
    (["train", *TINY_TRAIN], "--dist-timeout", ["0", "-5"]),
    (["eval", "--checkpoint", "{run}/last.pth"], "--img-size", ["0", "100000"]),
    (["eval", "--checkpoint", "{run}/last.pth"], "--batch-size", ["0", "-3"]),
    (["eval", "--checkpoint", "{run}/last.pth"], "--workers", ["-1"]),
    (PREDICT, "--img-size", ["0"]),
    (PREDICT, "--topk", ["0", "-1"]),
    (PREDICT, "--batch-size", ["0", "-1"]),
    (["demo"], "--epochs", ["0", "-1"]),
    (DETECT_PREDICT, "--score-threshold", ["-0.1", "1.5", "nan"]),
]
SET = [  # values that reach the config through --set (and so through YAML)
    ("epochs", "0"), ("epochs", "-1"), ("batch_size", "0"), ("lr", "-1"), ("lr", ".nan"), ("smoothing", "2"),
    ("workers", "-1"), ("accum_steps", "0"), ("hflip", "1.5"), ("ema_decay", "0"),
]
DENSE_SET = [("detect", "batch_size", "0"), ("detect", "lr", "-1"), ("segment", "hflip", "2"),
             ("segment", "crop_size", "0"), ("detect", "iterations", "-5"), ("segment", "class_names", "[wall]")]
CHECKPOINT_KINDS = ("zero-byte", "text", "truncated", "folder", "missing")
CHECKPOINT_USERS = {
    "eval": ["eval", "--checkpoint", "{file}"],
    "eval --model": ["eval", "--model", "swiftformer_xs", "--checkpoint", "{file}"],
    "predict": ["predict", "{image}", "--checkpoint", "{file}"],
    "export": ["export", "--io", "tensor", "--model", "swiftformer_xs", "--format", "onnx", "--out", "{tmp}/m.onnx", "--checkpoint", "{file}"],
    "train --resume": ["train", "--resume", "{file}"],
    "train --finetune": ["train", *TINY_TRAIN, "--finetune", "{file}", "--output-dir", "{tmp}/run"],
    "detect predict": ["detect", "predict", "{file}", "{image}", "--output", "{tmp}/drawn"],
    "segment eval": ["segment", "eval", "{file}"],
}
EXPORT_FORMATS = {"onnx": "m.onnx", "openvino": "m.xml", "coreml": "m.mlpackage", "torchscript": "m.pt", "executorch": "m.pte"}
DESTINATIONS = [  # (command line, the path that must be named)
    *[(["export", "--io", "tensor", "--model", "swiftformer_xs", "--format", fmt, "--out", f"{{read_only}}/{name}", "--random-weights"],
       f"{{read_only}}/{name}") for fmt, name in EXPORT_FORMATS.items()],
    (["train", *TINY_TRAIN, "--output-dir", "{read_only}/run"], "{read_only}/run"),
    (["bench", "--json", "{read_only}/b.json"], "{read_only}/b.json"),
    (["train", *TINY_TRAIN, "--output-dir", "{a_file}"], "{a_file}"),  # a file where a folder is wanted
    ([*EXPORT[:-3], "--out", "{a_file}/m.onnx", "--random-weights"], "{a_file}"),
    (["export", "--io", "tensor", "--model", "swiftformer_xs", "--format", "coreml", "--out", "{file_package}", "--random-weights"],
     "{file_package}"),
    (["detect", "predict", "{run}/last.pth", "{image}", "--output", "{a_file}"], "{a_file}"),
    ([*EXPORT[:-3], "--out", "{folder_onnx}", "--random-weights"], "{folder_onnx}"),  # a folder where a file is wanted
    (["bench", "--json", "{a_folder}"], "{a_folder}"),
    (["bench", "--csv", "{a_folder}"], "{a_folder}"),
    (["segment", "eval", "{run}/last.pth", "--json", "{a_folder}"], "{a_folder}"),
]
OTHERS = [  # (command line, text the line must hold)
    (["train", "--bogus"], "swiftformer train: error: unrecognized arguments: --bogus"),
    (["detect", "train", "--bogus"], "swiftformer detect train: error: unrecognized arguments: --bogus"),
    (["info", "--attention", "bogus"], "argument --attention: invalid choice: 'bogus'"),
    (["predict", "{image}", "--checkpoint", "{run}/last.pth", "--attention", "bogus"], "argument --attention"),
    (["predict", "{image}", "--checkpoint", "{run}/last.pth", "--attention", "mhsa"],
     "was trained with attention additive, which its run records; leave --attention unset"),
    (["detect", "predict", "{run}/last.pth", "{image}"], "is a classification run (swiftformer train)"),
    (["train", *TINY_TRAIN, "--model", "swiftformer_s", "--finetune", "{run}/last.pth", "--output-dir", "{tmp}/run"],
     "last.pth is a swiftformer_xs run, and this run builds a swiftformer_s: give --model swiftformer_xs"),
    (["segment", "eval", "{run}/last.pth"], "is a classification run (swiftformer train)"),
    (["train", *TINY_TRAIN, "--set", "bogus_key=1", "--output-dir", "{tmp}/run"], "unknown config key(s): bogus_key"),
    (["train", *TINY_TRAIN, "--set", "attention=additve", "--output-dir", "{tmp}/run"],
     "config attention: 'additve' is none of additive"),
    (["predict", "{image}", "--checkpoint", "{run}"], "is a run directory: pass its checkpoint"),
    (["eval", "--checkpoint", "{run}/log.jsonl"], "log.jsonl is not a checkpoint: its "),  # before asking for --model
    (["train", "--config", "{bad_recipe}", "--dataset", "digits"], "config epochs: must be at least 1, got -2"),
    (["train", "--config", "{malformed_recipe}", "--dataset", "digits"],
     "malformed.yaml: not valid YAML: while parsing a flow sequence (line 2, column 13): expected ',' or ']'"),
    (["train", *TINY_TRAIN, "--set", "crop_scale=[0.5", "--output-dir", "{tmp}/run"],
     "--set crop_scale=[0.5: not valid YAML: while parsing a flow sequence"),
    (["segment", "train", "--config", "{malformed_recipe}"], "malformed.yaml: not valid YAML"),
    (["segment", "train", "--data", "{tmp}", "--set", "crop_size=[1", "--output", "{tmp}/dense-run"],
     "--set crop_size=[1: not valid YAML"),
]


def _fill(argv: list[str], paths: dict[str, Path]) -> list[str]:
    return [item.format(**paths) for item in argv]


def _one_line(argv: list[str], capsys: pytest.CaptureFixture) -> str:
    """Run ``argv``: exit code 2 and one line ``swiftformer ...: error: ...`` on stderr, nothing on stdout."""
    code = main(argv)
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("swiftformer ") and ": error: " in lines[0], (code, err)
    assert "Traceback" not in err and out == "", (out, err)
    return lines[0]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A one-epoch classification run on 16 digits."""
    output_dir = tmp_path_factory.mktemp("errors") / "run"
    assert main(["train", *TINY_TRAIN, "--output-dir", str(output_dir)]) == 0
    return output_dir


@pytest.fixture(scope="module")
def read_only(tmp_path_factory):
    """A folder nothing can be written into. root ignores permission bits: it gets a path under /sys, where
    creating anything fails (EPERM/EACCES) whatever the user."""
    if os.geteuid() == 0:
        yield Path("/sys/swiftformer-read-only")
        return
    folder = tmp_path_factory.mktemp("read-only")
    folder.chmod(0o555)
    yield folder
    folder.chmod(0o755)


@pytest.fixture(scope="module")
def paths(run, read_only, tmp_path_factory) -> dict[str, Path]:
    from PIL import Image

    root = tmp_path_factory.mktemp("files")
    image = root / "image.png"
    Image.new("RGB", (40, 40), (90, 120, 30)).save(image)
    good = run / "last.pth"
    files = {"zero-byte": root / "zero.pth", "text": root / "text.pth", "truncated": root / "truncated.pth",
             "folder": root / "folder.pth", "missing": root / "missing.pth"}
    files["zero-byte"].write_bytes(b"")
    files["text"].write_text("these are not the weights you are looking for\n")
    files["truncated"].write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    files["folder"].mkdir()
    (root / "a_file").write_text("a file")
    (root / "m.mlpackage").write_text("a file named like a Core ML package")
    (root / "a_folder").mkdir()
    (root / "folder.onnx").mkdir()
    (root / "bad.yaml").write_text("dataset: digits\nepochs: -2\n")
    (root / "malformed.yaml").write_text("dataset: digits\ncrop_scale: [0.5\n")
    return {"tmp": root, "run": run, "image": image, "read_only": read_only, "a_file": root / "a_file",
            "a_folder": root / "a_folder", "folder_onnx": root / "folder.onnx", "file_package": root / "m.mlpackage",
            "bad_recipe": root / "bad.yaml", "malformed_recipe": root / "malformed.yaml", **{f"kind_{k}": v for k, v in files.items()}}


@pytest.mark.parametrize("argv,option,value", [
    pytest.param(argv, option, value, id=f"{' '.join(argv[:2 if argv[0] in ('detect', 'segment') else 1])} {option} {value}")
    for argv, option, values in NUMERIC for value in values
])
def test_a_bad_number_is_one_line_naming_the_option(argv, option, value, paths, capsys):
    if option == "--img-size" and argv[0] == "export":
        value = [value, "64"]
    line = _one_line(_fill([*argv, option, *([value] if isinstance(value, str) else value)], paths), capsys)
    assert f"argument {option}" in line, line


@pytest.mark.parametrize("key,value", SET, ids=[f"{k}={v}" for k, v in SET])
def test_a_bad_number_through_set_is_one_line_naming_the_key(key, value, paths, capsys):
    line = _one_line(_fill(["train", *TINY_TRAIN, "--set", f"{key}={value}", "--output-dir", "{tmp}/run"], paths), capsys)
    assert f"config {key}" in line, line
    assert not (paths["tmp"] / "run").exists()


@pytest.mark.parametrize("task,key,value", DENSE_SET, ids=[f"{t} {k}={v}" for t, k, v in DENSE_SET])
def test_a_bad_number_in_a_dense_recipe_is_one_line_naming_the_key(task, key, value, paths, capsys):
    argv = [task, "train", "--data", "{tmp}", "--output", "{tmp}/dense-run", "--set", f"{key}={value}"]
    assert f"config {key}" in _one_line(_fill(argv, paths), capsys)
    assert not any((paths["tmp"] / "dense-run").glob("*"))


@pytest.mark.parametrize("kind", CHECKPOINT_KINDS)
@pytest.mark.parametrize("user", list(CHECKPOINT_USERS))
def test_an_unreadable_checkpoint_is_one_line_naming_the_file(user, kind, paths, capsys):
    path = paths[f"kind_{kind}"]
    line = _one_line(_fill(CHECKPOINT_USERS[user], {**paths, "file": path}), capsys)
    assert str(path) in line and "could run code" not in line, line


@pytest.mark.parametrize("argv,named", DESTINATIONS, ids=[" ".join(a[:1] + a[-3:]) for a, _ in DESTINATIONS])
def test_an_unwritable_destination_is_one_line_naming_it(argv, named, paths, capsys):
    before = sorted(p.name for p in paths["tmp"].iterdir())
    line = _one_line(_fill(argv, paths), capsys)
    assert named.format(**paths) in line, line
    assert sorted(p.name for p in paths["tmp"].iterdir()) == before  # nothing written, nothing removed
    assert paths["a_file"].read_text() == "a file" and not list(paths["a_folder"].iterdir())


@pytest.mark.parametrize("argv,expected", OTHERS, ids=[" ".join(a[:3]) for a, _ in OTHERS])
def test_other_mistakes_are_one_line(argv, expected, paths, capsys):
    assert expected in _one_line(_fill(argv, paths), capsys)


def test_tensorboard_without_the_package(paths, capsys, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "torch.utils.tensorboard", None)  # import fails as if absent
    line = _one_line(_fill(["train", *TINY_TRAIN, "--tensorboard", "--output-dir", "{tmp}/tb"], paths), capsys)
    assert "--tensorboard needs the tensorboard package" in line


def test_cifar10_download_offline(paths, capsys, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError(OSError(errno.ENETUNREACH, "Network is unreachable"))

    monkeypatch.setattr("urllib.request.urlopen", offline)
    line = _one_line(_fill(["train", *TINY_TRAIN, "--dataset", "cifar10", "--data", "{tmp}/cifar", "--download",
                            "--output-dir", "{tmp}/cifar-run"], paths), capsys)
    assert "cannot download CIFAR-10 into" in line and "Network is unreachable" in line, line


def test_bench_on_a_backend_without_its_hardware(capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert "backend cuda cannot run on this machine (no CUDA GPU)" in _one_line(["bench", "--backends", "cuda"], capsys)


def test_a_full_disk_is_one_line_and_the_last_checkpoint_stays(run, tmp_path, capsys, monkeypatch):
    copy = shutil.copytree(run, tmp_path / "run")
    before = (copy / "last.pth").read_bytes()

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", full_disk)
    line = _one_line(["train", *TINY_TRAIN, "--resume", str(copy / "last.pth"), "--epochs", "2",
                      "--output-dir", str(copy)], capsys)
    assert "No space left on device" in line and re.search(r"the previous (last|best)\.pth is intact", line), line
    assert (copy / "last.pth").read_bytes() == before
    assert not [p.name for p in copy.iterdir() if p.name.endswith(".tmp")]


def test_bench_prints_no_line_before_its_one_line_error():
    """The threads/allocator line came before the error in a real process (logging writes to its stderr)."""
    child = subprocess.run([sys.executable, "-m", "swiftformer", "bench", "--precision", "fp64"],
                           capture_output=True, text=True, timeout=300)
    assert child.returncode == 2 and child.stderr.strip().splitlines() == [
        "swiftformer bench: error: unknown precision 'fp64'; choose from fp32,fp16,bf16,int8"], child.stderr
