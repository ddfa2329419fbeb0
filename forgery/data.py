"""Datasets as uint8 arrays: the shared types, the seeded validation split and the CIFAKE loader."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import re
import shutil
import stat
import struct
import tempfile
import time
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image
from tqdm import tqdm

from forgery import interrupts

logger = logging.getLogger(__name__)

# Label index = position here, everywhere in the project: 0 = FAKE, 1 = REAL.
CLASS_NAMES: tuple[str, str] = ("FAKE", "REAL")
IMAGE_SIZE = 32


class DataError(Exception):
    """A data problem the user must fix; its message is one line that names the path or key."""


@dataclass(frozen=True)
class Split:
    """Images (N, 32, 32, 3) uint8 and labels (N,) int64 of one split."""

    images: np.ndarray
    labels: np.ndarray

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE, 3):
            raise ValueError(f"images must be (N, {IMAGE_SIZE}, {IMAGE_SIZE}, 3), got {self.images.shape}")
        if self.images.dtype != np.uint8:
            raise ValueError(f"images must be uint8, got {self.images.dtype}")
        if self.labels.shape != (len(self.images),):
            raise ValueError(f"labels must be ({len(self.images)},), got {self.labels.shape}")

    def __len__(self) -> int:
        return len(self.labels)

    def class_counts(self) -> dict[str, int]:
        """Number of images per class name."""
        counts = np.bincount(self.labels, minlength=len(CLASS_NAMES))
        return {name: int(counts[index]) for index, name in enumerate(CLASS_NAMES)}


@dataclass(frozen=True)
class Dataset:
    """Train, validation and test splits plus counts of the input problems met while loading."""

    name: str
    train: Split
    val: Split
    test: Split
    issues: dict[str, int] = field(default_factory=dict)

    def counts(self) -> dict[str, dict[str, int]]:
        """Per split, images per class and the total."""
        return {
            split_name: {**split.class_counts(), "total": len(split)}
            for split_name, split in (("train", self.train), ("val", self.val), ("test", self.test))
        }


def check_val_fraction(fraction: float) -> None:
    """Raise DataError unless the validation share is strictly between 0 and 1."""
    if not 0.0 < fraction < 1.0:
        raise DataError(f"data.val_fraction must be between 0 and 1 (exclusive), got {fraction}")


def image_digests(images: np.ndarray) -> np.ndarray:
    """A 16-byte digest of each image's pixels (N,): images with the same pixels, and only they, share one."""
    return np.array([hashlib.blake2b(image.tobytes(), digest_size=16).digest() for image in images], dtype="S16")


def split_validation(images: np.ndarray, labels: np.ndarray, fraction: float, seed: int) -> tuple[Split, Split]:
    """Stratified, seeded (train, val) split: `fraction` of each class goes to validation.

    Copies of one image (CIFAKE's training split holds byte-identical FAKE images) stay on one side, so
    validation never scores an image the model trained on.
    """
    check_val_fraction(fraction)
    rng = np.random.default_rng(seed)
    digests = image_digests(images)
    class_members = [np.flatnonzero(labels == label) for label in range(len(CLASS_NAMES))]
    for members, class_name in zip(class_members, CLASS_NAMES):
        if len(members) < 2:  # else validation lacks the class, and its AUC is undefined
            raise DataError(f"the training split has {len(members)} {class_name} image(s); the validation split needs at least 2 per class")
    val_indices: list[np.ndarray] = []
    for members, class_name in zip(class_members, CLASS_NAMES):
        count = min(max(int(round(len(members) * fraction)), 1), len(members) - 1)  # both sides keep one image per class
        _, group_of = np.unique(digests[members], return_inverse=True)
        if group_of.max() + 1 == len(members):  # no copies: the draw every split made before copies were kept together
            val_indices.append(rng.choice(members, size=count, replace=False))
        else:
            val_indices.append(draw_whole_groups(members, group_of.ravel(), count, rng, class_name))
    is_val = np.zeros(len(labels), dtype=bool)
    is_val[np.concatenate(val_indices)] = True
    # Shuffle each side once so batches mix classes even without fit's own shuffling.
    train_order = rng.permutation(np.flatnonzero(~is_val))
    val_order = rng.permutation(np.flatnonzero(is_val))
    return (
        Split(images[train_order], labels[train_order]),
        Split(images[val_order], labels[val_order]),
    )


def draw_whole_groups(members: np.ndarray, group_of: np.ndarray, count: int, rng: np.random.Generator, class_name: str) -> np.ndarray:
    """About `count` of `members` for validation, taking each group of copies (`group_of`) whole, in a seeded order."""
    groups = group_of.max() + 1
    if groups < 2:
        raise DataError(f"the training split's {len(members)} {class_name} images are copies of one image; the validation split needs 2 different ones")
    chosen: list[int] = []
    taken = 0
    for group in rng.permutation(groups)[: groups - 1]:  # the last group stays in training: both sides keep the class
        if taken >= count:
            break
        chosen.append(int(group))
        taken += int(np.count_nonzero(group_of == group))
    return members[np.isin(group_of, chosen)]


