"""Entrypoint: `python -m forgery.shortcuts ROOT` checks whether anything but image content separates the classes.

A detector should learn what generators do to images, not how the dataset was stored. For a CIFAKE
folder or zip this measures, per class, the JPEG file size, the JPEG quantisation tables and colour
statistics (per-channel mean and spread), then fits two classifiers on those non-content features alone
(train split) and scores them on the test split: a logistic regression, which finds a cue that grows
one way with a feature, and boosted trees, which also find one that does not (REAL images both darker
and brighter than FAKE ones, say). Both weigh the classes equally and are scored by balanced accuracy
(the mean of the per-class hit rates) and ROC AUC, so folders of unequal size cannot pass for a cue. A
score near 50% means the container and global colour give the class away no better than a coin; a high
one means a model could cheat with them and its accuracy would not be evidence of anything; one far
below 50% means the test split differs from the train split, which the report's warnings name.
"""

from __future__ import annotations

import hashlib
import io
import json
import sys
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple, Protocol

import numpy as np
from PIL import Image

from forgery.data import (
    CLASS_NAMES,
    IMAGE_FORMATS,
    ISSUE_DESCRIPTIONS,
    DataError,
    SkippedFile,
    SourceFile,
    SourceListing,
    list_cifake_files,
    open_members,
    read_and_decode,
)

FEATURE_NAMES: tuple[str, ...] = ("file_bytes", "mean_r", "mean_g", "mean_b", "std_r", "std_g", "std_b")
NO_TABLES = "none"  # the table "digest" of a file that is no JPEG
# A coin scores 0.5. A score below 0.4, and more than three standard errors of a coin's below it (so
# that a handful of test files cannot raise the alarm), says the test split differs from the train split.
BELOW_CHANCE = 0.4


class SplitFeatures(NamedTuple):
    """The non-content features of the files read from one split."""

    numbers: np.ndarray  # (N, 7) float: FEATURE_NAMES
    labels: np.ndarray  # (N,) int: index into CLASS_NAMES
    tables: list[str]  # N digests of the JPEG quantisation tables (NO_TABLES for a file that is no JPEG)


class Classifier(Protocol):
    """What is used of a scikit-learn classifier."""

    def fit(self, x: np.ndarray, y: np.ndarray) -> object: ...
    def predict(self, x: np.ndarray) -> np.ndarray: ...
    def predict_proba(self, x: np.ndarray) -> np.ndarray: ...


def table_digest(content: bytes) -> str:
    """A short digest of a file's JPEG quantisation tables; files saved alike share it."""
    with Image.open(io.BytesIO(content), formats=IMAGE_FORMATS) as image:  # the header only
        tables = getattr(image, "quantization", None)
    if not tables:
        return NO_TABLES
    return hashlib.sha256(json.dumps(tables, sort_keys=True).encode()).hexdigest()[:12]


def file_numbers(content: bytes, pixels: np.ndarray) -> list[float]:
    """File size in bytes, then the mean and spread of each colour channel of the decoded (32, 32, 3) pixels."""
    colour = pixels.astype("float32")
    return [float(len(content)), *map(float, colour.mean(axis=(0, 1))), *map(float, colour.std(axis=(0, 1)))]


def read_file(read_member: Callable[[str], bytes], member: str) -> tuple[bytes, np.ndarray]:
    """A file's bytes and its pixels as the training loader decodes them, or SkippedFile under the loader's issue kind."""
    kept: list[bytes] = []

    def read_and_keep(name: str) -> bytes:  # the loader's read_and_decode sorts the failures; size and tables need the bytes too
        kept.append(read_member(name))
        return kept[-1]

    pixels = read_and_decode(read_and_keep, member).pixels
    return kept[0], pixels


def layout_prefix(file: SourceFile) -> str:
    """The folder inside a zip that holds train/ and test/ ("cifake/"), or "" (a folder, or a zip without one)."""
    return file.member.rsplit("/", 1)[0].removesuffix(f"{file.split}/{CLASS_NAMES[file.label]}")


def listing_issues(listing: SourceListing) -> dict[str, Counter[str]]:
    """What the listing passed over or refused, counted per folder: "train/REAL", a split ("train") or "" (the root)."""
    issues: dict[str, Counter[str]] = defaultdict(Counter)
    for entry in listing.passed_over:  # "train/REAL/thumbs/", "train/REAL/pipe.jpg", "train/OTHER/"
        parts = entry.split("/")
        inside_class_folder = len(parts) > 2 and parts[1] in CLASS_NAMES and parts[2] != ""
        issues["/".join(parts[:2]) if inside_class_folder else parts[0]]["passed_over"] += 1
    if listing.unsafe_names:
        issues[""]["unsafe_zip_names"] += len(listing.unsafe_names)
    return issues


