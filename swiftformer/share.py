"""Share a run the way the ecosystem does: a folder that timm loads unchanged, with a model card.

``timm.create_model("local-dir:DIR", pretrained=True)`` (and ``"hf-hub:USER/NAME"`` once the folder is uploaded)
builds the model with the run's weights, preprocessing and class names (``model.pretrained_cfg["label_names"]``).
The folder is timm's own (:func:`timm.models.save_for_hf`: ``config.json`` with the architecture, class count and
pretrained_cfg; ``model.safetensors`` in timm's key layout), plus ``README.md``, a model card in the Hub's format
(variant, data, recipe, val top-1 from the run's ``log.jsonl``, the commands, license), and ``recipe.yaml``, the
run's resolved recipe that ``swiftformer train --config recipe.yaml`` runs again. transformers' folder is the ``hf``
checkpoint format (:func:`swiftformer.save_checkpoint`), not this one.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from torch import nn

from .checkpoint import check_destination, hub_unreachable, training_run, write_folder_atomically
from .data_config import resolve_data_config
from .errors import CheckpointError, OutputError, SwiftFormerError
from .inference import load_model
from .models.swiftformer import SwiftFormer
from .runlog import read_log

LICENSE = "apache-2.0"  # SwiftFormer's (code and released weights); --license for weights under another
CITATION = """@InProceedings{Shaker_2023_ICCV,
    author    = {Shaker, Abdelrahman and Maaz, Muhammad and Rasheed, Hanoona and Khan, Salman and Yang, Ming-Hsuan and Khan, Fahad Shahbaz},
    title     = {SwiftFormer: Efficient Additive Attention for Transformer-based Real-time Mobile Vision Applications},
    booktitle = {Proceedings of the IEEE/CVF International Conference on Computer Vision (ICCV)},
    year      = {2023},
}"""


@dataclass
class Source:
    """What is shared: the weights file and, when it is a run of ours, its checkpoint dict and log records."""

    checkpoint: Path
    run: dict[str, Any] | None
    log: list[dict[str, Any]]


def find_source(path: str | Path) -> Source:
    """A run directory (its ``best.pth``, else ``last.pth``), a training checkpoint or a native file of ours."""
    path = Path(path)
    if path.is_dir():
        found = [path / name for name in ("best.pth", "last.pth") if (path / name).is_file()]
        if not found:
            raise CheckpointError(f"{path} is a folder without best.pth or last.pth: give a run directory or a "
                                  "checkpoint file")
        path = found[0]
    run = training_run(path)
    log_path = path.parent / "log.jsonl"
    return Source(path, run, read_log(log_path) if run is not None and log_path.is_file() else [])


def shared_model(source: Source, model_name: str | None = None) -> tuple[SwiftFormer, list[str]]:
    """The model to share (eval mode, its pretrained_cfg the run's) and its class names; a model timm cannot
    build the same (another attention, one head, a QAT run's fused form, an artefact) is refused. ``model_name``:
    the variant of weights that do not name it (official, timm, Hugging Face)."""
    loaded = load_model(str(source.checkpoint), model_name)
    model = loaded.model
    if not isinstance(model, SwiftFormer):
        raise CheckpointError(f"{source.checkpoint} holds a {type(model).__name__}, not the SwiftFormer timm builds "
                              "(a quantization-aware run or an exported artefact): share the float run it came from")
    if model.attention != "additive" or model.head_dist is None:
        raise CheckpointError(f"{source.checkpoint} holds a SwiftFormer with attention={model.attention!r} and "
                              f"{'two heads' if model.head_dist is not None else 'one head'}; timm builds attention "
                              "'additive' with two heads only, so timm could not load it")
    return model, loaded.class_names


def timm_twin(model: SwiftFormer) -> nn.Module:
    """timm's model of the same variant holding ``model``'s weights (our keys are timm's) and preprocessing, for
    timm's own writer. Not fixed to one input size: any side from 32 px works, the cfg names the one trained at."""
    import timm

    overlay = dict(resolve_data_config(model), tag=None, license=None, fixed_input_size=False)
    twin = timm.create_model(model.variant, num_classes=model.num_classes, pretrained_cfg_overlay=overlay)
    twin.load_state_dict(model.state_dict())
    return twin.eval()


def public_config(config: dict[str, Any]) -> dict[str, Any]:
    """The run's recipe without the local paths it holds (data, run directory, weights): their last part only."""
    return {key: Path(value).name if isinstance(value, str) and os.path.isabs(value) else value
            for key, value in config.items()}


def val_record(source: Source) -> dict[str, Any] | None:
    """The ``log.jsonl`` record of the epoch the shared weights are from, when it holds a val top-1."""
    epoch = source.run.get("epoch") if source.run else None
    record = next((r for r in source.log if r.get("epoch") == epoch), None)
    return record if record is not None and "val_top1" in record else None


def model_card(model: SwiftFormer, names: list[str], source: Source, name: str, repo: str | None, license: str,
               command: str) -> str:
    """``README.md`` in the Hub's model-card format (timm's writer), the run's figures and commands in it; ``name``
    is the folder's, ``repo`` the Hub repository it is meant for."""
    from timm.models._hub import generate_readme

    cfg = model.pretrained_cfg
    config = public_config(source.run["config"]) if source.run else None
    record = val_record(source)
    where = f"hf-hub:{repo}" if repo else f"local-dir:{name}"
    data = (f"{config['data'] or config['dataset']} ({config['dataset']})" if config else "not recorded")
    top1 = (f"{record['val_top1']:.2f} % on {record['val_count']} val images, epoch {record['epoch']} of "
            f"{config['epochs']} (the run's log.jsonl)" if record and config else "not recorded")
    details = {
        "Model Type": "Image classification",
        "Variant": f"{model.variant} ({sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters)",
        "Classes": f"{len(names)}: {', '.join(names[:20])}{', ...' if len(names) > 20 else ''}",
        "Data": data,
        "Image size": f"{cfg['input_size'][1]} x {cfg['input_size'][2]}, crop {cfg['crop_pct']}, "
                      f"{cfg['interpolation']}",
        "Val top-1": top1,
        "Recipe": (f"{config['epochs']} epochs, {config['optimizer']} at lr {config['lr']:g}, batch {config['batch_size']}"
                   f"{' from ' + config['finetune'] if config['finetune'] else ' from scratch'}" if config
                   else "not recorded"),
        "Papers": {"SwiftFormer": "https://arxiv.org/abs/2303.15446"},
    }
    usage = (
        "```python\nimport timm, torch\nfrom PIL import Image\n\n"
        f'model = timm.create_model("{where}", pretrained=True).eval()\n'
        "transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=model))\n"
        'probabilities = model(transform(Image.open("photo.jpg").convert("RGB"))[None]).softmax(-1)\n'
        'print(model.pretrained_cfg["label_names"][int(probabilities.argmax())])\n```\n'
    )
    text = generate_readme({"license": license, "tags": ["image-classification", "timm", "swiftformer"],
                            "description": f"A {model.variant} trained with the swiftformer package.",
                            "details": details, "usage": usage, "citation": CITATION}, name)
    text += "\n## How it was made\n"
    if config:
        text += ("Trained with `swiftformer train --config recipe.yaml --data DATA` (`recipe.yaml`, in this folder, "
                 f"is the run's resolved recipe; DATA held {len(names)} class folders).\n")
        text += f"\n```yaml\n{yaml.safe_dump(config, sort_keys=False)}```\n"
    text += f"\nShared with `{command}`.\n"
    return text


def share(path: str | Path, output: str | Path, repo: str | None = None, force: bool = False,
          license: str = LICENSE, command: str = "swiftformer share", model_name: str | None = None) -> Path:
    """Write the folder for the run or checkpoint at ``path`` to ``output`` (atomically; an existing folder that is
    not empty only with ``force``) and return it."""
    output = check_destination(output, folder=True)
    if output.is_dir() and any(output.iterdir()) and not force:
        raise OutputError(f"{output} exists and is not empty: give another --output, or --force to replace it")
    source = find_source(path)
    if output.resolve() in source.checkpoint.resolve().parents:
        raise OutputError(f"{output} holds {source.checkpoint}, which is shared: give another --output")
    model, names = shared_model(source, model_name)
    twin = timm_twin(model)

    def write(folder: Path) -> None:
        from timm.models import save_for_hf

        save_for_hf(twin, str(folder), model_config={"label_names": names}, safe_serialization=True)
        (folder / "README.md").write_text(model_card(model, names, source, output.name, repo, license, command))
        if source.run:
            (folder / "recipe.yaml").write_text(yaml.safe_dump(public_config(source.run["config"]), sort_keys=False))

    write_folder_atomically(output, write)
    return output


def push(folder: str | Path, repo: str) -> str:
    """Upload ``folder`` to the Hub model repository ``repo`` (created if needed); its URL. An unreachable Hub is a
    :class:`SwiftFormerError` after one short request, the folder left as it is."""
    unreachable = hub_unreachable()
    if unreachable is not None:
        raise SwiftFormerError(f"cannot push to {repo}: the Hugging Face Hub is not reachable ({unreachable}); "
                               f"{folder} is kept: upload it later with `hf upload {repo} {folder}`")
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi()
    try:
        api.create_repo(repo, exist_ok=True)
        commit = api.upload_folder(repo_id=repo, folder_path=str(folder), commit_message="Add model (swiftformer share)")
    except (HfHubHTTPError, OSError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise SwiftFormerError(f"cannot push to {repo}: {first}; {folder} is kept") from None
    return str(commit.commit_url)
