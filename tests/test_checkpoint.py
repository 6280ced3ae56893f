"""Loading and saving every checkpoint layout, safely and atomically."""
import json
import os
import pickle
from pathlib import Path

import pytest
import timm
import torch

import swiftformer
from swiftformer.checkpoint import HUB_REPO, atomic_torch_save, read_checkpoint
from swiftformer.convert import from_native

from .conftest import randomize


@pytest.fixture(scope="module")
def model():
    return randomize(swiftformer.create_model("swiftformer_xs", num_classes=10), seed=11)


@pytest.fixture
def x():
    return torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(0))


def logits(model, x):
    with torch.no_grad():
        return model.eval()(x)


@pytest.mark.parametrize("fmt,name", [
    ("native", "w.safetensors"), ("native", "w.pth"), ("timm", "w.safetensors"), ("timm", "w.pth"), ("official", "w.pth"),
    ("hf", "hf_dir"),
])
def test_save_then_load_every_format(model, x, tmp_path, fmt, name):
    path = swiftformer.save_checkpoint(model, tmp_path / name, format=fmt)
    fresh = swiftformer.create_model("swiftformer_xs", num_classes=10)
    report = swiftformer.load_checkpoint(fresh, path)
    assert report.source_format == ("native" if fmt == "timm" else fmt)
    torch.testing.assert_close(logits(fresh, x), logits(model, x), rtol=0, atol=0)


def test_official_file_layout(model, tmp_path):
    path = swiftformer.save_checkpoint(model, tmp_path / "official.pth", format="official")
    raw = torch.load(path, weights_only=True)
    assert set(raw) == {"model"}
    assert "network.6.3.attn.Proj.weight" in raw["model"] and "dist_head.weight" in raw["model"]


def test_timm_loads_our_timm_file(model, x, tmp_path):
    path = swiftformer.save_checkpoint(model, tmp_path / "timm.safetensors", format="timm")
    theirs = timm.create_model("swiftformer_xs", num_classes=10)
    timm.models.load_checkpoint(theirs, str(path))
    torch.testing.assert_close(logits(theirs, x), logits(model, x))


def test_transformers_loads_our_hf_directory(tmp_path, x):
    transformers = pytest.importorskip("transformers")
    legacy = randomize(swiftformer.create_model("swiftformer_xs", num_classes=10, attention="additive_legacy"))
    path = swiftformer.save_checkpoint(legacy, tmp_path / "hf", format="hf")
    assert json.loads((path / "config.json").read_text())["depths"] == [3, 3, 6, 4]
    theirs = transformers.SwiftFormerForImageClassification.from_pretrained(path).eval()
    with torch.no_grad():
        assert (theirs(pixel_values=x).logits - legacy(x)).abs().max() <= 1e-5


def test_create_model_pretrained_path_takes_class_count(model, x, tmp_path):
    path = swiftformer.save_checkpoint(model, tmp_path / "w.safetensors")
    loaded = swiftformer.create_model("swiftformer_xs", pretrained=path)
    assert loaded.num_classes == 10
    torch.testing.assert_close(logits(loaded, x), logits(model, x))


def test_a_native_file_names_its_variant_and_attention(x, tmp_path):
    """Our safetensors record what built them: no --model needed, the attention restored, another variant refused;
    ``num_classes=0`` gives pooled features, never a random head."""
    from swiftformer.inference import load_model

    mhsa = randomize(swiftformer.create_model("swiftformer_xs", num_classes=7, attention="mhsa"), seed=3)
    path = swiftformer.save_checkpoint(mhsa, tmp_path / "w.safetensors")
    loaded = load_model(str(path)).model
    assert (loaded.variant, loaded.attention, loaded.num_classes) == ("swiftformer_xs", "mhsa", 7)
    torch.testing.assert_close(logits(loaded, x), logits(mhsa, x))
    assert logits(swiftformer.create_model("swiftformer_xs", pretrained=path, num_classes=0), x).shape == (2, 220)
    with pytest.raises(swiftformer.CheckpointError, match="holds a swiftformer_xs, not a swiftformer_s"):
        swiftformer.create_model("swiftformer_s", pretrained=path)


