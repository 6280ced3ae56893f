"""Class names: the defaults of a model that names none, and matching a model's classes to a data set's by name.

Class index ``i`` must mean the same class to the model and to the data, else every per-class figure is under the
wrong name; training, QAT, eval and the export's agreement check all match through here.
"""
from __future__ import annotations

from .errors import DataError


def default_class_names(num_classes: int) -> list[str]:
    """ImageNet-1K names (timm) for 1000 classes, else ``class 0``, ``class 1``, ..."""
    if num_classes == 1000:
        from timm.data import ImageNetInfo

        info = ImageNetInfo()
        return [info.index_to_description(i) for i in range(num_classes)]
    return [f"class {i}" for i in range(num_classes)]


def check_class_names(expected: list[str], found: list[str], model_source: str, data_source: str) -> None:
    """A :class:`DataError` naming the classes that differ when data and model do not share their class list."""
    if list(expected) == list(found):
        return
    only_model, only_data = [n for n in expected if n not in found], [n for n in found if n not in expected]
    parts = [f"only in {model_source}: {', '.join(only_model)}"] * bool(only_model)
    parts += [f"only in {data_source}: {', '.join(only_data)}"] * bool(only_data)
    if not parts:
        parts = [f"the same {len(found)} names in another order"]
    raise DataError(f"the classes of {data_source} differ from those of {model_source} ({'; '.join(parts)})")


def model_class_indices(model_names: list[str], data_names: list[str], model_source: str, data_source: str) -> list[int]:
    """The model's class index of each class of the data, matched by name: the data may hold some of the model's
    classes, in any order; a class the model lacks is a :class:`DataError` naming it."""
    unknown = [name for name in data_names if name not in model_names]
    if unknown:
        raise DataError(f"{data_source} holds {len(unknown)} class(es) that {model_source} does not predict: "
                        f"{', '.join(unknown)} (it predicts {len(model_names)}; a folder may hold some of them, "
                        "never others)")
    return [model_names.index(name) for name in data_names]
