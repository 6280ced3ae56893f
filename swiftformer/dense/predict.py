"""Inference on single images and pictures of the result: boxes + masks, or a segmentation overlay."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms.functional import normalize
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

from ..models.swiftformer import IMAGENET_MEAN, IMAGENET_STD
from .data import resize_short_side


def palette(num_colors: int) -> list[tuple[int, int, int]]:
    """Distinct, fixed colours (golden-angle hues), so a class keeps its colour across images."""
    import colorsys

    return [
        tuple(int(255 * c) for c in colorsys.hsv_to_rgb((index * 0.618033988749895) % 1.0, 0.75, 0.95))
        for index in range(num_colors)
    ]


@torch.no_grad()
def detect(model: nn.Module, image: torch.Tensor, score_threshold: float = 0.5) -> dict[str, torch.Tensor]:
    """Detections of ``image`` (3, H, W) in [0, 1] with ``score >= score_threshold``, on CPU."""
    device = next(model.parameters()).device
    output = model.eval()([image.to(device)])[0]
    keep = output["scores"] >= score_threshold
    return {k: v[keep].cpu() for k, v in output.items()}


def draw_detections(
    image: torch.Tensor, detections: dict[str, torch.Tensor], class_names: list[str], mask_threshold: float = 0.5,
) -> torch.Tensor:
    """``image`` (3, H, W) in [0, 1] with masks (if any), boxes and "name score" labels, as uint8."""
    canvas = (image * 255).round().to(torch.uint8)
    colors = palette(len(class_names) + 1)
    box_colors = [colors[int(label)] for label in detections["labels"]]
    if "masks" in detections and len(detections["masks"]):
        masks = detections["masks"][:, 0] > mask_threshold
        canvas = draw_segmentation_masks(canvas, masks, alpha=0.45, colors=box_colors)
    labels = [f"{class_names[int(label) - 1]} {float(score):.2f}" for label, score in zip(detections["labels"], detections["scores"])]
    if len(labels):
        canvas = draw_bounding_boxes(canvas, detections["boxes"], labels, colors=box_colors, width=2)
    return canvas


@torch.no_grad()
def segment(model: nn.Module, image: torch.Tensor, img_size: int) -> torch.Tensor:
    """Class map ``(H, W)`` of ``image`` (3, H, W) in [0, 1]: resized short side ``img_size``, logits back to H×W."""
    device = next(model.parameters()).device
    resized = normalize(resize_short_side(image, img_size), IMAGENET_MEAN, IMAGENET_STD)
    logits = model.eval()(resized[None].to(device)).float()
    return F.interpolate(logits, size=image.shape[-2:], mode="bilinear", align_corners=False).argmax(1)[0].cpu()


def draw_segmentation(image: torch.Tensor, classes: torch.Tensor, num_classes: int, skip: tuple[int, ...] = (0,),
                      alpha: float = 0.5) -> torch.Tensor:
    """``image`` with each predicted class (except those in ``skip``, e.g. background) in its colour, uint8."""
    canvas = (image * 255).round().to(torch.uint8)
    shown = [c for c in range(num_classes) if c not in skip and bool((classes == c).any())]
    if not shown:
        return canvas
    masks = torch.stack([classes == c for c in shown])
    colors = palette(num_classes)
    return draw_segmentation_masks(canvas, masks, alpha=alpha, colors=[colors[c] for c in shown])


def output_paths(images: list[tuple[Path, Path]], output_dir: str | Path, suffix: str) -> list[Path]:
    """Where the picture of each ``(path, name)`` of :func:`swiftformer.data.find_images` goes: ``name`` under
    ``output_dir`` with its extension replaced by ``suffix`` (``photos/a/x.jpg`` found in ``photos`` ->
    ``OUT/a/x<suffix>``), so it is never an input's name. Images that would share a picture keep more: their
    extension when they share a folder (``x.jpg<suffix>``, ``x.png<suffix>``), else the folders above them."""
    parents = Counter((path.absolute().parent, path.stem) for path, _ in images)
    full_name = [parents[(path.absolute().parent, path.stem)] > 1 for path, _ in images]
    folders = [path.absolute().parent.parts[1:] for path, _ in images]
    kept = [list(name.parent.parts) for _, name in images]

    def picture(index: int) -> Path:
        name = images[index][1]
        return Path(output_dir, *kept[index], (name.name if full_name[index] else name.stem) + suffix)

    while True:
        pictures = [picture(i) for i in range(len(images))]
        counts = Counter(pictures)
        shared = [i for i, p in enumerate(pictures) if counts[p] > 1 and len(kept[i]) < len(folders[i])]
        if not shared:
            return pictures
        for i in shared:  # one more folder of the image's own path
            kept[i].insert(0, folders[i][-len(kept[i]) - 1])


def save_png(picture: torch.Tensor, path: str | Path) -> Path:
    """Write a ``(3, H, W)`` uint8 tensor as a PNG."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(picture.permute(1, 2, 0).numpy()).save(path)
    return path

