"""Tests of forgery.data on hostile and broken files: bombs, links out of the root, unreadable files, bad zips."""

from __future__ import annotations

import functools
import io
import logging
import os
import shutil
import struct
import warnings
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from forgery import data
from forgery.data import CLASS_NAMES, DataError, Dataset, ImageTooLarge, decode_image, load_cifake
from tests.test_data import FILE_NAMES, JPEG_TOLERANCE, build_cifake, forbid_decoding, issue_counts, shade, zip_folder

FAKE, REAL = CLASS_NAMES.index("FAKE"), CLASS_NAMES.index("REAL")
SECRET_SHADE = 255  # the image outside the root: seeing this grey level in a split means it was read


def png_bytes(width: int, height: int) -> bytes:
    """A valid all-black 1-bit PNG of any size: a 20000x20000 one is about 50 KB on disk, 400 MB decoded."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    row = bytes(1 + (width + 7) // 8)  # filter byte 0, then the packed bits
    compressor = zlib.compressobj(9)
    rows_per_block = 1000
    blocks = (row * min(rows_per_block, height - start) for start in range(0, height, rows_per_block))
    pixels = b"".join(compressor.compress(block) for block in blocks)
    pixels += compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # bit depth 1, greyscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


def jpeg_claiming_size(width: int, height: int) -> bytes:
    """A real 16x16 JPEG whose frame header (SOF0) is rewritten to claim width x height."""
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (90, 90, 90)).save(buffer, format="JPEG")
    encoded = bytearray(buffer.getvalue())
    frame = encoded.index(b"\xff\xc0")  # marker, length (2), precision (1), height (2), width (2)
    encoded[frame + 5 : frame + 9] = struct.pack(">HH", height, width)
    return bytes(encoded)


def dds_bytes() -> bytes:
    """A DirectDraw Surface header with a FourCC pixel format of 0, which Pillow's DDS decoder does not implement."""
    header = bytearray(120)
    struct.pack_into("<3I", header, 0, 0, 32, 32)  # flags, height, width
    struct.pack_into("<4I", header, 68, 32, 0x4, 0, 0)  # pixel format: its size, DDPF_FOURCC, FourCC 0, bit count
    return b"DDS " + struct.pack("<I", 124) + bytes(header)


def jpeg_bytes(image: Image.Image) -> bytes:
    """An image saved as a quality-95 JPEG."""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


# Images too large to decode, against each limit: this project's 64 MP, Pillow's warning above ~89 MP and
# its error above ~179 MP.
BOMB_MAKERS: dict[str, Callable[[], bytes]] = {
    "bomb 9000x9000.png": lambda: png_bytes(9000, 9000),  # 81 MP: over our limit, under Pillow's warning
    "bomb 10000x10000.png": lambda: png_bytes(10000, 10000),  # 100 MP: Pillow warns (DecompressionBombWarning)
    "bomb 20000x20000.png": lambda: png_bytes(20000, 20000),  # 400 MP: Pillow raises DecompressionBombError
    "bomb 9000x8000.jpg": lambda: jpeg_claiming_size(9000, 8000),  # 72 MP JPEG: over our limit only
    "bomb 60000x60000.jpg": lambda: jpeg_claiming_size(60000, 60000),  # 3.6 GP JPEG: Pillow's error
}


@functools.cache
def bomb(name: str) -> bytes:
    """The bytes of one of BOMB_MAKERS, built once per session: together they take about a second."""
    return BOMB_MAKERS[name]()


@pytest.fixture
def loaded_sizes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """Sizes Pillow decodes at (once per load call); decoding one over MAX_IMAGE_PIXELS fails the test at once."""
    sizes: list[tuple[int, int]] = []
    real_load = ImageFile.ImageFile.load

    def guarded_load(image: ImageFile.ImageFile):  # type: ignore[no-untyped-def]
        width, height = image.size
        if width * height > data.MAX_IMAGE_PIXELS:
            raise AssertionError(f"decoded a {width}x{height} image")  # not an error the loader catches
        sizes.append((width, height))
        return real_load(image)

    monkeypatch.setattr(ImageFile.ImageFile, "load", guarded_load)
    return sizes


