"""Datasets as uint8 arrays: the shared types, the seeded validation split and the CIFAKE loader."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import shutil
import struct
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image
from tqdm import tqdm

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


def split_validation(images: np.ndarray, labels: np.ndarray, fraction: float, seed: int) -> tuple[Split, Split]:
    """Stratified, seeded (train, val) split: `fraction` of each class goes to validation."""
    check_val_fraction(fraction)
    rng = np.random.default_rng(seed)
    val_indices: list[np.ndarray] = []
    for label in range(len(CLASS_NAMES)):
        members = np.flatnonzero(labels == label)
        count = int(round(len(members) * fraction))
        if len(members) >= 2:
            count = min(max(count, 1), len(members) - 1)  # both sides keep at least one image per class
        val_indices.append(rng.choice(members, size=count, replace=False))
    is_val = np.zeros(len(labels), dtype=bool)
    is_val[np.concatenate(val_indices)] = True
    # Shuffle each side once so batches mix classes even without fit's own shuffling.
    train_order = rng.permutation(np.flatnonzero(~is_val))
    val_order = rng.permutation(np.flatnonzero(is_val))
    return (
        Split(images[train_order], labels[train_order]),
        Split(images[val_order], labels[val_order]),
    )


# ----- CIFAKE: Kaggle layout (folder or zip) -> decoded uint8 arrays, cached on disk -----

SPLIT_NAMES: tuple[str, str] = ("train", "test")  # split folders of the Kaggle layout
CACHE_FORMAT_VERSION = 1  # bump when decoding or the cache layout changes, so old entries are never reused
ISSUE_DESCRIPTIONS: dict[str, str] = {
    "skipped_files": "unreadable files skipped (empty, truncated, corrupt or not an image)",
    "converted_images": "images converted to RGB (grayscale, alpha, palette or 16-bit)",
    "resized_images": f"images resized to {IMAGE_SIZE}x{IMAGE_SIZE}",
}
ISSUE_KINDS: tuple[str, ...] = tuple(ISSUE_DESCRIPTIONS)
ISSUE_EXAMPLES = 5  # example paths per issue kind, in meta.json and in the warning
# PIL raises many unrelated types for a broken file, and zipfile raises BadZipFile for a member that
# fails its CRC check; each means this one file is unusable, not that the dataset is.
UNREADABLE_FILE_ERRORS: tuple[type[Exception], ...] = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    struct.error,
    Image.DecompressionBombError,
    zipfile.BadZipFile,
)
# Anything a damaged or foreign cache entry can raise while being read; such an entry is rebuilt.
CACHE_READ_ERRORS: tuple[type[Exception], ...] = (OSError, ValueError, KeyError, TypeError, EOFError)
SIXTEEN_BIT_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N")  # how PIL opens 16-bit grayscale files


@dataclass(frozen=True)
class SourceFile:
    """One file of a CIFAKE source; its label comes only from the class folder it sits in."""

    split: str  # "train" or "test"
    label: int  # index into CLASS_NAMES
    member: str  # "/"-separated path inside the folder or zip, e.g. "train/REAL/0000 (10).jpg"
    signature: str  # size and mtime_ns (folder) or size and CRC32 (zip): changes whenever the content does


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
    issue_examples: dict[str, list[str]]  # up to ISSUE_EXAMPLES paths per issue kind


def load_cifake(root: str, val_fraction: float = 0.1, seed: int = 0, cache_dir: str | None = None) -> Dataset:
    """CIFAKE from a Kaggle-layout folder or zip: train split into seeded stratified train/val, test kept apart."""
    started = time.perf_counter()
    check_val_fraction(val_fraction)  # fail before seconds of decoding, not after
    source = Path(root).expanduser().absolute()
    files = list_cifake_files(source)
    cache_root = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    decoded = load_or_decode(source, files, cache_root)
    warn_about_issues(decoded)
    train, val = split_validation(decoded.train.images, decoded.train.labels, val_fraction, seed)
    dataset = Dataset(name="cifake", train=train, val=val, test=decoded.test, issues=dict(decoded.issues))
    seconds = time.perf_counter() - started
    logger.info("loaded CIFAKE from %s in %.2f s: %s", source, seconds, describe_counts(dataset))
    return dataset


def describe_counts(dataset: Dataset) -> str:
    """Images per split and class in one line, e.g. "train 9000 FAKE + 9000 REAL; val ..."."""
    return "; ".join(
        f"{split_name} " + " + ".join(f"{counts[name]} {name}" for name in CLASS_NAMES)
        for split_name, counts in dataset.counts().items()
    )


def default_cache_dir() -> Path:
    """$FORGERY_CACHE_DIR if set, else ~/.cache/forgery."""
    return Path(os.environ.get("FORGERY_CACHE_DIR") or "~/.cache/forgery").expanduser()


def list_cifake_files(source: Path) -> list[SourceFile]:
    """Every file of the Kaggle layout in a folder or zip, sorted; DataError names the first missing path."""
    if source.is_dir():
        return list_folder(source)
    if source.is_file() and source.suffix.lower() == ".zip":
        return list_zip(source)
    if source.exists():
        raise DataError(f"CIFAKE root must be a folder or a .zip file: {source}")
    raise DataError(f"CIFAKE {'zip' if source.suffix.lower() == '.zip' else 'folder'} not found: {source}")


def list_folder(root: Path) -> list[SourceFile]:
    """Files directly inside the class folders under `root`."""
    folders = {split for split in SPLIT_NAMES if (root / split).is_dir()}
    listing: dict[str, list[tuple[str, str]]] = {}
    for split in sorted(folders):
        for class_name in CLASS_NAMES:
            folder = f"{split}/{class_name}"
            if (root / folder).is_dir():
                folders.add(folder)
                listing[folder] = scan_class_folder(root / folder)
    return files_in_layout(root, "", folders, listing)


def scan_class_folder(folder: Path) -> list[tuple[str, str]]:
    """(name, size:mtime_ns) of the files in one folder; hidden files (.DS_Store and the like) are no images."""
    with os.scandir(folder) as entries:
        found = [(entry.name, entry.stat()) for entry in entries if not entry.name.startswith(".") and entry.is_file()]
    return [(name, f"{stat.st_size}:{stat.st_mtime_ns}") for name, stat in found]


def list_zip(archive_path: Path) -> list[SourceFile]:
    """Files directly inside the class folders of a zip, at its top or under one top-level folder."""
    try:
        with zipfile.ZipFile(archive_path) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, OSError) as error:
        raise DataError(f"CIFAKE zip cannot be read: {archive_path} ({error})") from None
    prefix = zip_prefix([member.filename for member in members])
    folders: set[str] = set()
    listing: dict[str, list[tuple[str, str]]] = {}
    for member in members:
        if not member.filename.startswith(prefix):
            continue
        parts = member.filename[len(prefix) :].split("/")
        # Zips need not store folder entries, so a folder exists when any member lies inside it.
        folders.update("/".join(parts[:depth]) for depth in range(1, len(parts)))
        if len(parts) == 3 and parts[2] and not parts[2].startswith(".") and not member.is_dir():
            listing.setdefault(f"{parts[0]}/{parts[1]}", []).append(
                (parts[2], f"{member.file_size}:{member.CRC:08x}")
            )
    return files_in_layout(archive_path, prefix, folders, listing)


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
            raise DataError(f"CIFAKE split folder not found: {root / prefix / split}")
        for label, class_name in enumerate(CLASS_NAMES):
            folder = f"{split}/{class_name}"
            if folder not in folders:
                raise DataError(f"CIFAKE class folder not found: {root / prefix / folder}")
            entries = sorted(listing.get(folder, []))
            if not entries:
                raise DataError(f"CIFAKE class folder is empty: {root / prefix / folder}")
            files += [SourceFile(split, label, f"{prefix}{folder}/{name}", signature) for name, signature in entries]
    return files


def source_fingerprint(files: list[SourceFile]) -> str:
    """sha256 over the cache format, image size and every file's place and signature: any change, a new key."""
    digest = hashlib.sha256(f"forgery-cifake-cache v{CACHE_FORMAT_VERSION} size {IMAGE_SIZE}\n".encode())
    for file in files:
        # NUL cannot occur in a path, so distinct file lists can never hash the same text.
        digest.update(f"{file.split}\0{file.label}\0{file.member}\0{file.signature}\n".encode())
    return digest.hexdigest()


