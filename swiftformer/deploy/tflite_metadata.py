"""TFLite model metadata for an image-form classifier, so MediaPipe Tasks' ``ImageClassifier`` and the LiteRT
support library take the ``.tflite`` as it is: image properties (RGB, size), the normalisation the app applies
before the graph (none: pixels go in as they are, the model's own mean/std run inside), and the labels file.

The metadata is the public ``metadata_schema.fbs`` (tensorflow/tflite-support), built here with the ``flatbuffers``
package that LiteRT already depends on: its own writers (tflite-support, MediaPipe's ``metadata_writers``) do not
install or import beside our dependencies. As their populator does, the ``ModelMetadata`` flatbuffer goes into a
new model buffer named ``TFLITE_METADATA`` (LiteRT's own ``flatbuffer_utils`` rewrites the model), and the labels
file into a zip archive appended to the model, uncompressed, where MediaPipe finds associated files. Our own
:class:`~swiftformer.deploy.app_io.AppMetadata` rides along as JSON in a model buffer named ``swiftformer``.
"""
from __future__ import annotations

import io
import zipfile
from collections.abc import Sequence

import flatbuffers
import numpy as np

from .app_io import AppMetadata

METADATA_NAME = "TFLITE_METADATA"  # the name readers look the ModelMetadata buffer up by
APP_METADATA_NAME = "swiftformer"
LABELS_FILE = "labels.txt"
METADATA_FILE_IDENTIFIER = b"M001"
# The oldest metadata parser that reads every field written here (all of schema 1.0.0): a newer number would make
# older MediaPipe/support-library builds refuse the file.
MIN_PARSER_VERSION = "1.0.0"

# metadata_schema.fbs enum values and union member indices (a union field takes two slots: its type, its value)
RGB = 1  # ColorSpaceType
TENSOR_AXIS_LABELS = 2  # AssociatedFileType
FEATURE_PROPERTIES, IMAGE_PROPERTIES = 1, 2  # ContentProperties
NORMALIZATION_OPTIONS = 1  # ProcessUnitOptions

Slots = dict[int, tuple[str, int | None]]  # field slot -> ("offset" | "u8" | "u32", value); None: absent


def _table(builder: flatbuffers.Builder, slots: Slots) -> int:
    """One table of ``slots`` (its children built before, as flatbuffers require)."""
    builder.StartObject(max(slots, default=-1) + 1)
    for slot, (kind, value) in slots.items():
        if value is None:
            continue
        if kind == "offset":
            builder.PrependUOffsetTRelativeSlot(slot, value, 0)
        elif kind == "u8":
            builder.PrependUint8Slot(slot, value, 0)
        else:
            builder.PrependUint32Slot(slot, value, 0)
    return builder.EndObject()


def _offsets(builder: flatbuffers.Builder, offsets: Sequence[int]) -> int:
    builder.StartVector(4, len(offsets), 4)
    for offset in reversed(offsets):
        builder.PrependUOffsetTRelative(offset)
    return builder.EndVector()


def _floats(builder: flatbuffers.Builder, values: Sequence[float]) -> int:
    builder.StartVector(4, len(values), 4)
    for value in reversed(values):
        builder.PrependFloat32(value)
    return builder.EndVector()


def _string(builder: flatbuffers.Builder, text: str) -> int | None:
    return builder.CreateString(text) if text else None


def _stats(builder: flatbuffers.Builder, low: float, high: float) -> int:
    high_vector, low_vector = _floats(builder, [high]), _floats(builder, [low])
    return _table(builder, {0: ("offset", high_vector), 1: ("offset", low_vector)})  # Stats: max, min


def _input_tensor(builder: flatbuffers.Builder, meta: AppMetadata) -> int:
    """The image input: RGB at the exported size, taken as pixels 0..pixel_max. A reader feeds a float input
    ``(pixel - mean) / std`` of the 0..255 values: mean 0, std 255 / pixel_max (1: the pixels themselves); it
    feeds a uint8 input the bytes as they are."""
    height, width = meta.input_size
    size = _table(builder, {0: ("u32", width), 1: ("u32", height)})  # ImageSize
    image = _table(builder, {0: ("u8", RGB), 1: ("offset", size)})  # ImageProperties
    content = _table(builder, {0: ("u8", IMAGE_PROPERTIES), 1: ("offset", image)})
    mean, std = _floats(builder, [0.0]), _floats(builder, [255.0 / meta.pixel_max])
    normalization = _table(builder, {0: ("offset", mean), 1: ("offset", std)})
    unit = _table(builder, {0: ("u8", NORMALIZATION_OPTIONS), 1: ("offset", normalization)})  # ProcessUnit
    units = _offsets(builder, [unit])
    stats = _stats(builder, 0.0, meta.pixel_max)
    name = builder.CreateString("image")
    description = builder.CreateString(
        f"RGB image {height}x{width}, {meta.layout}, pixel values 0..{meta.pixel_max:g}; the model normalises it "
        f"itself (mean {list(meta.mean)}, std {list(meta.std)} of 0..1 values)")
    return _table(builder, {0: ("offset", name), 1: ("offset", description), 3: ("offset", content),
                            4: ("offset", units), 5: ("offset", stats)})  # TensorMetadata