def test_fine_tuning_drops_head(model, tmp_path):
    path = swiftformer.save_checkpoint(model, tmp_path / "w.safetensors")
    tuned = swiftformer.create_model("swiftformer_xs", pretrained=path, num_classes=3)
    assert tuned.head.out_features == 3
    torch.testing.assert_close(tuned.stages[2].blocks[0].dwconv.weight, model.stages[2].blocks[0].dwconv.weight)
    report = swiftformer.load_checkpoint(swiftformer.create_model("swiftformer_xs", num_classes=5), path, drop_head=True)
    assert sorted(report.dropped) == ["head.bias", "head.weight", "head_dist.bias", "head_dist.weight"]


def test_head_of_another_size_is_a_clear_error(model, tmp_path):
    path = swiftformer.save_checkpoint(model, tmp_path / "w.safetensors")
    with pytest.raises(swiftformer.CheckpointError, match=r"head\.weight is \(10, 220\) in the checkpoint, \(1000, 220\)"):
        swiftformer.load_checkpoint(swiftformer.create_model("swiftformer_xs"), path)


def test_wrong_variant_is_a_clear_error(model, tmp_path):
    path = swiftformer.save_checkpoint(model, tmp_path / "w.safetensors")
    with pytest.raises(swiftformer.CheckpointError, match="another SwiftFormer variant"):
        swiftformer.load_checkpoint(swiftformer.create_model("swiftformer_s", num_classes=10), path)


def test_not_a_swiftformer_checkpoint(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, path)
    with pytest.raises(swiftformer.CheckpointError, match="not a SwiftFormer checkpoint"):
        swiftformer.load_checkpoint(swiftformer.create_model("swiftformer_xs"), path)


def test_missing_file(tmp_path):
    with pytest.raises(swiftformer.CheckpointError, match="checkpoint not found"):
        swiftformer.load_checkpoint(swiftformer.create_model("swiftformer_xs"), tmp_path / "nope.pth")


