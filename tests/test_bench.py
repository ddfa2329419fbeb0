"""The bench: its arithmetic and table, its option checks, and the real command on tiny data (no timed assertions)."""

from __future__ import annotations

import itertools
import json
import re
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from forgery import bench
from forgery.config import ConfigError
from forgery.data import CLASS_NAMES, Split
from tests.conftest import TINY_DEMO, run_forgery

TINY_STEPS = ["steps=3", "warmup_steps=1", "repeats=2"]
PIPELINE_ROWS = {"harness", "harness_no_checkpoint", "harness_training_only", "notebook", "plain"}
OVERHEAD_STAGES = {"start_up", "evaluate_and_explain", "write_outputs", "artefact_logging", "model_logging", "rest_of_run"}


# ---- Pure parts ------------------------------------------------------------------------------------


def test_ratios_are_harness_speed_over_each_peer_speed() -> None:
    timings = {
        "harness": {"steps": 10, "images": 80, "seconds": 0.4},  # 200 images/s
        "notebook": {"steps": 10, "images": 80, "seconds": 0.8},  # 100 images/s
        "plain": {"steps": 10, "images": 80, "seconds": 0.2},  # 400 images/s
    }
    rows = {row["pipeline"]: row for row in bench.training_rows(8, timings)}
    assert rows["harness"]["images_per_second"] == 200.0
    assert (rows["harness"]["vs_notebook"], rows["harness"]["vs_plain"]) == (2.0, 0.5)
    assert not {"vs_notebook", "vs_plain"} & (set(rows["notebook"]) | set(rows["plain"]))
    assert all(row["batch_size"] == 8 for row in rows.values())


def test_a_peer_left_out_gives_no_ratio_to_it() -> None:
    rows = bench.training_rows(4, {"harness": {"steps": 1, "images": 4, "seconds": 1.0}, "plain": {"steps": 1, "images": 4, "seconds": 2.0}})
    assert rows[0]["vs_plain"] == 2.0 and "vs_notebook" not in rows[0]


def test_the_fastest_or_median_round_is_reported_with_every_rounds_seconds() -> None:
    rounds = [{"steps": 2, "images": 16, "seconds": seconds, "round": index} for index, seconds in enumerate([3.0, 1.0, 2.0])]
    assert bench.chosen_timing(rounds, "median") == {"steps": 2, "images": 16, "seconds": 2.0, "round": 2, "seconds_each_round": [3.0, 1.0, 2.0]}
    assert bench.chosen_timing(rounds, "best") == {"steps": 2, "images": 16, "seconds": 1.0, "round": 1, "seconds_each_round": [3.0, 1.0, 2.0]}


def test_the_median_of_an_even_number_of_rounds_is_the_slower_middle_round_and_says_so() -> None:
    rounds = [{"steps": 2, "images": 16, "seconds": seconds} for seconds in (4.0, 1.0, 3.0, 2.0)]
    assert bench.chosen_timing(rounds[:2], "median")["seconds"] == 4.0  # of two, the slower: not the fastest again
    assert bench.chosen_timing(rounds, "median")["seconds"] == 3.0  # a measured round, not the mean of 2 and 3
    assert bench.reported_round("median", 4) == "lower median of 4 rounds (the slower middle one)"
    assert (bench.reported_round("median", 3), bench.reported_round("best", 1)) == ("median of 3 rounds", "fastest of 1 round")


def test_rounds_are_ranked_by_images_per_second_not_seconds() -> None:
    rounds = [{"steps": 2, "images": 10, "seconds": 1.0}, {"steps": 2, "images": 16, "seconds": 1.2}]  # 10 and 13.3 images/s
    assert bench.chosen_timing(rounds, "best")["images"] == 16
    assert bench.chosen_timing(rounds, "median")["images"] == 10


