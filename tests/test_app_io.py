"""The image form of a classifier and the metadata it carries, proven with the client an Android app runs.

MediaPipe Tasks' ``ImageClassifier`` (the Python package of the same C++ task) reads the ``.tflite`` as it is:
its NHWC image input, the TFLite metadata (image properties, normalisation options, the labels file) and the
probabilities. A SwiftFormer-XS is trained here for a few epochs at 32 px on real CIFAR-10 photos of
../shared/data/cifar10-mini, so that its top-1 means something (random weights answer nearly one class).
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import functional as TF

import swiftformer
from swiftformer.deploy.app_io import AppMetadata, ImageClassifier, app_metadata, image_classifier
from swiftformer.deploy.tflite_metadata import (
    APP_METADATA_NAME, LABELS_FILE, METADATA_NAME, associated_files, metadata_entries, model_metadata,
    read_app_metadata,
)
from swiftformer.errors import SwiftFormerError
from swiftformer.models import reparameterize

from .conftest import randomize, shared_data

SIZE = 32
ROOT = Path(__file__).resolve().parents[1]


def pixels(paths: list[Path]) -> torch.Tensor:
    """``(N, H, W, 3)`` uint8: the files decoded as an app hands them over."""
    return torch.from_numpy(np.stack([np.asarray(Image.open(path).convert("RGB")) for path in paths]))


def folder(split: str, per_class: int, start: int = 0) -> tuple[list[Path], list[str]]:
    root = shared_data("cifar10-mini") / split
    classes = sorted(path.name for path in root.iterdir())
    return [path for name in classes for path in sorted((root / name).iterdir())[start:start + per_class]], classes


def tiny_model(classes: int = 10) -> torch.nn.Module:
    return randomize(swiftformer.create_model("swiftformer_xs", num_classes=classes))


# Fast: the wrapper and the metadata ----------------------------------------------------------------------------
def test_the_image_form_normalises_inside_and_answers_probabilities():
    model = tiny_model()
    image = torch.randint(0, 256, (2, SIZE, SIZE, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    config = swiftformer.resolve_data_config(model)
    with torch.no_grad():
        expected = model(TF.normalize(image.permute(0, 3, 1, 2) / 255, config["mean"], config["std"])).softmax(1)
        for form, given in [
            (image_classifier(model, "NHWC"), image),  # Android: camera bytes
            (image_classifier(model, "NHWC"), image.float()),  # float pixels 0..255
            (image_classifier(model, "NCHW", pixel_max=1.0), image.permute(0, 3, 1, 2) / 255),  # Core ML scale 1/255
        ]:
            torch.testing.assert_close(form(given), expected, rtol=1e-4, atol=1e-5)
    assert abs(float(expected.sum(1).mean()) - 1) < 1e-5 and float(expected.amax()) < 0.99  # not one-hot by accident


def test_an_unknown_layout_is_refused():
    with pytest.raises(ValueError, match="layout 'HWC' is none of NHWC, NCHW"):
        ImageClassifier(tiny_model(), (0.5,) * 3, (0.5,) * 3, layout="HWC")


def test_labels_that_do_not_fit_the_head_are_refused_before_anything_is_written():
    form = image_classifier(reparameterize(tiny_model(10), channels_last=False))
    with pytest.raises(SwiftFormerError, match="9 labels for a head of 10 classes: give one label per class"):
        app_metadata(form, [f"class {i}" for i in range(9)], (SIZE, SIZE))
    with pytest.raises(SwiftFormerError, match="is not a one-line name"):
        app_metadata(form, [f"class\n{i}" for i in range(10)], (SIZE, SIZE))


def test_the_metadata_as_strings_and_as_json():
    labels = [f"class {i}" for i in range(10)]
    meta = app_metadata(image_classifier(tiny_model()), labels, (SIZE, 48), top1=81.5, author="A. Author",
                        license="MIT")
    strings = meta.as_strings()
    assert strings["labels"].split("\n") == labels  # one string: Java's EValue has no string list
    assert strings["input_size"] == "32,48" and strings["mean"] == "0.485,0.456,0.406" and strings["top1"] == "81.5"
    assert strings["swiftformer_version"] == swiftformer.__version__ and strings["variant"] == "swiftformer_xs"
    assert strings["layout"] == "NHWC" and strings["pixel_max"] == "255.0"
    assert "10 classes out; top-1 81.5 %" in strings["description"] and AppMetadata.from_json(meta.to_json()) == meta
    assert app_metadata(image_classifier(tiny_model()), labels, (SIZE, SIZE)).as_strings()["top1"] == ""


def mediapipe_metadata_schema() -> ModuleType:
    """The classes flatc generated from metadata_schema.fbs, as MediaPipe's wheel ships them, loaded from their file:
    importing ``mediapipe`` starts a thread of its runtime in the test process (see :func:`in_child`)."""
    spec = importlib.util.find_spec("mediapipe")
    if spec is None:
        pytest.skip("mediapipe is not installed (pip install 'swiftformer[dev]')")
    path = Path(spec.origin).parent / "tasks" / "metadata" / "metadata_schema_py_generated.py"
    module = importlib.util.module_from_spec(importlib.util.spec_from_file_location("metadata_schema", path))
    module.__spec__.loader.exec_module(module)
    return module


def normalization(schema: ModuleType, image: object) -> tuple[list[float], list[float]]:
    """The (mean, std) of an input TensorMetadata's NormalizationOptions."""
    unit = image.ProcessUnits(0)
    assert unit.OptionsType() == schema.ProcessUnitOptions.NormalizationOptions
    options = schema.NormalizationOptions()
    options.Init(unit.Options().Bytes, unit.Options().Pos)
    return options.MeanAsNumpy().tolist(), options.StdAsNumpy().tolist()