def duplicate_counts(train: Split, test: Split) -> dict[str, int]:
    """Copies among the training images, and test images that are also training images (0s when none)."""
    train_digests, test_digests = image_digests(train.images), image_digests(test.images)
    return {
        "duplicate_train_images": len(train_digests) - len(np.unique(train_digests)),
        "test_images_in_train": int(np.count_nonzero(np.isin(test_digests, train_digests))),
    }


def check_train_fraction(fraction: float) -> None:
    """Raise DataError unless the kept share of the training split is in (0, 1]."""
    if not 0.0 < fraction <= 1.0:
        raise DataError(f"data.train_fraction must be above 0 and at most 1, got {fraction}")


def keep_fraction(split: Split, fraction: float) -> Split:
    """The first `fraction` of each class, in the split's (already shuffled) order; at least one image per class.

    Smaller fractions are subsets of larger ones, so a learning curve adds data rather than swapping it.
    """
    check_train_fraction(fraction)
    if fraction == 1.0:
        return split
    keep = np.zeros(len(split), dtype=bool)
    for label in range(len(CLASS_NAMES)):
        members = np.flatnonzero(split.labels == label)
        keep[members[: max(1, int(round(len(members) * fraction)))]] = True
    return Split(split.images[keep], split.labels[keep])


# ----- CIFAKE: Kaggle layout (folder or zip) -> decoded uint8 arrays, cached on disk -----

SPLIT_NAMES: tuple[str, str] = ("train", "test")  # split folders of the Kaggle layout
CACHE_FORMAT_VERSION = 5  # bump when decoding or the cache layout changes, so old entries are never reused
# A CIFAKE image is 32x32. 64 megapixels is an 8000x8000 photo, whose RGB pixels alone take 192 MB: more
# than that is no photo worth shrinking to 32x32 but a decompression bomb (a few KB on disk, gigabytes
# once decoded), so it is skipped on its header's word, before any pixel is decoded.
MAX_IMAGE_PIXELS = 64_000_000
# No file this big can be a sane image of at most MAX_IMAGE_PIXELS; reading it whole could exhaust memory.
MAX_FILE_BYTES = 256 * 1024 * 1024
# libjpeg decodes a JPEG at the smallest of 1/2, 1/4 or 1/8 scale that keeps both sides at least this big
# (Image.draft), which is cheap; 4x the final size leaves Lanczos enough pixels to shrink to 32x32 cleanly.
DRAFT_SIZE = 4 * IMAGE_SIZE
# Every key is always in Dataset.issues (0 when none) and becomes the MLflow metric data_<key>.
ISSUE_DESCRIPTIONS: dict[str, str] = {
    "skipped_files": "unreadable files skipped (empty, truncated, corrupt, not an image, or pixels with no known scale)",
    "converted_images": "images converted to RGB (grayscale, alpha, palette or 16-bit)",
    "resized_images": f"images resized to {IMAGE_SIZE}x{IMAGE_SIZE}",
    "oversized_images": (
        f"images over {MAX_IMAGE_PIXELS:,} pixels or files over {MAX_FILE_BYTES // 2**20} MiB skipped undecoded"
    ),
    "read_errors": "files that could not be opened or read skipped (permission denied or an I/O error)",
    "outside_root_links": "symlinks leading outside the data root skipped, never read",
    "dangling_links": "symlinks to nothing skipped (missing target or a loop)",
    "unsafe_zip_names": "zip members named with an absolute path or '..' skipped, never extracted",
    "passed_over": (
        "entries passed over unread: sub-folders, pipes and other non-files in a class folder, folders other than "
        f"{' and '.join(CLASS_NAMES)} in a split folder (in a zip, the files inside them), files directly in a split folder, "
        "and zip members whose name a later member repeats"
    ),
}
ISSUE_KINDS: tuple[str, ...] = tuple(ISSUE_DESCRIPTIONS)
# Found in the decoded pixels; in Dataset.issues (and metrics data_<key>) only when not 0. Full CIFAKE has both.
DUPLICATE_DESCRIPTIONS: dict[str, str] = {
    "duplicate_train_images": "training images with the same pixels as another (each kept with its copies on one side of the validation split)",
    "test_images_in_train": "test images with the same pixels as a training image (the test split is kept as given: they are not held out)",
}
ISSUE_EXAMPLES = 5  # example paths per issue kind, in meta.json and in the warning
# PIL raises many unrelated types for a broken file; each means this one file is unusable, not that the
# dataset is. Some decoders raise NotImplementedError for a variant they do not handle.
UNREADABLE_FILE_ERRORS: tuple[type[Exception], ...] = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    NotImplementedError,
    struct.error,
    Image.DecompressionBombError,
)
# The formats a photo dataset holds (forgery.predict's folder scan picks up the same); a file in any other
# format Pillow knows (DDS, PSD, EPS, ...) is no image here, and none of those rarely used decoders ever runs.
IMAGE_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF")
# What zipfile raises for one damaged member (bad CRC or header, corrupt deflate data, encryption, an
# unsupported compression method, which is a RuntimeError too): that member is corrupt, not the archive.
BROKEN_MEMBER_ERRORS: tuple[type[Exception], ...] = (zipfile.BadZipFile, zlib.error, EOFError, RuntimeError)
# Anything a damaged or foreign cache entry can raise while being read; such an entry is rebuilt.
CACHE_READ_ERRORS: tuple[type[Exception], ...] = (OSError, ValueError, KeyError, TypeError, EOFError)
SIXTEEN_BIT_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N")  # how PIL opens 16-bit grayscale files


