"""Distributed training: exact sharding, and a real 2-process DDP run (gloo, CPU)."""
from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
from hypothesis import given, strategies as st

from swiftformer.distributed import ShardSampler

DDP_CONFIG = dict(
    dataset="digits", img_size=32, batch_size=8, train_subset=96, val_subset=101, epochs=1, warmup_epochs=1,
    workers=0, repeated_aug=3, ema_decay=0.9, distillation="none", progress=False, device="cpu",
)


@given(size=st.integers(0, 60), world_size=st.integers(1, 5))
def test_shards_cover_every_sample_exactly_once(size, world_size):
    shards = [list(ShardSampler(size, rank, world_size)) for rank in range(world_size)]
    assert sorted(i for shard in shards for i in shard) == list(range(size))
    assert [len(ShardSampler(size, rank, world_size)) for rank in range(world_size)] == [len(s) for s in shards]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _rank(rank: int, world_size: int, port: int, output_dir: str) -> None:
    """One DDP process, set up the way torchrun sets it up."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from swiftformer.recipes import load_recipe
    from swiftformer.train import main

    result = main(load_recipe("demo_digits", {**DDP_CONFIG, "output_dir": output_dir}))
    torch.save({"model": result.model.state_dict(), "ema": result.ema.state_dict(), "record": result.record},
               f"{output_dir}.rank{rank}.pt")


@pytest.mark.slow
def test_two_process_ddp_run(tmp_path):
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # two busy processes on two cores: do not spin
    output_dir = str(tmp_path / "run")
    mp.spawn(_rank, args=(2, _free_port(), output_dir), nprocs=2, join=True)  # raises if a rank fails
    rank0, rank1 = (torch.load(f"{output_dir}.rank{r}.pt", weights_only=True) for r in (0, 1))
    for key in ("model", "ema"):  # parameters via all-reduced gradients, BatchNorm statistics via broadcast
        for name, tensor in rank0[key].items():
            assert torch.equal(tensor, rank1[key][name]), f"{key}.{name} differs between ranks"
    for record in (rank0["record"], rank1["record"]):  # 101 images over 2 ranks: 51 + 50, none twice
        assert record["val_count"] == record["ema_count"] == 101
        assert record["step"] == 96 // 2 // 8  # 48 images per rank per epoch (repeated augmentation keeps the length)
    files = {p.name for p in (tmp_path / "run").iterdir()}
    assert {"config.yaml", "log.jsonl", "last.pth", "best.pth", "curves.png"} <= files
    assert len((tmp_path / "run" / "log.jsonl").read_text().splitlines()) == 1  # only rank 0 writes