def test_the_tflite_metadata_reads_back_with_the_schema_mediapipe_ships():
    """Read with the classes flatc generated from metadata_schema.fbs (MediaPipe's wheel ships them), not ours."""
    schema = mediapipe_metadata_schema()
    labels = [f"class {i}" for i in range(10)]
    meta = app_metadata(image_classifier(tiny_model()), labels, (SIZE, 48), author="A. Author", license="MIT")
    data = model_metadata(meta)
    assert schema.ModelMetadata.ModelMetadataBufferHasIdentifier(data, 0)
    root = schema.ModelMetadata.GetRootAs(data, 0)
    assert (root.Name(), root.Author(), root.License()) == (b"swiftformer_xs", b"A. Author", b"MIT")
    assert root.Version() == f"swiftformer {swiftformer.__version__}".encode() and root.MinParserVersion() == b"1.0.0"
    image, output = root.SubgraphMetadata(0).InputTensorMetadata(0), root.SubgraphMetadata(0).OutputTensorMetadata(0)
    assert image.Content().ContentPropertiesType() == schema.ContentProperties.ImageProperties
    properties = schema.ImageProperties()
    properties.Init(image.Content().ContentProperties().Bytes, image.Content().ContentProperties().Pos)
    assert properties.ColorSpace() == schema.ColorSpaceType.RGB
    assert (properties.DefaultSize().Height(), properties.DefaultSize().Width()) == (SIZE, 48)
    # pixels go in as they are (0..255): the model's own per-channel mean/std run in the graph
    assert normalization(schema, image) == ([0.0], [1.0])
    assert output.Content().ContentPropertiesType() == schema.ContentProperties.FeatureProperties
    labels_file = output.AssociatedFiles(0)
    assert labels_file.Name() == LABELS_FILE.encode()
    assert labels_file.Type() == schema.AssociatedFileType.TENSOR_AXIS_LABELS
    # a graph taking 0..1: the reader divides the 0..255 pixels by 255
    unit_range = model_metadata(app_metadata(image_classifier(tiny_model(), pixel_max=1.0), labels, (SIZE, 48)))
    image = schema.ModelMetadata.GetRootAs(unit_range, 0).SubgraphMetadata(0).InputTensorMetadata(0)
    assert normalization(schema, image) == ([0.0], [255.0])


# Slow: a trained model, converted by litert-torch, run by MediaPipe ----------------------------------------------
def write_tflites(weights: str, calibration: str, out: str) -> None:
    """fp32 (uint8 and float input) and int8 (uint8 input, calibrated on real photos) image-form ``.tflite``s with
    their metadata."""
    from swiftformer.deploy.tflite_metadata import with_metadata
    from swiftformer.deploy.litert import _litert_torch, quiet_conversion, write_int8

    paths, classes = folder(calibration, per_class=6, start=300)  # not the training images' indices
    model = swiftformer.create_model("swiftformer_xs", num_classes=len(classes))
    model.load_state_dict(torch.load(weights, weights_only=True))
    form = image_classifier(reparameterize(model.eval(), channels_last=False), "NHWC")
    meta = app_metadata(form, classes, (SIZE, SIZE), author="swiftformer tests", license="Apache-2.0")
    with quiet_conversion():
        camera = _litert_torch().convert(form, (torch.zeros(1, SIZE, SIZE, 3, dtype=torch.uint8),)).model_content()
        floats = _litert_torch().convert(form, (torch.zeros(1, SIZE, SIZE, 3),)).model_content()
        written = {"fp32-uint8": camera, "fp32-float": floats, "int8-uint8": write_int8(camera, pixels(paths))}
    for name, tflite in written.items():
        (Path(out) / f"{name}.tflite").write_bytes(with_metadata(tflite, meta))


