"""Convert the Penn-Fudan part in ../shared/data/pennfudan into COCO JSON and ADE20K-style folders.

    python scripts/convert_pennfudan.py ../shared/data/pennfudan /tmp/pennfudan

writes /tmp/pennfudan/coco (for ``swiftformer detect``) and /tmp/pennfudan/ade (for ``swiftformer segment``);
images are symlinked unless --copy. Split: val = every fifth image of the sorted list (24), train = the rest (95).
"""
from __future__ import annotations

import argparse

from swiftformer.dense.pennfudan import convert_pennfudan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", help="Penn-Fudan folder (PNGImages, PedMasks, Annotation)")
    parser.add_argument("output", help="folder to write coco/ and ade/ into")
    parser.add_argument("--copy", action="store_true", help="copy the images instead of symlinking them")
    args = parser.parse_args()
    counts = convert_pennfudan(args.source, args.output, link=not args.copy)
    print(f"{args.output}: " + ", ".join(f"{split} {count} images" for split, count in counts.items()))


if __name__ == "__main__":
    main()