@dataclass(frozen=True)
class SourceFile:
    """One file of a CIFAKE source; its label comes only from the class folder it sits in."""

    split: str  # "train" or "test"
    label: int  # index into CLASS_NAMES
    member: str  # "/"-separated path inside the folder or zip, e.g. "train/REAL/0000 (10).jpg"
    # size:mtime_ns (folder; a link adds where it leads) or size:CRC32 (zip): changes whenever the content does
    signature: str


@dataclass(frozen=True)
class SourceListing:
    """What a CIFAKE source holds: the files to decode, and the zip members refused for their names."""

    files: list[SourceFile]
    unsafe_names: list[str] = field(default_factory=list)  # names of the zip members named "/..." or "../..."
    passed_over: list[str] = field(default_factory=list)  # what lies in the layout's folders but is no class folder's file


class SkippedFile(Exception):
    """One file left out of the dataset; `kind` is the ISSUE_KINDS key it is counted under."""

    def __init__(self, kind: str, reason: str, transient: bool = False) -> None:
        super().__init__(reason)
        self.kind = kind
        # True when the cause is outside the cache key (a permission, a failed read): the next run may read the file.
        self.transient = transient


class UnscaledPixels(ValueError):
    """An image whose pixel values have no known scale to 8 bits (floating point, or 32-bit integers)."""


SAVE_AS_8_OR_16_BITS = "save the image with 8 or 16 bits per channel"


class ImageTooLarge(ValueError):
    """An image whose header promises more pixels than MAX_IMAGE_PIXELS (or Pillow's own bomb limit)."""


class DecodedImage(NamedTuple):
    """One image as (32, 32, 3) uint8 RGB and what had to be done to get it there."""

    pixels: np.ndarray
    converted: bool  # was not 8-bit RGB
    resized: bool  # was not 32x32


@dataclass(frozen=True)
class DecodedSource:
    """Everything decoded from one CIFAKE source, which is what a cache entry holds."""

    train: Split
    test: Split
    issues: dict[str, int]  # count per ISSUE_KINDS, 0 when none
    issue_examples: dict[str, list[str]]  # up to ISSUE_EXAMPLES paths per issue kind, relative to the source
    transient_skips: int = 0  # files skipped for a cause the cache key cannot see; such a load is never cached


def load_cifake(
    root: str,
    val_fraction: float = 0.1,
    seed: int = 0,
    cache_dir: str | None = None,
    train_fraction: float = 1.0,
) -> Dataset:
    """CIFAKE from a Kaggle-layout folder or zip: train split into seeded stratified train/val, test kept apart.

    `train_fraction` < 1 trains on that share of the training split (learning curves); validation and
    test stay whole, so every fraction is judged on the same images.
    """
    started = time.perf_counter()
    check_val_fraction(val_fraction)  # fail before seconds of decoding, not after
    check_train_fraction(train_fraction)
    source = Path(root).expanduser().absolute()
    listing = list_cifake_files(source)
    cache_root = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    decoded = load_or_decode(source, listing, cache_root)
    warn_about_issues(source, decoded.issues, decoded.issue_examples)
    # Counted after decoding, not cached, and added only when found: a dataset without copies keeps the
    # issue counts (and data fingerprint) it had before copies were counted, so its runs still resume.
    copies = {kind: count for kind, count in duplicate_counts(decoded.train, decoded.test).items() if count}
    for kind, count in copies.items():
        logger.warning("CIFAKE %s: %d %s", kind, count, DUPLICATE_DESCRIPTIONS[kind])
    train, val = split_validation(decoded.train.images, decoded.train.labels, val_fraction, seed)
    dataset = Dataset(name="cifake", train=keep_fraction(train, train_fraction), val=val, test=decoded.test, issues={**decoded.issues, **copies})
    seconds = time.perf_counter() - started
    logger.info("loaded CIFAKE from %s in %.2f s: %s", source, seconds, describe_counts(dataset))
    return dataset


def fingerprint(dataset: Dataset) -> str:
    """A digest of every split's images and labels and of the loader's issue counts.

    Two loads that give a run the same data give the same digest; a file added, removed or changed,
    or another validation split, gives another. A resume compares it with the one its run started on.
    """
    digest = hashlib.sha256(dataset.name.encode())
    for split in (dataset.train, dataset.val, dataset.test):
        digest.update(np.ascontiguousarray(split.images).data)
        digest.update(split.labels.astype("<i8").tobytes())
    digest.update(json.dumps(sorted(dataset.issues.items())).encode())
    return digest.hexdigest()[:16]


