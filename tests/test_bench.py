"""Benchmark logic on tiny cases: records, interleaving, statistics, exponent fitting, outputs. No timing asserts."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from swiftformer import bench
from swiftformer.bench import BenchResult, Record
from swiftformer.cli import main
from swiftformer.cli.bench import summary_lines
from swiftformer.errors import SwiftFormerError
from swiftformer.models import PUBLISHED_TOP1
from swiftformer.profiling import count_params

RECORD_FIELDS = {"model", "backend", "batch", "img_size", "median_ms", "p90_ms", "params", "macs"}


def record(model: str, backend: str, median_ms: float, batch: int = 1, macs: int = 10**9) -> Record:
    return Record(model, backend, batch, 224, median_ms, median_ms * 1.1, 1, macs, None, 2, "test")


@pytest.mark.parametrize("exponent", [0.5, 1.0, 2.0])
def test_fit_exponent_recovers_a_power_law(exponent):
    tokens = np.array(bench.ATTENTION_TOKENS, float)
    assert bench.fit_exponent(tokens, 3e-4 * tokens**exponent) == pytest.approx(exponent)


def test_attention_exponents_use_the_requested_range():
    # Linear with a large constant cost: flat at small N, slope near 1 at large N.
    rows = [
        {"attention": "additive", "tokens": n, "median_ms": 5.0 + 0.001 * n} for n in bench.ATTENTION_TOKENS
    ] + [{"attention": "mhsa", "tokens": n, "median_ms": 1e-6 * n**2} for n in bench.ATTENTION_TOKENS]
    overall = bench.attention_exponents(rows)
    large = bench.attention_exponents(rows, low=3136)
    assert overall["mhsa"] == pytest.approx(2.0) and large["mhsa"] == pytest.approx(2.0)
    assert overall["additive"] < large["additive"] < 1.0
    assert large["additive"] == pytest.approx(np.log(17.544 / 8.136) / np.log(4))
    with pytest.raises(ValueError):
        bench.fit_exponent([196], [1.0])


def test_summarize_is_median_and_p90_in_ms():
    median, p90 = bench.summarize([0.001 * i for i in range(1, 11)])
    assert median == pytest.approx(5.5) and p90 == pytest.approx(9.1)


def test_time_interleaved_rotates_the_order_and_counts_calls():
    calls: list[str] = []

    def runner(key):
        return lambda: calls.append(key) or 0.002

    samples = bench.time_interleaved({k: runner(k) for k in "abc"}, warmup=2, rounds=3, iters=2)
    assert calls[:6] == list("aabbcc")  # warm-up
    assert "".join(calls[6:]) == "aabbcc" + "bbccaa" + "ccaabb"  # each round starts one runner later
    assert {k: len(v) for k, v in samples.items()} == {"a": 6, "b": 6, "c": 6}


def test_time_interleaved_averages_short_calls_into_samples():
    calls: list[int] = []
    samples = bench.time_interleaved({"a": lambda: calls.append(1) or 0.002}, warmup=1, rounds=2, iters=3, min_sample_s=0.01)
    assert len(calls) == 1 + 2 * 3 * 5  # 5 calls of 2 ms fill a 10 ms sample
    assert samples["a"] == pytest.approx([0.002] * 6)


def test_record_reports_throughput():
    r = record("swiftformer_s", "fused", 250.0, batch=32)
    assert r.images_per_s == pytest.approx(128.0)


def test_peers_and_published_accuracy():
    assert all(name.startswith("timm/") for name in bench.PEERS)
    assert bench.published_top1("timm/mobilevitv2_100") == 78.1
    assert bench.published_top1("swiftformer_s") == PUBLISHED_TOP1["swiftformer_s"]
    assert {f"timm/{name}" for name in PUBLISHED_TOP1} <= set(bench.DEFAULT_MODELS)
    with pytest.raises(SwiftFormerError, match="unknown peer"):
        bench.benchmark_model("timm/resnet50")


def test_ours_and_timm_swiftformer_share_weights():
    ours = bench.benchmark_model("swiftformer_xs").state_dict()
    theirs = bench.benchmark_model("timm/swiftformer_xs").state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_available_backends():
    with pytest.raises(SwiftFormerError, match="unknown backend"):
        bench.available_backends(["eager", "tensorrt"])
    assert bench.available_backends(["eager", "fused"]) == ["eager", "fused"]


# Every deployment runner on ours and on a peer; ExecuTorch only on the peer (the .pte of ours: test_export.py).
@pytest.mark.parametrize(
    ("name", "backend"),
    [(name, backend) for name in ("swiftformer_xs", "timm/mobilevitv2_050") for backend in ("onnxruntime", "openvino")]
    + [("timm/mobilevitv2_050", "executorch")],
)
def test_deployment_backends_write_and_time_their_artefact(name, backend, tmp_path):
    if backend not in bench.available_backends([backend]):
        pytest.skip(f"the {backend} package is not installed")
    model, x = bench.benchmark_model(name), torch.randn(1, 3, 64, 64)
    run = bench.build_runner(name, model, backend, x, tmp_path, threads=1)
    assert 0.0 < run() < 60.0
    suffix = {"onnxruntime": ".onnx", "openvino": ".xml", "executorch": ".pte"}[backend]
    assert [p.suffix for p in tmp_path.iterdir() if p.suffix == suffix] == [suffix]


def test_summary_compares_with_timm_peers_and_the_matmul_rate():
    result = BenchResult(
        [
            record("swiftformer_s", "eager", 30.0), record("swiftformer_s", "onnxruntime", 10.0),
            record("timm/swiftformer_s", "eager", 40.0), record("timm/mobilevitv2_100", "onnxruntime", 25.0),
            record("swiftformer_s", "fused", 320.0, batch=32), record("swiftformer_s", "onnxruntime", 400.0, batch=32),
        ],
        matmul_gflops=400.0,
    )
    lines, summary = summary_lines(result, batch=32)
    assert summary["swiftformer_s_vs_timm_eager"] == pytest.approx(4.0)
    assert summary["swiftformer_s_vs_mobilevitv2_100"] == pytest.approx(2.5)
    # fused at batch 32: 100 img/s * 2 GFLOP = 200 GFLOP/s = 50 % of 400
    assert summary["swiftformer_s_fraction_of_matmul_peak"] == pytest.approx(0.5)
    assert len(lines) == 4 and "not measured" in lines[0]  # records of one round: steadiness unmeasured


def test_round_spread_is_the_slowest_rounds_median_over_the_fastest():
    times = [1.0, 1.1, 0.9, 2.0, 2.2, 2.1, 1.5, 1.5, 9.0]  # three rounds of three calls
    assert bench.round_spread(times, 3) == pytest.approx(2.1)
    assert bench.round_spread(times, 1) is None


def test_steadiness_warns_when_the_machine_changed_speed_during_the_run():
    def spread(median_ms: float, value: float, batch: int = 1) -> Record:
        r = record("swiftformer_xs", "eager", median_ms, batch=batch)
        r.round_spread = value
        return r

    result = BenchResult([spread(5.0, 1.03), spread(6.0, 1.5), spread(7.0, 1.6),
                          spread(90.0, 1.04, batch=32), record("swiftformer_s", "eager", 9.0)])
    assert result.steadiness() == {1: pytest.approx(1.5), 32: pytest.approx(1.04)}
    batch1, batch32 = result.steadiness_lines()
    assert batch1.startswith("warning: this machine's speed changed") and "at batch 1" in batch1 and "1.50x" in batch1
    assert batch32.startswith("steady machine") and "1.04x" in batch32
    lines, summary = summary_lines(result, batch=32)
    assert lines[:2] == [batch1, batch32] and summary["round_spread"] == result.steadiness()
    single = BenchResult([record("swiftformer_xs", "eager", 5.0)])
    assert single.steadiness() == {} and "not measured" in single.steadiness_lines()[0]


def test_run_benchmark_tiny_case_and_outputs(tmp_path):
    result = bench.run_benchmark(
        ["swiftformer_xs"], ["eager", "fused", "cuda"], batch=2, img_size=64, threads=1, rounds=2, iters=1,
        warmup=1, allocator="test",
    )
    backends = bench.available_backends(["eager", "fused", "cuda"])  # cuda only where a GPU is
    assert [(r.backend, r.batch) for r in result.records] == [(b, n) for n in (1, 2) for b in backends]
    first = result.records[0]
    assert first.params == count_params(bench.benchmark_model("swiftformer_xs"))
    assert first.macs > 0 and first.published_top1 == PUBLISHED_TOP1["swiftformer_xs"] and first.median_ms <= first.p90_ms
    assert result.matmul_gflops is not None and result.matmul_gflops > 0
    assert all(r.round_spread is not None and r.round_spread >= 1.0 for r in result.records)
    assert set(result.steadiness()) == {1, 2}
    bench.write_json(result.records, tmp_path / "b.json", {"matmul_gflops": result.matmul_gflops})
    written = json.loads((tmp_path / "b.json").read_text())
    assert all(RECORD_FIELDS <= set(row) and "summary" not in row for row in written["records"]) and written["summary"]["matmul_gflops"] > 0
    bench.write_csv(result.records, tmp_path / "b.csv")
    assert (tmp_path / "b.csv").read_text().splitlines()[0].startswith("model,backend,batch,img_size,median_ms")
    bench.plot_latency_vs_top1(result, tmp_path / "b.png")
    assert (tmp_path / "b.png").read_bytes()[:4] == b"\x89PNG"


def test_attention_benchmark_tiny_case(tmp_path):
    rows = bench.run_attention_benchmark(tokens=(16, 64), dim=64, threads=1, rounds=1, iters=1)
    assert {row["attention"] for row in rows} == set(bench.ATTENTION_NAMES) | {"additive (fused)"}
    assert {row["tokens"] for row in rows} == {16, 64}
    bench.plot_attention_scaling(rows, tmp_path / "a.png")
    assert (tmp_path / "a.png").read_bytes()[:4] == b"\x89PNG"


def test_cli_bench_attention(tmp_path, capsys):
    tiny = ["--rounds", "1", "--iters", "1", "--threads", "1"]
    assert main(["bench-attention", "--tokens", "16,64", *tiny, "--json", str(tmp_path / "a.json")]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == ["attention", "N=16", "N=64", "exp", "all", "exp", "16+"]
    assert "additive vs mhsa at N=64:" in out
    result = json.loads((tmp_path / "a.json").read_text())
    assert {row["tokens"] for row in result["rows"]} == {16, 64} and set(result["exponent_all"]) >= set(bench.ATTENTION_NAMES)
    assert main(["bench-attention", "--tokens", "64,64"]) == 2 and "at least two" in capsys.readouterr().err
    assert main(["bench-attention", "--tokens", "0,196"]) == 2 and "at least 1" in capsys.readouterr().err
    assert main(["bench-attention", "--tokens", "64,many"]) == 2 and "comma-separated integers" in capsys.readouterr().err


def test_cli_bench_writes_json(tmp_path, capsys):
    out = tmp_path / "b.json"
    code = main([
        "bench", "--models", "swiftformer_xs", "--backends", "fused", "--img-size", "64", "--rounds", "1",
        "--iters", "1", "--threads", "1", "--json", str(out),
    ])
    assert code == 0
    assert "swiftformer_xs" in capsys.readouterr().out
    written = json.loads(out.read_text())
    assert [(r["model"], r["backend"], r["img_size"]) for r in written["records"]] == [("swiftformer_xs", "fused", 64)]
    assert "allocator" in written["summary"] and "swiftformer" in written["summary"]["command"]
    assert main(["bench", "--backends", "tensorrt"]) == 2


def test_cli_bench_refuses_a_backend_this_machine_cannot_run(capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["bench", "--models", "swiftformer_xs", "--backends", "fused,cuda", "--rounds", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "backend cuda cannot run on this machine (no CUDA GPU)" in err, err


def test_precisions_a_cpu_or_backend_cannot_run_are_skipped_with_the_reason():
    from swiftformer.cpu import CpuInfo

    avx2 = CpuInfo("AMD EPYC", frozenset({"avx2", "fma"}))
    amx = CpuInfo("Xeon", frozenset({"avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8"}))
    assert bench.precision_skip_reason("openvino", "bf16", avx2, True).startswith("bf16: this CPU has no AVX-512-BF16")
    assert bench.precision_skip_reason("openvino", "bf16", amx, True) == ""
    assert bench.precision_skip_reason("onnxruntime", "int8", amx, False).startswith("int8: needs --calibration")
    assert bench.precision_skip_reason("fused", "int8", amx, True) == "int8: fused runs fp32"
    assert avx2.isa() == ["AVX2"] and amx.isa() == ["AVX2", "AVX-512", "VNNI", "AVX-512-BF16/AMX-BF16", "AMX"]


@pytest.mark.slow
def test_cli_bench_times_int8_calibrated_on_photos_and_records_the_cpu(tmp_path, capsys):
    from .conftest import shared_data

    photos = shared_data("cifar10-mini") / "val" / "ship"
    out = tmp_path / "b.json"
    code = main([
        "bench", "--models", "swiftformer_xs,timm/swiftformer_xs", "--backends", "onnxruntime,fused", "--precision", "fp32,int8",
        "--calibration", str(photos), "--calibration-size", "8", "--img-size", "64", "--rounds", "1", "--iters", "1",
        "--threads", "1", "--json", str(out),
    ])
    assert code == 0
    assert "skipped fused int8: fused runs fp32" in capsys.readouterr().out
    written = json.loads(out.read_text())
    # the peer's graph too (ONNX Runtime's symbolic shape inference cannot follow it: deploy.onnx.prepared)
    assert {(r["model"], r["backend"], r["precision"]) for r in written["records"]} == {
        (model, backend, precision) for model in ("swiftformer_xs", "timm/swiftformer_xs")
        for backend, precision in (("onnxruntime", "fp32"), ("onnxruntime", "int8"), ("fused", "fp32"))}
    summary = written["summary"]
    assert summary["threads"] == 1 and summary["cpu"] and isinstance(summary["isa"], list)
    assert main(["bench", "--precision", "int4"]) == 2
    capsys.readouterr()
    assert main(["bench", "--models", "swiftformer_xs", "--backends", "onnxruntime", "--precision", "int8"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "nothing to time" in err and "needs --calibration" in err, err
    assert main(["bench", "--models", "swiftformer_xs", "--backends", "fused", "--calibration", str(photos),
                 "--img-size", "64", "--rounds", "1", "--iters", "1", "--threads", "1"]) == 0
    assert "note: --calibration is not used: only int8 is calibrated, and --precision is fp32" in capsys.readouterr().out


@pytest.mark.slow
def test_every_timed_onnxruntime_session_sleeps_when_idle(tmp_path, monkeypatch):
    """A session whose idle threads spin takes the cores of the runner timed after it: the int8 one, built without
    the fp32 runner's settings, made OpenVINO fp32 1.45-1.57x slower in a full bench run (docs/quantization.md)."""
    import onnxruntime as ort

    from swiftformer.calibration import folder_images, load_batch
    from swiftformer.data import eval_transform
    from swiftformer.models import create_model
    from swiftformer.recipes import TrainConfig

    from .conftest import shared_data

    built = []

    class Recording(ort.InferenceSession):
        def __init__(self, path: str, sess_options: ort.SessionOptions | None = None, **kwargs: object) -> None:
            built.append(sess_options)
            super().__init__(path, sess_options, **kwargs)

    def spinning(options: ort.SessionOptions | None) -> str:
        try:
            return options.get_session_config_entry("session.intra_op.allow_spinning")
        except (AttributeError, RuntimeError):  # no options, or the entry left at ONNX Runtime's default (spin)
            return "default"

    monkeypatch.setattr(ort, "InferenceSession", Recording)
    model = create_model("swiftformer_xs").eval()
    photos = load_batch(folder_images(shared_data("cifar10-mini") / "val" / "ship").take(list(range(4))),
                        eval_transform(model, TrainConfig(img_size=32, crop_pct=1.0))).images
    for precision in ("fp32", "int8"):
        built.clear()
        runner = bench.build_runner("swiftformer_xs", model, "onnxruntime", photos[:1], tmp_path, 1, precision, photos)
        assert runner() > 0
        assert spinning(built[-1]) == "0", precision  # the last session built is the timed one (after calibration's)


