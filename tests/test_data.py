"""Tests of forgery.data: the CIFAKE loader on tiny fixtures built here, its cache, and the validation split."""

from __future__ import annotations

import logging
import os
import re
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from forgery import data
from forgery.data import CLASS_NAMES, Dataset, DataError, Split, load_cifake, split_validation

# Names as in the real release: spaces and parentheses, and the same names in train and test.
# Written in this order on purpose, so the loader's sorting by name is what puts "(1)" first.
FILE_NAMES = ("0000 (2).jpg", "0000 (10).jpg", "0000 (1).jpg")
# Grey level of the first image per split and class, then +5 per image: FAKE dark, REAL bright,
# and test shades unlike train shades, so every image tells where it came from.
BASE_SHADES = {("train", "FAKE"): 10, ("train", "REAL"): 200, ("test", "FAKE"): 60, ("test", "REAL"): 150}
JPEG_TOLERANCE = 2  # grey levels a uniform JPEG may be off by after decoding


# Every key load_cifake reports, spelled out here so that adding or dropping one is a deliberate change.
ISSUE_KEYS = (
    "skipped_files",
    "converted_images",
    "resized_images",
    "oversized_images",
    "read_errors",
    "outside_root_links",
    "dangling_links",
    "unsafe_zip_names",
    "passed_over",
)


def issue_counts(**counts: int) -> dict[str, int]:
    """The full Dataset.issues dict: the given counts, 0 for every other key."""
    assert set(counts) <= set(ISSUE_KEYS), counts
    return {key: counts.get(key, 0) for key in ISSUE_KEYS}


def shade(split: str, class_name: str, index: int) -> int:
    """Grey level of the fixture image written index-th into split/class_name."""
    return BASE_SHADES[(split, class_name)] + 5 * index


def build_cifake(root: Path) -> Path:
    """A tiny Kaggle-layout CIFAKE folder: three uniform grey 32x32 JPEGs per split and class."""
    for split, class_name in BASE_SHADES:
        folder = root / split / class_name
        folder.mkdir(parents=True)
        for index, name in enumerate(FILE_NAMES):
            grey = shade(split, class_name, index)
            Image.new("RGB", (32, 32), (grey, grey, grey)).save(folder / name, format="JPEG", quality=95)
    return root


def zip_folder(folder: Path, archive: Path, top_level: str) -> Path:
    """Zip a folder's files under `top_level` ("" or "name/"), in reverse order so sorting is the loader's job."""
    with zipfile.ZipFile(archive, "w") as zipped:
        for path in sorted(folder.rglob("*"), reverse=True):
            if path.is_file():
                zipped.write(path, top_level + path.relative_to(folder).as_posix())
    return archive


def assert_same_dataset(first: Dataset, second: Dataset) -> None:
    """Every split's images and labels are identical, in the same order."""
    for split_name in ("train", "val", "test"):
        np.testing.assert_array_equal(getattr(first, split_name).images, getattr(second, split_name).images)
        np.testing.assert_array_equal(getattr(first, split_name).labels, getattr(second, split_name).labels)


def grey_levels(images: np.ndarray) -> np.ndarray:
    """Mean grey level per image."""
    return images.reshape(len(images), -1).mean(axis=1)


@pytest.fixture
def cache_dir(tmp_path: Path) -> str:
    """A cache folder of its own per test, never the user's ~/.cache."""
    return str(tmp_path / "cache")


@pytest.fixture
def cifake(tmp_path: Path) -> Path:
    """The tiny CIFAKE folder."""
    return build_cifake(tmp_path / "cifake")


@pytest.fixture
def count_decodes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Wrap decode_image to count its calls; the list holds one entry per decoded file."""
    calls: list[int] = []
    real_decode = data.decode_image

    def counting_decode(file_bytes: bytes) -> data.DecodedImage:
        calls.append(1)
        return real_decode(file_bytes)

    monkeypatch.setattr(data, "decode_image", counting_decode)
    return calls


def forbid_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any further decode fail the test."""

    def fail(file_bytes: bytes) -> data.DecodedImage:
        raise AssertionError("decode_image was called")

    monkeypatch.setattr(data, "decode_image", fail)


# ----- layout, labels and order -----


