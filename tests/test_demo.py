"""``swiftformer demo`` on a reduced budget: every step prints its line, and the lines agree with each other."""
from __future__ import annotations

import re

import pytest

from swiftformer.cli import main

NUMBER = r"([0-9.]+(?:e[-+][0-9]+)?)"
# One pattern per step, in the order the demo runs them.
STEPS = {
    "demo": r"demo     swiftformer_xs from scratch on scikit-learn's digits, .*run directory (?P<run>\S+)",
    "train": rf"train    1 epoch on 1,437 digits at 32 px in {NUMBER} min: "
             rf"val top-1 (?P<top1>{NUMBER}) %, EMA top-1 {NUMBER} %",
    "eval": rf"eval     (?P<checkpoint>\S+last\.pth) reloaded: "
            rf"top-1 (?P<top1>{NUMBER}) %, top-5 {NUMBER} % on 360 held-out digits",
    "fuse": rf"fuse     (?P<folded>\d+) BatchNorms, the layer scales and the twin heads folded "
            rf"\((?P<left>\d+) BatchNorms left\): max \|Δlogit\| (?P<diff>{NUMBER}) on 64 images, "
            rf"fused top-1 (?P<top1>{NUMBER}) %",
    "onnx": rf"export   onnx     checked by ONNX Runtime: "
            rf"max \|Δ\| (?P<diff>{NUMBER}) vs PyTorch -> (?P<path>\S+model\.onnx)",
    "openvino": rf"export   openvino checked by OpenVINO: "
                rf"max \|Δ\| (?P<diff>{NUMBER}) vs PyTorch -> (?P<path>\S+model\.xml)",
    "latency": rf"latency  batch 1 at 32 px, \d+ threads, median of 20 calls: fused (?P<fused>{NUMBER}) ms, "
               rf"unfused (?P<unfused>{NUMBER}) ms \((?P<ratio>{NUMBER})x\)",
    "next": r"next     swiftformer eval --checkpoint \S+last\.pth",
}


@pytest.mark.slow
def test_demo_prints_one_checked_line_per_step(tmp_path, capsys, one_thread):
    run_dir = tmp_path / "demo"
    assert main(["demo", "--epochs", "1", "--img-size", "32", "--rounds", "2", "--no-progress",
                 "--output-dir", str(run_dir)]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert len(lines) == len(STEPS), lines  # one line per step, nothing else on stdout
    found = {}
    for (step, pattern), line in zip(STEPS.items(), lines):
        match = re.fullmatch(pattern, line)
        assert match, f"step {step!r}: {line!r} does not match {pattern!r}"
        found[step] = match

    assert found["demo"]["run"] == str(run_dir)
    assert found["eval"]["checkpoint"] == str(run_dir / "last.pth")
    # The reloaded checkpoint classifies the held-out digits exactly as training measured; the fused form may flip
    # at most one near-tie of its 360 images (its logits differ by rounding).
    assert found["train"]["top1"] == found["eval"]["top1"]
    assert float(found["fuse"]["top1"]) == pytest.approx(float(found["eval"]["top1"]), abs=0.3)  # 1 image: 0.28 %
    assert int(found["fuse"]["folded"]) > 0 and found["fuse"]["left"] == "0"
    assert float(found["fuse"]["diff"]) < 1e-4
    for fmt, name in (("onnx", "model.onnx"), ("openvino", "model.xml")):
        assert float(found[fmt]["diff"]) <= 1e-4
        assert found[fmt]["path"] == str(run_dir / name) and (run_dir / name).is_file()
    fused, unfused, ratio = (float(found["latency"][key]) for key in ("fused", "unfused", "ratio"))
    assert fused > 0 and unfused > 0 and ratio == pytest.approx(unfused / fused, rel=0.02)
