"""Wall time of ``train``, ``eval`` and ``bench`` with OpenMP's own wait policy vs ``OMP_WAIT_POLICY=PASSIVE``.

Each command runs in a fresh process (OpenMP reads the variable once, when torch loads it), the two settings
alternate so that drifts in the machine's load hit both alike, and the median of the repeats is kept. The whole
comparison runs twice: on the machine as it is ("idle": its load average is recorded, other work may be running)
and under load that the script starts itself (one busy-looping process per core, stopped at the end)::

    python benchmarks/bench_omp_wait.py --data ../shared/data/cifar10-mini --repeats 3

"OpenMP default" imports torch before the CLI, so the CLI's own default (``OMP_WAIT_POLICY=PASSIVE``, set before
torch loads) cannot reach OpenMP; "PASSIVE" sets the variable for the process. Writes the record
``benchmarks/results/DATE_CPU_omp-wait.json`` (:mod:`records`) with the load average before and after.
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from records import write_record  # noqa: E402  (beside this script)

SETTINGS = ("default", "PASSIVE")
# torch before the CLI: OpenMP starts with whatever the environment says, as in a program that imports torch first
LAUNCH = "import sys, torch; from swiftformer.cli import main; sys.exit(main(sys.argv[1:]))"


def commands(data: Path, work: Path, run: Path) -> dict[str, list[str]]:
    """One tiny epoch of the cifar10_mini recipe, an eval of its checkpoint, and a fused batch-1 bench."""
    return {
        "train": ["train", "--config", "cifar10_mini", "--data", str(data), "--epochs", "1", "--no-progress",
                  "--overwrite", "--output-dir", str(work / "train"), "--set", "train_subset=1024",
                  "--set", "val_subset=128"],
        "eval": ["eval", "--checkpoint", str(run / "last.pth"), "--data", str(data)],
        "bench": ["bench", "--models", "swiftformer_xs", "--backends", "fused", "--img-size", "224",
                  "--rounds", "10", "--iters", "3"],
    }


def timed(argv: list[str], setting: str) -> float:
    """Seconds one CLI process takes from start to exit."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if setting != "default":
        env["OMP_WAIT_POLICY"] = setting
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", LAUNCH, *argv], env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"{' '.join(argv[:1])} failed with {setting}:\n{done.stderr[-2000:]}")
    return seconds


def busy() -> None:
    while True:
        pass


def measure(runs: dict[str, list[str]], repeats: int) -> dict[str, dict[str, float]]:
    """command -> setting -> median seconds, the settings alternating (their order flips each repeat)."""
    seconds: dict[str, dict[str, list[float]]] = {name: {s: [] for s in SETTINGS} for name in runs}
    for repeat in range(repeats):
        order = SETTINGS if repeat % 2 == 0 else SETTINGS[::-1]
        for name, argv in runs.items():
            for setting in order:
                seconds[name][setting].append(timed(argv, setting))
                print(f"  {name:<5} {setting:<8} {seconds[name][setting][-1]:7.1f} s", flush=True)
    return {name: {s: round(statistics.median(v), 2) for s, v in by.items()} for name, by in seconds.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "cifar10-mini")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None, help="the record's path (default: benchmarks/results/)")
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    result: dict = {"cores": cores, "repeats": args.repeats, "unit": "seconds per process",
                    "settings": {"default": "OMP_WAIT_POLICY unset, torch loaded before the CLI",
                                 "PASSIVE": "OMP_WAIT_POLICY=PASSIVE"},
                    "conditions": {}}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        runs = commands(args.data, work, work / "train")
        timed(runs["train"], "PASSIVE")  # a checkpoint for eval, and warm file caches
        for condition in ("idle", "loaded"):
            load = [multiprocessing.Process(target=busy, daemon=True) for _ in range(cores if condition == "loaded" else 0)]
            for process in load:
                process.start()
            try:
                print(f"{condition} (load average {os.getloadavg()[0]:.2f}, {len(load)} busy processes)", flush=True)
                record = {"load_average_1min_before": round(os.getloadavg()[0], 2), "busy_processes": len(load)}
                record["median_s"] = measure(runs, args.repeats)
                record["load_average_1min_after"] = round(os.getloadavg()[0], 2)
            finally:
                for process in load:
                    process.terminate()
                    process.join()
            result["conditions"][condition] = record
    path = write_record("omp-wait", result, args.out)
    print(f"{'condition':<8} {'command':<6} {'default':>8} {'PASSIVE':>8}  speed-up")
    for condition, record in result["conditions"].items():
        for name, by in record["median_s"].items():
            print(f"{condition:<8} {name:<6} {by['default']:8.1f} {by['PASSIVE']:8.1f}  "
                  f"{by['default'] / by['PASSIVE']:.2f}x")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