def table_ratios(text: str) -> dict[tuple[int, str], tuple[str, str]]:
    """(batch size, row label) -> the two ratio cells of each training row of the printed table."""
    cells: dict[tuple[int, str], tuple[str, str]] = {}
    labels = "|".join(re.escape(label) for label in bench.ROW_LABELS.values())
    for line in text.splitlines():
        found = re.match(rf"^\s*(\d+)\s+({labels})\s+\d+\s+\d+\s+[\d.]+\s+[\d.]+\s+\d+-\d+\s+(\S+)\s+(\S+)$", line)
        if found:
            cells[(int(found.group(1)), found.group(2))] = (found.group(3), found.group(4))
    return cells


def assert_table_matches(text: str, report: dict[str, Any]) -> None:
    """Every training row is in the table, with the JSON's ratios (or '-' where the JSON has none)."""
    cells = table_ratios(text)
    assert len(cells) == len(report["training"])
    for row in report["training"]:
        expected = tuple(str(row[key]) if key in row else "-" for key in ("vs_notebook", "vs_plain"))
        shown = cells[(row["batch_size"], bench.ROW_LABELS[row["pipeline"]])]
        assert tuple("-" if cell == "-" else str(float(cell)) for cell in shown) == expected, row


def test_table_shows_the_reports_ratios() -> None:
    timings = {
        "harness": {"steps": 3, "images": 24, "seconds": 0.3, "validation_images": 8, "validation_seconds": 0.01, "checkpoint_seconds": 0.05, "process_peak_rss_mib": 812.5},
        "harness_no_checkpoint": {"steps": 3, "images": 24, "seconds": 0.25, "process_peak_rss_mib": 812.5},
        "notebook": {"steps": 3, "images": 24, "seconds": 0.7},
        "plain": {"steps": 3, "images": 24, "seconds": 0.11},
    }
    report = {
        "settings": {"steps": 3, "warmup_steps": 1, "repeats": 1},
        "machine": {"backend": "tensorflow", "usable_cpus": 2, "load_average_1min": {"start": 1.0, "end": 1.5}},
        "data": {"name": "demo", "counts": {"train": {"total": 72}}, "array_mib": 0.4, "loading": {"build_seconds": 1.0}},
        "training": bench.training_rows(8, timings),
        "memory": {"peak_rss_mib": 900.0, "peak_rss_mib_after": {"loading": 300.0}, "data_arrays_mib": 0.4},
    }
    text = bench.table(report)
    assert_table_matches(text, report)
    assert "2.333" in text and "0.367" in text  # 80 images/s over 24/0.7 and over 24/0.11: the harness row's ratios
    assert "built in 1.000 s" in text
    assert "3 timed steps after 1 warm-up steps, fastest of 1 round (range" in text
    median_text = bench.table({**report, "settings": {**report["settings"], "repeats": 2, "statistic": "median"}})
    assert "lower median of 2 rounds (the slower middle one) (range" in median_text  # the header says which round it shows
    assert text.splitlines()[-1] == "peak memory of each training process (model, its data copies, TensorFlow): harness at batch 8 812.5 MiB"
    # the runtime named is the one measured
    jax_text = bench.table({**report, "machine": {**report["machine"], "backend": "jax"}})
    assert jax_text.splitlines()[-1] == "peak memory of each training process (model, its data copies, JAX): harness at batch 8 812.5 MiB"


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"backend": "theano"}, "backend"),
        ({"batch_sizes": [8, 0]}, "batch_size"),
        ({"batch_sizes": []}, "batch_size"),
        ({"batch_sizes": [True]}, "batch_size"),
        ({"steps": 0}, "steps"),
        ({"steps": 2.5}, "steps"),
        ({"warmup_steps": -1}, "warmup_steps"),
        ({"repeats": 0}, "repeats"),
        ({"parts": ["speed"]}, "parts"),
        ({"parts": []}, "parts"),
        ({"pipelines": ["pytorch_lightning"]}, "pipelines"),
        ({"statistic": "mean"}, "statistic"),
    ],
)
def test_bad_options_are_refused_naming_the_key(options: dict[str, Any], key: str) -> None:
    arguments = {"backend": "tensorflow", "batch_sizes": [8], "steps": 3, "warmup_steps": 0, "repeats": 1, "parts": list(bench.PARTS), "pipelines": list(bench.PIPELINES)}
    bench.check_options(**arguments)  # the defaults pass
    with pytest.raises(ConfigError, match=rf"^{key}"):
        bench.check_options(**{**arguments, **options})