def test_labels_come_from_class_folders(cifake: Path, cache_dir: str) -> None:
    dataset = load_cifake(str(cifake), val_fraction=0.34, seed=0, cache_dir=cache_dir)

    assert dataset.name == "cifake"
    assert dataset.counts() == {
        "train": {"FAKE": 2, "REAL": 2, "total": 4},
        "val": {"FAKE": 1, "REAL": 1, "total": 2},
        "test": {"FAKE": 3, "REAL": 3, "total": 6},
    }
    for split in (dataset.train, dataset.val):
        levels = grey_levels(split.images)
        assert np.all(levels[split.labels == CLASS_NAMES.index("FAKE")] <= shade("train", "FAKE", 2) + 2)
        assert np.all(levels[split.labels == CLASS_NAMES.index("REAL")] >= shade("train", "REAL", 0) - 2)
    assert dataset.issues == issue_counts()


def test_test_split_comes_from_test_folder_sorted_by_name(cifake: Path, cache_dir: str) -> None:
    dataset = load_cifake(str(cifake), cache_dir=cache_dir)

    by_name = sorted(range(len(FILE_NAMES)), key=lambda index: FILE_NAMES[index])
    expected = [shade("test", class_name, index) for class_name in CLASS_NAMES for index in by_name]
    np.testing.assert_allclose(grey_levels(dataset.test.images), expected, atol=JPEG_TOLERANCE)
    np.testing.assert_array_equal(dataset.test.labels, [0, 0, 0, 1, 1, 1])


@pytest.mark.parametrize("top_level", ["", "CIFAKE/"], ids=["zip-root", "zip-top-level-folder"])
def test_zip_gives_the_same_arrays_as_the_folder(cifake: Path, tmp_path: Path, top_level: str) -> None:
    archive = zip_folder(cifake, tmp_path / "cifake.zip", top_level)
    if top_level:
        with zipfile.ZipFile(archive, "a") as zipped:  # what macOS's Finder adds; must not count as a folder
            zipped.writestr(f"__MACOSX/{top_level}train/REAL/._0000 (1).jpg", b"resource fork")

    from_folder = load_cifake(str(cifake), cache_dir=str(tmp_path / "cache-folder"))
    from_zip = load_cifake(str(archive), cache_dir=str(tmp_path / "cache-zip"))

    assert_same_dataset(from_folder, from_zip)
    assert from_zip.issues == from_folder.issues


@pytest.mark.parametrize("top_level", ["", "CIFAKE\\"], ids=["zip-root", "zip-top-level-folder"])
def test_a_zip_with_backslash_separated_names_gives_the_same_arrays(cifake: Path, tmp_path: Path, top_level: str) -> None:
    archive = tmp_path / "powershell.zip"
    with zipfile.ZipFile(archive, "w") as zipped:  # as Windows PowerShell 5's Compress-Archive names members
        for path in sorted(cifake.rglob("*"), reverse=True):
            if path.is_file():
                zipped.write(path, top_level + "\\".join(path.relative_to(cifake).parts))

    from_folder = load_cifake(str(cifake), cache_dir=str(tmp_path / "cache-folder"))
    from_zip = load_cifake(str(archive), cache_dir=str(tmp_path / "cache-zip"))

    assert_same_dataset(from_folder, from_zip)
    assert from_zip.issues == from_folder.issues


def test_root_with_tilde_is_expanded(cifake: Path, cache_dir: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(cifake.parent))

    dataset = load_cifake("~/cifake", cache_dir=cache_dir)

    assert len(dataset.test) == 6