def validation_fingerprint(dataset: Dataset) -> str:
    """A digest of the validation split's images and labels: what a distillation teacher must have validated on.

    The same settings on a folder that gained or lost a file draw another validation split, most of
    whose images the teacher then trained on (forgery.distill).
    """
    digest = hashlib.sha256(np.ascontiguousarray(dataset.val.images).data)
    digest.update(dataset.val.labels.astype("<i8").tobytes())
    return digest.hexdigest()[:16]


def describe_counts(dataset: Dataset) -> str:
    """Images per split and class in one line, e.g. "train 9000 FAKE + 9000 REAL; val ..."."""
    return "; ".join(
        f"{split_name} " + " + ".join(f"{counts[name]} {name}" for name in CLASS_NAMES)
        for split_name, counts in dataset.counts().items()
    )


def default_cache_dir() -> Path:
    """$FORGERY_CACHE_DIR if set, else ~/.cache/forgery."""
    return Path(os.environ.get("FORGERY_CACHE_DIR") or "~/.cache/forgery").expanduser()


def list_cifake_files(source: Path) -> SourceListing:
    """Every file of the Kaggle layout in a folder or zip, sorted; DataError names the first missing path."""
    try:
        problem = root_problem(source)
        if problem:
            raise DataError(problem)
        return list_folder(source) if source.is_dir() else list_zip(source)
    except OSError as error:  # a folder of the layout this user may not search (Path.is_dir raises then)
        raise DataError(f"CIFAKE folder cannot be read: {error.filename or source} ({error.strerror or error})") from None


def root_problem(source: Path) -> str | None:
    """Why `source` cannot be a CIFAKE root (missing, or neither a folder nor a .zip file), or None."""
    if source.is_dir() or (source.is_file() and source.suffix.lower() == ".zip"):
        return None
    if source.exists():
        return f"CIFAKE root must be a folder or a .zip file: {source}"
    return f"CIFAKE {'zip' if source.suffix.lower() == '.zip' else 'folder'} not found: {source}"


def list_folder(root: Path) -> SourceListing:
    """Files and symlinks directly inside the class folders under `root`."""
    real_root = Path(os.path.realpath(root))
    splits = {split for split in SPLIT_NAMES if (root / split).is_dir()}
    folders = set(splits) | {name for name in names_in(root) if (root / name).is_dir()}  # all: names in another case get a hint
    listing: dict[str, list[tuple[str, str]]] = {}
    passed_over: list[str] = []
    for split in sorted(splits):
        others = other_entries(root / split)
        passed_over += [f"{split}/{name}" for name in others]
        folders |= {f"{split}/{name.rstrip('/')}" for name in others if name.endswith("/")}
        for class_name in CLASS_NAMES:
            folder = f"{split}/{class_name}"
            if (root / folder).is_dir():
                folders.add(folder)
                listing[folder], others = scan_class_folder(root / folder, real_root)
                passed_over += [f"{folder}/{name}" for name in others]
    return SourceListing(files_in_layout(root, "", folders, listing), passed_over=passed_over)


def names_in(folder: Path) -> list[str]:
    """The names in a folder, or none when it cannot be listed (what needs it then says so)."""
    try:
        return os.listdir(folder)
    except OSError:
        return []


def case_hint(folder: str, folders: set[str]) -> str:
    """For a layout folder missing only because its name is in another case (train/real), a hint naming it."""
    found = sorted(name for name in folders if name.lower() == folder.lower() and name != folder)
    return f" (found {found[0]}: folder names are case-sensitive; rename it to {folder.rsplit('/', 1)[-1]})" if found else ""


def other_entries(split_folder: Path) -> list[str]:
    """What a split folder holds besides its class folders (train/OTHER/, a loose train/x.png): never read, so counted."""
    try:
        with os.scandir(split_folder) as entries:
            return sorted(
                f"{entry.name}/" if entry.is_dir() else entry.name
                for entry in entries
                if not entry.name.startswith(".") and entry.name not in CLASS_NAMES
            )
    except OSError:  # an unreadable split folder: its class folders say so
        return []


def layout_hint(root: Path) -> str:
    """For a folder one level off the Kaggle layout, the data.root that would fit ('' when none is clear)."""
    if root.name in SPLIT_NAMES or root.name in CLASS_NAMES:
        return f" (data.root points inside the dataset; the folder holding train/ and test/ is {root.parent if root.name in SPLIT_NAMES else root.parent.parent})"
    try:
        below = [child for child in root.iterdir() if child.is_dir() and all((child / split).is_dir() for split in SPLIT_NAMES)]
    except OSError:
        return ""
    return f" (the layout is one folder down: data.root={below[0]})" if len(below) == 1 else ""