@pytest.mark.slow
def test_cli_bench_times_litert_fp32_and_int8(tmp_path):
    """Both LiteRT precisions are built, timed and recorded (a speed ratio at 64 px and one call proves nothing; the
    figures are benchmarks/bench_precision.py's). In a child process: litert-torch imports JAX, whose threads make
    a later fork of the test process (DataLoader workers) liable to deadlock."""
    import importlib.util
    import subprocess
    import sys

    from .conftest import shared_data

    if not all(importlib.util.find_spec(m) for m in ("litert_torch", "ai_edge_litert")):
        pytest.skip("litert-torch is not installed (pip install -e '.[dev]' installs it)")
    out = tmp_path / "b.json"
    child = subprocess.run([
        sys.executable, "-m", "swiftformer", "bench", "--models", "swiftformer_xs", "--backends", "litert",
        "--precision", "fp32,int8", "--calibration", str(shared_data("cifar10-mini") / "val" / "ship"),
        "--calibration-size", "8", "--img-size", "64", "--rounds", "1", "--iters", "1", "--threads", "1",
        "--json", str(out)], capture_output=True, text=True)
    assert child.returncode == 0, child.stderr[-2000:]
    records = json.loads(out.read_text())["records"]
    assert sorted((r["backend"], r["precision"]) for r in records) == [("litert", "fp32"), ("litert", "int8")]
    # nor the converter's and the interpreter's lines that tell the user nothing (swiftformer.deploy.litert)
    for noise in ("absl::InitializeLog", "oneDNN custom operations", "XNNPACK delegate for CPU", "_pytree.py"):
        assert noise not in child.stderr, child.stderr[-2000:]
    assert all(r["median_ms"] > 0 for r in records)