def _output_tensor(builder: flatbuffers.Builder, meta: AppMetadata) -> int:
    """The probabilities, with the labels file that names each index (TENSOR_AXIS_LABELS)."""
    file_name, file_description = builder.CreateString(LABELS_FILE), builder.CreateString("one class name a line")
    labels = _table(builder, {0: ("offset", file_name), 1: ("offset", file_description),
                              2: ("u8", TENSOR_AXIS_LABELS)})  # AssociatedFile
    files = _offsets(builder, [labels])
    features = _table(builder, {})  # FeatureProperties: no fields
    content = _table(builder, {0: ("u8", FEATURE_PROPERTIES), 1: ("offset", features)})
    stats = _stats(builder, 0.0, 1.0)
    name = builder.CreateString("probability")
    description = builder.CreateString(f"Probabilities (softmax) of the {len(meta.labels)} classes")
    return _table(builder, {0: ("offset", name), 1: ("offset", description), 3: ("offset", content),
                            5: ("offset", stats), 6: ("offset", files)})  # TensorMetadata


def model_metadata(meta: AppMetadata) -> bytes:
    """The ``ModelMetadata`` flatbuffer (file identifier ``M001``) of an image-form classifier."""
    builder = flatbuffers.Builder(1024)
    inputs = _offsets(builder, [_input_tensor(builder, meta)])
    outputs = _offsets(builder, [_output_tensor(builder, meta)])
    subgraph = _table(builder, {2: ("offset", inputs), 3: ("offset", outputs)})  # SubGraphMetadata
    subgraphs = _offsets(builder, [subgraph])
    root = _table(builder, {
        0: ("offset", _string(builder, meta.name)), 1: ("offset", _string(builder, meta.description)),
        2: ("offset", _string(builder, f"swiftformer {meta.swiftformer_version}")), 3: ("offset", subgraphs),
        4: ("offset", _string(builder, meta.author)), 5: ("offset", _string(builder, meta.license)),
        7: ("offset", builder.CreateString(MIN_PARSER_VERSION)),
    })  # ModelMetadata
    builder.Finish(root, file_identifier=METADATA_FILE_IDENTIFIER)
    return bytes(builder.Output())


def with_metadata(tflite: bytes, meta: AppMetadata) -> bytes:
    """``tflite`` (a single-input classifier whose input is the image, its output the probabilities) with the
    metadata of ``meta`` inside and its labels file appended; metadata it held under the same names is replaced."""
    from ai_edge_litert.tools import flatbuffer_utils

    (subgraph,) = flatbuffer_utils.read_model_from_bytearray(bytearray(tflite)).subgraphs
    if len(subgraph.inputs) != 1 or len(subgraph.outputs) != 1:
        raise ValueError(f"an image classifier has one input and one output, not {len(subgraph.inputs)} and "
                         f"{len(subgraph.outputs)}")
    entries = {METADATA_NAME: model_metadata(meta), APP_METADATA_NAME: meta.to_json().encode()}
    packed = io.BytesIO(with_entries(tflite, entries))
    packed.seek(0, io.SEEK_END)
    with zipfile.ZipFile(packed, "a", compression=zipfile.ZIP_STORED) as archive:  # readers map it: stored
        archive.writestr(LABELS_FILE, "\n".join(meta.labels) + "\n")
    return packed.getvalue()


def with_entries(tflite: bytes, entries: dict[str, bytes]) -> bytes:
    """``tflite`` with a metadata buffer per entry of ``entries`` (name to bytes), replacing those of the same names."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(tflite))
    model.metadata = [entry for entry in model.metadata or [] if entry.name.decode() not in entries]
    for name, data in entries.items():
        buffer = schema.BufferT()
        buffer.data = np.frombuffer(data, dtype=np.uint8)
        model.buffers.append(buffer)
        model.metadata.append(schema.MetadataT(name=name, buffer=len(model.buffers) - 1))
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def metadata_entries(tflite: bytes) -> dict[str, bytes]:
    """The model's metadata buffers by name (``TFLITE_METADATA``, ``swiftformer``, the converter's own)."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAs(tflite, 0)
    entries = {}
    for index in range(model.MetadataLength()):
        entry = model.Metadata(index)
        entries[entry.Name().decode()] = model.Buffers(entry.Buffer()).DataAsNumpy().tobytes()
    return entries


def read_app_metadata(tflite: bytes) -> AppMetadata | None:
    """The :class:`AppMetadata` a ``.tflite`` of ours carries (``None``: a tensor-form or foreign model)."""
    data = metadata_entries(tflite).get(APP_METADATA_NAME)
    return None if data is None else AppMetadata.from_json(data.decode())


def associated_files(tflite: bytes) -> dict[str, bytes]:
    """The files packed into a ``.tflite`` (the labels file)."""
    try:
        with zipfile.ZipFile(io.BytesIO(tflite)) as archive:
            return {name: archive.read(name) for name in archive.namelist()}
    except zipfile.BadZipFile:
        return {}
