"""Bad data: unreadable images, empty class folders and mismatched splits stop with one line naming the file
or folder; ``--skip-bad-images`` leaves unreadable files out, logs each and counts them per pass."""
from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from swiftformer.cli import main

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

TRAIN = ["train", "--config", "demo_digits", "--dataset", "folder", "--img-size", "32", "--epochs", "1",
         "--batch-size", "4", "--distillation", "none", "--no-progress", "--device", "cpu",
         "--set", "ema_decay=null", "--set", "warmup_epochs=0"]


def _jpeg(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def _folder(root: Path, classes: dict[str, dict[str, list[str]]]) -> Path:
    """``root/<split>/<class>/<i>.jpg`` with random JPEGs; ``classes[split][class]`` names the files."""
    for split, folders in classes.items():
        for name, files in folders.items():
            (root / split / name).mkdir(parents=True)
            for index, file in enumerate(files):
                (root / split / name / file).write_bytes(_jpeg(hash((split, name, index)) % 1000))
    return root


@pytest.fixture
def data(tmp_path: Path) -> Path:
    files = [f"{i}.jpg" for i in range(8)]
    return _folder(tmp_path / "data", {"train": {"cat": files, "dog": files}, "val": {"cat": files[:3], "dog": files[:3]}})


@pytest.fixture
def bad_files(data: Path) -> list[Path]:
    """A JPEG cut in half and a text file called ``.jpg``, in the training split."""
    truncated, not_image = data / "train" / "cat" / "truncated.jpg", data / "train" / "dog" / "notes.jpg"
    whole = _jpeg(99)
    truncated.write_bytes(whole[: len(whole) // 2])
    not_image.write_text("this is not an image\n")
    return [truncated, not_image]


@pytest.mark.parametrize("workers", ["0", "1"])  # in a loader worker the error would arrive inside a traceback
def test_an_unreadable_image_stops_training_naming_the_file(workers, data, bad_files, tmp_path, capsys):
    for bad in bad_files:
        others = [b for b in bad_files if b != bad]
        for other in others:
            other.rename(other.with_suffix(".hidden"))  # one bad file at a time
        argv = [*TRAIN, "--data", str(data), "--workers", workers, "--output-dir", str(tmp_path / "run")]
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and f"cannot read image {bad}" in err and "--skip-bad-images" in err, err
        for other in others:
            other.with_suffix(".hidden").rename(other)
    assert not (tmp_path / "run" / "last.pth").exists()


def test_skip_bad_images_trains_and_lists_the_skipped_files(data, bad_files, tmp_path, caplog):
    argv = [*TRAIN, "--data", str(data), "--workers", "1", "--output-dir", str(tmp_path / "run"), "--skip-bad-images"]
    with caplog.at_level(logging.WARNING, logger="swiftformer.data"):
        assert main(argv) == 0
    assert (tmp_path / "run" / "last.pth").is_file()
    messages = [r.getMessage() for r in caplog.records]
    for bad in bad_files:
        assert sum(f"skipping unreadable train image {bad}:" in m for m in messages) == 1, messages
    summary = [m for m in messages if "skipped 2 unreadable image(s) in this pass" in m]
    assert len(summary) == 1 and all(str(bad) in summary[0] for bad in bad_files), messages


def test_eval_names_an_unreadable_validation_image(data, tmp_path, capsys):
    run = tmp_path / "run"
    assert main([*TRAIN, "--data", str(data), "--workers", "0", "--output-dir", str(run)]) == 0
    capsys.readouterr()
    bad = data / "val" / "dog" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    assert main(["eval", "--checkpoint", str(run / "last.pth"), "--data", str(data), "--workers", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"cannot read image {bad}" in err, err
    argv = ["eval", "--checkpoint", str(run / "last.pth"), "--data", str(data), "--workers", "0", "--skip-bad-images"]
    assert main([*argv, "--json"]) == 0
    assert '"count": 6' in capsys.readouterr().out  # the six readable validation images


def test_an_empty_class_folder_is_named(data, tmp_path, capsys):
    (data / "train" / "zebra").mkdir()
    (data / "train" / "zebra" / "README.txt").write_text("images go here")
    for extra in ([], ["--skip-bad-images"]):  # an empty class is a layout error, not a bad file
        assert main([*TRAIN, "--data", str(data), "--workers", "0", "--output-dir", str(tmp_path / "run"), *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and f"empty class folder {data / 'train' / 'zebra'}" in err, err


def test_val_classes_that_differ_from_train_are_named(data, tmp_path, capsys):
    (data / "val" / "dog").rename(data / "val" / "wolf")
    assert main([*TRAIN, "--data", str(data), "--workers", "0", "--output-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "only in train/: dog" in err and "only in val/: wolf" in err, err
    assert not (tmp_path / "run").exists()  # stopped before training started


def _gradient(height: int = 24, width: int = 40) -> np.ndarray:
    """An 8-bit greyscale image with distinct rows and columns (so a rotation or a clip shows)."""
    rows, cols = np.mgrid[0:height, 0:width]
    return ((rows * 7 + cols * 3) % 256).astype(np.uint8)


def test_16_bit_greyscale_is_scaled_not_clipped(tmp_path):
    """PIL's own RGB conversion clips 16-bit values to 255 (a white image); we scale them to 8 bits."""
    from swiftformer.data import image_folder, open_rgb

    eight_bit = _gradient()
    (tmp_path / "train" / "a").mkdir(parents=True)
    path = tmp_path / "train" / "a" / "deep.png"
    Image.fromarray(eight_bit.astype(np.uint16) * 256 + 255).save(path)
    assert Image.open(path).mode.startswith("I;16")
    expected = np.repeat(eight_bit[..., None], 3, axis=2)
    np.testing.assert_array_equal(np.asarray(open_rgb(path)), expected)
    image, _ = image_folder(tmp_path / "train", transform=None)[0]  # the training/eval loader reads it so too
    np.testing.assert_array_equal(np.asarray(image), expected)


@pytest.mark.parametrize("mode,stored", [
    ("F", lambda levels: levels.astype(np.float32) / 255),  # a 0-1 float TIFF (scientific and HDR tools)
    ("F", lambda levels: levels.astype(np.float32)),  # 0-255 floats
    ("I", lambda levels: levels.astype(np.int32)),  # 0-255 in 32-bit integers (was read as 16-bit: black)
    ("I", lambda levels: levels.astype(np.int32) * 256 + 255),  # 16-bit values in 32-bit integers
], ids=["float 0-1", "float 0-255", "int32 0-255", "int32 16-bit"])
def test_32_bit_tiffs_are_scaled_by_the_range_they_hold(mode, stored, tmp_path):
    """A 0-1 float TIFF was an all-black image (PIL clips it), an int32 TIFF with 0-255 values too (taken as
    16-bit); each is now the picture it holds, in predict (load_image) and in the class-folder datasets alike."""
    from swiftformer.data import image_folder, load_image

    eight_bit = _gradient()
    path = tmp_path / "val" / "a" / "deep.tif"
    path.parent.mkdir(parents=True)
    Image.fromarray(stored(eight_bit), mode).save(path)
    assert Image.open(path).mode == mode
    expected = np.repeat(eight_bit[..., None], 3, axis=2)
    np.testing.assert_allclose(np.asarray(load_image(path)), expected, atol=1)
    np.testing.assert_allclose(np.asarray(image_folder(tmp_path / "val", transform=None)[0][0]), expected, atol=1)


@pytest.mark.parametrize("mode,pixels,reason", [
    ("F", np.full((8, 8), -0.5, np.float32), "32-bit float pixels from -0.5 to -0.5: negative values"),
    ("F", np.full((8, 8), np.nan, np.float32), "not finite"),
    ("I", np.full((8, 8), 1 << 20, np.int32), "32-bit integer pixels up to 1.04858e+06: beyond 16 bits"),
])
def test_a_32_bit_tiff_that_is_no_picture_is_one_line(mode, pixels, reason, tmp_path):
    from swiftformer.data import load_image
    from swiftformer.errors import DataError

    path = tmp_path / "odd.tif"
    Image.fromarray(pixels, mode).save(path)
    with pytest.raises(DataError, match=f"cannot read image {path}: .*") as error:
        load_image(path)
    assert reason in str(error.value) and len(str(error.value).splitlines()) == 1


def test_a_photo_above_pils_bomb_warning_reads_quietly_and_a_bomb_is_one_line(tmp_path, monkeypatch):
    """PIL warns (two lines) from 89 MP on, which a 108 MP phone photo is: read as the photo it is. Beyond twice that
    PIL refuses the file, its guard against decompression bombs: one line that says so. (The limit is lowered
    here so that 40x40 stands for 108 MP and 50x50 for a bomb.)"""
    import warnings

    from swiftformer.data import load_image
    from swiftformer.errors import DataError

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    Image.new("RGB", (40, 40), (10, 200, 30)).save(tmp_path / "phone.png")
    Image.new("RGB", (50, 50)).save(tmp_path / "bomb.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_image(tmp_path / "phone.png").size == (40, 40)
    with pytest.raises(DataError, match="bomb.png: more pixels than PIL decodes .* downscale the image first$"):
        load_image(tmp_path / "bomb.png")


def test_every_command_reads_the_same_image_files_and_names_those_it_leaves_out(tmp_path, caplog):
    """A GIF was predicted on but silently left out of training; a .txt beside the photos is named, not hidden."""
    from swiftformer.data import image_folder, list_images

    folder = tmp_path / "train" / "a"
    folder.mkdir(parents=True)
    Image.fromarray(_gradient()).save(folder / "frame.gif")
    Image.fromarray(_gradient()).save(folder / "photo.png")
    (folder / "notes.txt").write_text("not an image")
    caplog.set_level("INFO")
    dataset = image_folder(tmp_path / "train", transform=None)
    assert sorted(Path(path).name for path, _ in dataset.samples) == [p.name for p in list_images([str(folder)])]
    assert len(dataset) == 2 and "left out 1 file(s) that are not images of a kind read here (.txt x1)" in caplog.text


def test_a_phone_photo_is_upright_in_training_eval_and_predict(tmp_path):
    """A photo stored sideways with Orientation = 6 is the same upright image to the class-folder datasets (train,
    eval) and to predict/calibration, so a file gets one answer everywhere (before, eval read it sideways: 67.8 %
    against predict's 36.7 % on 90 such photos); dense datasets keep the stored pixels their boxes were drawn on."""
    from swiftformer.data import image_folder, load_image
    from swiftformer.dense.data import read_image

    stored = Image.fromarray(_gradient()).convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90° clockwise to display
    path = tmp_path / "val" / "a" / "phone.png"
    path.parent.mkdir(parents=True)
    stored.save(path, exif=exif)
    upright = np.asarray(stored.transpose(Image.Transpose.ROTATE_270))
    np.testing.assert_array_equal(np.asarray(load_image(path)), upright)
    np.testing.assert_array_equal(np.asarray(image_folder(tmp_path / "val", transform=None)[0][0]), upright)
    as_tensor = read_image(path, exif_orientation=True).mul(255).round().byte().permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(as_tensor, upright)
    np.testing.assert_array_equal(read_image(path).mul(255).round().byte().permute(1, 2, 0).numpy(), np.asarray(stored))


def test_malformed_exif_leaves_the_photo_as_stored(tmp_path, monkeypatch):
    """Pillow raises all sorts of errors on broken EXIF blocks; predict then uses the stored pixels."""
    from PIL import ImageOps

    from swiftformer.data import load_image

    stored = Image.fromarray(_gradient()).convert("RGB")
    stored.save(tmp_path / "photo.png")

    def broken_exif(image):
        raise ZeroDivisionError("division by zero in a rational EXIF field")

    monkeypatch.setattr(ImageOps, "exif_transpose", broken_exif)
    np.testing.assert_array_equal(np.asarray(load_image(tmp_path / "photo.png")), np.asarray(stored))


@pytest.mark.parametrize("local_processes,expected", [(1, 2), (2, 1)])
def test_loader_workers_follow_the_cpus_of_the_process(local_processes, expected, monkeypatch):
    """A recipe's 8 workers on a 2-core machine: DataLoader warned twice a run; the loader now starts this process's
    share of the CPUs it may use (under torchrun, shared by the processes on the machine)."""
    import warnings

    import torch

    from swiftformer.data import eval_loader
    from swiftformer.distributed import DistInfo

    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(local_processes))
    dataset = torch.utils.data.TensorDataset(torch.arange(6.0), torch.zeros(6, dtype=torch.long))
    loader = eval_loader(dataset, 2, 8, DistInfo(0, 1, 0, torch.device("cpu")))
    assert loader.loader.num_workers == expected
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # DataLoader's "will create 8 worker processes ... suggested max is 2"
        assert sum(len(images) for images, _ in loader) == 6