def load_or_decode(source: Path, files: list[SourceFile], cache_root: Path) -> DecodedSource:
    """The cache entry for these exact files if it reads back intact, else decode them and write the entry."""
    key = source_fingerprint(files)
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
    decoded = decode_files(source, files)
    logger.info("CIFAKE cache miss: decoded %d files in %.1f s", len(files), time.perf_counter() - started)
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
        yield lambda member: (source / member).read_bytes()
        return
    with zipfile.ZipFile(source) as archive:
        yield archive.read


def decode_files(source: Path, files: list[SourceFile]) -> DecodedSource:
    """Decode every file into train and test arrays, skipping and counting the unreadable ones."""
    pixels = np.empty((len(files), IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    readable = np.zeros(len(files), dtype=bool)
    problems: dict[str, list[str]] = {kind: [] for kind in ISSUE_KINDS}
    with open_members(source) as read_member:
        for index, file in enumerate(tqdm(files, desc="decoding CIFAKE", unit="img", disable=None)):
            shown = f"{source}/{file.member}"
            try:
                decoded = decode_image(read_member(file.member))
            except UNREADABLE_FILE_ERRORS as error:
                logger.debug("skipping %s: %s", shown, error)
                problems["skipped_files"].append(shown)
                continue
            pixels[index] = decoded.pixels
            readable[index] = True
            if decoded.converted:
                problems["converted_images"].append(shown)
            if decoded.resized:
                problems["resized_images"].append(shown)
    labels = np.array([file.label for file in files], dtype=np.int64)
    split_of = np.array([file.split for file in files])
    splits: dict[str, Split] = {}
    for split in SPLIT_NAMES:
        keep = readable & (split_of == split)
        splits[split] = Split(pixels[keep], labels[keep])
        counts = splits[split].class_counts()
        for label, class_name in enumerate(CLASS_NAMES):
            if counts[class_name] == 0:
                member = next(file.member for file in files if file.split == split and file.label == label)
                raise DataError(f"CIFAKE class folder has no readable images: {source}/{member.rsplit('/', 1)[0]}")
    return DecodedSource(
        train=splits["train"],
        test=splits["test"],
        issues={kind: len(paths) for kind, paths in problems.items()},
        issue_examples={kind: paths[:ISSUE_EXAMPLES] for kind, paths in problems.items()},
    )


def decode_image(data: bytes) -> DecodedImage:
    """One image file's bytes as (32, 32, 3) uint8 RGB; raises one of UNREADABLE_FILE_ERRORS if it cannot."""
    with Image.open(io.BytesIO(data)) as image:
        image.load()  # decode now, so a truncated file raises here (LOAD_TRUNCATED_IMAGES stays off)
        converted = image.mode != "RGB"
        rgb = to_rgb(image) if converted else image
        resized = rgb.size != (IMAGE_SIZE, IMAGE_SIZE)
        if resized:
            rgb = rgb.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.LANCZOS)  # antialiased when shrinking
        return DecodedImage(np.asarray(rgb, dtype=np.uint8), converted, resized)


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL image as 8-bit RGB; alpha is dropped, 16-bit values are scaled down to 8 bits."""
    if image.mode in SIXTEEN_BIT_MODES:
        # PIL's own convert clips 16-bit values at 255, which turns almost every pixel white.
        values = np.clip(np.asarray(image).astype(np.int64), 0, 65535)
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


def warn_about_issues(decoded: DecodedSource) -> None:
    """One warning per kind of input problem met, with up to ISSUE_EXAMPLES example paths."""
    for kind, description in ISSUE_DESCRIPTIONS.items():
        if decoded.issues[kind]:
            examples = ", ".join(decoded.issue_examples[kind])
            logger.warning("CIFAKE: %d %s, e.g. %s", decoded.issues[kind], description, examples)