def scan_class_folder(folder: Path, real_root: Path) -> tuple[list[tuple[str, str]], list[str]]:
    """(name, signature) of the files and symlinks in a folder, and the names of its other entries (sub-folders
    end in "/"), which are not read; hidden entries (.DS_Store and the like) are no images."""
    # A class folder reached through a link that leads out of the root: its files are read as links are
    # (read_inside_root skips them), so their signatures must differ from the same files met inside a root.
    real_folder = Path(os.path.realpath(folder))
    outside = None if real_folder.is_relative_to(real_root) else f"outside the root in {real_folder}"
    try:
        with os.scandir(folder) as entries:
            found = [entry for entry in entries if not entry.name.startswith(".")]
            # Every symlink is listed, wherever it leads: read_inside_root follows it or counts why not.
            links = [
                (entry.name, link_signature(Path(entry.path), real_root)) for entry in found if entry.is_symlink()
            ]
            plain = [(entry.name, outside or file_signature(entry)) for entry in found if entry.is_file(follow_symlinks=False)]
            others = [
                f"{entry.name}/" if entry.is_dir(follow_symlinks=False) else entry.name
                for entry in found
                if not entry.is_symlink() and not entry.is_file(follow_symlinks=False)
            ]
            return links + plain, sorted(others)
    except OSError as error:
        raise DataError(f"CIFAKE class folder cannot be read: {folder} ({error.strerror or error})") from None


def file_signature(entry: os.DirEntry[str]) -> str:
    """size:mtime_ns of a plain file."""
    status = entry.stat(follow_symlinks=False)
    return f"{status.st_size}:{status.st_mtime_ns}"


def link_signature(link: Path, real_root: Path) -> str:
    """Where a symlink leads, and that file's size:mtime_ns when it is inside the root: retargeting it changes this."""
    target = Path(os.path.realpath(link))  # os.path's realpath does not raise on a loop, Path.resolve may
    if not target.is_relative_to(real_root):
        return f"link outside the root to {target}"  # never read, so its content cannot matter
    try:
        status = target.stat()
    except OSError:
        return f"link to {target}, missing"
    return f"{status.st_size}:{status.st_mtime_ns}:link to {target}"


def list_zip(archive_path: Path) -> SourceListing:
    """Files directly inside the class folders of a zip, at its top or under one top-level folder."""
    try:
        with zipfile.ZipFile(archive_path) as archive:
            every_member = archive.infolist()
    except (zipfile.BadZipFile, OSError) as error:
        raise DataError(f"CIFAKE zip cannot be read: {archive_path} ({error})") from None
    # Members are only ever read from the archive by name, never extracted; still, a name that points
    # outside the archive's own tree is hostile or broken, so it is counted and never used at all.
    unsafe = [member for member in every_member if is_unsafe_zip_name(member.filename)]
    members = [member for member in every_member if not is_unsafe_zip_name(member.filename)]
    # Windows PowerShell 5's Compress-Archive separates folders with "\\"; open_members maps the names back.
    names = [slash_separated(member.filename) for member in members]
    prefix = zip_prefix(names)
    folders: set[str] = set()
    listing: dict[str, list[tuple[str, str]]] = {}
    passed_over: list[str] = []
    last = {name: index for index, name in enumerate(names)}  # reading by name gives a repeated name's last member
    for index, (member, name) in enumerate(zip(members, names)):
        if not name.startswith(prefix):
            continue
        parts = name[len(prefix) :].split("/")
        # Zips need not store folder entries, so a folder exists when any member lies inside it.
        folders.update("/".join(parts[:depth]) for depth in range(1, len(parts)))
        if member.is_dir() or not parts[-1] or any(part.startswith(".") for part in parts):
            continue
        if last[name] != index:  # an earlier member under a name a later one repeats: never read, so counted
            passed_over.append(name[len(prefix) :])
        elif len(parts) == 3 and parts[1] in CLASS_NAMES:
            listing.setdefault(f"{parts[0]}/{parts[1]}", []).append(
                (parts[2], f"{member.file_size}:{member.CRC:08x}")
            )
        elif len(parts) >= 2 and parts[0] in SPLIT_NAMES:  # in a sub-folder of a class folder, in train/OTHER/, or loose in train/
            passed_over.append(name[len(prefix) :])
    files = files_in_layout(archive_path, prefix, folders, listing)
    return SourceListing(files, [member.filename for member in unsafe], sorted(passed_over))


def slash_separated(name: str) -> str:
    """A zip member's name with "/" as its only separator, whichever of "/" and "\\" the zip was made with."""
    return name.replace("\\", "/")


def is_unsafe_zip_name(name: str) -> bool:
    """Whether a zip member's name is absolute ("/x", "C:x") or climbs out with a ".." part ("/" or "\\" separated)."""
    unified = slash_separated(name)  # zips made on Windows may use either separator
    return unified.startswith("/") or (unified[:1].isalpha() and unified[1:2] == ":") or ".." in unified.split("/")


def zip_prefix(names: list[str]) -> str:
    """The folder inside a zip that holds train/ and test/: "" or its one top-level folder, like "cifake/"."""
    if any(name.startswith(tuple(f"{split}/" for split in SPLIT_NAMES)) for name in names):
        return ""
    # __MACOSX/ holds resource forks that macOS's Finder adds when it zips a folder.
    top_level = {name.split("/", 1)[0] + "/" for name in names if "/" in name and not name.startswith("__MACOSX/")}
    return top_level.pop() if len(top_level) == 1 else ""


