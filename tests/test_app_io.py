"""The image form of a classifier and the metadata it carries, proven with the clients apps run.

MediaPipe Tasks' ``ImageClassifier`` (the Python package of the same C++ task Android apps use) reads the
``.tflite`` that ``swiftformer export --io image`` writes as it is: its NHWC uint8 input, the TFLite metadata
(image properties, normalisation options, the labels file) and the probabilities; its answers are compared with
``swiftformer predict``'s. The Core ML package is read back with coremltools (Vision's classifier needs an RGB
image input and a classifier output with the labels); it predicts on macOS only. A SwiftFormer-XS is trained here
for a few epochs at 32 px on real CIFAR-10 photos of ../shared/data/cifar10-mini (the cifar10_mini recipe,
shortened), so that its top-1 means something (random weights answer nearly one class).
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Callable
from functools import cache
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
from swiftformer.errors import CheckpointError, SwiftFormerError
from swiftformer.formats import FORMATS
from swiftformer.models import reparameterize

from .conftest import randomize, shared_data, short_cifar_run

SIZE = 32
LARGER_BOUND = 0.9  # MediaPipe and predict on 64 px files: two different resizes (measured: see the test)
ROOT = Path(__file__).resolve().parents[1]


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
    assert AppMetadata.from_strings(strings) == meta  # what Core ML's user_defined_metadata gives back
    with pytest.raises(CheckpointError, match="malformed swiftformer app metadata"):
        AppMetadata.from_strings({**strings, "input_size": "32x48"})
    assert app_metadata(image_classifier(tiny_model()), labels, (SIZE, SIZE)).as_strings()["top1"] == ""


def test_a_coreml_image_input_takes_one_image_at_a_time(tmp_path):
    """Vision feeds one image: a batch is refused before anything is converted or written."""
    from swiftformer.deploy import coreml

    form = image_classifier(reparameterize(tiny_model(), channels_last=False), "NCHW", pixel_max=1.0)
    meta = app_metadata(form, [f"class {i}" for i in range(10)], (SIZE, SIZE))
    for example, dynamic in [(torch.rand(2, 3, SIZE, SIZE), False), (torch.rand(1, 3, SIZE, SIZE), True)]:
        with pytest.raises(SwiftFormerError, match="takes one image at a time .* or export --io tensor"):
            coreml.write_image(form, example, tmp_path / "xs.mlpackage", meta, dynamic_batch=dynamic)
    assert not list(tmp_path.iterdir())


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


# Slow: a trained run, exported by `swiftformer export --io image`, run by MediaPipe and read back by coremltools ---
def in_child(function: str, *args: str) -> object:
    """``function(*args)`` of this module run in a child process, its JSON answer read back: litert-torch (through
    JAX) and MediaPipe leave threads behind that make a later fork of the test process (DataLoader workers of
    other tests) liable to deadlock."""
    code = f"import json, sys; from tests.test_app_io import {function}; print(json.dumps({function}(*sys.argv[1:])))"
    child = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, env=child_env(), capture_output=True,
                           text=True, timeout=900)
    assert child.returncode == 0, child.stderr[-3000:]
    return json.loads(child.stdout.splitlines()[-1])


def child_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}


def swiftformer_cli(*argv: str) -> str:
    """``swiftformer ARGV`` in a child process (LiteRT's conversion imports JAX: see :func:`in_child`), its stdout."""
    child = subprocess.run([sys.executable, "-m", "swiftformer", *argv], cwd=ROOT, env=child_env(),
                           capture_output=True, text=True, timeout=900)
    assert child.returncode == 0, child.stderr[-3000:]
    return child.stdout


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict:
    """XS trained 5 epochs at 32 px on 1,000 photos (the cifar10_mini recipe, shortened), and held-out photos as
    an app gets them: the val JPEGs, half of them re-encoded as PNG (identical pixels for every decoder), and the
    same photos at 64 px (what MediaPipe and ``predict`` resize, each its own way)."""
    for module in ("mediapipe", "litert_torch", "ai_edge_quantizer", "coremltools"):  # found, not imported
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed (pip install 'swiftformer[dev]')")
    root = tmp_path_factory.mktemp("app_io")
    val, classes = folder("val", per_class=6)
    torch.manual_seed(0)
    data = short_cifar_run(root, tuple(classes), epochs=5, train_subset=1000)
    photos, larger = [], []
    for index, path in enumerate(val):
        image = Image.open(path).convert("RGB")
        if index % 2:
            path = root / f"{path.parent.name}-{path.stem}.png"
            image.save(path)
        photos.append(path)
        larger.append(root / f"{path.parent.name}-{path.stem}-64px.jpg")
        image.resize((64, 64), Image.Resampling.BICUBIC).save(larger[-1], quality=95)
    return {"checkpoint": root / "run" / "last.pth", "classes": classes, "dir": root, "data": data, "photos": photos,
            "larger": larger}


@pytest.fixture(scope="module")
def exported(run) -> Callable[[str, str], Path]:
    """``exported(fmt, precision)``: the run's image-form artefact written by ``swiftformer export --io image``, once
    per module (LiteRT int8 calibrated on uint8 pixels of training photos, checked on val photos)."""
    written = {}

    def get(fmt: str, precision: str) -> Path:
        if (fmt, precision) not in written:
            out = run["dir"] / f"xs-{precision}{FORMATS[fmt].suffix}"
            images = ["--calibration", str(run["data"] / "train"), "--calibration-size", "32", "--check-data",
                      str(run["data"] / "val"), "--check-size", "100"] if fmt == "litert" else []
            swiftformer_cli("export", "--checkpoint", str(run["checkpoint"]), "--format", fmt, "--io", "image",
                            "--precision", precision, "--out", str(out), "--author", "swiftformer tests",
                            "--license", "Apache-2.0", *images)
            written[fmt, precision] = out
        return written[fmt, precision]

    return get


@cache
def predicted(checkpoint: Path, photos: tuple[Path, ...]) -> dict[str, str]:
    """``swiftformer predict``'s top-1 class name of each photo (its own decoding and resize)."""
    printed = swiftformer_cli("predict", *map(str, photos), "--checkpoint", str(checkpoint), "--topk", "1", "--json")
    answers = [json.loads(line) for line in printed.splitlines() if line.startswith("{")]
    return {answer["image"]: answer["top"][0]["class"] for answer in answers}


def mediapipe_top1(tflite: str, *photos: str) -> list[tuple[int, str]]:
    """MediaPipe Tasks' ImageClassifier on the files as an app opens them: (index, label) of the top class."""
    from mediapipe import Image as MpImage
    from mediapipe.tasks.python import BaseOptions, vision

    options = vision.ImageClassifierOptions(base_options=BaseOptions(model_asset_path=tflite), max_results=1)
    with vision.ImageClassifier.create_from_options(options) as classifier:
        answers = [classifier.classify(MpImage.create_from_file(path)).classifications[0].categories[0]
                   for path in photos]
    return [(category.index, category.category_name) for category in answers]


def agreement_with_predict(run: dict, tflite: Path, photos: list[Path]) -> tuple[float, list]:
    """The share of ``photos`` whose MediaPipe top-1 (index and label) is ``predict``'s, and the pairs."""
    classes = run["classes"]
    names = predicted(run["checkpoint"], tuple(photos))
    expected = [(classes.index(names[str(path)]), names[str(path)]) for path in photos]
    assert len(set(expected)) >= 5  # answers that vary with the photo: agreement is not one class every time
    answered = [tuple(answer) for answer in in_child("mediapipe_top1", str(tflite), *map(str, photos))]
    pairs = list(zip(answered, expected))
    return sum(a == b for a, b in pairs) / len(pairs), pairs


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_mediapipe_runs_the_exported_tflite_as_it_is_and_agrees_with_predict(run, exported, precision):
    path = exported("litert", precision)
    agreement, pairs = agreement_with_predict(run, path, run["photos"])
    print(f"litert {precision}: MediaPipe agrees with swiftformer predict on {agreement:.1%} of {len(pairs)} "
          f"photos at the model's size (32 px JPEG/PNG)")
    assert agreement >= 0.98, pairs

    data = path.read_bytes()
    assert {METADATA_NAME, APP_METADATA_NAME} <= set(metadata_entries(data))
    assert associated_files(data)[LABELS_FILE].decode().splitlines() == run["classes"]
    meta = read_app_metadata(data)
    assert meta.labels == tuple(run["classes"]) and meta.input_size == (SIZE, SIZE) and meta.layout == "NHWC"
    assert (meta.author, meta.license) == ("swiftformer tests", "Apache-2.0") and meta.top1 is not None
    from ai_edge_litert.interpreter import Interpreter

    from swiftformer.deploy import litert

    interpreter = Interpreter(model_content=data)
    assert interpreter.get_input_details()[0]["dtype"] == np.uint8  # camera bytes in
    assert any(d["dtype"] == np.int8 for d in interpreter.get_tensor_details()) == (precision == "int8")
    assert litert.stored_precision(path) == precision  # what eval checks the sidecar's precision against


@pytest.mark.slow
def test_mediapipe_resizes_larger_files_itself(run, exported):
    """Files at another size than the model's: MediaPipe resizes them (bilinear, the whole image) and ``predict``
    with its transform (bicubic, the run's): what an app gets, measured; the two resizes differ, so the bound here
    is lower than at the model's size."""
    agreement, pairs = agreement_with_predict(run, exported("litert", "fp32"), run["larger"])
    print(f"litert fp32: MediaPipe agrees with swiftformer predict on {agreement:.1%} of {len(pairs)} 64 px photos")
    assert agreement >= LARGER_BOUND, pairs


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_the_coreml_package_is_an_image_classifier_vision_reads(run, exported, precision):
    import coremltools as ct

    from swiftformer.deploy import coreml

    path = exported("coreml", precision)
    spec = ct.models.MLModel(str(path), skip_model_load=True).get_spec()
    description = spec.description
    (image,) = description.input
    assert image.type.WhichOneof("Type") == "imageType"
    assert image.type.imageType.colorSpace == ct.proto.FeatureTypes_pb2.ImageFeatureType.RGB
    assert (image.type.imageType.height, image.type.imageType.width) == (SIZE, SIZE)
    assert (description.predictedFeatureName, description.predictedProbabilitiesName) == ("classLabel",
                                                                                          "classLabel_probs")
    assert coreml.class_labels(spec) == run["classes"]
    metadata = description.metadata
    assert metadata.shortDescription and metadata.versionString == swiftformer.__version__
    assert (metadata.author, metadata.license) == ("swiftformer tests", "Apache-2.0")
    assert metadata.userDefined["com.apple.coreml.model.preview.type"] == "imageClassifier"
    assert image.shortDescription and all(output.shortDescription for output in description.output)
    meta = coreml.read_app_metadata(path)
    assert meta.labels == tuple(run["classes"]) and meta.layout == "NCHW" and meta.pixel_max == 1.0


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "darwin", reason="Core ML predicts on macOS only (the spec is read everywhere)")
def test_coreml_predicts_the_photos_as_predict_does(run, exported):
    import coremltools as ct

    model = ct.models.MLModel(str(exported("coreml", "fp32")))
    names = predicted(run["checkpoint"], tuple(run["photos"]))
    answered = [model.predict({"image": Image.open(path).convert("RGB")})["classLabel"] for path in run["photos"]]
    agreement = sum(answered[i] == names[str(path)] for i, path in enumerate(run["photos"])) / len(answered)
    assert agreement >= 0.98, list(zip(answered, names.values()))