def deny_reading(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """Make reading the file called `name` fail as a chmod 000 file does for a user who is not root."""
    real_read_bytes = Path.read_bytes

    def read_bytes(path: Path) -> bytes:
        if path.name == name:
            raise PermissionError(13, "Permission denied", str(path))
        return real_read_bytes(path)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)


def warning_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The loader's warnings, one message each."""
    return [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]


def levels_by_label(dataset: Dataset, *split_names: str) -> dict[int, list[int]]:
    """Sorted, rounded mean grey level of every image of the given splits, per label."""
    images = np.concatenate([getattr(dataset, name).images for name in split_names])
    labels = np.concatenate([getattr(dataset, name).labels for name in split_names])
    levels = images.reshape(len(images), -1).mean(axis=1)
    return {label: sorted(int(round(level)) for level in levels[labels == label]) for label in (FAKE, REAL)}


def assert_levels(found: list[int], expected: list[int]) -> None:
    """The same grey levels, each within JPEG_TOLERANCE."""
    assert len(found) == len(expected), (found, expected)
    assert np.all(np.abs(np.array(found) - sorted(expected)) <= JPEG_TOLERANCE), (found, expected)


def original_levels(split: str, class_name: str) -> list[int]:
    """Grey levels of the good fixture images of one class folder."""
    return [shade(split, class_name, index) for index in range(len(FILE_NAMES))]


# ----- the corpus: every hostile case in one dataset beside good images -----