def test_the_notebook_pipeline_needs_tensorflow(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench.importlib.util, "find_spec", lambda name: object())  # as if jax were installed
    with pytest.raises(ConfigError, match="notebook pipeline needs backend=tensorflow"):
        bench.check_options("jax", [8], 3, 0, 1, ["training"], ["harness", "notebook"])
    bench.check_options("jax", [8], 3, 0, 1, ["training"], ["harness", "plain"])


def test_the_notebook_counts_the_partial_batch_that_ends_each_pass() -> None:
    # 10 images in batches of 4: 4, 4, 2, then again 4, 4, 2, ...
    assert bench.images_in_first_batches(2, 10, 4) == 8
    assert bench.images_in_first_batches(3, 10, 4) == 10
    assert bench.images_in_first_batches(4, 10, 4) == 14  # a new pass starts full
    assert bench.images_in_first_batches(300, 12, 4) == 1200  # nothing partial when the batches divide the images
    assert bench.images_in_first_batches(300, 20_000, 128) == 38_304  # the CIFAKE sample's round at batch 128: one pass ends
    sizes = [min(4, 10 - (index % 3) * 4) for index in range(200)]  # the same, batch by batch
    assert all(bench.images_in_first_batches(count, 10, 4) == sum(sizes[:count]) for count in range(200))


def test_list_options_take_spaces_after_their_commas() -> None:
    assert bench.bracketed_list("batch_size=8, 16") == "batch_size=[8, 16]"
    assert bench.bracketed_list("pipelines=harness,plain") == "pipelines=[harness,plain]"
    assert bench.bracketed_list("steps=100, 200") == "steps=100, 200"  # not a list option: refused as a sweep


@pytest.mark.slow  # a bench under JAX, compiling each shape: about 20 s each
@pytest.mark.parametrize("loop", ["fit", "scan"])
def test_on_jax_no_timed_round_pays_for_compiling(tmp_path: Path, loop: str) -> None:
    # JAX compiles once per shape, and the short warm-up epoch validates on one batch and scans other lengths
    # than a timed epoch: the first timed round paid for those compilations (reported with repeats=1).
    import os
    import subprocess
    import sys

    probe = Path(__file__).with_name("bench_warmup_probe.py")
    result = subprocess.run(
        [sys.executable, str(probe), loop, str(tmp_path)], capture_output=True, text=True, timeout=300,
        env={**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}, cwd=Path(__file__).parents[1],
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"compilations_per_round": [0, 0]}


def test_the_notebook_reads_a_folder_as_it_is_only_when_the_loader_left_nothing_out(tmp_path: Path) -> None:
    # Its reader fails on a file the loader skipped and takes an extra folder for a third class.
    from omegaconf import OmegaConf

    root = tmp_path / "cifake"
    (root / "train").mkdir(parents=True)
    data_cfg = OmegaConf.create({"root": str(root)})
    images = Split(np.full((4, 32, 32, 3), 90, dtype=np.uint8), np.array([0, 1, 1, 0]))
    assert bench.notebook_folder(data_cfg, images, tmp_path / "a", {"converted_images": 2, "skipped_files": 0}) == root / "train"
    for kind in ("skipped_files", "passed_over", "read_errors", "dangling_links"):
        scratch = tmp_path / kind
        assert bench.notebook_folder(data_cfg, images, scratch, {kind: 1}) == scratch
        assert {name: len(list((scratch / name).iterdir())) for name in CLASS_NAMES} == {"FAKE": 2, "REAL": 2}


def test_cycled_takes_images_in_order_and_starts_over() -> None:
    split = Split(np.arange(3, dtype=np.uint8).repeat(32 * 32 * 3).reshape(3, 32, 32, 3), np.array([0, 1, 0]))
    taken = bench.cycled(split, 7)
    assert taken.images[:, 0, 0, 0].tolist() == [0, 1, 2, 0, 1, 2, 0]
    assert taken.labels.tolist() == [0, 1, 0, 0, 1, 0, 0]