def test_hidden_files_are_not_images(cifake: Path, cache_dir: str) -> None:
    (cifake / "train" / "REAL" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")

    dataset = load_cifake(str(cifake), cache_dir=cache_dir)

    assert dataset.issues["skipped_files"] == 0


# ----- bad input: one-line DataError naming the path, before any decoding -----


@pytest.mark.parametrize(
    ("damage", "missing"),
    [
        ("remove-root", "CIFAKE folder not found: {root}"),
        ("remove-test-split", "CIFAKE split folder not found: {root}/test"),
        ("remove-train-real", "CIFAKE class folder not found: {root}/train/REAL"),
        ("empty-test-fake", "CIFAKE class folder is empty: {root}/test/FAKE"),
    ],
)
def test_bad_layout_names_the_path(
    cifake: Path, cache_dir: str, monkeypatch: pytest.MonkeyPatch, damage: str, missing: str
) -> None:
    folders = {
        "remove-root": cifake,
        "remove-test-split": cifake / "test",
        "remove-train-real": cifake / "train" / "REAL",
    }
    if damage == "empty-test-fake":
        for path in (cifake / "test" / "FAKE").iterdir():
            path.unlink()
    else:
        for path in sorted(folders[damage].rglob("*"), reverse=True):
            path.unlink() if path.is_file() else path.rmdir()
        folders[damage].rmdir()
    forbid_decoding(monkeypatch)

    with pytest.raises(DataError) as raised:
        load_cifake(str(cifake), cache_dir=cache_dir)

    assert str(raised.value) == missing.format(root=cifake)


@pytest.mark.parametrize("zipped", [False, True])
@pytest.mark.parametrize(("folder", "renamed"), [("train/REAL", "train/real"), ("test", "Test")])
def test_a_layout_folder_named_in_another_case_is_named_in_the_error(cifake: Path, tmp_path: Path, cache_dir: str, folder: str, renamed: str, zipped: bool) -> None:
    (cifake / folder).rename(cifake / renamed)
    root = zip_folder(cifake, tmp_path / "cifake.zip", "") if zipped else cifake
    kind = "class" if "/" in folder else "split"
    with pytest.raises(DataError, match=f"^CIFAKE {kind} folder not found: {re.escape(str(root / folder))} \\(found {re.escape(renamed)}: folder names are case-sensitive; rename it to {folder.split('/')[-1]}\\)$"):
        load_cifake(str(root), cache_dir=cache_dir)


@pytest.mark.parametrize(
    ("given", "hint"),
    [
        ("train", " (data.root points inside the dataset; the folder holding train/ and test/ is {root})"),
        ("train/REAL", " (data.root points inside the dataset; the folder holding train/ and test/ is {root})"),
        ("..", " (the layout is one folder down: data.root={root})"),
    ],
)
def test_a_root_one_level_off_names_the_root_that_fits(cifake: Path, cache_dir: str, monkeypatch: pytest.MonkeyPatch, given: str, hint: str) -> None:
    forbid_decoding(monkeypatch)
    given_root = (cifake / given).resolve()

    with pytest.raises(DataError) as raised:
        load_cifake(str(given_root), cache_dir=cache_dir)

    assert str(raised.value) == f"CIFAKE split folder not found: {given_root / 'train'}" + hint.format(root=cifake)


def test_bad_zip_layout_names_the_path_inside_the_zip(cifake: Path, tmp_path: Path, cache_dir: str) -> None:
    for path in (cifake / "test" / "REAL").iterdir():
        path.unlink()
    (cifake / "test" / "REAL").rmdir()
    archive = zip_folder(cifake, tmp_path / "cifake.zip", "CIFAKE/")

    with pytest.raises(DataError, match="^CIFAKE class folder not found: .*cifake.zip/CIFAKE/test/REAL$"):
        load_cifake(str(archive), cache_dir=cache_dir)


@pytest.mark.parametrize("locked", ["", "test", "train/FAKE"])
def test_a_folder_this_user_may_not_search_is_one_line(cifake: Path, cache_dir: str, monkeypatch: pytest.MonkeyPatch, locked: str) -> None:
    # Python raises PermissionError from is_dir() on a path below a folder without search permission
    # (root may search any, so the refusal is made here).
    real_is_dir = Path.is_dir
    target = cifake / locked if locked else cifake

    def is_dir(self: Path) -> bool:
        if self == target or target in self.parents and self != cifake:
            raise PermissionError(13, "Permission denied", str(self))
        return real_is_dir(self)

    monkeypatch.setattr(Path, "is_dir", is_dir)
    with pytest.raises(DataError, match=f"^CIFAKE folder cannot be read: {re.escape(str(target))}.* \\(Permission denied\\)$"):
        load_cifake(str(cifake), cache_dir=cache_dir)


def test_root_that_is_neither_folder_nor_zip(tmp_path: Path, cache_dir: str) -> None:
    tarball = tmp_path / "cifake.tar.gz"
    tarball.write_bytes(b"not a folder")

    with pytest.raises(DataError, match="must be a folder or a .zip file"):
        load_cifake(str(tarball), cache_dir=cache_dir)


def test_file_named_zip_that_is_no_zip(tmp_path: Path, cache_dir: str) -> None:
    fake_zip = tmp_path / "cifake.zip"
    fake_zip.write_bytes(b"PK but not really")

    with pytest.raises(DataError, match="CIFAKE zip cannot be read: .*cifake.zip"):
        load_cifake(str(fake_zip), cache_dir=cache_dir)


def test_bad_val_fraction_fails_before_decoding(cifake: Path, cache_dir: str, monkeypatch: pytest.MonkeyPatch) -> None:
    forbid_decoding(monkeypatch)

    with pytest.raises(DataError, match="val_fraction"):
        load_cifake(str(cifake), val_fraction=1.0, cache_dir=cache_dir)


@pytest.mark.parametrize("fraction", [0.0, 1.5])
def test_bad_train_fraction_fails_before_decoding(cifake: Path, cache_dir: str, monkeypatch: pytest.MonkeyPatch, fraction: float) -> None:
    forbid_decoding(monkeypatch)

    with pytest.raises(DataError, match="^data.train_fraction must be above 0 and at most 1"):
        load_cifake(str(cifake), train_fraction=fraction, cache_dir=cache_dir)


def test_train_fraction_keeps_nested_stratified_subsets_and_whole_val_and_test(cifake: Path, cache_dir: str) -> None:
    whole = load_cifake(str(cifake), val_fraction=0.34, seed=0, cache_dir=cache_dir)
    half = load_cifake(str(cifake), val_fraction=0.34, seed=0, cache_dir=cache_dir, train_fraction=0.5)

    assert half.counts()["train"] == {"FAKE": 1, "REAL": 1, "total": 2}
    assert half.counts()["val"] == whole.counts()["val"] and half.counts()["test"] == whole.counts()["test"]
    np.testing.assert_array_equal(half.val.images, whole.val.images)
    np.testing.assert_array_equal(half.test.images, whole.test.images)
    # Each kept image is one of the whole split's, with its label: a subset, not a resample.
    rows = {image.tobytes(): label for image, label in zip(whole.train.images, whole.train.labels)}
    assert all(rows[image.tobytes()] == label for image, label in zip(half.train.images, half.train.labels))


def test_keep_fraction_is_nested_and_keeps_one_image_per_class() -> None:
    labels = np.array([0, 1] * 50)
    images = np.arange(100, dtype=np.uint8).reshape(100, 1, 1, 1) * np.ones((1, 32, 32, 3), dtype=np.uint8)
    split = Split(images, labels)

    quarter, half = data.keep_fraction(split, 0.25), data.keep_fraction(split, 0.5)
    tiny = data.keep_fraction(split, 0.001)

    assert quarter.class_counts() == {"FAKE": 12, "REAL": 12}  # round(12.5)
    assert half.class_counts() == {"FAKE": 25, "REAL": 25}
    assert set(quarter.images[:, 0, 0, 0]) < set(half.images[:, 0, 0, 0])
    assert tiny.class_counts() == {"FAKE": 1, "REAL": 1}
    assert data.keep_fraction(split, 1.0) is split


def test_unreadable_files_are_skipped_counted_and_logged(
    cifake: Path, cache_dir: str, caplog: pytest.LogCaptureFixture
) -> None:
    real = cifake / "train" / "REAL"
    (real / "0001 (1).jpg").write_bytes(b"")
    intact = (real / FILE_NAMES[0]).read_bytes()
    (real / "0001 (2).jpg").write_bytes(intact[: len(intact) // 2])
    (real / "0001 (3).jpg").write_text("this is not an image")
    caplog.set_level(logging.WARNING, logger="forgery.data")

    dataset = load_cifake(str(cifake), cache_dir=cache_dir)

    assert dataset.issues == issue_counts(skipped_files=3)
    assert dataset.train.class_counts()["REAL"] + dataset.val.class_counts()["REAL"] == len(FILE_NAMES)
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "3 unreadable files skipped" in warnings[0] and "0001 (2).jpg" in warnings[0]


def test_class_with_only_unreadable_files_is_an_error(cifake: Path, cache_dir: str) -> None:
    for path in (cifake / "test" / "REAL").iterdir():
        path.write_bytes(b"")

    with pytest.raises(DataError, match=f"no readable images: {cifake}/test/REAL$"):
        load_cifake(str(cifake), cache_dir=cache_dir)


def rgb48_png(value: int, side: int = 32) -> bytes:
    """A PNG of 16 bits per colour channel (which PIL opens as 8-bit RGB), every sample `value`."""
    row = b"\x00" + value.to_bytes(2, "big") * 3 * side  # filter type 0, then big-endian samples

    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    header = side.to_bytes(4, "big") * 2 + bytes([16, 2, 0, 0, 0])  # bit depth 16, colour type 2 (RGB)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(row * side)) + chunk(b"IEND", b"")


def test_other_modes_are_converted_and_other_sizes_resized(
    cifake: Path, cache_dir: str, caplog: pytest.LogCaptureFixture
) -> None:
    fake = cifake / "test" / "FAKE"
    Image.new("L", (32, 32), 30).save(fake / "grey (1).jpg", format="JPEG", quality=95)
    Image.new("RGBA", (32, 32), (30, 30, 30, 128)).save(fake / "alpha (1).png")
    Image.new("RGB", (32, 32), (30, 30, 30)).convert("P").save(fake / "palette (1).png")
    Image.fromarray(np.full((32, 32), 30 * 257, dtype=np.uint16)).save(fake / "sixteen bit (1).png")
    (fake / "sixteen bit rgb (1).png").write_bytes(rgb48_png(30 * 257))
    Image.new("RGB", (64, 48), (30, 30, 30)).save(fake / "large (1).png")
    caplog.set_level(logging.WARNING, logger="forgery.data")

    dataset = load_cifake(str(cifake), cache_dir=cache_dir)

    assert dataset.issues == issue_counts(converted_images=5, resized_images=1)
    assert dataset.test.class_counts() == {"FAKE": 9, "REAL": 3}
    levels = grey_levels(dataset.test.images[dataset.test.labels == CLASS_NAMES.index("FAKE")])
    # The six added files all hold grey 30; a 16-bit file clipped by PIL would read 255 instead.
    assert np.sum(np.abs(levels - 30) <= JPEG_TOLERANCE) == 6, levels
    warnings = " ".join(record.getMessage() for record in caplog.records if record.levelno == logging.WARNING)
    assert "5 images converted to RGB" in warnings and "sixteen bit (1).png" in warnings and "sixteen bit rgb (1).png" in warnings
    assert "1 images resized to 32x32" in warnings and "large (1).png" in warnings


# ----- the cache -----


def test_second_load_reads_the_cache_instead_of_decoding(
    cifake: Path, cache_dir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = load_cifake(str(cifake), cache_dir=cache_dir)
    forbid_decoding(monkeypatch)

    second = load_cifake(str(cifake), cache_dir=cache_dir)

    assert_same_dataset(first, second)
    entries = list(Path(cache_dir).iterdir())
    assert len(entries) == 1 and entries[0].name.startswith("cifake-")  # no staging folder left behind
    assert sorted(path.name for path in entries[0].iterdir()) == [
        "meta.json",
        "test_images.npy",
        "test_labels.npy",
        "train_images.npy",
        "train_labels.npy",
    ]


def test_cache_dir_defaults_to_the_environment_variable(
    cifake: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FORGERY_CACHE_DIR", str(tmp_path / "from-env"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # should the variable be ignored, still not the real ~

    load_cifake(str(cifake))

    assert [path.name[:7] for path in (tmp_path / "from-env").iterdir()] == ["cifake-"]


def test_issue_counts_and_warnings_survive_the_cache(
    cifake: Path, cache_dir: str, caplog: pytest.LogCaptureFixture
) -> None:
    (cifake / "train" / "FAKE" / "0001 (1).jpg").write_bytes(b"")
    load_cifake(str(cifake), cache_dir=cache_dir)
    caplog.clear()
    caplog.set_level(logging.WARNING, logger="forgery.data")

    cached = load_cifake(str(cifake), cache_dir=cache_dir)

    assert cached.issues["skipped_files"] == 1
    assert any("0001 (1).jpg" in record.getMessage() for record in caplog.records)


def test_warnings_from_the_cache_name_where_the_files_are_now(
    tmp_path: Path, cache_dir: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = build_cifake(tmp_path / "first" / "cifake")
    (first / "train" / "FAKE" / "0001 (1).jpg").write_bytes(b"")
    load_cifake(str(first), cache_dir=cache_dir)
    moved = tmp_path / "moved" / "cifake"
    moved.parent.mkdir()
    first.rename(moved)  # a rename keeps every size and mtime, so the key and its entry stay the same
    forbid_decoding(monkeypatch)
    caplog.clear()
    caplog.set_level(logging.WARNING, logger="forgery.data")

    cached = load_cifake(str(moved), cache_dir=cache_dir)

    assert cached.issues == issue_counts(skipped_files=1)
    (line,) = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert f"{moved}/train/FAKE/0001 (1).jpg" in line and str(first) not in line


def test_a_modified_file_gives_a_new_key(cifake: Path, cache_dir: str, count_decodes: list[int]) -> None:
    first = load_cifake(str(cifake), cache_dir=cache_dir)
    changed = cifake / "test" / "REAL" / FILE_NAMES[0]
    Image.new("RGB", (32, 32), (250, 250, 250)).save(changed, format="JPEG", quality=95)
    stat = changed.stat()
    os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # coarse clocks could tie
    count_decodes.clear()

    second = load_cifake(str(cifake), cache_dir=cache_dir)

    assert len(count_decodes) == 4 * len(FILE_NAMES)
    assert not np.array_equal(first.test.images, second.test.images)
    assert len(list(Path(cache_dir).glob("cifake-*"))) == 2


def test_a_modified_zip_member_gives_a_new_key(
    cifake: Path, tmp_path: Path, cache_dir: str, count_decodes: list[int]
) -> None:
    archive = zip_folder(cifake, tmp_path / "cifake.zip", "")
    load_cifake(str(archive), cache_dir=cache_dir)
    Image.new("RGB", (32, 32), (250, 250, 250)).save(cifake / "test" / "REAL" / FILE_NAMES[0], format="JPEG")
    zip_folder(cifake, archive, "")
    count_decodes.clear()

    load_cifake(str(archive), cache_dir=cache_dir)

    assert len(count_decodes) == 4 * len(FILE_NAMES)


@pytest.mark.parametrize(
    "damage",
    ["truncate-train-images", "garbage-meta", "delete-test-labels", "labels-disagree-with-meta"],
)
def test_a_damaged_cache_entry_is_rebuilt(
    cifake: Path,
    cache_dir: str,
    count_decodes: list[int],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    damage: str,
) -> None:
    first = load_cifake(str(cifake), cache_dir=cache_dir)
    (entry,) = Path(cache_dir).glob("cifake-*")
    if damage == "truncate-train-images":
        content = (entry / "train_images.npy").read_bytes()
        (entry / "train_images.npy").write_bytes(content[: len(content) // 2])
    elif damage == "garbage-meta":
        (entry / "meta.json").write_text("{not json")
    elif damage == "delete-test-labels":
        (entry / "test_labels.npy").unlink()
    else:  # arrays of the right shapes that disagree with meta.json's counts
        np.save(entry / "train_labels.npy", np.zeros_like(np.load(entry / "train_labels.npy")))
    count_decodes.clear()
    caplog.set_level(logging.WARNING, logger="forgery.data")

    rebuilt = load_cifake(str(cifake), cache_dir=cache_dir)

    assert len(count_decodes) == 4 * len(FILE_NAMES)
    assert_same_dataset(first, rebuilt)
    assert any("ignoring unreadable CIFAKE cache entry" in record.getMessage() for record in caplog.records)
    forbid_decoding(monkeypatch)
    assert_same_dataset(first, load_cifake(str(cifake), cache_dir=cache_dir))


def test_a_failed_cache_write_leaves_no_entry(
    cifake: Path, cache_dir: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real_save = np.save
    saved: list[str] = []

    def save_then_fail(path: Path, array: np.ndarray, allow_pickle: bool = True) -> None:
        saved.append(str(path))
        if len(saved) == 3:
            raise OSError("No space left on device")
        real_save(path, array, allow_pickle=allow_pickle)

    monkeypatch.setattr(data.np, "save", save_then_fail)
    caplog.set_level(logging.WARNING, logger="forgery.data")

    dataset = load_cifake(str(cifake), cache_dir=cache_dir)

    assert len(dataset.test) == 6
    assert list(Path(cache_dir).iterdir()) == []
    assert any("could not write CIFAKE cache entry" in record.getMessage() for record in caplog.records)


# ----- the validation split -----


def ids(split: Split) -> np.ndarray:
    """The id each test image carries in its first pixel."""
    return split.images[:, 0, 0, 0].astype(np.int64)


def test_the_fingerprint_changes_with_any_pixel_label_or_issue_count() -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(8, 32, 32, 3), dtype=np.uint8)
    labels = np.array([0, 1] * 4)

    def dataset(pixels: np.ndarray = images, classes: np.ndarray = labels, **issues: int) -> Dataset:
        split = Split(pixels, classes)
        return Dataset(name="cifake", train=split, val=Split(images[:2], labels[:2]), test=Split(images[:2], labels[:2]), issues=issues)

    reference = data.fingerprint(dataset(skipped_files=0))
    assert data.fingerprint(dataset(images.copy(), labels.copy(), skipped_files=0)) == reference  # the same data, other arrays
    changed = images.copy()
    changed[3, 5, 7, 1] ^= 1
    assert data.fingerprint(dataset(changed, skipped_files=0)) != reference
    assert data.fingerprint(dataset(classes=labels[::-1].copy(), skipped_files=0)) != reference
    assert data.fingerprint(dataset(skipped_files=1)) != reference


def test_split_validation_is_stratified_seeded_and_a_partition() -> None:
    labels = np.array([0] * 100 + [1] * 50, dtype=np.int64)
    images = np.zeros((150, 32, 32, 3), dtype=np.uint8)
    images[:, 0, 0, 0] = np.arange(150)  # each image's own id, to follow it through the split

    train, val = split_validation(images, labels, fraction=0.2, seed=7)
    again_train, again_val = split_validation(images, labels, fraction=0.2, seed=7)
    _, other_val = split_validation(images, labels, fraction=0.2, seed=8)

    assert val.class_counts() == {"FAKE": 20, "REAL": 10}
    assert train.class_counts() == {"FAKE": 80, "REAL": 40}
    assert sorted(np.concatenate([ids(train), ids(val)])) == list(range(150))
    np.testing.assert_array_equal(labels[ids(val)], val.labels)  # each image keeps its own label
    np.testing.assert_array_equal(ids(val), ids(again_val))
    np.testing.assert_array_equal(ids(train), ids(again_train))
    assert set(ids(val)) != set(ids(other_val))


def test_the_cache_key_changes_with_pillows_version(cifake: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A file skipped for want of a codec, or decoded differently, by one Pillow is not served to another.
    import PIL

    listing = data.list_cifake_files(cifake)
    before = data.source_fingerprint(listing)
    monkeypatch.setattr(PIL, "__version__", "0.0.1")
    assert data.source_fingerprint(listing) != before


def test_copies_of_one_image_stay_on_one_side_of_the_validation_split() -> None:
    # CIFAKE's training split holds byte-identical FAKE images: a copy in validation would be scored on an
    # image the model trained on.
    labels = np.array([0] * 100 + [1] * 50, dtype=np.int64)
    images = np.zeros((150, 32, 32, 3), dtype=np.uint8)
    images[:, 0, 0, 0] = np.arange(150)
    images[:60:2, 0, 0, 0] = np.arange(1, 60, 2)  # FAKE images 0, 2, ... copy 1, 3, ...: 30 pairs
    images[100:110, 0, 0, 0] = 100  # ten copies of one REAL image
    for seed in range(5):
        train, val = split_validation(images, labels, fraction=0.2, seed=seed)
        assert not set(ids(train)) & set(ids(val)), seed
        assert len(train) + len(val) == 150
        assert 20 <= val.class_counts()["FAKE"] <= 21 and 10 <= val.class_counts()["REAL"] <= 19, val.class_counts()
    again = split_validation(images, labels, fraction=0.2, seed=3)[1]
    np.testing.assert_array_equal(ids(again), ids(split_validation(images, labels, fraction=0.2, seed=3)[1]))


def test_a_class_of_copies_of_one_image_cannot_be_split() -> None:
    labels = np.array([0] * 4 + [1] * 4, dtype=np.int64)
    images = np.zeros((8, 32, 32, 3), dtype=np.uint8)
    images[4:, 0, 0, 0] = np.arange(4)  # REAL distinct, FAKE four copies of one image
    with pytest.raises(DataError, match="^the training split's 4 FAKE images are copies of one image; the validation split needs 2 different ones$"):
        split_validation(images, labels, fraction=0.5, seed=0)


def test_copies_in_the_data_are_counted_and_warned(cifake: Path, cache_dir: str, caplog: pytest.LogCaptureFixture) -> None:
    import shutil

    clean = load_cifake(str(cifake), val_fraction=0.34, seed=0, cache_dir=cache_dir)
    assert clean.issues == issue_counts()  # none: no keys for copies, so earlier fingerprints still match
    fakes = cifake / "train" / "FAKE"
    shutil.copy(fakes / FILE_NAMES[0], fakes / "copy (1).jpg")
    shutil.copy(cifake / "test" / "REAL" / FILE_NAMES[1], cifake / "train" / "REAL" / "from test.jpg")
    with caplog.at_level(logging.WARNING, logger="forgery.data"):
        dataset = load_cifake(str(cifake), val_fraction=0.34, seed=0, cache_dir=cache_dir)
    assert dataset.issues == {**issue_counts(), "duplicate_train_images": 1, "test_images_in_train": 1}
    assert "CIFAKE duplicate_train_images: 1 training images with the same pixels as another" in caplog.text
    assert "CIFAKE test_images_in_train: 1 test images with the same pixels as a training image" in caplog.text
    assert not set(map(bytes, data.image_digests(dataset.val.images))) & set(map(bytes, data.image_digests(dataset.train.images)))


@pytest.mark.parametrize(("fakes", "reals"), [(3, 1), (2, 0), (0, 5)])
def test_split_validation_refuses_a_class_with_fewer_than_two_images(fakes: int, reals: int) -> None:
    labels = np.array([CLASS_NAMES.index("FAKE")] * fakes + [CLASS_NAMES.index("REAL")] * reals, dtype=np.int64)
    images = np.zeros((len(labels), 32, 32, 3), dtype=np.uint8)
    short = "REAL" if reals < 2 else "FAKE"

    with pytest.raises(DataError, match=f"^the training split has {min(fakes, reals)} {short} image\\(s\\); .* at least 2 per class$"):
        split_validation(images, labels, fraction=0.1, seed=0)


def test_a_class_with_one_training_image_is_a_data_error(cifake: Path, cache_dir: str) -> None:
    for name in FILE_NAMES[1:]:
        (cifake / "train" / "REAL" / name).unlink()

    with pytest.raises(DataError, match="^the training split has 1 REAL image"):
        load_cifake(str(cifake), cache_dir=cache_dir)


# ----- the real 24,000-image sample, when it is there -----


def real_sample() -> Path:
    """The CIFAKE sample beside the project (or $CIFAKE_SAMPLE); skips the test when absent."""
    sample = Path(os.environ.get("CIFAKE_SAMPLE") or Path(__file__).resolve().parents[2] / "shared" / "cifake-sample")
    if not (sample / "train").is_dir():
        pytest.skip(f"CIFAKE sample not found at {sample}")
    return sample


def test_real_sample_counts_and_cache(cache_dir: str, monkeypatch: pytest.MonkeyPatch) -> None:
    sample = real_sample()

    dataset = load_cifake(str(sample), val_fraction=0.1, seed=0, cache_dir=cache_dir)

    assert dataset.counts() == {
        "train": {"FAKE": 9000, "REAL": 9000, "total": 18000},
        "val": {"FAKE": 1000, "REAL": 1000, "total": 2000},
        "test": {"FAKE": 2000, "REAL": 2000, "total": 4000},
    }
    assert dataset.issues == issue_counts()
    forbid_decoding(monkeypatch)
    assert_same_dataset(dataset, load_cifake(str(sample), val_fraction=0.1, seed=0, cache_dir=cache_dir))
