"""Writers of tiny dataset files in the real on-disk formats, shared by every test that needs one; each says
which reader/loader reads it."""

from __future__ import annotations

import gzip
import json
import pickle
import struct
import zlib

import numpy as np
from PIL import Image

# --- COCO 2017


def _uncompressed_rle(mask: np.ndarray) -> list[int]:
    """COCO's crowd format: run lengths over the column-major pixels, starting with a (possibly empty) 0-run."""
    flat = mask.flatten(order="F")
    changes = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.concatenate([[0], changes, [flat.size]])).tolist()
    return ([0] + runs) if flat[0] else runs


def write_coco2017(root, size=48):
    """COCO 2017 (JPEGs + annotations/instances_*.json) for benchmarks.data.coco.coco2017_split."""
    # 2 train images, 1 val image, non-contiguous category ids, a crowd and a polygon
    categories = [{"id": 3, "name": "car"}, {"id": 18, "name": "dog"}, {"id": 90, "name": "toothbrush"}]
    rng = np.random.default_rng(0)
    for split, n in (("train", 2), ("val", 1)):
        (root / f"{split}2017").mkdir(parents=True)
        images, annotations = [], []
        for i in range(n):
            image_id = 100 + i
            name = f"{image_id:012d}.jpg"
            Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(root / f"{split}2017" / name)
            images.append({"id": image_id, "file_name": name, "height": size, "width": size})
            square = [4.0, 6.0, 20.0, 10.0]  # x, y, w, h
            polygon = [[square[0], square[1], square[0] + square[2], square[1], square[0] + square[2],
                        square[1] + square[3], square[0], square[1] + square[3]]]
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": 18,
                                "bbox": square, "area": 200.0, "iscrowd": 0, "segmentation": polygon})
            crowd = np.zeros((size, size), dtype=np.uint8)
            crowd[30:40, 30:44] = 1
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": 90,
                                "bbox": [30.0, 30.0, 14.0, 10.0], "area": 140.0, "iscrowd": 1,
                                "segmentation": {"size": [size, size], "counts": _uncompressed_rle(crowd)}})
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": 90,
                                "bbox": [26.0, 2.0, 12.0, 16.0], "area": 192.0, "iscrowd": 0,
                                "segmentation": [[26.0, 2.0, 38.0, 2.0, 38.0, 18.0, 26.0, 18.0]]})
        (root / "annotations").mkdir(exist_ok=True)
        with open(root / "annotations" / f"instances_{split}2017.json", "w") as f:
            json.dump({"images": images, "annotations": annotations, "categories": categories}, f)


# --- AgeDB / IMDB-WIKI


def write_age_csv(root, rows, name="agedb.csv", size=16, shade_step=20):
    """AgeDB / IMDB-WIKI age CSV (DIR's columns age,path,split) + PNG faces for benchmarks.data.age_csv."""
    # rows: (relative path, age, split); image i: size x size, all (i * shade_step) % 256. Returns the CSV.
    root.mkdir(parents=True, exist_ok=True)
    lines = ["age,path,split"]
    for i, (path, age, split) in enumerate(rows):
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((size, size, 3), (i * shade_step) % 256, dtype=np.uint8)).save(root / path)
        lines.append(f"{age},{path},{split}")
    (root / name).write_text("\n".join(lines) + "\n")
    return root / name


# --- ImageNet


