"""The shortcut check finds a planted container shortcut and finds none where there is none."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import forgery.data
import forgery.shortcuts
from forgery.data import ISSUE_DESCRIPTIONS
from forgery.shortcuts import shortcut_report


def make_dataset(root: Path, fake_quality: int, fake_share: float = 1.0, scale: int = 1) -> None:
    """Same kind of noise images in both classes; FAKE saved at `fake_quality`, REAL at 75; REAL folders
    hold 40 * `scale` (train) and 20 * `scale` (test) files, FAKE ones `fake_share` as many."""
    rng = np.random.default_rng(0)
    for split, count in (("train", 40 * scale), ("test", 20 * scale)):
        for name, quality in (("FAKE", fake_quality), ("REAL", 75)):
            folder = root / split / name
            folder.mkdir(parents=True)
            for index in range(round(count * fake_share) if name == "FAKE" else count):
                pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{index} ({index}).jpg", quality=quality)


def test_a_planted_container_shortcut_is_found(tmp_path: Path) -> None:
    make_dataset(tmp_path, fake_quality=30)  # FAKE files: other tables, much smaller files
    report = shortcut_report(tmp_path, limit=40)
    assert report["same_jpeg_tables"] is False
    for classifier in ("linear", "boosted trees"):
        for group in ("file size", "JPEG tables"):
            assert report["test_balanced_accuracy_without_content"][group][classifier] > 0.9
            assert report["test_roc_auc_without_content"][group][classifier] > 0.9
    assert report["warnings"] == []


def test_no_shortcut_when_the_classes_are_stored_alike(tmp_path: Path) -> None:
    make_dataset(tmp_path, fake_quality=75)
    report = shortcut_report(tmp_path, limit=40)
    assert report["same_jpeg_tables"] is True
    assert set(report["jpeg_quantisation_tables"]["test"]["FAKE"].values()) == {20}  # one digest, every file
    for scores in report["test_balanced_accuracy_without_content"].values():
        assert scores["linear"] < 0.75 and scores["boosted trees"] < 0.75


def test_unequal_folders_are_no_cue(tmp_path: Path) -> None:
    # Five REAL files for each FAKE one, stored alike: an unweighted fit calls everything REAL and plain
    # accuracy (83%) would read the class ratio as a shortcut. Five times the usual files, so that trees
    # fitted on a few FAKE files are not scored on four.
    make_dataset(tmp_path, fake_quality=75, fake_share=0.2, scale=5)
    report = shortcut_report(tmp_path, limit=200)
    assert report["files_read"]["test"] == {"FAKE": 20, "REAL": 100}
    for scores in report["test_balanced_accuracy_without_content"].values():
        assert scores["linear"] < 0.75 and scores["boosted trees"] < 0.75


def test_missing_folder_is_one_line(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "forgery.shortcuts", str(tmp_path)], capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr.strip() == f"error: CIFAKE split folder not found: {tmp_path / 'train'}"
    (tmp_path / "train").mkdir()
    result = subprocess.run([sys.executable, "-m", "forgery.shortcuts", str(tmp_path)], capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr.strip() == f"error: CIFAKE class folder not found: {tmp_path / 'train' / 'FAKE'}"


def test_hidden_and_unreadable_files_are_passed_over_and_counted(tmp_path: Path, capsys) -> None:
    make_dataset(tmp_path, fake_quality=75)
    (tmp_path / "train" / "FAKE" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (tmp_path / "train" / "FAKE" / "0 (notes).jpg").write_text("not an image")
    (tmp_path / "train" / "REAL" / "0 thumbs").mkdir()  # named to sort before the images: only the first `limit` are looked at
    os.mkfifo(tmp_path / "train" / "REAL" / "0 pipe.jpg")  # read, it would block forever
    report = shortcut_report(tmp_path, limit=40)
    assert report["same_jpeg_tables"] is True
    assert capsys.readouterr().err.strip().splitlines() == [
        f"warning: skipped 1 file(s) in {tmp_path / 'train' / 'FAKE'}: 1 {ISSUE_DESCRIPTIONS['skipped_files']}",
        f"warning: skipped 2 file(s) in {tmp_path / 'train' / 'REAL'}: 2 {ISSUE_DESCRIPTIONS['passed_over']}",
    ]


def test_links_outside_the_root_or_to_nothing_are_never_read(tmp_path: Path, capsys) -> None:
    root, elsewhere = tmp_path / "cifake", tmp_path / "elsewhere"
    make_dataset(root, fake_quality=75)
    elsewhere.mkdir()
    planted = elsewhere / "planted.jpg"
    Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8)).save(planted, quality=100)
    folder = root / "train" / "FAKE"
    for index in range(3):
        (folder / f"outside {index}.jpg").symlink_to(planted)
    for index in range(2):
        (folder / f"gone {index}.jpg").symlink_to(folder / f"deleted {index}.jpg")
    (root / "train" / "REAL" / "inside.jpg").symlink_to(root / "train" / "REAL" / "0 (0).jpg")  # inside the root: read
    report = shortcut_report(root, limit=100)
    assert capsys.readouterr().err.strip() == (
        f"warning: skipped 5 file(s) in {folder}: 3 symlinks leading outside the data root skipped, never read; "
        "2 symlinks to nothing skipped (missing target or a loop)"
    )
    assert report["files_read"]["train"] == {"FAKE": 40, "REAL": 41}  # the REAL link inside the root was read


def test_a_file_that_cannot_be_read_is_counted_as_a_read_error(tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    make_dataset(tmp_path, fake_quality=75)
    door = forgery.data.read_inside_root

    def refuse_one(real_root: Path, member: str) -> bytes:
        if member == "test/REAL/3 (3).jpg":  # root reads chmod 000 files, so the refusal is raised here
            raise PermissionError(13, "Permission denied", member)
        return door(real_root, member)

    monkeypatch.setattr(forgery.data, "read_inside_root", refuse_one)  # the loader's own door, which the check reads through
    report = shortcut_report(tmp_path, limit=40)
    assert capsys.readouterr().err.strip() == (
        f"warning: skipped 1 file(s) in {tmp_path / 'test' / 'REAL'}: 1 {ISSUE_DESCRIPTIONS['read_errors']}"
    )
    assert report["files_read"]["test"] == {"FAKE": 20, "REAL": 19}


def test_a_class_without_images_and_a_bad_count_are_one_line(tmp_path: Path) -> None:
    make_dataset(tmp_path, fake_quality=75)
    shutil.rmtree(tmp_path / "train" / "FAKE")
    (tmp_path / "train" / "FAKE").mkdir()
    (tmp_path / "train" / "FAKE" / "a.jpg").write_text("not an image")
    result = subprocess.run([sys.executable, "-m", "forgery.shortcuts", str(tmp_path)], capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr.strip().splitlines()[-1] == f"error: no readable image in {tmp_path / 'train' / 'FAKE'}"
    for count in ("many", "0", "²"):
        result = subprocess.run([sys.executable, "-m", "forgery.shortcuts", str(tmp_path), count], capture_output=True, text=True)
        assert result.returncode == 2 and result.stderr.strip() == f"error: FILES_PER_CLASS must be a whole number above 0, got {count!r}"


@pytest.mark.parametrize(("arguments", "code"), [(["--help"], 0), (["-h"], 0), ([], 2), (["a", "1", "b"], 2)])
def test_shortcuts_usage(arguments: list[str], code: int, capsys) -> None:
    # Exit codes as the other entrypoints': 0 for help on stdout, 2 for a usage error on stderr.
    assert forgery.shortcuts.main(arguments) == code
    captured = capsys.readouterr()
    assert (captured.out.strip(), captured.err.strip()) == ((forgery.shortcuts.USAGE, "") if code == 0 else ("", f"error: {forgery.shortcuts.USAGE}"))


def test_files_are_decoded_as_the_training_loader_decodes_them(tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    make_dataset(tmp_path, fake_quality=75)
    folder = tmp_path / "train" / "REAL"
    for path in folder.iterdir():  # REAL's training files become 16-bit grey PNGs at mid-grey (32768 of 65535)
        path.unlink()
    for index in range(40):
        Image.fromarray(np.full((32, 32), 32768, dtype=np.uint16)).save(folder / f"{index}.png")
    Image.new("RGB", (32, 32)).save(folder / "portable.jpg", format="PPM")  # a format the loader does not decode
    Image.fromarray(np.zeros((33, 33, 3), dtype=np.uint8)).save(folder / "large.png")
    monkeypatch.setattr(forgery.data, "MAX_IMAGE_PIXELS", 32 * 32)  # the 32x32 files are within it, the 33x33 one over
    report = shortcut_report(tmp_path, limit=100)
    # the loader scales 16 bits down to 128; Pillow's own convert would clip every pixel to 255
    assert report["class_means"]["REAL"]["mean_r"] == 128.0 and report["class_means"]["REAL"]["std_g"] == 0.0
    assert report["files_read"]["train"]["REAL"] == 40
    assert capsys.readouterr().err.strip() == (
        f"warning: skipped 2 file(s) in {folder}: 1 {ISSUE_DESCRIPTIONS['skipped_files']}; 1 {ISSUE_DESCRIPTIONS['oversized_images']}"
    )


def save_images(folder: Path, count: int, level: Callable[[int], int], quality: Callable[[int], int]) -> None:
    """`count` flat images with light noise; image `index` at grey `level(index)`, saved at JPEG `quality(index)`."""
    rng = np.random.default_rng(len(folder.parts) + count)
    folder.mkdir(parents=True)
    for index in range(count):
        pixels = np.clip(level(index) + rng.normal(0, 8, (32, 32, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{index} ({index}).jpg", quality=quality(index))


def test_files_that_are_no_jpeg_carry_no_table(tmp_path: Path) -> None:
    # PNG files all share the "no table" digest: that is no table carried by every file, and a test split
    # of PNG files beside a JPEG train split is a shift named as such, not as unseen tables.
    make_dataset(tmp_path, fake_quality=75)
    for path in (tmp_path / "test" / "REAL").iterdir():
        with Image.open(path) as image:
            image.load()
        path.unlink()
        image.save(path.with_suffix(".png"))
    report = shortcut_report(tmp_path, limit=40)
    assert report["same_jpeg_tables"] is False
    assert report["warnings"][0].startswith("20 test file(s) (20 REAL) are no JPEG files while every train file is: the test split was stored")
    assert not any("quantisation tables no train file has" in warning for warning in report["warnings"])
    for split in ("train", "test"):
        for name in ("FAKE", "REAL"):
            for path in (tmp_path / split / name).iterdir():
                with Image.open(path) as image:
                    image.load()
                path.unlink()
                image.save(path.with_suffix(".png"))
    report = shortcut_report(tmp_path, limit=40)
    assert report["same_jpeg_tables"] is False and report["warnings"] == []
    assert report["jpeg_quantisation_tables"]["train"]["FAKE"] == {"none": 40}


def test_a_cue_on_both_sides_of_the_other_class_is_found_by_the_trees(tmp_path: Path) -> None:
    # REAL images dark (60) or bright (200), FAKE ones mid-grey (130): the same mean grey, the same JPEG
    # quality, so no line through the features separates them, while a split on either side does.
    for split, count in (("train", 60), ("test", 30)):
        save_images(tmp_path / split / "REAL", count, lambda index: 60 if index % 2 else 200, lambda index: 75)
        save_images(tmp_path / split / "FAKE", count, lambda index: 130, lambda index: 75)
    report = shortcut_report(tmp_path, limit=100)
    colour = report["test_balanced_accuracy_without_content"]["colour statistics"]
    assert colour["linear"] < 0.7 and colour["boosted trees"] > 0.9
    assert report["test_balanced_accuracy_without_content"]["all of these"]["boosted trees"] > 0.9
    assert report["test_roc_auc_without_content"]["colour statistics"]["boosted trees"] > 0.9


def test_the_same_tables_in_other_proportions_are_a_cue(tmp_path: Path) -> None:
    # FAKE: 90% saved at quality 90, 10% at 89; REAL the reverse. Each class holds both tables, yet which
    # one a file carries gives its class away nine times in ten.
    for split, count in (("train", 100), ("test", 50)):
        for name, usual, rare in (("FAKE", 90, 89), ("REAL", 89, 90)):
            save_images(tmp_path / split / name, count, lambda index: 128, lambda index: rare if index % 10 == 0 else usual)
    report = shortcut_report(tmp_path, limit=100)
    assert report["same_jpeg_tables"] is False
    assert sorted(report["jpeg_quantisation_tables"]["train"]["FAKE"].values()) == [10, 90]
    assert sorted(report["jpeg_quantisation_tables"]["test"]["REAL"].values()) == [5, 45]
    for classifier in ("linear", "boosted trees"):
        assert report["test_balanced_accuracy_without_content"]["JPEG tables"][classifier] > 0.85


def test_a_test_split_stored_differently_is_named_a_shift(tmp_path: Path, capsys) -> None:
    # Train stored alike; only test/FAKE saved at quality 30. No model can learn that from train, so it is
    # no cue, but the test split holds tables no train file has, and scores may fall below chance.
    make_dataset(tmp_path, fake_quality=75)
    for path in (tmp_path / "test" / "FAKE").iterdir():
        with Image.open(path) as image:
            image.load()
        image.save(path, quality=30)
    report = shortcut_report(tmp_path, limit=40)
    assert report["same_jpeg_tables"] is False
    assert report["jpeg_quantisation_tables"]["train"]["FAKE"] == report["jpeg_quantisation_tables"]["train"]["REAL"]
    assert report["warnings"][0].startswith("20 test file(s) (20 FAKE) have JPEG quantisation tables no train file has")
    scores = report["test_balanced_accuracy_without_content"]
    assert scores["all of these"]["linear"] < 0.2  # what the old check printed unexplained
    assert len(report["warnings"]) > 1
    for warning in report["warnings"][1:]:  # the others name the scores well below chance
        group, classifier = warning.split(" scores ")[0].removesuffix(")").split(" (")
        assert scores[group][classifier] < 0.4 and "a shift" in warning
    capsys.readouterr()
    assert forgery.shortcuts.main([str(tmp_path), "40"]) == 0
    assert capsys.readouterr().err.strip().splitlines() == [f"warning: {warning}" for warning in report["warnings"]]


def test_a_handful_of_test_files_cannot_raise_the_below_chance_alarm() -> None:
    assert forgery.shortcuts.below_chance_limit(np.repeat([0, 1], 2000)) == 0.4
    assert forgery.shortcuts.below_chance_limit(np.repeat([0, 1], [4, 20])) < 0.1  # on 4 FAKE and 20 REAL files a 0.28 can be luck


def test_a_zip_is_read_as_the_loader_reads_it(tmp_path: Path, capsys) -> None:
    folder = tmp_path / "cifake"
    make_dataset(folder, fake_quality=30)
    archive = tmp_path / "cifake.zip"
    with zipfile.ZipFile(archive, "w") as writer:  # under one top-level folder, as a zipped folder is
        for path in sorted(folder.rglob("*.jpg")):
            writer.write(path, f"cifake/{path.relative_to(folder).as_posix()}")
        writer.writestr("cifake/train/REAL/thumbs/0.jpg", (folder / "train" / "REAL" / "0 (0).jpg").read_bytes())  # passed over
        writer.writestr("cifake/test/FAKE/.DS_Store", b"\x00\x00\x00\x01Bud1")  # hidden: passed over uncounted
    assert shortcut_report(archive, limit=40) == shortcut_report(folder, limit=40)
    assert capsys.readouterr().err.strip() == f"warning: skipped 1 file(s) in {archive / 'cifake' / 'train' / 'REAL'}: 1 {ISSUE_DESCRIPTIONS['passed_over']}"