def warn_skipped(place: Path, skipped: Counter[str]) -> None:
    """One warning for a folder's skipped entries, counted in the loader's words (nothing when none)."""
    if skipped.total():
        reasons = "; ".join(f"{skipped[kind]} {ISSUE_DESCRIPTIONS[kind]}" for kind in ISSUE_DESCRIPTIONS if skipped[kind])
        print(f"warning: skipped {skipped.total()} file(s) in {place}: {reasons}", file=sys.stderr)


def read_split(
    source: Path, listing: SourceListing, read_member: Callable[[str], bytes], split: str, limit: int, issues: dict[str, Counter[str]]
) -> SplitFeatures:
    """Features of the first `limit` readable files of each class of one split, in the loader's (name) order.

    Unreadable, oversized and link-skipped files are counted with what the listing passed over, one
    warning per class folder; a class folder with no readable file is a DataError.
    """
    prefix = layout_prefix(listing.files[0])
    numbers, labels, tables = [], [], []
    for label, name in enumerate(CLASS_NAMES):
        folder = f"{split}/{name}"
        skipped = Counter(issues.get(folder, Counter()))
        read = 0
        for file in (file for file in listing.files if file.split == split and file.label == label):
            if read == limit:
                break
            try:
                content, pixels = read_file(read_member, file.member)
            except SkippedFile as skip:
                skipped[skip.kind] += 1
                continue
            numbers.append(file_numbers(content, pixels))
            labels.append(label)
            tables.append(table_digest(content))
            read += 1
        warn_skipped(source / f"{prefix}{folder}", skipped)
        if not read:
            raise DataError(f"no readable image in {source / f'{prefix}{folder}'}")
    return SplitFeatures(np.asarray(numbers), np.asarray(labels), tables)


def read_features(source: Path, limit: int) -> tuple[SplitFeatures, SplitFeatures]:
    """(train, test) features of a CIFAKE folder or zip, listed and read as the training loader lists and reads it."""
    listing = list_cifake_files(source)  # the loader's DataError for a missing root, split or class folder
    issues = listing_issues(listing)
    prefix = layout_prefix(listing.files[0])
    for place in sorted(place for place in issues if "/" not in place):  # the root's and split folders' own entries
        warn_skipped(source / (f"{prefix}{place}" if place else ""), issues[place])
    with open_members(source) as read_member:  # a zip is opened once, its members read by name, never extracted
        train = read_split(source, listing, read_member, "train", limit, issues)
        test = read_split(source, listing, read_member, "test", limit, issues)
    return train, test


def one_hot(tables: list[str], vocabulary: list[str]) -> np.ndarray:
    """(N, len(vocabulary)) indicators; a digest outside the vocabulary (unseen in train) is all zeros."""
    return np.array([[digest == known for known in vocabulary] for digest in tables], dtype=float).reshape(len(tables), len(vocabulary))


def feature_groups(train: SplitFeatures, test: SplitFeatures) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each group's (train, test) columns: file size, JPEG tables (one-hot over train's digests), colour, all."""
    vocabulary = sorted(set(train.tables))
    train_tables, test_tables = one_hot(train.tables, vocabulary), one_hot(test.tables, vocabulary)
    return {
        "file size": (train.numbers[:, :1], test.numbers[:, :1]),
        "JPEG tables": (train_tables, test_tables),
        "colour statistics": (train.numbers[:, 1:], test.numbers[:, 1:]),
        "all of these": (np.hstack([train.numbers, train_tables]), np.hstack([test.numbers, test_tables])),
    }


def make_classifiers() -> dict[str, Classifier]:
    """Fresh, unfitted classifiers, each weighing the classes equally (with unequal folders an unweighted fit
    learns the majority class, and plain accuracy then reads the class ratio as a cue)."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return {
        "linear": make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, class_weight="balanced")),
        # Trees split a feature anywhere, so a class lying on both sides of the other is found too; a fixed
        # seed keeps the report the same from run to run.
        "boosted trees": HistGradientBoostingClassifier(class_weight="balanced", random_state=0),
    }


def fit_and_score(classifier: Classifier, train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray) -> tuple[float, float]:
    """(balanced accuracy, ROC AUC) on test of `classifier` fitted on train."""
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score
    from threadpoolctl import threadpool_limits  # installed with scikit-learn

    # A few thousand rows gain nothing from threads, and on a busy machine the trees' OpenMP threads wait
    # on each other: 80 rows took 7.5 s instead of 0.02 s.
    with threadpool_limits(limits=1):
        classifier.fit(train_x, train_y)
        balanced = balanced_accuracy_score(test_y, classifier.predict(test_x))
        auc = roc_auc_score(test_y, classifier.predict_proba(test_x)[:, 1])
    return round(float(balanced), 4), round(float(auc), 4)