def write_imagenet(root, wnids=("n01440764", "n01443537"), per_class=2, size=40):
    """ImageNet ImageFolder tree <root>/{train,val}/<wnid>/*.JPEG for benchmarks.data.imagenet."""
    # per_class JPEGs of size x (size + 8) per wnid, image i of class k filled with 60 * k + i
    for split in ("train", "val"):
        for k, wnid in enumerate(wnids):
            folder = root / split / wnid
            folder.mkdir(parents=True)
            for i in range(per_class):
                pixels = np.full((size, size + 8, 3), 60 * k + i, dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{wnid}_{i}.JPEG", format="JPEG")


# --- ADE20K


def write_ade20k(root, n_train: int = 3, n_val: int = 2, size: int = 24):
    """ADEChallengeData2016 (JPEG images, uint8 PNG annotations: 0 unlabelled) for benchmarks.data.ade20k."""
    # images size x (size + 8); labels: left half class 150, right half unlabelled. Returns the base folder.
    rng = np.random.default_rng(0)
    base = root / "ADEChallengeData2016"
    for split, prefix, n in (("training", "ADE_train", n_train), ("validation", "ADE_val", n_val)):
        (base / "images" / split).mkdir(parents=True)
        (base / "annotations" / split).mkdir(parents=True)
        for i in range(1, n + 1):
            stem = f"{prefix}_{i:08d}"
            Image.fromarray(rng.integers(0, 256, (size, size + 8, 3), dtype=np.uint8)).save(
                base / "images" / split / f"{stem}.jpg"
            )
            labels = np.zeros((size, size + 8), dtype=np.uint8)
            labels[:, : size // 2] = 150  # left: class 150 -> 149; right: unlabelled -> ignored
            labels[0, 0] = 1
            Image.fromarray(labels).save(base / "annotations" / split / f"{stem}.png")
    return base


def write_ade20k_sizes(root, train_sizes, val_sizes):
    """ADEChallengeData2016 of the given (height, width) images, for benchmarks.data.ade20k."""
    # labels: vertical bands of classes 1..150, 0 (unlabelled) in the top two rows
    rng = np.random.default_rng(0)
    base = root / "ADEChallengeData2016"
    splits = (("training", "ADE_train", train_sizes), ("validation", "ADE_val", val_sizes))
    for split, prefix, sizes in splits:
        (base / "images" / split).mkdir(parents=True)
        (base / "annotations" / split).mkdir(parents=True)
        for i, (height, width) in enumerate(sizes, 1):
            stem = f"{prefix}_{i:08d}"
            Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(
                base / "images" / split / f"{stem}.jpg"
            )
            labels = np.zeros((height, width), dtype=np.uint8)
            labels[2:] = (np.arange(width) // 7 % 150 + 1)[None, :]  # vertical bands of classes 1, 2, ...
            Image.fromarray(labels).save(base / "annotations" / split / f"{stem}.png")


# --- CelebA

ATTRIBUTE_NAMES = (
    "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose Black_Hair "
    "Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee Gray_Hair Heavy_Makeup "
    "High_Cheekbones Male Mouth_Slightly_Open Mustache Narrow_Eyes No_Beard Oval_Face Pale_Skin Pointy_Nose "
    "Receding_Hairline Rosy_Cheeks Sideburns Smiling Straight_Hair Wavy_Hair Wearing_Earrings Wearing_Hat "
    "Wearing_Lipstick Wearing_Necklace Wearing_Necktie Young"
).split()
LEFT_COLOUR = (200, 100, 50)  # the crop's left half; the right half is DARK
DARK = (20, 20, 20)
# 0 train, 1 valid, 2 test, as in list_eval_partition.txt
PARTITION = [0] * 10 + [1] * 2 + [2] * 4


def attribute_row(i: int) -> list[int]:
    """Image i's 40 attributes in {-1, 1}: bit k of (i * 2654435761) decides attribute k (varied, known)."""
    code = (i * 2654435761) & ((1 << 40) - 1)
    return [1 if code >> k & 1 else -1 for k in range(40)]


def write_celeba(root, partition=PARTITION):
    """<root>/celeba: JPEGs + the five list files of the CelebA release, for benchmarks.data.celeba."""
    # The images are 178x218 like the aligned faces: a red frame outside the central 140x140 crop, and inside
    # it a left half of LEFT_COLOUR and a DARK right half. Returns the celeba folder.
    folder = root / "celeba"
    (folder / "img_align_celeba").mkdir(parents=True)
    names = [f"{i:06d}.jpg" for i in range(1, len(partition) + 1)]
    for name in names:
        pixels = np.zeros((218, 178, 3), dtype=np.uint8)
        pixels[...] = (255, 0, 0)
        pixels[39:179, 19:89] = LEFT_COLOUR  # the centre crop is rows 39..178, columns 19..158
        pixels[39:179, 89:159] = DARK
        Image.fromarray(pixels).save(folder / "img_align_celeba" / name, quality=95, subsampling=0)
    n = len(names)
    (folder / "list_eval_partition.txt").write_text("".join(f"{m} {p}\n" for m, p in zip(names, partition)))
    rows = [f"{m} " + " ".join(f"{v:2d}" for v in attribute_row(i)) for i, m in enumerate(names, 1)]
    header = " ".join(ATTRIBUTE_NAMES) + " "  # the release's header line ends with a space
    (folder / "list_attr_celeba.txt").write_text(f"{n}\n{header}\n" + "\n".join(rows) + "\n")
    (folder / "identity_CelebA.txt").write_text("".join(f"{m} {100 + i}\n" for i, m in enumerate(names)))
    bbox = "".join(f"{m}    95  71 226 313\n" for m in names)
    (folder / "list_bbox_celeba.txt").write_text(f"{n}\nimage_id x_1 y_1 width height\n{bbox}")
    marks = "".join(f"{m}  69  109  106  113   77  142   73  152  108  154\n" for m in names)
    header = " ".join(f"{part}_{axis}" for part in ("lefteye", "righteye", "nose", "leftmouth", "rightmouth")
                      for axis in "xy")
    (folder / "list_landmarks_align_celeba.txt").write_text(f"{n}\n{header}\n{marks}")
    return folder


# --- CIFAR-10/100


def cifar_images(n: int, offset: int) -> np.ndarray:
    """[N, 3072] rows in CIFAR's CHW order: channel c of image i is filled with 10*c + i + offset."""
    rows = np.zeros((n, 3, 32, 32), dtype=np.uint8)
    for i in range(n):
        for c in range(3):
            rows[i, c] = 10 * c + i + offset
    return rows.reshape(n, 3072)


def write_cifar100(root, n_train=4, n_test=2):
    """CIFAR-100 python-version pickles cifar-100-python/{train, test, meta} for benchmarks.data.cifar."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    for name, n, offset in (("train", n_train, 0), ("test", n_test, 100)):
        entry = {"filenames": [f"{i}.png" for i in range(n)], "batch_label": name,
                 "fine_labels": [(7 * i) % 100 for i in range(n)], "coarse_labels": [i % 20 for i in range(n)],
                 "data": cifar_images(n, offset)}
        (folder / name).write_bytes(pickle.dumps(entry))
    (folder / "meta").write_bytes(pickle.dumps({"fine_label_names": [f"c{i}" for i in range(100)]}))


def write_cifar10(root, per_batch=2, solid=False):
    """CIFAR-10 python-version pickles cifar-10-batches-py/* for benchmarks.data.cifar.load_cifar."""
    # Pixels of batch b (data_batch_1..5, test_batch): cifar_images(per_batch, 20 * b), or with solid=True
    # the one value 10 * (b + 1) on every pixel and channel (test_batch: 60). Image i of batch b has label
    # (b + i) % 10.
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for b, name in enumerate(names):
        if solid:
            data = np.full((per_batch, 3072), 10 * (b + 1), dtype=np.uint8)
        else:
            data = cifar_images(per_batch, 20 * b)
        entry = {"batch_label": name, "labels": [(b + i) % 10 for i in range(per_batch)],
                 "data": data, "filenames": ["x.png"] * per_batch}
        (folder / name).write_bytes(pickle.dumps(entry))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"c{i}" for i in range(10)]}))


# --- R lazy-load (.rdb)

# R XDR serialisation, written independently of the reader: flags = type | attr bit 9 | tag bit 10.
_R_XDR_HEADER = b"X\n" + struct.pack(">iii", 3, 0x040201, 0x030500) + struct.pack(">i", 5) + b"UTF-8"


def _r_int(v: int) -> bytes:
    return struct.pack(">i", v)


def _r_charsxp(s):
    if s is None:
        return _r_int(9) + _r_int(-1)
    data = s.encode("utf-8")
    return _r_int(0x40009) + _r_int(len(data)) + data


def _r_strsxp(strings) -> bytes:
    return _r_int(16) + _r_int(len(strings)) + b"".join(_r_charsxp(s) for s in strings)


def _r_named_list(names, payloads) -> bytes:
    """VECSXP with a names attribute (pairlist with tag symbol 'names')."""
    body = _r_int(19 | (1 << 9)) + _r_int(len(payloads)) + b"".join(payloads)
    attributes = _r_int(2 | (1 << 10)) + _r_int(1) + _r_charsxp("names") + _r_strsxp(names) + _r_int(254)
    return body + attributes


def write_rdata(folder, objects: dict) -> None:
    """R lazy-load files Rdata.rdb + Rdata.rdx of character vectors, for benchmarks.data.austen.read_rdata."""
    # Rdata.rdb: length-prefixed zlib records; Rdata.rdx: gzip index, variables -> (offset, length)
    folder.mkdir(parents=True, exist_ok=True)
    blob, index = b"", {}
    for name, lines in objects.items():
        payload = _R_XDR_HEADER + _r_strsxp(lines)
        record = struct.pack(">i", len(payload)) + zlib.compress(payload)
        index[name] = (len(blob), len(record))
        blob += record
    (folder / "Rdata.rdb").write_bytes(blob)
    offsets = [_r_int(13) + _r_int(2) + _r_int(o) + _r_int(n) for o, n in index.values()]
    variables = _r_named_list(list(index), offsets)
    rdx = _R_XDR_HEADER + _r_named_list(
        ["variables", "references", "compressed"],
        [variables, _r_named_list([], []), _r_int(10) + _r_int(1) + _r_int(1)],
    )
    (folder / "Rdata.rdx").write_bytes(gzip.compress(rdx))


# --- MNIST idx


def write_idx(path, array: np.ndarray, gz: bool) -> None:
    """MNIST idx file (ubyte, any rank; gzipped when gz) for benchmarks.data.fashion_mnist.read_idx."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + b"".join(struct.pack(">I", d) for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if gz else data)