class _CreatesFile:
    """Unpickling this runs ``open(path, "w")``: what a malicious checkpoint would do."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def test_malicious_pickle_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    with open(path, "wb") as handle:
        torch.save({"model": {"stem.0.weight": torch.zeros(1)}, "payload": _CreatesFile(marker)}, handle)
    assert not marker.exists()
    with pytest.raises(swiftformer.CheckpointError, match="refusing to load"):
        swiftformer.load_checkpoint(swiftformer.create_model("swiftformer_xs"), path)
    assert not marker.exists()
    # a bare pickle (not a torch zip file) is refused too
    with open(path, "wb") as handle:
        pickle.dump(_CreatesFile(marker), handle)
    with pytest.raises(swiftformer.CheckpointError):
        read_checkpoint(path)
    assert not marker.exists()


def test_training_checkpoint_entry(model, x, tmp_path):
    path = tmp_path / "train.pth"
    atomic_torch_save({"model": model.state_dict(), "ema": model.state_dict(), "epoch": 3}, path)
    fresh = swiftformer.create_model("swiftformer_xs", num_classes=10)
    swiftformer.load_checkpoint(fresh, path, key="ema")
    torch.testing.assert_close(logits(fresh, x), logits(model, x))
    with pytest.raises(swiftformer.CheckpointError, match="no 'optimizer' entry"):
        swiftformer.load_checkpoint(fresh, path, key="optimizer")


def test_atomic_save_keeps_previous_file_when_writing_fails(tmp_path):
    path = tmp_path / "ckpt.pth"
    atomic_torch_save({"a": torch.ones(1)}, path)

    class Unsaveable:
        def __reduce__(self):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_torch_save({"a": Unsaveable()}, path)
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.ones(1))
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pth"]  # no temp file left behind


def _hub_cache(model, root: Path, variant: str) -> Path:
    """A Hugging Face Hub cache under ``root`` holding ``model`` as timm's release of ``variant`` (the layout
    huggingface_hub reads: refs/main names a snapshot holding model.safetensors)."""
    repo_dir = root / ("models--" + HUB_REPO.format(variant=variant).replace("/", "--"))
    commit = "0" * 40
    snapshot = repo_dir / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(commit)
    swiftformer.save_checkpoint(model, snapshot / "model.safetensors", format="timm")
    return root


def test_pretrained_true_resolves_through_offline_hub_cache(model, x, tmp_path, monkeypatch):
    """Build a Hub cache by hand and resolve pretrained=True from it."""
    variant = "swiftformer_xs"
    _hub_cache(model, tmp_path / "hub", variant)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    loaded = swiftformer.create_model(variant, pretrained=True)
    torch.testing.assert_close(logits(loaded, x), logits(model, x))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "empty"))
    with pytest.raises(swiftformer.CheckpointError, match="cannot get the pretrained weights timm/swiftformer_xs.dist_in1k"):
        swiftformer.create_model(variant, pretrained=True)


def test_pretrained_true_takes_cached_weights_without_a_network_request(model, x, tmp_path, monkeypatch):
    """Weights already in the Hub cache load without asking the Hub (an offline machine would wait for its retries)."""
    variant = "swiftformer_xs"
    _hub_cache(model, tmp_path / "hub", variant)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))

    def no_network(*args, **kwargs):
        raise AssertionError("the Hub was asked for weights that are in its cache")

    monkeypatch.setattr("huggingface_hub.hf_hub_download", no_network)
    loaded = swiftformer.create_model(variant, pretrained=True)
    torch.testing.assert_close(logits(loaded, x), logits(model, x))


def test_legacy_official_state_dict_without_wrapper(model, x, tmp_path):
    path = tmp_path / "flat.pth"
    torch.save(from_native(model.state_dict(), "official"), path)
    fresh = swiftformer.create_model("swiftformer_xs", num_classes=10)
    assert swiftformer.load_checkpoint(fresh, path).source_format == "official"
    torch.testing.assert_close(logits(fresh, x), logits(model, x))
    assert os.path.getsize(path) > 0


# A file is read by its bytes, written as its name says (issue 15, item 8) --------------------------------
def test_official_save_refuses_a_name_that_promises_another_format(model, tmp_path):
    with pytest.raises(swiftformer.SwiftFormerError, match=r"official format is a torch.save file: name it x\.pth"):
        swiftformer.save_checkpoint(model, tmp_path / "x.safetensors", format="official")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("name", ["w.safetensors", "w.pth"])
def test_a_native_file_carries_preprocessing_and_class_names(x, tmp_path, name):
    """What the model's pretrained_cfg says of its input and classes comes back with the weights; a head of
    another size (fine-tuning) keeps the preprocessing and drops the names."""
    from swiftformer.inference import load_model

    names = [f"kind {i}" for i in range(4)]
    model = randomize(swiftformer.create_model("swiftformer_xs", num_classes=4), seed=5)
    model.pretrained_cfg.update(input_size=(3, 96, 96), crop_pct=1.0, interpolation="bilinear", label_names=names)
    path = swiftformer.save_checkpoint(model, tmp_path / name)
    loaded = swiftformer.create_model("swiftformer_xs", pretrained=path)
    assert loaded.pretrained_cfg == model.pretrained_cfg
    assert swiftformer.resolve_data_config(loaded)["input_size"] == (3, 96, 96)
    assert load_model(str(path)).class_names == names
    tuned = swiftformer.create_model("swiftformer_xs", pretrained=path, num_classes=2)
    assert "label_names" not in tuned.pretrained_cfg and tuned.pretrained_cfg["crop_pct"] == 1.0


def test_a_quantization_aware_run_says_how_to_load_it(model, tmp_path):
    from swiftformer.recipes import TrainConfig

    config = TrainConfig(model="swiftformer_xs", num_classes=10, qat=True).to_dict()
    atomic_torch_save({"model": model.state_dict(), "config": config}, tmp_path / "qat.pth")
    with pytest.raises(swiftformer.CheckpointError, match="quantization-aware run.*inference.load_model"):
        swiftformer.create_model("swiftformer_xs", pretrained=tmp_path / "qat.pth")


@pytest.mark.parametrize("fmt,name", [("native", "w.safetensors"), ("native", "w.pth"), ("timm", "w.pth"), ("official", "w.pth")])
def test_a_renamed_checkpoint_is_read_by_its_content(model, x, tmp_path, fmt, name):
    path = swiftformer.save_checkpoint(model, tmp_path / name, format=fmt)
    for renamed in (tmp_path / "weights.ckpt", tmp_path / "weights"):
        path = path.rename(renamed)
        fresh = swiftformer.create_model("swiftformer_xs", pretrained=path)
        torch.testing.assert_close(logits(fresh, x), logits(model, x), rtol=0, atol=0)


def test_a_renamed_training_checkpoint_keeps_its_class_names_and_size(model, tmp_path):
    from swiftformer.inference import load_model
    from swiftformer.recipes import TrainConfig

    config = TrainConfig(model="swiftformer_xs", num_classes=10, img_size=64).to_dict()
    names = [f"n{i}" for i in range(10)]
    atomic_torch_save({"model": model.state_dict(), "config": config, "class_names": names}, tmp_path / "run")
    loaded = load_model(str(tmp_path / "run"))
    assert loaded.class_names == names and loaded.run_config["img_size"] == 64


@pytest.mark.parametrize("content,expected", [
    (b"", "is not a checkpoint: an empty file"),
    (b"model weights, not really\n", "is not a checkpoint: its 26 bytes are neither safetensors"),
    (b"\x80\x04garbage", "a corrupt pickle"),
])
def test_a_file_that_is_no_checkpoint_is_named_as_such(tmp_path, content, expected):
    path = tmp_path / "w.pth"
    path.write_bytes(content)
    with pytest.raises(swiftformer.SwiftFormerError, match=expected) as raised:
        swiftformer.create_model("swiftformer_xs", pretrained=path)
    assert "could run code" not in str(raised.value)


# Permissions follow the umask (item 12); a full disk is named (item 17) ------------------------------------
@pytest.mark.parametrize("umask", [0o077, 0o002])
def test_checkpoints_and_hf_folders_follow_the_umask(model, tmp_path, umask):
    old = os.umask(umask)
    try:
        native = swiftformer.save_checkpoint(model, tmp_path / "w.safetensors")
        official = swiftformer.save_checkpoint(model, tmp_path / "w.pth", format="official")
        folder = swiftformer.save_checkpoint(model, tmp_path / "hf", format="hf")
    finally:
        os.umask(old)
    for path in (native, official, folder / "model.safetensors", folder / "config.json"):
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask, path
    assert folder.stat().st_mode & 0o777 == 0o777 & ~umask


def test_a_full_disk_says_so_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    import errno

    path = atomic_torch_save({"epoch": 1}, tmp_path / "last.pth")

    def full_disk(obj, target, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(swiftformer.SwiftFormerError, match="last.pth: No space left on device; the previous last.pth is intact"):
        atomic_torch_save({"epoch": 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True) == {"epoch": 1} and os.listdir(tmp_path) == ["last.pth"]


# Hugging Face folders say which attention their weights need (item 10) -------------------------------------
def test_the_legacy_warning_is_only_for_legacy_weights(model, tmp_path, caplog):
    from swiftformer.checkpoint import HF_ATTENTION_KEY

    folder = swiftformer.save_checkpoint(model, tmp_path / "hf", format="hf")
    with caplog.at_level("WARNING", logger="swiftformer.checkpoint"):
        swiftformer.create_model("swiftformer_xs", pretrained=folder)
    assert "additive_legacy" not in caplog.text
    config = json.loads((folder / "config.json").read_text())
    del config[HF_ATTENTION_KEY]  # as transformers' own (pre-July-2023) folders are
    (folder / "config.json").write_text(json.dumps(config))
    with caplog.at_level("WARNING", logger="swiftformer.checkpoint"):
        swiftformer.create_model("swiftformer_xs", pretrained=folder)
    assert "attention='additive_legacy'" in caplog.text and "--attention additive_legacy" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="swiftformer.checkpoint"):
        swiftformer.create_model("swiftformer_xs", pretrained=folder, attention="additive_legacy")
    assert not caplog.text