def table_counts(features: SplitFeatures) -> dict[str, dict[str, int]]:
    """Per class, how many of its files carry each table digest."""
    return {
        name: dict(sorted(Counter(digest for digest, file_label in zip(features.tables, features.labels) if file_label == label).items()))
        for label, name in enumerate(CLASS_NAMES)
    }


def below_chance_limit(labels: np.ndarray) -> float:
    """The balanced accuracy under which a score is well below chance on test files with these labels."""
    # A coin's per-class hit rate over n files has standard error 0.5/sqrt(n); balanced accuracy averages two.
    coin_error = 0.25 * np.sqrt(sum(1 / np.count_nonzero(labels == label) for label in range(len(CLASS_NAMES))))
    return min(BELOW_CHANCE, 0.5 - 3 * float(coin_error))


def shift_warnings(train: SplitFeatures, test: SplitFeatures, balanced: dict[str, dict[str, float]]) -> list[str]:
    """Signs that the test split differs from the train split: tables train never had, scores well below chance."""
    warnings = []
    known = set(train.tables)
    # A test file that is no JPEG while every train file is one is the same shift, said in its own words.
    for unseen_jpeg, what in ((True, "have JPEG quantisation tables no train file has"), (False, "are no JPEG files while every train file is")):
        unseen = Counter(
            CLASS_NAMES[label]
            for digest, label in zip(test.tables, test.labels)
            if digest not in known and (digest != NO_TABLES) == unseen_jpeg
        )
        if unseen:
            per_class = ", ".join(f"{unseen[name]} {name}" for name in CLASS_NAMES if unseen[name])
            warnings.append(
                f"{unseen.total()} test file(s) ({per_class}) {what}: the test split "
                "was stored differently from the train split (a shift between the splits, not a cue a model could learn)"
            )
    limit = below_chance_limit(test.labels)
    for group, scores in balanced.items():
        for classifier, score in scores.items():
            if score < limit:
                warnings.append(
                    f"{group} ({classifier}) scores {score:.2f} on test, well below chance: what told the classes apart in "
                    "train points the other way in test, a difference between the train and test splits (a shift), not a cue"
                )
    return warnings


def shortcut_report(root: Path, limit: int = 2000) -> dict[str, object]:
    """Per-class statistics and the test scores of classifiers that see no image content."""
    train, test = read_features(root, limit)
    balanced: dict[str, dict[str, float]] = {}
    auc: dict[str, dict[str, float]] = {}
    for group, (train_x, test_x) in feature_groups(train, test).items():
        balanced[group], auc[group] = {}, {}
        for name, classifier in make_classifiers().items():
            balanced[group][name], auc[group][name] = fit_and_score(classifier, train_x, train.labels, test_x, test.labels)
    return {
        "files_per_class_and_split": limit,
        "files_read": {
            split: {name: int((features.labels == label).sum()) for label, name in enumerate(CLASS_NAMES)}
            for split, features in (("train", train), ("test", test))
        },
        "class_means": {
            name: {feature: round(float(train.numbers[train.labels == label, index].mean()), 2) for index, feature in enumerate(FEATURE_NAMES)}
            for label, name in enumerate(CLASS_NAMES)
        },
        "jpeg_quantisation_tables": {"train": table_counts(train), "test": table_counts(test)},
        # Equal sets per class are not enough: a 90/10 against a 10/90 mix of two tables is a cue.
        "same_jpeg_tables": len(tables := set(train.tables) | set(test.tables)) == 1 and NO_TABLES not in tables,
        "test_balanced_accuracy_without_content": balanced,
        "test_roc_auc_without_content": auc,
        "warnings": shift_warnings(train, test, balanced),
    }


USAGE = (
    "usage: python -m forgery.shortcuts CIFAKE_ROOT [FILES_PER_CLASS] (a CIFAKE folder or zip in the Kaggle layout; "
    "FILES_PER_CLASS a whole number, 2000 by default)"
)


def main(arguments: list[str]) -> int:
    """Print the report for `CIFAKE_ROOT [FILES_PER_CLASS]`; 0, or 2 with one `error:` line (as the other entrypoints)."""
    if arguments in (["-h"], ["--help"]):
        print(USAGE)
        return 0
    if len(arguments) not in (1, 2):
        print(f"error: {USAGE}", file=sys.stderr)
        return 2
    if len(arguments) == 2 and not (arguments[1].isascii() and arguments[1].isdigit() and int(arguments[1]) > 0):
        print(f"error: FILES_PER_CLASS must be a whole number above 0, got {arguments[1]!r}", file=sys.stderr)
        return 2
    try:
        report = shortcut_report(Path(arguments[0]).expanduser(), int(arguments[1]) if len(arguments) == 2 else 2000)
    except DataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for warning in report["warnings"]:
        print(f"warning: {warning}", file=sys.stderr)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
