"""Pack Imagenette-128 small enough to travel to a lent GPU machine (64 MiB per call in all).

The train split is re-encoded as JPEG at --quality (the archive's copy is quality 90 and 65 MB);
the validation split is cut to --val-per-class images per class (only used for the training
log's health and validation loss; evaluation runs on the original archive). Writes an
ImageFolder root usable as ``--set data.spec=imagefolder:OUT``. docs/results.md says which runs
trained on such a copy.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", type=Path, required=True, help="extracted imagenette-128 root")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--quality", type=int, default=80)
    ap.add_argument("--val-per-class", type=int, default=10)
    args = ap.parse_args()
    total = 0
    for split in ("train", "val"):
        for cls in sorted(p for p in (args.src / split).iterdir() if p.is_dir()):
            files = sorted(cls.glob("*.JPEG")) + sorted(cls.glob("*.jpg"))
            if split == "val":
                files = files[: args.val_per_class]
            dst = args.out / split / cls.name
            dst.mkdir(parents=True, exist_ok=True)
            for f in files:
                target = dst / (f.stem + ".jpg")
                with Image.open(f) as im:
                    im.convert("RGB").save(target, quality=args.quality)
                total += target.stat().st_size
    print(f"wrote {args.out}: {total / 2**20:.1f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
