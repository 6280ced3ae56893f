"""Shared fixtures: random weights with non-trivial BN statistics and layer scales."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
VARIANT_NAMES = ["swiftformer_xs", "swiftformer_s", "swiftformer_l1", "swiftformer_l3"]


@torch.no_grad()
def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BN random statistics and affine terms, every layer scale and bias a non-trivial value.

    With the default init (layer scale 1e-5, BN identity) a wrong attention or fusion would hardly change the
    logits; these weights make every branch count.
    """
    generator = torch.Generator().manual_seed(seed)
    for name, param in model.named_parameters():
        if name.endswith("gamma"):
            param.copy_(0.5 + torch.rand(param.shape, generator=generator))
        elif name.endswith("bias"):
            param.copy_(0.1 * torch.randn(param.shape, generator=generator))
        elif name.endswith("w_g"):
            param.copy_(torch.randn(param.shape, generator=generator))
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.copy_(0.1 * torch.randn(module.num_features, generator=generator))
            module.running_var.copy_(0.5 + torch.rand(module.num_features, generator=generator))
            module.weight.copy_(0.5 + torch.rand(module.num_features, generator=generator))
            module.bias.copy_(0.1 * torch.randn(module.num_features, generator=generator))
    return model.eval()


class OpRecorder(TorchDispatchMode):
    """Names of the ATen operators run inside the ``with`` block, e.g. ``aten.addmm.default``."""

    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(str(func))
        return func(*args, **(kwargs or {}))


@pytest.fixture
def images() -> torch.Tensor:
    return torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))


def shared_data(name: str) -> Path:
    """A data set under ../shared/data, or skip the test saying why."""
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"{path} is absent: the shared data sets live beside the project root (CI always has them)")
    return path


def short_cifar_run(root: Path, classes: tuple[str, ...], **overrides) -> Path:
    """A short cifar10_mini training run of ours on ``classes`` of the shared photos (linked, not copied, under
    ``root/data/{train,val}``), into ``root/run``: a few hundred steps that move the logits far from uniform (no
    label smoothing, gradient clipping or photometric noise). Returns ``root/data``."""
    from swiftformer.recipes import load_recipe
    from swiftformer.train import main as train

    source = shared_data("cifar10-mini")
    for split in ("train", "val"):
        (root / "data" / split).mkdir(parents=True)
        for name in classes:
            (root / "data" / split / name).symlink_to(source / split / name)
    train(load_recipe("cifar10_mini", {
        "data": str(root / "data"), "batch_size": 32, "warmup_epochs": 0.2, "workers": 0, "ema_decay": None,
        "progress": False, "output_dir": str(root / "run"), "smoothing": 0.0, "clip_grad": None, "color_jitter": 0.0,
        "reprob": 0.0, **overrides,
    }))
    return root / "data"


def user_error(argv: list[str], capsys: pytest.CaptureFixture, *expected: str) -> str:
    """Run the command line on ``argv``: exit code 2 and one stderr line holding each of ``expected``."""
    from swiftformer.cli import main

    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"swiftformer {argv[0]}: error: "), err
    for text in expected:
        assert text in err, err
    return err


@pytest.fixture
def small_images() -> torch.Tensor:
    """Non-square and small, to keep the parity tests fast; parity does not depend on the size."""
    return torch.randn(2, 3, 160, 128, generator=torch.Generator().manual_seed(2))


@pytest.fixture
def one_thread():
    """One intra-op thread: on 2 shared cores, spinning thread pools make tiny runs many times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