def files_in_layout(
    root: Path, prefix: str, folders: set[str], listing: dict[str, list[tuple[str, str]]]
) -> list[SourceFile]:
    """Check the layout split by split, class by class, and list each class folder's files sorted by name."""
    files: list[SourceFile] = []
    for split in SPLIT_NAMES:
        if split not in folders:
            raise DataError(f"CIFAKE split folder not found: {root / prefix / split}{case_hint(split, folders) or ('' if prefix else layout_hint(root))}")
        for label, class_name in enumerate(CLASS_NAMES):
            folder = f"{split}/{class_name}"
            if folder not in folders:
                raise DataError(f"CIFAKE class folder not found: {root / prefix / folder}{case_hint(folder, folders)}")
            entries = sorted(listing.get(folder, []))
            if not entries:
                raise DataError(f"CIFAKE class folder is empty: {root / prefix / folder}")
            files += [SourceFile(split, label, f"{prefix}{folder}/{name}", signature) for name, signature in entries]
    return files


def source_fingerprint(listing: SourceListing) -> str:
    """sha256 over the cache format, image size, Pillow's version and every file's place and signature: any change, a new key.

    Pillow's version is in it because its decoders decide what a file decodes to, or whether it is skipped.
    """
    import PIL

    digest = hashlib.sha256(f"forgery-cifake-cache v{CACHE_FORMAT_VERSION} size {IMAGE_SIZE} pillow {PIL.__version__}\n".encode())
    for file in listing.files:
        # NUL cannot occur in a path, so distinct file lists can never hash the same text. A name that is not
        # UTF-8 on disk comes with lone surrogates (byte 0xff as "\udcff"); surrogateescape hashes its own bytes.
        digest.update(f"{file.split}\0{file.label}\0{file.member}\0{file.signature}\n".encode("utf-8", "surrogateescape"))
    for name in listing.unsafe_names:  # they are counted in the entry's issues, so they are part of its key
        digest.update(f"unsafe\0{name}\n".encode("utf-8", "surrogateescape"))
    for name in listing.passed_over:  # the same
        digest.update(f"passed over\0{name}\n".encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def load_or_decode(source: Path, listing: SourceListing, cache_root: Path) -> DecodedSource:
    """The cache entry for these exact files if it reads back intact, else decode them and write the entry."""
    key = source_fingerprint(listing)
    entry = cache_root / f"cifake-{key}"
    started = time.perf_counter()
    if entry.is_dir():
        try:
            decoded = read_cache_entry(entry, key)
        except CACHE_READ_ERRORS as error:
            logger.warning("ignoring unreadable CIFAKE cache entry %s (%s: %s)", entry, type(error).__name__, error)
        else:
            logger.info("CIFAKE cache hit: %s, read in %.2f s", entry, time.perf_counter() - started)
            return decoded
    decoded = decode_files(source, listing)
    logger.info("CIFAKE cache miss: decoded %d files in %.1f s", len(listing.files), time.perf_counter() - started)
    if decoded.transient_skips:
        # Fixing a permission or re-copying a damaged zip can leave the key as it is: an entry would keep skipping the file.
        logger.info("not caching CIFAKE: %d files could not be read, so the next run tries them again", decoded.transient_skips)
        return decoded
    try:
        write_cache_entry(entry, key, decoded, source)
    except OSError as error:
        # A read-only or full disk costs speed on the next run, not this run's data.
        logger.warning("could not write CIFAKE cache entry %s (%s)", entry, error)
    else:
        logger.info("cached decoded CIFAKE at %s", entry)
    return decoded


@contextlib.contextmanager
def open_members(source: Path) -> Iterator[Callable[[str], bytes]]:
    """Yield a function that reads one file's bytes by member path, opening a zip only once."""
    if source.is_dir():
        real_root = Path(os.path.realpath(source))
        yield lambda member: read_inside_root(real_root, member)
        return
    with zipfile.ZipFile(source) as archive:
        # Listed members are "/"-separated; the archive knows a "\\"-separated one only by the name it was stored under.
        stored = {slash_separated(info.filename): info.filename for info in archive.infolist()}
        yield lambda member: read_zip_member(archive, stored.get(member, member))


def read_inside_root(real_root: Path, member: str) -> bytes:
    """A file's bytes if, with every symlink followed, it is a regular file inside the root; else SkippedFile."""
    path = real_root / member
    target = Path(os.path.realpath(path))  # follows links in the file's name and in every folder above it
    if not target.is_relative_to(real_root):
        raise SkippedFile("outside_root_links", f"leads to {target}")  # not even stat'ed: it is not ours to touch
    if path.is_symlink() and not target.exists():
        raise SkippedFile("dangling_links", f"leads to missing {target}")
    status = target.stat()
    if not stat.S_ISREG(status.st_mode):  # a link to a folder, a device or a FIFO, which could block forever
        raise SkippedFile("skipped_files", f"leads to {target}, which is not a regular file")
    if status.st_size > MAX_FILE_BYTES:
        raise SkippedFile("oversized_images", f"{status.st_size} bytes")
    return target.read_bytes()


def read_zip_member(archive: zipfile.ZipFile, member: str) -> bytes:
    """A zip member's bytes, unless its stated size is beyond MAX_FILE_BYTES (zipfile never reads past it)."""
    size = archive.getinfo(member).file_size
    if size > MAX_FILE_BYTES:
        raise SkippedFile("oversized_images", f"{size} bytes uncompressed")
    return archive.read(member)


def read_and_decode(read_member: Callable[[str], bytes], member: str) -> DecodedImage:
    """One file read and decoded, or SkippedFile naming the ISSUE_KINDS key it counts under."""
    try:
        file_bytes = read_member(member)
    except OSError as error:  # permission denied, an I/O error, or gone since it was listed
        raise SkippedFile("read_errors", f"{type(error).__name__}: {error}", transient=True) from None
    except BROKEN_MEMBER_ERRORS as error:  # the zip's directory, which the key hashes, may be intact
        raise SkippedFile("skipped_files", f"{type(error).__name__}: {error}", transient=True) from None
    try:
        return decode_image(file_bytes)
    except ImageTooLarge as error:
        raise SkippedFile("oversized_images", str(error)) from None
    except UNREADABLE_FILE_ERRORS as error:
        raise SkippedFile("skipped_files", f"{type(error).__name__}: {error}") from None


def decode_files(source: Path, listing: SourceListing) -> DecodedSource:
    """Decode every file into train and test arrays, skipping and counting the unusable ones."""
    files = listing.files
    pixels = np.empty((len(files), IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    readable = np.zeros(len(files), dtype=bool)
    # Paths relative to the source: a cache entry is also served when the same files are found elsewhere.
    problems: dict[str, list[str]] = {kind: [] for kind in ISSUE_KINDS}
    problems["unsafe_zip_names"] += listing.unsafe_names
    problems["passed_over"] += listing.passed_over
    transient_skips = 0
    with open_members(source) as read_member:
        for index, file in enumerate(tqdm(files, desc="decoding CIFAKE", unit="img", disable=None)):
            interrupts.raise_if_requested()  # a Ctrl-C that Python dropped (it can, inside a finaliser) stops the decoding here
            try:
                decoded = read_and_decode(read_member, file.member)
            except SkippedFile as skipped:
                logger.debug("skipping %s/%s (%s): %s", source, file.member, skipped.kind, skipped)
                problems[skipped.kind].append(file.member)
                transient_skips += skipped.transient
                continue
            pixels[index] = decoded.pixels
            readable[index] = True
            if decoded.converted:
                problems["converted_images"].append(file.member)
            if decoded.resized:
                problems["resized_images"].append(file.member)
    issues = {kind: len(paths) for kind, paths in problems.items()}
    issue_examples = {kind: paths[:ISSUE_EXAMPLES] for kind, paths in problems.items()}
    labels = np.array([file.label for file in files], dtype=np.int64)
    split_of = np.array([file.split for file in files])
    splits: dict[str, Split] = {}
    for split in SPLIT_NAMES:
        keep = readable & (split_of == split)
        splits[split] = Split(pixels[keep], labels[keep])
        counts = splits[split].class_counts()
        for label, class_name in enumerate(CLASS_NAMES):
            if counts[class_name] == 0:
                warn_about_issues(source, issues, issue_examples)  # they say why the folder came out empty
                member = next(file.member for file in files if file.split == split and file.label == label)
                raise DataError(f"CIFAKE class folder has no readable images: {source}/{member.rsplit('/', 1)[0]}")
    return DecodedSource(
        train=splits["train"], test=splits["test"], issues=issues, issue_examples=issue_examples, transient_skips=transient_skips
    )


def decode_image(data: bytes) -> DecodedImage:
    """One JPEG, PNG, WebP, BMP, GIF or TIFF file's bytes as (32, 32, 3) uint8 RGB; else one of UNREADABLE_FILE_ERRORS.

    An image too large to decode safely raises ImageTooLarge, a ValueError, before its pixels are decoded.
    """
    with warnings.catch_warnings():
        # Pillow only warns between its own Image.MAX_IMAGE_PIXELS and twice that; here the warning stops us too.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as image:  # reads the header only
                return decode_opened(image)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
            # Pillow's own limit (about 89 megapixels) names a number that is not ours; say ours.
            pixels = re.search(r"\((\d+) pixels\)", str(error))
            size = f"{int(pixels.group(1)):,} pixels" if pixels else str(error)
            raise ImageTooLarge(f"{size}, over the {MAX_IMAGE_PIXELS:,}-pixel limit") from None


def decode_opened(image: Image.Image) -> DecodedImage:
    """An opened image, checked against MAX_IMAGE_PIXELS from its header, then decoded, converted and resized."""
    width, height = image.size
    if width * height > MAX_IMAGE_PIXELS:
        raise ImageTooLarge(f"{width}x{height} pixels, over the {MAX_IMAGE_PIXELS:,}-pixel limit")
    converted = image.mode != "RGB" or has_16_bit_samples(image)
    resized = image.size != (IMAGE_SIZE, IMAGE_SIZE)  # the file's own size, before draft shrinks it
    image.draft("RGB", (DRAFT_SIZE, DRAFT_SIZE))  # JPEG only: libjpeg decodes a big one at 1/2 to 1/8 scale
    image.load()  # decode now, so a truncated file raises here (LOAD_TRUNCATED_IMAGES stays off)
    rgb = to_rgb(image) if converted else image
    if resized:
        rgb = rgb.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.LANCZOS)  # antialiased when shrinking
    return DecodedImage(np.asarray(rgb, dtype=np.uint8), converted, resized)


def has_16_bit_samples(image: Image.Image) -> bool:
    """Whether an opened, not yet decoded image stores 16 bits per sample although PIL reads it as 8-bit RGB.

    PIL opens a 16-bit-per-channel RGB PNG as mode RGB and keeps each value's high byte: a conversion too.
    """
    return any(";16" in str(tile.args) for tile in image.tile)


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL image as 8-bit RGB; alpha is dropped, 16-bit values are scaled down to 8 bits.

    Pixels with no fixed scale (floating point, or 32-bit integers beyond 0-65535) raise UnscaledPixels:
    PIL's convert would clip them to a blank image that still gets a confident label.
    """
    if image.mode == "F":
        raise UnscaledPixels(f"floating-point pixels have no fixed scale (0-1? 0-255?); {SAVE_AS_8_OR_16_BITS}")
    if image.mode in SIXTEEN_BIT_MODES:
        values = np.asarray(image).astype(np.int64)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise UnscaledPixels(f"32-bit integer pixels from {values.min()} to {values.max()}, beyond 16 bits, have no known scale; {SAVE_AS_8_OR_16_BITS}")
        # PIL's own convert clips 16-bit values at 255, which turns almost every pixel white.
        gray = ((values * 255 + 32767) // 65535).astype(np.uint8)
        return Image.fromarray(gray, mode="L").convert("RGB")
    return image.convert("RGB")


def read_cache_entry(entry: Path, key: str) -> DecodedSource:
    """A cache entry's arrays, checked against its meta.json; raises one of CACHE_READ_ERRORS if damaged."""
    meta = json.loads((entry / "meta.json").read_text(encoding="utf-8"))
    if meta["format_version"] != CACHE_FORMAT_VERSION or meta["key"] != key:
        raise ValueError("meta.json belongs to another cache format or key")
    splits: dict[str, Split] = {}
    for split in SPLIT_NAMES:
        # allow_pickle=False: a cache file can only ever hold plain arrays, never code.
        images = np.load(entry / f"{split}_images.npy", allow_pickle=False)
        labels = np.load(entry / f"{split}_labels.npy", allow_pickle=False)
        splits[split] = Split(images, labels)
        if {**splits[split].class_counts(), "total": len(labels)} != meta["counts"][split]:
            raise ValueError(f"{split} arrays do not match the counts in meta.json")
    return DecodedSource(
        train=splits["train"],
        test=splits["test"],
        issues={kind: int(meta["issues"][kind]) for kind in ISSUE_KINDS},
        issue_examples={kind: [str(path) for path in meta["issue_examples"][kind]] for kind in ISSUE_KINDS},
    )


def write_cache_entry(entry: Path, key: str, decoded: DecodedSource, source: Path) -> None:
    """Write arrays and meta.json into a temporary folder beside `entry`, then rename it into place."""
    entry.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", suffix=".partial", dir=entry.parent))
    try:
        for split_name, split in (("train", decoded.train), ("test", decoded.test)):
            np.save(staging / f"{split_name}_images.npy", split.images, allow_pickle=False)
            np.save(staging / f"{split_name}_labels.npy", split.labels, allow_pickle=False)
        meta = {
            "format_version": CACHE_FORMAT_VERSION,
            "key": key,
            "source": str(source),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "counts": {
                "train": {**decoded.train.class_counts(), "total": len(decoded.train)},
                "test": {**decoded.test.class_counts(), "total": len(decoded.test)},
            },
            "issues": decoded.issues,
            "issue_examples": decoded.issue_examples,
        }
        (staging / "meta.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
        if entry.exists():
            shutil.rmtree(entry)  # the damaged entry this one replaces; a rename cannot overwrite a full folder
        os.replace(staging, entry)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # still there only if something above failed


def warn_about_issues(source: Path, issues: dict[str, int], issue_examples: dict[str, list[str]]) -> None:
    """One warning per kind of input problem met, naming its key, with up to ISSUE_EXAMPLES example paths in `source`."""
    for kind, description in ISSUE_DESCRIPTIONS.items():
        if issues[kind]:
            examples = ", ".join(f"{source}/{member}" for member in issue_examples[kind][:ISSUE_EXAMPLES])
            logger.warning("CIFAKE %s: %d %s, e.g. %s", kind, issues[kind], description, examples)
