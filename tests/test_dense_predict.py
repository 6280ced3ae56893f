"""``segment predict`` / ``detect predict``: the pictures never overwrite a photo, each other or an earlier
predict's (without ``--force``), folders are searched like classification ``predict``'s, classes are named."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from swiftformer.cli import main
from swiftformer.dense.config import load_config
from swiftformer.dense.engine import build_task_model
from swiftformer.dense.predict import output_paths

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A segmentation checkpoint of the Penn-Fudan recipe (untrained: what it predicts does not matter here)."""
    config = load_config("pennfudan_semantic_fpn_xs", {"img_size": 64, "crop_size": 64})
    torch.manual_seed(0)
    model = build_task_model(config, config.num_classes)
    path = tmp_path_factory.mktemp("seg") / "last.pth"
    torch.save({"config": config.to_dict(), "model": model.state_dict(), "class_names": list(config.class_names)}, path)
    return path


def photo(path: Path, seed: int) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(path)
    return path.read_bytes()


def test_a_photo_and_another_picture_are_never_overwritten(checkpoint, tmp_path, capsys):
    """``--output-dir a`` beside ``a/img.png`` replaced the photo with its picture, and ``a/img.png b/img.png``
    wrote one picture over the other."""
    first, second = photo(tmp_path / "a/img.png", 0), photo(tmp_path / "b/img.png", 1)
    argv = ["segment", "predict", str(tmp_path / "a/img.png"), str(tmp_path / "b/img.png"),
            "--checkpoint", str(checkpoint), "--output-dir", str(tmp_path / "a")]
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    pictures = [tmp_path / "a/a/img.segmentation.png", tmp_path / "a/b/img.segmentation.png"]
    assert [line.split(": ")[0] for line in lines] == [str(p) for p in pictures]
    assert (tmp_path / "a/img.png").read_bytes() == first and (tmp_path / "b/img.png").read_bytes() == second
    assert all(p.is_file() for p in pictures) and pictures[0].read_bytes() != pictures[1].read_bytes()
    assert all("background" in line or "person" in line for line in lines) and "class 0" not in "".join(lines)

    drawn = [p.read_bytes() for p in pictures]
    pictures[1].write_bytes(b"kept")
    assert main(argv) == 2  # an earlier predict's pictures stay unless --force
    out, err = capsys.readouterr()
    assert err.strip() == (f"swiftformer segment: error: {pictures[0]} exists (and 1 more): --force replaces them, "
                           "or give another --output-dir") and out == ""
    assert pictures[1].read_bytes() == b"kept"
    assert main([*argv, "--force"]) == 0
    assert [p.read_bytes() for p in pictures] == drawn


def test_a_folder_is_searched_and_its_pictures_are_not_predicted_on(checkpoint, tmp_path, capsys):
    photo(tmp_path / "photos/x.png", 0)
    photo(tmp_path / "photos/sub/y.jpg", 1)
    argv = ["segment", "predict", str(tmp_path / "photos"), "--checkpoint", str(checkpoint),
            "--output-dir", str(tmp_path / "photos")]
    expected = [str(tmp_path / "photos/sub/y.segmentation.png"), str(tmp_path / "photos/x.segmentation.png")]
    assert main(argv) == 0
    assert [line.split(": ")[0] for line in capsys.readouterr().out.splitlines()] == expected
    assert main([*argv, "--force"]) == 0  # the pictures now in photos/ are not inputs
    assert [line.split(": ")[0] for line in capsys.readouterr().out.splitlines()] == expected


def test_pictures_of_images_that_share_a_name_are_distinct(tmp_path):
    images = [(tmp_path / "a/img.png", Path("img.png")), (tmp_path / "a/img.jpg", Path("img.jpg")),
              (tmp_path / "b/img.png", Path("img.png")), (tmp_path / "c/d/img.png", Path("d/img.png")),
              (tmp_path / "e/d/img.png", Path("img.png"))]
    pictures = output_paths(images, "out", ".segmentation.png")
    assert [str(p) for p in pictures] == [
        "out/img.png.segmentation.png", "out/img.jpg.segmentation.png", "out/b/img.segmentation.png",
        "out/c/d/img.segmentation.png", "out/e/d/img.segmentation.png"]