def in_child(function: str, *args: str) -> object:
    """``function(*args)`` of this module run in a child process, its JSON answer read back: litert-torch (through
    JAX) and MediaPipe leave threads behind that make a later fork of the test process (DataLoader workers of
    other tests) liable to deadlock."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    code = f"import json, sys; from tests.test_app_io import {function}; print(json.dumps({function}(*sys.argv[1:])))"
    child = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=900)
    assert child.returncode == 0, child.stderr[-3000:]
    return json.loads(child.stdout.splitlines()[-1])


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    """XS trained 6 epochs at 32 px on 100 photos a class, its image-form ``.tflite``s, and held-out photos (half
    of them re-encoded as PNG)."""
    for module in ("mediapipe", "litert_torch", "ai_edge_quantizer"):  # found, not imported: see in_child
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed (pip install 'swiftformer[dev]')")
    torch.manual_seed(0)
    paths, classes = folder("train", per_class=100)
    images, labels = pixels(paths), torch.arange(len(classes)).repeat_interleave(100)
    model = swiftformer.create_model("swiftformer_xs", num_classes=len(classes))
    form = image_classifier(model, "NHWC")  # trained through the wrapper: the same normalisation
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.05)
    model.train()
    for _ in range(6):
        for batch in torch.randperm(len(images)).split(64):
            batch_images = images[batch].flip(2) if torch.rand(()) < 0.5 else images[batch]
            loss = torch.nn.functional.nll_loss(form(batch_images).clamp_min(1e-8).log(), labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    root = tmp_path_factory.mktemp("app_io")
    torch.save(model.state_dict(), root / "xs.pt")
    in_child("write_tflites", str(root / "xs.pt"), "train", str(root))
    val, _ = folder("val", per_class=6)
    photos = []
    for index, path in enumerate(val):
        if index % 2:  # the same photo as PNG: the decoders of both sides then see identical pixels
            path = root / f"{path.parent.name}-{path.stem}.png"
            Image.open(val[index]).convert("RGB").save(path)
        photos.append(path)
    return {"model": model, "classes": classes, "dir": root, "photos": photos}


def mediapipe_top1(tflite: str, *photos: str) -> list[tuple[int, str]]:
    """MediaPipe Tasks' ImageClassifier on the files as an app opens them: (index, label) of the top class."""
    from mediapipe import Image as MpImage
    from mediapipe.tasks.python import BaseOptions, vision

    options = vision.ImageClassifierOptions(base_options=BaseOptions(model_asset_path=tflite), max_results=1)
    with vision.ImageClassifier.create_from_options(options) as classifier:
        answers = [classifier.classify(MpImage.create_from_file(path)).classifications[0].categories[0]
                   for path in photos]
    return [(category.index, category.category_name) for category in answers]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["fp32-uint8", "fp32-float", "int8-uint8"])
def test_mediapipe_image_classifier_runs_the_tflite_as_it_is_and_agrees_with_pytorch(trained, name):
    tflite, classes = trained["dir"] / f"{name}.tflite", trained["classes"]
    with torch.no_grad():  # fp32 PyTorch on the same files, decoded by PIL; 32 px photos: neither side resizes
        probabilities = image_classifier(trained["model"], "NHWC")(pixels(trained["photos"]))
    assert float(probabilities.amax(1).mean()) > 0.3, "the trained model is still near uniform (0.1): train longer"
    expected = [(index, classes[index]) for index in probabilities.argmax(1).tolist()]
    assert len(set(expected)) >= 5  # answers that vary with the photo: agreement is not one class every time
    answered = [tuple(answer) for answer in in_child("mediapipe_top1", str(tflite), *map(str, trained["photos"]))]
    agreement = sum(a == b for a, b in zip(answered, expected)) / len(expected)
    print(f"{name}: MediaPipe agrees with PyTorch on {agreement:.1%} of {len(expected)} photos")
    assert agreement >= 0.98, list(zip(answered, expected))

    data = tflite.read_bytes()
    assert {METADATA_NAME, APP_METADATA_NAME} <= set(metadata_entries(data))
    assert associated_files(data)[LABELS_FILE].decode().splitlines() == classes
    meta = read_app_metadata(data)
    assert meta.labels == tuple(classes) and meta.input_size == (SIZE, SIZE) and meta.layout == "NHWC"
    if name.startswith("int8"):
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(model_content=data)
        assert interpreter.get_input_details()[0]["dtype"] == np.uint8  # camera bytes in
        assert any(d["dtype"] == np.int8 for d in interpreter.get_tensor_details())  # int8 weights inside
