"""Entrypoint: `python -m forgery.shortcuts ROOT` checks whether anything but image content separates the classes.

A detector should learn what generators do to images, not how the dataset was stored. For a CIFAKE
folder this measures, per class, the JPEG file size, whether the JPEG quantisation tables differ, and
colour statistics (per-channel mean and spread), then fits a logistic regression on those
non-content features alone (train split) and scores it on the test split. Both the fit and the score
weigh the classes equally (balanced accuracy: the mean of the per-class hit rates), so folders of
unequal size cannot pass for a cue. A score near 50% means the container and global colour give the
class away no better than a coin; a high one means a model could cheat with them and its accuracy
would not be evidence of anything.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sys
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

from forgery.data import CLASS_NAMES, IMAGE_FORMATS, ISSUE_DESCRIPTIONS, UNREADABLE_FILE_ERRORS, DataError, ImageTooLarge, SkippedFile, decode_image, read_inside_root


def file_features(content: bytes) -> tuple[list[float], str]:
    """(file size in bytes, six colour statistics) and a digest of the JPEG quantisation tables.

    The colours are those of the pixels training sees: decoded as the loader decodes (its formats, pixel
    limit, 16-bit scaling and 32x32 resize), so a file the loader skips is skipped here too.
    """
    pixels = decode_image(content).pixels.astype("float32")
    with Image.open(io.BytesIO(content), formats=IMAGE_FORMATS) as image:
        tables = json.dumps(getattr(image, "quantization", None) or {}, sort_keys=True)
    colour = [*pixels.mean(axis=(0, 1)), *pixels.std(axis=(0, 1))]
    return [float(len(content)), *map(float, colour)], hashlib.sha256(tables.encode()).hexdigest()[:12]


def split_features(root: Path, split: str, limit: int) -> tuple[np.ndarray, np.ndarray, list[set[str]]]:
    """Features and labels of up to `limit` images per class of one split, and the table digests per class.

    Hidden files (.DS_Store) are passed over uncounted and sub-folders, pipes and other non-files counted
    (passed_over), as the training loader does.
    Files are read through the loader's door, so a symlink leading outside the root or to nothing is never
    followed; those, unreadable and oversized files are counted in one warning per folder, in the
    loader's words (forgery.data.ISSUE_DESCRIPTIONS).
    """
    real_root = Path(os.path.realpath(root))
    rows, labels, digests = [], [], []
    for label, name in enumerate(CLASS_NAMES):
        folder = root / split / name
        if not folder.is_dir():
            raise DataError(f"CIFAKE class folder not found: {folder}")
        seen: set[str] = set()
        read, skipped = 0, Counter[str]()
        for path in sorted(folder.iterdir()):
            if read == limit:
                break
            if path.name.startswith("."):
                continue
            if not path.is_symlink() and not path.is_file():  # a sub-folder or a pipe: never read (links are read_inside_root's)
                skipped["passed_over"] += 1
                continue
            try:
                content = read_inside_root(real_root, f"{split}/{name}/{path.name}")
            except SkippedFile as skip:
                skipped[skip.kind] += 1
                continue
            except OSError:  # permission denied, an I/O error, or gone since it was listed
                skipped["read_errors"] += 1
                continue
            try:
                features, digest = file_features(content)
            except ImageTooLarge:
                skipped["oversized_images"] += 1
                continue
            except UNREADABLE_FILE_ERRORS:  # what PIL raises for a broken or non-image file
                skipped["skipped_files"] += 1
                continue
            rows.append(features)
            labels.append(label)
            seen.add(digest)
            read += 1
        if skipped:
            reasons = "; ".join(f"{skipped[kind]} {ISSUE_DESCRIPTIONS[kind]}" for kind in ISSUE_DESCRIPTIONS if skipped[kind])
            print(f"warning: skipped {skipped.total()} file(s) in {folder}: {reasons}", file=sys.stderr)
        if not read:
            raise DataError(f"no readable image in {folder}")
        digests.append(seen)
    return np.asarray(rows), np.asarray(labels), digests


def shortcut_report(root: Path, limit: int = 2000) -> dict[str, object]:
    """Per-class statistics and the balanced test accuracy of a classifier that sees no image content."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    train_x, train_y, tables = split_features(root, "train", limit)
    test_x, test_y, _ = split_features(root, "test", limit)
    names = ["file_bytes", "mean_r", "mean_g", "mean_b", "std_r", "std_g", "std_b"]
    per_class = {
        name: {feature: round(float(train_x[train_y == label, index].mean()), 2) for index, feature in enumerate(names)}
        for label, name in enumerate(CLASS_NAMES)
    }
    accuracy = {}
    for group, columns in (("file size", [0]), ("colour statistics", list(range(1, 7))), ("all of these", list(range(7)))):
        # Balanced weights: with unequal folders an unweighted fit learns the majority class and plain
        # accuracy then reads the class ratio as a cue.
        classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, class_weight="balanced"))
        classifier.fit(train_x[:, columns], train_y)
        accuracy[group] = round(float(balanced_accuracy_score(test_y, classifier.predict(test_x[:, columns]))), 4)
    return {
        "files_per_class_and_split": limit,
        "files_read": {
            split: {name: int((labels == label).sum()) for label, name in enumerate(CLASS_NAMES)}
            for split, labels in (("train", train_y), ("test", test_y))
        },
        "class_means": per_class,
        "jpeg_quantisation_tables": {name: sorted(tables[label]) for label, name in enumerate(CLASS_NAMES)},
        "same_jpeg_tables": tables[0] == tables[1],
        "test_balanced_accuracy_without_content": accuracy,
    }


USAGE = "usage: python -m forgery.shortcuts CIFAKE_ROOT [FILES_PER_CLASS] (a CIFAKE folder in the Kaggle layout; FILES_PER_CLASS a whole number, 2000 by default)"


def main(arguments: list[str]) -> int:
    """Print the report for `CIFAKE_ROOT [FILES_PER_CLASS]`; 0, or 2 with one `error:` line (as the other entrypoints)."""
    if arguments in (["-h"], ["--help"]):
        print(USAGE)
        return 0
    if len(arguments) not in (1, 2) or (len(arguments) == 2 and not (arguments[1].isascii() and arguments[1].isdigit() and int(arguments[1]) > 0)):
        print(f"error: {USAGE}", file=sys.stderr)
        return 2
    try:
        report = shortcut_report(Path(arguments[0]).expanduser(), int(arguments[1]) if len(arguments) == 2 else 2000)
    except DataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
