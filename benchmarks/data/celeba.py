"""CelebA (aligned and cropped faces, 40 binary attributes) in torchvision's layout, never downloaded.

    <data_root>/celeba/img_align_celeba/000001.jpg ...
    <data_root>/celeba/{list_eval_partition.txt, list_attr_celeba.txt, identity_CelebA.txt,
                        list_bbox_celeba.txt, list_landmarks_align_celeba.txt}

Images are centre-cropped to 140x140 and resized to `image_size` (the crop DDPM/DDIM use for CelebA 64x64),
scaled to [-1, 1]; items are (image [3, S, S], attributes int64 [40] in {0, 1}).
"""

from __future__ import annotations

from typing import Optional

from benchmarks.data.paths import missing

SPLITS = ("train", "valid", "test")


def celeba_split(data_root: Optional[str], split: str, image_size: int, hflip: bool):
    """torchvision's CelebA with the crop/resize above; raises MissingDataset with the expected layout."""
    if split not in SPLITS:
        raise ValueError(f"split={split!r} is not allowed; choose one of: {', '.join(SPLITS)}")
    from torchvision import datasets, transforms

    steps = [transforms.CenterCrop(140), transforms.Resize(image_size)]
    if hflip:
        steps.append(transforms.RandomHorizontalFlip())
    steps += [transforms.ToTensor(), transforms.Normalize([0.5] * 3, [0.5] * 3)]
    try:
        if not data_root:
            raise RuntimeError("no data_root")
        return datasets.CelebA(
            data_root, split=split, target_type="attr", transform=transforms.Compose(steps), download=False
        )
    except RuntimeError as err:  # torchvision: "Dataset not found or corrupted"
        from pathlib import Path

        raise missing(
            "celeba",
            [Path(data_root).expanduser() / "celeba"] if data_root else [],
            "  <data_root>/celeba/img_align_celeba/*.jpg\n"
            "  <data_root>/celeba/{list_eval_partition,list_attr_celeba,identity_CelebA,list_bbox_celeba,"
            "list_landmarks_align_celeba}.txt",
            "download img_align_celeba.zip and the list files from the CelebA site "
            "(mmlab.ie.cuhk.edu.hk/projects/"
            f"CelebA.html) on a machine with a network and unzip them there ({err})",
        ) from err