def test_time_spent_in_counts_outermost_calls_and_puts_functions_back() -> None:
    module = types.SimpleNamespace()
    calls: list[str] = []

    def inner() -> None:
        calls.append("inner")

    def outer() -> None:
        module.inner()  # looked up at call time, as save() looks up write_state()
        calls.append("outer")

    module.inner, module.outer = inner, outer
    clock = itertools.count()  # each reading one second later
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(bench.time, "perf_counter", lambda: float(next(clock)))
        with bench.time_spent_in(module, "outer", "inner") as tally:
            module.outer()
    # Readings: outer starts at 0, inner starts at 1, outer ends at 2. Counting inner too would add its own end and more.
    assert tally.seconds == 2.0
    assert calls == ["inner", "outer"] and module.inner is inner and module.outer is outer


def test_time_spent_in_a_method_leaves_the_instance_as_it_was() -> None:
    class Model:
        def evaluate(self) -> str:
            return "evaluated"

    model = Model()
    with bench.time_spent_in(model, "evaluate") as tally:
        assert model.evaluate() == "evaluated"
    assert "evaluate" not in vars(model) and tally.seconds >= 0.0


# ---- The command -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        (["stepz=3"], "unknown config key 'stepz'"),
        (["steps=0"], "steps must be a whole number of at least 1"),
        (["batch_size=8,0"], "batch_size must be whole numbers of at least 1"),
        (["batch_size=8, 0"], "batch_size must be whole numbers of at least 1"),  # read as a list, not refused as a sweep
        (["batch_size=8,16.5"], "batch_size must be whole numbers of at least 1, got [8, 16.5]"),  # a list too, whatever its values
        (["batch_size=8,-8"], "batch_size must be whole numbers of at least 1, got [8, -8]"),
        (["parts=[speed]"], "parts must list some of loading, training, overhead"),
        (["backend=theano"], "backend must be one of tensorflow, jax, torch"),
        (["data=cifake"], "data.root is required"),
        (["data=cifake", "data.root=/does/not/exist"], "/does/not/exist"),
        # Values the loader itself would trip over, checked before it runs.
        (["parts=[loading]", "data.train_per_class=0"], "data.train_per_class must be at least 1, got 0"),
        (["parts=[loading]", "seed=-1"], "seed must be a whole number from 0 to 2**32 - 1, got -1"),
        (["parts=[loading]", "data.val_fraction=abc"], "data.val_fraction must be a number, got 'abc'"),
        # A comma list where the bench takes one value is a Hydra sweep, which only a multirun accepts.
        (["steps=100,200"], "steps=100,200: the bench takes one value per option"),
        (["batch_size=range(8,32,8)"], "batch_size=range(8,32,8): the bench takes one value per option"),  # a sweep function, not a list
        # Where the report cannot go, refused before any measuring.
        (["parts=[loading]", "output=."], "output=. is a folder"),
        (["parts=[loading]", "output=pyproject.toml/bench.json"], "pyproject.toml is a file, not a folder"),
    ],
)
def test_bad_option_is_one_line_and_exit_2(tmp_path: Path, arguments: list[str], expected: str) -> None:
    (tmp_path / "pyproject.toml").write_text("")  # a file that an output path may wrongly go below
    result = run_forgery("bench", *arguments, cwd=tmp_path, timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert not (tmp_path / "outputs").exists()


def assert_positive_numbers(value: Any, where: str = "report") -> None:
    """Every number in the report is above zero (ratios, seconds, images/s, memory)."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key not in ("settings", "machine"):
                assert_positive_numbers(item, f"{where}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            assert_positive_numbers(item, f"{where}[{index}]")
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        assert value > 0, where


@pytest.mark.slow
def test_demo_bench_measures_everything_and_writes_the_table_as_json(tmp_path: Path) -> None:
    output = tmp_path / "figures" / "bench.json"
    result = run_forgery("bench", *TINY_DEMO, *TINY_STEPS, "batch_size=4,8", f"output={output}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(output.read_text())

    assert {"command", "started", "settings", "data", "training", "overhead", "memory", "machine"} <= set(report)
    assert report["settings"]["batch_sizes"] == [4, 8] and report["command"].startswith("python -m forgery.bench")
    assert report["settings"]["reported_round"] == "fastest of 2 rounds"
    assert {(row["batch_size"], row["pipeline"]) for row in report["training"]} == {(size, name) for size in (4, 8) for name in PIPELINE_ROWS}
    for row in report["training"]:
        assert row["images"] == row["steps"] * row["batch_size"] and row["steps"] == 3
        assert row["seconds"] in row["seconds_each_round"] and len(row["seconds_each_round"]) == 2
        assert {"seconds", "images_per_second"} <= set(row)
        assert ({"vs_notebook", "vs_plain"} <= set(row)) == row["pipeline"].startswith("harness")
    harness = next(row for row in report["training"] if row["pipeline"] == "harness")
    assert {"validation_images", "validation_seconds", "checkpoint_seconds"} <= set(harness)
    assert report["data"]["loading"]["build_seconds"] > 0 and report["data"]["counts"]["train"]["total"] == 72
    assert set(report["overhead"]["seconds"]) == OVERHEAD_STAGES
    assert report["overhead"]["total_seconds"] == pytest.approx(sum(report["overhead"]["seconds"].values()), abs=0.01)
    assert set(report["overhead"]["first_run_only_seconds"]) == {"mlflow_store_creation"}
    assert set(report["memory"]["peak_rss_mib_after"]) == {"loading", "training", "overhead"}
    assert report["machine"]["backend"] == "tensorflow" and report["machine"]["cpu_count"] >= 1
    assert_positive_numbers(report)

    assert_table_matches(result.stdout, report)
    assert f"wrote {output}" in result.stdout
    # The overhead's MLflow run went to a throwaway store: nothing lands in the folder the bench ran in.
    assert sorted(path.name for path in tmp_path.iterdir()) == ["figures"]


def build_cifake(root: Path, per_class: int) -> Path:
    """A tiny CIFAKE folder in the Kaggle layout: `per_class` noise JPEGs per class and split."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for name in CLASS_NAMES:
            (root / split / name).mkdir(parents=True)
            for index in range(per_class):
                Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(root / split / name / f"{index}.jpg")
    return root


@pytest.mark.slow
def test_cifake_bench_times_cold_and_warm_loading_and_reads_the_folder(tmp_path: Path) -> None:
    root = build_cifake(tmp_path / "cifake", per_class=20)
    output = tmp_path / "bench.json"
    arguments = ["data=cifake", f"data.root={root}", *TINY_STEPS, "batch_size=8", "parts=[loading,training]", "pipelines=[notebook,plain]", f"output={output}"]
    result = run_forgery("bench", *arguments, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(output.read_text())
    assert set(report["data"]["loading"]) == {"cold_seconds", "warm_seconds"}
    assert [row["pipeline"] for row in report["training"]] == ["notebook", "plain"]
    assert "overhead" not in report and set(report["memory"]["peak_rss_mib_after"]) == {"loading", "training"}
    assert_positive_numbers(report)
    assert "writing" not in result.stdout  # the notebook read the CIFAKE folder itself, no JPEG copy
    assert not (tmp_path / "cache").exists()  # the cold load used a fresh cache folder, not the user's
    assert_table_matches(result.stdout, report)


# ---- Pipeline processes ----------------------------------------------------------------------------


def tiny_plain_setup(batch_size: int = 4) -> dict[str, Any]:
    split = Split(np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8), np.array([0, 1] * 4))
    return {"warm": bench.cycled(split, batch_size), "timed": bench.cycled(split, 2 * batch_size)}


def plain_cfg(compose_train, batch_size: int = 4) -> dict[str, Any]:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(compose_train(f"batch_size={batch_size}", "verbose=0", "output_dir=unused"), resolve=True)


def test_a_pipeline_process_times_rounds_and_reports_its_own_memory(compose_train) -> None:
    worker = bench.PipelineWorker("plain", "tensorflow", plain_cfg(compose_train), tiny_plain_setup())
    try:
        worker.wait_until_ready()
        timing = worker.time_round()["plain"]
    finally:
        worker.stop()
    assert (timing["steps"], timing["images"]) == (2, 8) and timing["seconds"] > 0
    assert timing["process_peak_rss_mib"] > 100  # a process running TensorFlow, measured in itself
    assert not worker.process.is_alive()


def test_a_failing_pipeline_process_stops_the_bench_with_its_error(compose_train) -> None:
    worker = bench.PipelineWorker("plain", "tensorflow", plain_cfg(compose_train), {"warm": None})  # the runner can't take this
    try:
        with pytest.raises(RuntimeError, match=r"^the plain pipeline failed: TypeError"):
            worker.wait_until_ready()
    finally:
        worker.stop()


def test_a_pipeline_process_that_dies_is_reported(compose_train) -> None:
    worker = bench.PipelineWorker("plain", "tensorflow", plain_cfg(compose_train), tiny_plain_setup())
    try:
        worker.wait_until_ready()
        worker.process.kill()  # as the kernel's out-of-memory killer would
        worker.process.join()
        with pytest.raises(RuntimeError, match=r"^the plain pipeline's process died \(exit code -9"):
            worker.time_round()
    finally:
        worker.stop()


def samples_seen_metric() -> Any:
    """A Keras metric adding up the batch sizes `fit` trains on: the images the model really saw in an epoch."""
    import keras

    class SamplesSeen(keras.metrics.Metric):
        def __init__(self) -> None:
            super().__init__(name="samples_seen")
            self.total = self.add_variable(shape=(), initializer="zeros", name="total")

        def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> None:
            self.total.assign_add(keras.ops.cast(keras.ops.shape(y_true)[0], "float32"))

        def result(self) -> Any:
            return self.total

    return SamplesSeen()


def test_the_notebook_runner_counts_the_images_each_round_really_trains(tmp_path: Path, compose_train, monkeypatch: pytest.MonkeyPatch) -> None:
    import keras
    from PIL import Image

    if keras.backend.backend() != "tensorflow":
        pytest.skip("the notebook pipeline runs on TensorFlow only")
    rng = np.random.default_rng(0)
    for name in CLASS_NAMES:  # 10 images in batches of 4: 4, 4, 2 per pass
        (tmp_path / name).mkdir()
        for index in range(5):
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(tmp_path / name / f"{index}.jpg")
    seen = samples_seen_metric()  # reset at each epoch's start, so after a round it holds that round's images
    original = bench.build_model
    monkeypatch.setattr(bench, "build_model", lambda cfg, metrics, *args: original(cfg, [*metrics, seen], *args))
    run = bench.notebook_runner(compose_train("batch_size=4", "verbose=0"), 1, tmp_path, steps=2, warmup_steps=1)
    for _ in range(2):  # after one warm-up batch: counting on from it would give 4 + 2 in the first round
        assert run()["notebook"]["images"] == int(seen.result()) == 8


def test_a_ctrl_c_stops_the_bench_in_one_line_without_resume_advice(tmp_path: Path) -> None:
    # Sent while the overhead's scratch run evaluates: that run used to print how to resume it from a
    # folder the bench deletes on the way out; elsewhere, Ctrl-C ended in a KeyboardInterrupt traceback.
    import os
    import signal
    import subprocess
    import sys

    output = tmp_path / "bench.json"
    environment = {key: value for key, value in os.environ.items() if key != "MLFLOW_TRACKING_URI"}
    process = subprocess.Popen(
        [sys.executable, "-m", "forgery.bench", "parts=[overhead]", *TINY_DEMO, f"output={output}"],
        cwd=tmp_path, env={**environment, "PYTHONUNBUFFERED": "1", "FORGERY_CACHE_DIR": str(tmp_path / "cache")},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    printed = []
    for line in process.stdout:
        printed.append(line)
        if line.startswith("epoch 1: "):
            process.send_signal(signal.SIGINT)
            break
    printed += process.stdout.readlines()
    process.wait(timeout=120)
    text = "".join(printed)
    assert process.returncode == 130, text[-3000:]
    assert text.rstrip().splitlines()[-1] == "interrupted: the bench stopped before it finished; no report was written"
    assert "resume with" not in text and "Traceback" not in text and "ended KILLED" not in text
    assert not output.exists()
