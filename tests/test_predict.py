"""`python -m forgery.predict`: one JSON line per input, error lines for bad files, exit codes 0/1/2."""

from __future__ import annotations

import concurrent.futures
import json
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image

from forgery.predict import UsageError, parse_arguments
from tests.conftest import run_forgery


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny untrained forgery model saved as .keras."""
    from forgery.models import cnn

    keras.utils.set_random_seed(0)
    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    cnn("tiny", [4, 8, 8]).save(path)
    return path


def save_image(path: Path, shape: tuple[int, ...], seed: int) -> Path:
    pixels = np.random.default_rng(seed).integers(0, 256, shape).astype("uint8")
    Image.fromarray(pixels).save(path)
    return path


def json_lines(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines()]  # every stdout line must be JSON


def test_arguments_split_into_paths_and_options() -> None:
    paths, options = parse_arguments(["a.png", "model_path=m.keras", "folder", "gradcam_dir=cams"])
    assert paths == ["a.png", "folder"]
    assert options == {"model_path": "m.keras", "gradcam_dir": "cams"}
    assert parse_arguments(["run_id=abc", "b.jpg"]) == (["b.jpg"], {"run_id": "abc"})


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ([], "no image paths"),
        (["model_path=m.keras"], "no image paths"),
        (["a.png"], "exactly one of run_id"),
        (["a.png", "run_id=x", "model_path=m.keras"], "exactly one of run_id"),
        (["a.png", "run_id=x", "registered=image-forgery@champion"], "exactly one of run_id"),
        (["a.png", "registered=champion"], "registered must be NAME@ALIAS, such as image-forgery@champion, got 'champion'"),
        (["a.png", "registered=image-forgery@"], "registered must be NAME@ALIAS"),
        (["a.png", "registered=@champion"], "registered must be NAME@ALIAS"),
        (["a.png", "runid=x"], "unknown option 'runid'"),
        (["a.png", "run_id="], "run_id needs a value"),
        (["a.png", "run_id=x", "run_id=y"], "run_id given twice"),
    ],
)
def test_bad_arguments_are_usage_errors(arguments: list[str], expected: str) -> None:
    with pytest.raises(UsageError, match=expected):
        parse_arguments(arguments)


def test_mixed_inputs_give_one_line_each_and_exit_1(tmp_path: Path, model_file: Path) -> None:
    good = save_image(tmp_path / "good.png", (32, 32, 3), seed=1)
    odd = save_image(tmp_path / "odd.jpg", (60, 100, 3), seed=2)  # 100 wide, 60 high
    grey = save_image(tmp_path / "grey.png", (32, 32), seed=3)
    whole = save_image(tmp_path / "whole.jpg", (32, 32, 3), seed=4).read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(whole[: len(whole) // 2])
    (tmp_path / "text.jpg").write_text("this is not a picture\n")
    inputs = [good, odd, grey, tmp_path / "truncated.jpg", tmp_path / "text.jpg", tmp_path / "missing.png"]
    result = run_forgery("predict", *map(str, inputs), f"model_path={model_file}", cwd=tmp_path, timeout=300)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    lines = json_lines(result.stdout)
    assert [line["path"] for line in lines] == [str(path) for path in inputs]
    predictions, errors = lines[:3], lines[3:]
    for line in predictions:
        assert set(line) <= {"path", "label", "confidence", "probabilities", "calibrated", "note"}
        assert line["label"] in ("FAKE", "REAL") and line["calibrated"] is False
        assert sum(line["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
        assert line["confidence"] == max(line["probabilities"].values())
        assert line["probabilities"][line["label"]] == line["confidence"]
    assert "note" not in predictions[0]
    assert "resized from 100x60 to 32x32" in predictions[1]["note"]
    assert "converted from L to RGB" in predictions[2]["note"]
    assert all(set(line) == {"path", "error"} for line in errors)
    assert "truncated" in errors[0]["error"]
    assert "not an image" in errors[1]["error"]
    assert "no such file" in errors[2]["error"]
    # The numbers are the model's own on the same pixels, not just well-formed.
    expected = keras.saving.load_model(model_file).predict(np.asarray(Image.open(good))[None], verbose=0)[0]
    np.testing.assert_allclose([predictions[0]["probabilities"][name] for name in ("FAKE", "REAL")], expected, atol=1e-5)


def test_folders_are_searched_recursively_and_gradcam_overlays_written(tmp_path: Path, model_file: Path) -> None:
    nested = tmp_path / "images" / "deeper"
    nested.mkdir(parents=True)
    save_image(tmp_path / "images" / "a.png", (32, 32, 3), seed=1)
    save_image(nested / "a.png", (40, 40, 3), seed=2)  # same file name: overlays must not overwrite each other
    (tmp_path / "images" / "notes.txt").write_text("not an image, and not picked up from a folder\n")
    result = run_forgery(
        "predict", "images", f"model_path={model_file}", f"gradcam_dir={tmp_path / 'cams'}", cwd=tmp_path, timeout=300
    )
    assert result.returncode == 0, result.stderr
    lines = json_lines(result.stdout)
    assert [Path(line["path"]).relative_to("images").as_posix() for line in lines] == ["a.png", "deeper/a.png"]
    overlays = [Path(line["gradcam"]) for line in lines]
    assert len(set(overlays)) == 2 and all(path.parent == tmp_path / "cams" for path in overlays)
    for path, line in zip(overlays, lines):
        assert path.name.endswith(f"-gradcam-{line['label'].lower()}.png")
        assert Image.open(path).size == (256, 256)


def test_a_dangling_link_in_a_folder_gets_its_error_line() -> None:
    import tempfile

    from forgery.predict import image_files

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        save_image(root / "a.png", (32, 32, 3), seed=1)
        (root / "gone.png").symlink_to(root / "deleted.png")  # its target was moved away
        (root / "notes.txt").symlink_to(root / "nowhere.txt")  # not an image name: not picked up
        assert image_files([folder]) == [root / "a.png", root / "gone.png"]


def test_a_long_file_name_gets_a_short_overlay_and_an_unwritable_overlay_an_error(tmp_path: Path, model_file: Path) -> None:
    long_name = save_image(tmp_path / ("x" * 240 + ".png"), (32, 32, 3), seed=1)  # 251 bytes: a legal name, too long with -gradcam-...
    blocked = save_image(tmp_path / "blocked.png", (32, 32, 3), seed=2)
    last = save_image(tmp_path / "last.png", (32, 32, 3), seed=3)
    cams = tmp_path / "cams"
    for label in ("fake", "real"):  # a folder where blocked.png's overlay would go, whichever class it gets
        (cams / f"00001-blocked-gradcam-{label}.png").mkdir(parents=True)
    result = run_forgery("predict", str(long_name), str(blocked), str(last), f"model_path={model_file}", f"gradcam_dir={cams}", cwd=tmp_path, timeout=300)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    lines = json_lines(result.stdout)
    assert [line["path"] for line in lines] == [str(long_name), str(blocked), str(last)]
    assert all(line["label"] in ("FAKE", "REAL") for line in lines)
    overlay = Path(lines[0]["gradcam"])
    assert overlay.is_file() and overlay.name == f"00000-{'x' * 100}-gradcam-{lines[0]['label'].lower()}.png"
    assert "gradcam" not in lines[1] and lines[1]["gradcam_error"].startswith("cannot write the Grad-CAM overlay: ")
    assert Path(lines[2]["gradcam"]).is_file()


def test_a_long_name_is_shortened_at_a_character_boundary() -> None:
    from forgery.predict import shortened

    assert shortened("a" * 240, 100) == "a" * 100
    assert shortened("é" * 80, 100) == "é" * 50  # two bytes each
    assert shortened("ab", 100) == "ab"


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ([], "no image paths"),
        (["a.png"], "exactly one of run_id"),
        (["a.png", "model_path=nope.keras"], "model file not found"),
        (["a.png", "run_id=0123456789abcdef"], "unknown run"),
        (["a.png", "registered=image-forgery@champion"], "unknown model image-forgery@champion: there is no MLflow store here"),
    ],
)
def test_usage_errors_exit_2_with_one_line(tmp_path: Path, arguments: list[str], expected: str) -> None:
    result = run_forgery("predict", *arguments, cwd=tmp_path, timeout=120)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], result.stderr
    assert not (tmp_path / "mlflow.db").exists()  # asking for an unknown run creates no store


def test_a_model_with_code_in_it_is_refused(tmp_path: Path) -> None:
    inputs = keras.Input((32, 32, 3))
    outputs = keras.layers.Dense(2, activation="softmax")(keras.layers.Lambda(lambda x: x[:, 0, 0, :])(inputs))
    keras.Model(inputs, outputs).save(tmp_path / "lambda.keras")
    save_image(tmp_path / "a.png", (32, 32, 3), seed=0)
    result = run_forgery("predict", "a.png", "model_path=lambda.keras", cwd=tmp_path, timeout=120)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip().splitlines()[-1].startswith("error: cannot load model"), result.stderr


@pytest.mark.slow
def test_run_id_loads_the_run_model_and_applies_its_temperature(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    from forgery.calibration import apply_temperature

    trained = run_forgery("train", "epochs=1", "data.train_per_class=60", "data.test_per_class=20", "verbose=0", cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("image-forgery").experiment_id])
    run_id = run.info.run_id
    image = save_image(tmp_path / "a.png", (32, 32, 3), seed=0)
    # The raw probabilities, from the same model file the run logged.
    (model_path,) = (tmp_path / "mlruns").rglob("model.keras")
    raw = json_lines(run_forgery("predict", str(image), f"model_path={model_path}", cwd=tmp_path, timeout=300).stdout)[0]
    # A temperature logged after training (at a later step, so it is the run's latest value) must be applied.
    client.log_metric(run_id, "temperature", 0.25, step=10_000)
    result = run_forgery("predict", str(image), f"run_id={run_id}", cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr
    (line,) = json_lines(result.stdout)
    assert line["calibrated"] is True and line["label"] == raw["label"]
    raw_probabilities = np.array([[raw["probabilities"]["FAKE"], raw["probabilities"]["REAL"]]])
    expected = apply_temperature(raw_probabilities, 0.25)[0]
    assert abs(expected[1] - raw_probabilities[0, 1]) > 1e-3  # else the comparison below could not tell them apart
    np.testing.assert_allclose([line["probabilities"]["FAKE"], line["probabilities"]["REAL"]], expected, atol=1e-4)
    unknown = run_forgery("predict", str(image), "run_id=0123456789abcdef0123456789abcdef", cwd=tmp_path, timeout=120)
    assert unknown.returncode == 2 and unknown.stderr.strip().splitlines()[-1] == (
        f"error: unknown run 0123456789abcdef0123456789abcdef in sqlite:///{tmp_path / 'mlflow.db'} (run predict in the folder the training ran in, or set MLFLOW_TRACKING_URI)"
    )
    # registered=NAME@ALIAS serves the run its alias points at, temperature included; an unset alias is one line
    unset = run_forgery("predict", str(image), "registered=image-forgery@champion", cwd=tmp_path, timeout=120)
    assert unset.returncode == 2 and unset.stdout == ""
    assert unset.stderr.strip().splitlines()[-1] == "error: no version of registered model 'image-forgery' has the alias 'champion' (python -m forgery.promote register=true sets it)"
    promoted = run_forgery("promote", f"run_id={run_id}", "register=true", f"dest={tmp_path / 'site'}", cwd=tmp_path, timeout=300)
    assert promoted.returncode == 0, promoted.stderr[-3000:]
    served = run_forgery("predict", str(image), "registered=image-forgery@champion", cwd=tmp_path, timeout=300)
    assert served.returncode == 0, served.stderr
    assert json_lines(served.stdout) == [line]


def symmetric_views(images: np.ndarray, view: str) -> list[np.ndarray]:
    """The images as a test-time view sees them: with their mirror images (flip), or in all 8 symmetries of the square (dihedral)."""
    if view == "flip":
        return [images, images[:, :, ::-1]]
    turned = [np.rot90(images, turns, axes=(1, 2)) for turns in range(4)]
    return [np.ascontiguousarray(image) for image in turned + [image[:, :, ::-1] for image in turned]]


@pytest.mark.parametrize("view", ["flip", "dihedral"])
def test_a_view_run_evaluates_serves_and_explains_the_same_average(tmp_path: Path, view: str) -> None:
    from mlflow.tracking import MlflowClient

    from forgery import evaluate
    from forgery.demo_data import load_demo
    from forgery.models import VIEW_AVERAGE_LAYERS, single_view

    augment = ["augment=dihedral_shift"] if view == "dihedral" else []
    trained = run_forgery("train", f"tta={view}", *augment, "epochs=1", "data.train_per_class=60", "data.test_per_class=20", "verbose=0", cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("image-forgery").experiment_id])
    card = json.loads((Path(run.data.tags["hydra_output_dir"]) / "report" / "model_card.json").read_text())
    assert card["test_time_view"] == view
    # The served model is the view (Keras's layers only), and the logged test metrics are its own.
    (model_path,) = (tmp_path / "mlruns").rglob("model.keras")
    served = keras.saving.load_model(model_path, safe_mode=True)
    assert VIEW_AVERAGE_LAYERS[view] in [layer.name for layer in served.layers]
    test = load_demo(seed=42, train_per_class=60, test_per_class=20).test
    probabilities = served.predict(test.images, verbose=0)
    network = single_view(served)
    single = network.predict(test.images, verbose=0)
    expected = np.mean([network.predict(images, verbose=0) for images in symmetric_views(test.images, view)], axis=0)
    np.testing.assert_allclose(probabilities, expected, atol=1e-6)
    logged = run.data.metrics["test_loss"]
    assert logged == pytest.approx(evaluate.headline_metrics(test.labels, probabilities)["test_loss"], abs=1e-5)
    assert logged != pytest.approx(evaluate.headline_metrics(test.labels, single)["test_loss"], abs=1e-5)  # not the single view's
    # forgery.predict scores with the view and explains the image as given.
    image = save_image(tmp_path / "a.png", (32, 32, 3), seed=5)
    result = run_forgery("predict", str(image), f"model_path={model_path}", f"gradcam_dir={tmp_path / 'cams'}", cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr
    (line,) = json_lines(result.stdout)
    pixels = np.asarray(Image.open(image))[None]
    np.testing.assert_allclose([line["probabilities"]["FAKE"], line["probabilities"]["REAL"]], served.predict(pixels, verbose=0)[0], atol=1e-4)
    assert Path(line["gradcam"]).is_file()


def test_pixels_without_a_known_scale_are_refused_not_blanked(tmp_path: Path) -> None:
    # PIL's convert clips 32-bit and float pixels to a blank picture, which would still get a confident label.
    from forgery.predict import read_input

    grey = np.random.default_rng(0).integers(0, 65536, (32, 32))
    Image.fromarray(grey.astype(np.int32), mode="I").save(tmp_path / "sixteen in I.tif")
    Image.fromarray((grey * 1000).astype(np.int32), mode="I").save(tmp_path / "thirty-two.tif")
    Image.fromarray((grey / 65535).astype(np.float32), mode="F").save(tmp_path / "float.tif")
    scaled = read_input(tmp_path / "sixteen in I.tif")
    assert scaled.error is None and scaled.note == "converted from I to RGB"
    np.testing.assert_array_equal(scaled.pixels[..., 0], (grey * 255 + 32767) // 65535)
    wide = read_input(tmp_path / "thirty-two.tif")
    assert wide.pixels is None and wide.error == (
        f"unreadable image: 32-bit integer pixels from {grey.min() * 1000} to {grey.max() * 1000}, beyond 16 bits, have no known scale; "
        "save the image with 8 or 16 bits per channel"
    )
    floating = read_input(tmp_path / "float.tif")
    assert floating.pixels is None and floating.error == "unreadable image: floating-point pixels have no fixed scale (0-1? 0-255?); save the image with 8 or 16 bits per channel"


def test_a_file_too_big_or_not_regular_is_not_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from forgery import data
    from forgery.predict import read_input

    image = save_image(tmp_path / "a.png", (32, 32, 3), seed=0)
    monkeypatch.setattr(data, "MAX_FILE_BYTES", image.stat().st_size - 1)
    assert read_input(image).error == f"file of {image.stat().st_size:,} bytes, over the 0 MiB an image may take; not read"
    os.mkfifo(tmp_path / "pipe.png")  # reading it would wait for a writer forever
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        answer = pool.submit(read_input, tmp_path / "pipe.png")
        try:
            assert answer.result(timeout=20).error == "not a regular file"
        finally:
            if not answer.done():  # the read blocks: open the writer end so the thread can end
                with open(tmp_path / "pipe.png", "wb"):
                    pass


def test_a_damaged_model_file_is_named_damaged_not_missing(tmp_path: Path) -> None:
    from forgery.predict import check_model_file

    (tmp_path / "bad.keras").write_text("garbage")
    with pytest.raises(UsageError, match=r"^cannot load model .*bad\.keras: not a \.keras file \(a \.keras file is a zip archive"):
        check_model_file(tmp_path / "bad.keras")


def test_an_image_a_broken_model_scores_nan_gets_an_error_line(tmp_path: Path, model_file: Path) -> None:
    from forgery.predict import classify

    model = keras.saving.load_model(model_file)
    model.set_weights([np.full_like(weights, np.nan) for weights in model.get_weights()])
    image = save_image(tmp_path / "a.png", (32, 32, 3), seed=0)
    (line,) = classify(model, None, [image], None, None)
    assert set(line) == {"path", "error"} and line["error"] == "the model gave non-finite probabilities [nan, nan]; its weights are broken"


def test_a_deleted_run_is_named_deleted_not_unknown(mlflow_store: str) -> None:
    from mlflow.tracking import MlflowClient

    from forgery import tracking
    from forgery.predict import _load_run_model

    with tracking.Tracker(None).run("unit", None, {}) as run_id:
        pass
    MlflowClient(mlflow_store).delete_run(run_id)
    with pytest.raises(UsageError, match=f"^run {run_id} is deleted in {mlflow_store}: restore it \\(mlflow runs restore --run-id {run_id}\\) or name another run$"):
        _load_run_model(run_id)


def test_a_run_model_keras_refuses_is_one_line_not_a_traceback(mlflow_store: str) -> None:
    # Keras refuses a Lambda layer in safe mode with its own error type, not MLflow's: still a usage error.
    from forgery import tracking
    from forgery.predict import _load_run_model

    inputs = keras.Input((32, 32, 3))
    outputs = keras.layers.Dense(2, activation="softmax")(keras.layers.Lambda(lambda x: x[:, 0, 0, :])(inputs))
    model = keras.Model(inputs, outputs)
    example = np.zeros((1, 32, 32, 3), "uint8")
    with tracking.Tracker(None).run("unit", None, {}) as run_id:
        tracking.log_keras_model(model, example, model.predict(example, verbose=0))
    with pytest.raises(UsageError, match=f"^run {run_id} has no loadable model: ValueError: .*Lambda"):
        _load_run_model(run_id)


def test_a_folder_that_cannot_be_listed_gets_an_error_line_not_silence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from forgery.predict import image_files

    save_image(tmp_path / "a.png", (32, 32, 3), seed=0)
    (tmp_path / "locked").mkdir()
    save_image(tmp_path / "locked" / "b.png", (32, 32, 3), seed=1)
    listing = os.scandir

    def refusing(path=".") -> object:  # as for a folder without read permission (root ignores chmod)
        if str(path).endswith("locked"):
            raise PermissionError(13, "Permission denied", str(path))
        return listing(path)

    monkeypatch.setattr(os, "scandir", refusing)
    assert image_files([str(tmp_path)]) == [tmp_path / "a.png", (tmp_path / "locked", "cannot read folder: Permission denied")]
    assert image_files([str(tmp_path / "locked")]) == [(tmp_path / "locked", "cannot read folder: Permission denied")]


def test_an_image_format_predict_does_not_read_is_named(tmp_path: Path) -> None:
    import struct
    import zlib

    from forgery.predict import read_input

    Image.new("RGB", (32, 32)).save(tmp_path / "icon.ico")
    (tmp_path / "text.png").write_text("not an image")
    assert read_input(tmp_path / "icon.ico").error == "an image in ICO format, which predict does not read (it reads JPEG, PNG, WEBP, BMP, GIF, TIFF)"
    assert read_input(tmp_path / "text.png").error == "not an image file (or a format Pillow cannot read)"
    # A 16-bit RGB PNG, which PIL opens as mode RGB: the note says what it was.
    rows = np.random.default_rng(0).integers(0, 65536, (32, 32, 3))
    raw = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in rows)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", 32, 32, 16, 2, 0, 0, 0)
    (tmp_path / "deep.png").write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    assert read_input(tmp_path / "deep.png").note == "converted from 16-bit RGB to 8-bit RGB"


def test_a_reader_that_leaves_ends_it_quietly_with_the_sigpipe_status(tmp_path: Path, model_file: Path) -> None:
    # `predict folder | head -1`: the reader is gone before the next line is written.
    import os
    import subprocess
    import sys

    images = [save_image(tmp_path / f"{number}.png", (32, 32, 3), seed=number) for number in range(3)]
    environment = {key: value for key, value in os.environ.items() if key != "MLFLOW_TRACKING_URI"}
    process = subprocess.Popen(
        [sys.executable, "-m", "forgery.predict", *map(str, images), f"model_path={model_file}"],
        cwd=tmp_path, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    process.stdout.close()  # before the first line: whenever it comes, no one reads it
    stderr = process.stderr.read()
    assert process.wait(timeout=300) == 141, stderr  # 128 + SIGPIPE, as a producer the signal killed
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr and "Exception ignored" not in stderr, stderr


def test_a_folder_scan_follows_linked_folders_once_and_keeps_pipes(tmp_path: Path) -> None:
    import os

    from forgery.predict import image_files, read_input

    root = tmp_path / "images"
    (root / "sub").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    save_image(root / "a.png", (32, 32, 3), seed=1)
    save_image(tmp_path / "elsewhere" / "b.png", (32, 32, 3), seed=2)
    (root / "linked").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (root / "sub" / "up").symlink_to(root, target_is_directory=True)  # a loop: scanned once, not forever
    os.mkfifo(root / "pipe.png")
    (root / ".hidden").mkdir()
    save_image(root / ".hidden" / "c.png", (32, 32, 3), seed=3)
    assert image_files([str(root)]) == [root / "a.png", root / "linked" / "b.png", root / "pipe.png"]
    assert read_input(root / "pipe.png").error == "not a regular file"  # the line it gets when named


def test_probability_rows_are_checked_within_a_float_tolerance() -> None:
    from forgery.predict import probability_problem

    assert probability_problem(np.array([[0.25, 0.75], [1.0, 0.0]], "float32")) is None
    assert probability_problem(np.array([[0.4993, 0.4993]], "float16")) is None  # 0.9985: float16 rounding
    assert probability_problem(np.array([[0.4993, 0.4993]], "float32")) == "its outputs for one image sum to 0.9986, not 1"
    assert probability_problem(np.array([[0.2, 0.8], [183.58, -12.0]], "float32")) == "it gave 183.58, outside [0, 1]"
    assert probability_problem(np.array([[np.nan, np.nan]], "float32")) is None  # left to the per-image line on broken weights


def test_a_model_that_does_not_output_probabilities_is_refused(tmp_path: Path) -> None:
    from forgery.predict import classify

    inputs = keras.Input((32, 32, 3))
    scores = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(inputs)))  # raw scores: no softmax
    scores.save(tmp_path / "scores.keras")
    image = save_image(tmp_path / "a.png", (32, 32, 3), seed=0)
    result = run_forgery("predict", "a.png", "model_path=scores.keras", cwd=tmp_path, timeout=120)
    assert result.returncode == 2 and result.stdout == "", result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.strip()]
    assert line.startswith("error: model scores.keras does not output probabilities: it gave ") and line.endswith(", outside [0, 1] (a forgery model ends in a softmax)")
    (classified,) = classify(scores, None, [image], None, None)  # an image past the load-time probe is checked too
    assert set(classified) == {"path", "error"} and classified["error"].endswith(", which are not probabilities")


def test_a_file_store_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    (tmp_path / "mlruns").mkdir()
    save_image(tmp_path / "x.jpg", (32, 32, 3), seed=0)
    result = run_forgery("predict", "x.jpg", "run_id=abc", cwd=tmp_path, env={"MLFLOW_TRACKING_URI": "./mlruns"}, timeout=120)
    assert result.returncode == 2 and result.stdout == "", result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.strip()]
    assert line.startswith("error: MLflow ") and "refuses the file store ./mlruns" in line and "MLFLOW_ALLOW_FILE_STORE=true" in line


def test_a_saved_overlay_draws_each_cell_where_it_looks(tmp_path: Path) -> None:
    from forgery.gradcam import cut_model, make_gradcam_heatmap, overlay
    from forgery.models import cnn
    from forgery.predict import GRADCAM_ALPHA, GRADCAM_UPSCALE, write_gradcam

    keras.utils.set_random_seed(2)
    cut = cut_model(cnn("small", [4, 8, 8], padding="valid"))  # the seed's unpadded grid
    image = np.random.default_rng(3).integers(0, 256, (32, 32, 3)).astype("uint8")
    saved = np.asarray(Image.open(write_gradcam(cut, image, 1, tmp_path, 1, Path("a b.png"))))
    heatmap = make_gradcam_heatmap(cut, image, 1)
    np.testing.assert_array_equal(saved, overlay(image, heatmap, GRADCAM_UPSCALE, GRADCAM_ALPHA, cut.grid))
    assert not np.array_equal(saved, overlay(image, heatmap, GRADCAM_UPSCALE, GRADCAM_ALPHA))