@pytest.fixture
def hostile_cifake(tmp_path: Path) -> Path:
    """The tiny CIFAKE folder plus one of every hostile case, each in a known class folder."""
    root = build_cifake(tmp_path / "cifake")
    train_fake, train_real = root / "train" / "FAKE", root / "train" / "REAL"
    test_fake, test_real = root / "test" / "FAKE", root / "test" / "REAL"
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "secret.jpg"
    secret.write_bytes(jpeg_bytes(Image.new("RGB", (32, 32), (SECRET_SHADE,) * 3)))

    # Broken content (skipped_files: 6 with the two links to non-files below).
    intact = (train_real / FILE_NAMES[0]).read_bytes()
    (train_real / "truncated.jpg").write_bytes(intact[: len(intact) // 2])
    (train_real / "empty.jpg").write_bytes(b"")
    (train_real / "text.jpg").write_text("this is not an image\n")
    (train_real / "garbage.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    # Odd but good images (converted_images: 2); grey 120 is no other image's level.
    Image.new("RGB", (32, 32), (120, 120, 120)).convert("P").save(train_real / "palette.png")
    Image.fromarray(np.full((32, 32), 120 * 257, dtype=np.uint16)).save(train_real / "sixteen bit.png")
    # Too big to decode (oversized_images: 5), and big but fine: decoded small via draft (resized_images: 1).
    for name in BOMB_MAKERS:
        (train_fake / name).write_bytes(bomb(name))
    (train_fake / "large.jpg").write_bytes(jpeg_bytes(Image.new("RGB", (2048, 2048), (40, 40, 40))))
    # Symlinks: out of the root twice (outside_root_links: 2), to nothing and in a loop (dangling_links: 3),
    # to a folder and a FIFO inside the root (skipped_files), and one good link inside the root.
    (test_fake / "absolute out.jpg").symlink_to(secret)
    (test_fake / "relative out.jpg").symlink_to(Path("..", "..", "..", "outside", "secret.jpg"))
    (test_fake / "dangling.jpg").symlink_to(root / "test" / "FAKE" / "never written.jpg")
    (test_fake / "loop a.jpg").symlink_to("loop b.jpg")
    (test_fake / "loop b.jpg").symlink_to("loop a.jpg")
    (test_fake / "folder.jpg").symlink_to(Path("..", "..", "train"))
    os.mkfifo(root / "pipe")
    (test_fake / "pipe.jpg").symlink_to(root / "pipe")
    (test_fake / "inside.jpg").symlink_to(Path("..", "..", "train", "FAKE", "0000 (1).jpg"))
    # Not files of a class folder, so never read but counted (passed_over: 4); the FIFO must not block either.
    os.mkfifo(test_fake / "fifo.jpg")
    (train_real / "more").mkdir()
    (train_real / "more" / "nested.jpg").write_bytes(jpeg_bytes(Image.new("RGB", (32, 32), (SECRET_SHADE,) * 3)))
    (root / "train" / "OTHER").mkdir()
    (root / "train" / "OTHER" / "other.jpg").write_bytes(jpeg_bytes(Image.new("RGB", (32, 32), (SECRET_SHADE,) * 3)))
    (root / "train" / "stray (1).jpg").write_bytes(jpeg_bytes(Image.new("RGB", (32, 32), (SECRET_SHADE,) * 3)))  # loose in a split folder
    # Unreadable (read_errors: 1): the test makes reading it fail.
    (test_real / "locked.jpg").write_bytes(jpeg_bytes(Image.new("RGB", (32, 32), (SECRET_SHADE,) * 3)))
    return root


@pytest.mark.timeout(120)  # a FIFO opened for reading would block forever
def test_hostile_corpus_loads_with_every_case_counted(
    hostile_cifake: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    loaded_sizes: list[tuple[int, int]],
) -> None:
    deny_reading(monkeypatch, "locked.jpg")
    caplog.set_level(logging.WARNING, logger="forgery.data")

    dataset = load_cifake(str(hostile_cifake), val_fraction=0.25, cache_dir=str(tmp_path / "cache"))

    # test/FAKE/inside.jpg links to a training image: read, and counted as a test image also in train.
    assert dataset.issues == {"test_images_in_train": 1} | issue_counts(
        skipped_files=6,
        converted_images=2,
        resized_images=1,
        oversized_images=5,
        read_errors=1,
        outside_root_links=2,
        dangling_links=3,
        passed_over=4,
    )
    passed_line = next(line for line in warning_lines(caplog) if line.startswith("CIFAKE passed_over: 4 "))
    assert all(f"{hostile_cifake}/{name}" in passed_line for name in ("test/FAKE/fifo.jpg", "train/REAL/more/", "train/OTHER/", "train/stray (1).jpg"))
    # Every good image is there exactly once, under its own folder's label, and nothing else is.
    train_levels = levels_by_label(dataset, "train", "val")
    assert_levels(train_levels[FAKE], [*original_levels("train", "FAKE"), 40])
    assert_levels(train_levels[REAL], [*original_levels("train", "REAL"), 120, 120])
    test_levels = levels_by_label(dataset, "test")
    linked_level = shade("train", "FAKE", FILE_NAMES.index("0000 (1).jpg"))  # test/FAKE/inside.jpg leads there
    assert_levels(test_levels[FAKE], [*original_levels("test", "FAKE"), linked_level])
    assert_levels(test_levels[REAL], original_levels("test", "REAL"))
    # The 2048x2048 JPEG was decoded at 1/8 scale, and nothing bigger was decoded at all.
    assert (256, 256) in loaded_sizes and max(width * height for width, height in loaded_sizes) == 256 * 256

    lines = warning_lines(caplog)
    nonzero = {key: count for key, count in dataset.issues.items() if count}
    assert len(lines) == len(nonzero)
    for (key, count), line in zip(nonzero.items(), lines):
        assert line.startswith(f"CIFAKE {key}: {count} "), line
        if key in data.ISSUE_KINDS:  # copies are found among decoded pixels, which carry no file names
            assert 1 <= line.count(str(hostile_cifake)) <= data.ISSUE_EXAMPLES, line
    assert lines[0].count(str(hostile_cifake)) == 5  # six skipped files, five examples
    assert "absolute out.jpg" in lines[list(nonzero).index("outside_root_links")]
    assert "loop a.jpg" in lines[list(nonzero).index("dangling_links")]
    assert "locked.jpg" in lines[list(nonzero).index("read_errors")]


def test_hostile_corpus_counts_survive_the_cache(
    hostile_cifake: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = load_cifake(str(hostile_cifake), cache_dir=str(tmp_path / "cache"))
    forbid_decoding(monkeypatch)

    second = load_cifake(str(hostile_cifake), cache_dir=str(tmp_path / "cache"))

    assert second.issues == first.issues and first.issues["outside_root_links"] == 2


# ----- huge images: refused from the header, before any pixel is decoded -----


@pytest.mark.parametrize("name", list(BOMB_MAKERS))
def test_huge_images_are_refused_undecoded(name: str, loaded_sizes: list[tuple[int, int]]) -> None:
    with pytest.raises(ImageTooLarge):
        decode_image(bomb(name))

    assert loaded_sizes == []


def test_our_limit_holds_when_pillows_is_switched_off(
    monkeypatch: pytest.MonkeyPatch, loaded_sizes: list[tuple[int, int]]
) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)

    with pytest.raises(ImageTooLarge, match="20000x20000 pixels"):
        decode_image(bomb("bomb 20000x20000.png"))


def test_pillows_bomb_warning_is_a_refusal_not_a_warning(loaded_sizes: list[tuple[int, int]]) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # Pillow's check comes first and names its own limit (89,478,485 pixels); the refusal names ours.
        with pytest.raises(ImageTooLarge, match=r"^100,000,000 pixels, over the 64,000,000-pixel limit$"):
            decode_image(bomb("bomb 10000x10000.png"))

    assert [warning.category.__name__ for warning in caught] == []


def test_a_lower_limit_set_in_pillow_is_respected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000 * 1000)  # warns above this, refuses above twice this

    with pytest.raises(ImageTooLarge):
        decode_image(png_bytes(1200, 1000))


def test_a_huge_image_is_an_unreadable_file_to_predict() -> None:
    """forgery.predict reports whatever decode_image raises among UNREADABLE_FILE_ERRORS as a bad input."""
    with pytest.raises(data.UNREADABLE_FILE_ERRORS):
        decode_image(bomb("bomb 10000x10000.png"))


def test_an_image_at_the_limit_is_still_decoded(
    monkeypatch: pytest.MonkeyPatch, loaded_sizes: list[tuple[int, int]]
) -> None:
    monkeypatch.setattr(data, "MAX_IMAGE_PIXELS", 400 * 300)
    image = Image.new("RGB", (400, 300), (70, 70, 70))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")

    decoded = decode_image(buffer.getvalue())

    assert decoded.resized and not decoded.converted and abs(decoded.pixels.mean() - 70) < 1
    with pytest.raises(ImageTooLarge):
        decode_image(png_bytes(401, 300))


def test_a_large_jpeg_is_decoded_at_reduced_scale_to_nearly_the_same_pixels(
    loaded_sizes: list[tuple[int, int]],
) -> None:
    ramp = np.linspace(0, 255, 2048, dtype=np.float64)
    channels = [np.add.outer(ramp, ramp) / 2, np.add.outer(ramp, 255 - ramp) / 2, np.tile(ramp, (2048, 1))]
    gradient = np.stack(channels, axis=-1)  # smooth detail in every direction, so scaling errors would show
    content = jpeg_bytes(Image.fromarray(gradient.astype(np.uint8)))

    decoded = decode_image(content)

    assert set(loaded_sizes) == {(256, 256)}  # libjpeg's 1/8 scale, not 2048x2048
    assert decoded.resized and not decoded.converted
    full = np.asarray(Image.open(io.BytesIO(content)).resize((32, 32), Image.Resampling.LANCZOS), dtype=np.float64)
    assert np.abs(decoded.pixels - full).mean() < 2.0  # what the full decode gives, to within JPEG noise


def test_a_small_jpeg_is_decoded_in_full(loaded_sizes: list[tuple[int, int]]) -> None:
    decoded = decode_image(jpeg_bytes(Image.new("RGB", (200, 300), (80, 80, 80))))

    assert set(loaded_sizes) == {(200, 300)} and decoded.resized


@pytest.mark.parametrize("layout", ["folder", "zip"])
def test_files_over_the_byte_limit_are_never_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, layout: str
) -> None:
    root = build_cifake(tmp_path / "cifake")
    (root / "train" / "REAL" / "huge file.jpg").write_bytes(bytes(5000))
    source = zip_folder(root, tmp_path / "cifake.zip", "") if layout == "zip" else root
    monkeypatch.setattr(data, "MAX_FILE_BYTES", 4000)  # fixture JPEGs are under 1 KB

    dataset = load_cifake(str(source), cache_dir=str(tmp_path / "cache"))

    assert dataset.issues == issue_counts(oversized_images=1)


# ----- symlinks: followed inside the root, counted and never read outside it -----


def test_a_link_added_later_is_counted_not_served_from_the_cache(tmp_path: Path) -> None:
    root = build_cifake(tmp_path / "cifake")
    (tmp_path / "secret.jpg").write_bytes(jpeg_bytes(Image.new("RGB", (32, 32), (SECRET_SHADE,) * 3)))
    load_cifake(str(root), cache_dir=str(tmp_path / "cache"))
    (root / "train" / "FAKE" / "out.jpg").symlink_to(tmp_path / "secret.jpg")

    dataset = load_cifake(str(root), cache_dir=str(tmp_path / "cache"))

    assert dataset.issues == issue_counts(outside_root_links=1)


def test_a_change_to_a_linked_file_gives_a_new_key(tmp_path: Path) -> None:
    root = build_cifake(tmp_path / "cifake")
    target = root / "extras" / "picture.jpg"  # inside the root, yet in no class folder: only the link lists it
    target.parent.mkdir()
    target.write_bytes((root / "train" / "FAKE" / FILE_NAMES[0]).read_bytes())
    (root / "test" / "FAKE" / "linked.jpg").symlink_to(Path("..", "..", "extras", "picture.jpg"))
    first = load_cifake(str(root), cache_dir=str(tmp_path / "cache"))
    target.write_bytes(jpeg_bytes(Image.new("RGB", (32, 32), (SECRET_SHADE,) * 3)))
    os.utime(target, ns=(target.stat().st_atime_ns, target.stat().st_mtime_ns + 1_000_000_000))  # coarse clocks

    second = load_cifake(str(root), cache_dir=str(tmp_path / "cache"))

    assert max(levels_by_label(second, "test")[FAKE]) == SECRET_SHADE != max(levels_by_label(first, "test")[FAKE])


def test_a_class_folder_linked_inside_the_root_is_followed(tmp_path: Path) -> None:
    root = build_cifake(tmp_path / "cifake")
    (root / "train" / "REAL").rename(root / "moved REAL")
    (root / "train" / "REAL").symlink_to(Path("..", "moved REAL"))

    dataset = load_cifake(str(root), cache_dir=str(tmp_path / "cache"))

    assert dataset.issues == issue_counts()
    assert dataset.train.class_counts()["REAL"] + dataset.val.class_counts()["REAL"] == len(FILE_NAMES)


def test_a_class_folder_linked_outside_the_root_is_never_read(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = build_cifake(tmp_path / "cifake")
    (root / "test" / "REAL").rename(tmp_path / "elsewhere")
    (root / "test" / "REAL").symlink_to(tmp_path / "elsewhere")
    caplog.set_level(logging.WARNING, logger="forgery.data")

    with pytest.raises(DataError, match=f"no readable images: {root}/test/REAL$"):
        load_cifake(str(root), cache_dir=str(tmp_path / "cache"))

    assert any(line.startswith("CIFAKE outside_root_links: 3 ") for line in warning_lines(caplog))


def test_a_class_folder_linked_outside_the_root_is_not_served_from_another_roots_cache(tmp_path: Path) -> None:
    # The same files inside a root of their own are a good dataset, cached; through a link that leads
    # out of this root they are never read, whatever the cache holds.
    elsewhere = build_cifake(tmp_path / "elsewhere")
    load_cifake(str(elsewhere), cache_dir=str(tmp_path / "cache"))
    root = tmp_path / "cifake"
    shutil.copytree(elsewhere, root, symlinks=True)  # copystat keeps sizes and times: the listings match
    shutil.rmtree(root / "test" / "REAL")
    (root / "test" / "REAL").symlink_to(elsewhere / "test" / "REAL")

    with pytest.raises(DataError, match=f"no readable images: {root}/test/REAL$"):
        load_cifake(str(root), cache_dir=str(tmp_path / "cache"))


def test_a_root_reached_through_a_link_is_fine(tmp_path: Path) -> None:
    build_cifake(tmp_path / "real place")
    (tmp_path / "alias").symlink_to(tmp_path / "real place")

    dataset = load_cifake(str(tmp_path / "alias"), cache_dir=str(tmp_path / "cache"))

    assert dataset.issues == issue_counts() and len(dataset.test) == 6


# ----- file formats and names -----


@pytest.mark.parametrize("image_format", data.IMAGE_FORMATS)
def test_every_photo_format_is_decoded(image_format: str) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (70, 70, 70)).save(buffer, format=image_format)

    decoded = decode_image(buffer.getvalue())

    assert abs(int(decoded.pixels.mean()) - 70) <= JPEG_TOLERANCE


def test_a_file_in_another_format_is_skipped_by_the_loader_and_predict(tmp_path: Path) -> None:
    from forgery.predict import read_input

    root = build_cifake(tmp_path / "cifake")
    evil = root / "train" / "REAL" / "evil.jpg"  # Pillow knows it as DDS whatever its name, and would raise NotImplementedError
    evil.write_bytes(dds_bytes())

    dataset = load_cifake(str(root), cache_dir=str(tmp_path / "cache"))

    assert dataset.issues == issue_counts(skipped_files=1)
    assert len(dataset.train) + len(dataset.val) == 6
    assert read_input(evil).error == "not an image file (or a format Pillow cannot read)"


def test_a_file_name_that_is_not_utf8_is_loaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = build_cifake(tmp_path / "cifake")
    odd_name = os.fsdecode(b"bad\xffname.jpg")  # Latin-1 from an old camera or a Windows share: not UTF-8
    (root / "train" / "REAL" / FILE_NAMES[0]).rename(root / "train" / "REAL" / odd_name)
    (root / "train" / "FAKE" / os.fsdecode(b"empty\xff.jpg")).write_bytes(b"")

    first = load_cifake(str(root), cache_dir=str(tmp_path / "cache"))
    forbid_decoding(monkeypatch)
    cached = load_cifake(str(root), cache_dir=str(tmp_path / "cache"))

    assert first.issues == cached.issues == issue_counts(skipped_files=1)
    assert_levels(levels_by_label(cached, "train", "val")[REAL], original_levels("train", "REAL"))


# ----- unreadable files and folders -----


def test_a_file_that_cannot_be_read_is_skipped_and_counted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = build_cifake(tmp_path / "cifake")
    deny_reading(monkeypatch, FILE_NAMES[1])  # one name, in all four class folders

    dataset = load_cifake(str(root), cache_dir=str(tmp_path / "cache"))

    assert dataset.issues == issue_counts(read_errors=4)
    assert len(dataset.test) == 4 and len(dataset.train) + len(dataset.val) == 4


def fail_zip_read(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """Make reading the zip member called `name` fail as a damaged copy of the archive does."""
    real_read = zipfile.ZipFile.read

    def read(archive: zipfile.ZipFile, member: str, pwd: bytes | None = None) -> bytes:
        if member == name:
            raise zipfile.BadZipFile(f"Bad CRC-32 for file {name!r}")
        return real_read(archive, member, pwd)

    monkeypatch.setattr(zipfile.ZipFile, "read", read)


@pytest.mark.parametrize("source", ["folder", "zip"])
def test_a_file_that_could_not_be_read_is_read_again_once_it_can_be(tmp_path: Path, source: str) -> None:
    root = build_cifake(tmp_path / "cifake")
    if source == "zip":
        root = zip_folder(root, tmp_path / "cifake.zip", "")
    with pytest.MonkeyPatch.context() as patch:
        if source == "zip":
            fail_zip_read(patch, f"test/FAKE/{FILE_NAMES[0]}")
        else:
            deny_reading(patch, FILE_NAMES[0])
        failed = load_cifake(str(root), cache_dir=str(tmp_path / "cache"))
    assert sum(failed.issues.values()) > 0  # read_errors for the folder, skipped_files for the damaged member

    fixed = load_cifake(str(root), cache_dir=str(tmp_path / "cache"))

    assert fixed.issues == issue_counts() and len(fixed.test) == 6


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads chmod 000 files anyway")
def test_a_chmod_000_file_is_skipped_and_counted(tmp_path: Path) -> None:
    root = build_cifake(tmp_path / "cifake")
    (root / "test" / "FAKE" / FILE_NAMES[0]).chmod(0)

    dataset = load_cifake(str(root), cache_dir=str(tmp_path / "cache"))

    assert dataset.issues == issue_counts(read_errors=1)
    assert dataset.test.class_counts() == {"FAKE": 2, "REAL": 3}


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root lists chmod 000 folders anyway")
def test_a_chmod_000_class_folder_is_a_data_error(tmp_path: Path) -> None:
    root = build_cifake(tmp_path / "cifake")
    (root / "test" / "FAKE").chmod(0)
    try:
        with pytest.raises(DataError, match=f"^CIFAKE class folder cannot be read: {root}/test/FAKE "):
            load_cifake(str(root), cache_dir=str(tmp_path / "cache"))
    finally:
        (root / "test" / "FAKE").chmod(0o755)  # so pytest can clean up


def test_a_class_folder_that_cannot_be_listed_is_a_data_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = build_cifake(tmp_path / "cifake")
    real_scandir = os.scandir

    def scandir(path: Path):  # type: ignore[no-untyped-def]
        if Path(path) == root / "test" / "FAKE":
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(data.os, "scandir", scandir)

    expected = f"^CIFAKE class folder cannot be read: {root}/test/FAKE \\(Permission denied\\)$"
    with pytest.raises(DataError, match=expected):
        load_cifake(str(root), cache_dir=str(tmp_path / "cache"))


# ----- zips: names that escape, damaged members -----


def set_encrypted_flag(archive: Path, name: str) -> None:
    """Mark one member encrypted in the central directory, which is where zipfile looks (it cannot write one)."""
    content = bytearray(archive.read_bytes())
    position = 0
    while (position := content.find(b"PK\x01\x02", position + 1)) != -1:
        (name_length,) = struct.unpack_from("<H", content, position + 28)
        if content[position + 46 : position + 46 + name_length] == name.encode():
            (flags,) = struct.unpack_from("<H", content, position + 8)
            struct.pack_into("<H", content, position + 8, flags | 0x1)
            archive.write_bytes(bytes(content))
            return
    raise AssertionError(f"{name} not in {archive}")


def corrupt_member_data(archive: Path, name: str) -> None:
    """Overwrite the middle of one member's compressed bytes, leaving every header intact."""
    with zipfile.ZipFile(archive) as zipped:
        info = zipped.getinfo(name)
    content = bytearray(archive.read_bytes())
    (name_length, extra_length) = struct.unpack_from("<HH", content, info.header_offset + 26)
    start = info.header_offset + 30 + name_length + extra_length
    middle = start + info.compress_size // 2
    content[middle : middle + 16] = b"\xff" * 16
    archive.write_bytes(bytes(content))


def test_hostile_zip_loads_with_every_case_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, loaded_sizes: list[tuple[int, int]]
) -> None:
    root = build_cifake(tmp_path / "cifake")
    archive = zip_folder(root, tmp_path / "cifake.zip", "")
    secret = jpeg_bytes(Image.new("RGB", (32, 32), (SECRET_SHADE,) * 3))
    escaping = [
        "../evil.jpg",
        "/train/REAL/absolute.jpg",
        "train/REAL/../../climb.jpg",
        "train/REAL/..\\..\\windows.jpg",
    ]
    with zipfile.ZipFile(archive, "a") as zipped:
        for name in escaping:
            zipped.writestr(name, secret)
        zipped.writestr("train/FAKE/encrypted.jpg", secret)
        zipped.writestr("train/FAKE/corrupt.jpg", secret, compress_type=zipfile.ZIP_DEFLATED)
        zipped.writestr("train/FAKE/bomb.png", bomb("bomb 20000x20000.png"))
        zipped.writestr("train/FAKE/more/nested.jpg", secret)  # in no class folder's own files: passed over, counted
        zipped.writestr("test/OTHER/other.jpg", secret)
        zipped.writestr("test/stray.jpg", secret)  # loose in a split folder: passed over, counted
        zipped.writestr("train/.hidden/ignored.jpg", secret)  # hidden, like .DS_Store: not counted
    set_encrypted_flag(archive, "train/FAKE/encrypted.jpg")
    corrupt_member_data(archive, "train/FAKE/corrupt.jpg")
    caplog.set_level(logging.WARNING, logger="forgery.data")

    dataset = load_cifake(str(archive), cache_dir=str(tmp_path / "cache"))

    assert dataset.issues == issue_counts(skipped_files=2, oversized_images=1, unsafe_zip_names=4, passed_over=3)
    train_levels = levels_by_label(dataset, "train", "val")
    assert_levels(train_levels[FAKE], original_levels("train", "FAKE"))
    assert_levels(train_levels[REAL], original_levels("train", "REAL"))
    unsafe_line = next(line for line in warning_lines(caplog) if line.startswith("CIFAKE unsafe_zip_names: 4 "))
    assert all(name in unsafe_line for name in escaping)
    passed_line = next(line for line in warning_lines(caplog) if line.startswith("CIFAKE passed_over: 3 "))
    assert all(name in passed_line for name in ("train/FAKE/more/nested.jpg", "test/OTHER/other.jpg", "test/stray.jpg"))


def test_an_unsafe_zip_name_added_later_is_counted_not_served_from_the_cache(tmp_path: Path) -> None:
    archive = zip_folder(build_cifake(tmp_path / "cifake"), tmp_path / "cifake.zip", "CIFAKE/")
    load_cifake(str(archive), cache_dir=str(tmp_path / "cache"))
    with zipfile.ZipFile(archive, "a") as zipped:
        zipped.writestr("CIFAKE/../evil.jpg", b"anything")

    dataset = load_cifake(str(archive), cache_dir=str(tmp_path / "cache"))

    assert dataset.issues == issue_counts(unsafe_zip_names=1)


def test_a_zip_member_name_repeated_is_read_once_and_the_earlier_counted(tmp_path: Path) -> None:
    root = build_cifake(tmp_path / "cifake")
    archive = tmp_path / "cifake.zip"
    shutil.make_archive(str(archive.with_suffix("")), "zip", root)
    with zipfile.ZipFile(archive, "a") as zipped, warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # zipfile warns of the duplicate name
        zipped.writestr("train/REAL/0000 (1).jpg", jpeg_bytes(Image.new("RGB", (32, 32), (SECRET_SHADE,) * 3)))

    dataset = load_cifake(str(archive), cache_dir=str(tmp_path / "cache"))

    assert dataset.issues == issue_counts(passed_over=1)
    assert len(dataset.train) + len(dataset.val) == 6  # the name once, with the later member's pixels
    levels = np.concatenate([dataset.train.images, dataset.val.images])[..., 0].mean(axis=(1, 2))
    assert np.count_nonzero(np.abs(levels - SECRET_SHADE) <= 2) == 1


def test_a_folder_added_later_in_a_class_folder_is_counted_not_served_from_the_cache(tmp_path: Path) -> None:
    root = build_cifake(tmp_path / "cifake")
    load_cifake(str(root), cache_dir=str(tmp_path / "cache"))
    (root / "train" / "FAKE" / "more").mkdir()

    dataset = load_cifake(str(root), cache_dir=str(tmp_path / "cache"))

    assert dataset.issues == issue_counts(passed_over=1)