def test_the_latency_plot_keeps_its_labels_inside_and_reads_its_ticks():
    """``bench --plot`` put the fastest model's label over the y title, and its log x axis (under one decade)
    showed two ticks."""
    import dataclasses

    import matplotlib.pyplot as plt

    timings = {"swiftformer_xs": 3.9, "swiftformer_s": 5.6, "swiftformer_l1": 8.1, "swiftformer_l3": 19.0,
               "timm/swiftformer_xs": 7.5, "timm/mobilevitv2_100": 14.2, "timm/efficientformer_l1": 9.4}
    records = [dataclasses.replace(record(name, "fused" if name.startswith("swift") else "eager", ms),
                                   published_top1=PUBLISHED_TOP1.get(name.split("/")[-1], 79.0))
               for name, ms in timings.items()]
    figure = bench.latency_figure(BenchResult(records))
    try:
        figure.canvas.draw()
        axes = figure.axes[0]
        box, title = axes.get_window_extent(), axes.yaxis.label.get_window_extent()
        for text in axes.texts:
            extent = text.get_window_extent()
            assert box.x0 <= extent.x0 and extent.x1 <= box.x1 and extent.y1 <= box.y1, text.get_text()
            assert not extent.overlaps(title), text.get_text()
        low, high = axes.get_xlim()
        ticks = [t for t in axes.xaxis.get_majorticklabels() if t.get_text() and low <= t.get_position()[0] <= high]
        assert len(ticks) >= 3, [t.get_text() for t in ticks]
    finally:
        plt.close(figure)
