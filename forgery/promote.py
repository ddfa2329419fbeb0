"""Entrypoint: `python -m forgery.promote [key=value ...]` publishes the best finished run's report as a static page.

Steps: choose a run (the best FINISHED one by a metric, or the one named), check its report artefacts,
stage them with the page files in a folder beside `dest`, then swap that folder in with two renames.
A reader sees the old page or the new one, never a mix, and a refusal or failure leaves `dest` (and the
champion alias) as it was. Promotes of one `dest` take turns, under a lock file beside it.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import tempfile
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

import hydra
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from forgery import tracking
from forgery.data import CLASS_NAMES
from forgery.report import GRADCAM_SAMPLES, input_file, overlay_file

REPORT_FOLDER = "report"
# Every file a promotable run must have, under the names train writes: what the page reads.
REPORT_FILES: tuple[str, ...] = (
    "training_metrics.json",
    "classification_report.tsv",
    "gradcam_results.json",
    "model_card.json",
    "calibration.json",
    "gradcam_checks.json",
    "robustness.json",
    *(input_file(sample) for sample in GRADCAM_SAMPLES),
    *(overlay_file(sample, target) for sample in GRADCAM_SAMPLES for target in range(len(CLASS_NAMES))),
)
# The page lives in the package because public/projects/ is git-ignored run output.
SITE_FOLDER = Path(__file__).with_name("site")
SITE_FILES: tuple[str, ...] = ("index.html", "app.js", "style.css")
CONFIG_FILE = Path(__file__).resolve().parents[1] / "conf" / "promote.yaml"
PROMOTION_FILE = "promotion.json"
CHAMPION_ALIAS = "champion"
# Tags where a run records the commit it was trained from (MLflow's own, then train's copy).
COMMIT_TAGS: tuple[str, ...] = ("mlflow.source.git.commit", "git_commit")


class PromoteError(Exception):
    """A reason to refuse; the message is one line and `dest` has not been touched."""


@dataclass(frozen=True)
class Choice:
    """The run to promote and the facts promotion.json records about it."""

    run_id: str
    run_name: str | None
    experiment: str
    metric: str
    value: float
    source_commit: str | None


# conf/ also holds train's `experiment/` presets group, and Hydra reads `experiment=NAME` as a pick from a
# group when one of that name is on the search path. Composed from the config store instead, with no
# search path of its own, promote.yaml's `experiment` stays a plain key.
DEFAULTS = OmegaConf.load(CONFIG_FILE)
ConfigStore.instance().store(name="promote", node=DEFAULTS)


@hydra.main(version_base="1.3", config_path=None, config_name="promote")
def main(cfg: DictConfig) -> None:
    """Hydra entrypoint: a refusal becomes one `error:` line on stderr and exit code 2, never a traceback."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # else one bar per downloaded file
    if not str(cfg.dest).strip():  # Path("") is the working folder, which dest then was said to be
        print(f"error: dest is empty; give the page's folder ({DEFAULTS.dest} by default)", file=sys.stderr)
        raise SystemExit(2)
    warning = test_metric_warning(str(cfg.metric), _optional_text(cfg.run_id))
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    try:
        record = promote(
            experiment=str(cfg.experiment),
            metric=str(cfg.metric),
            mode=str(cfg.mode),
            run_id=_optional_text(cfg.run_id),
            parent_run_id=_optional_text(cfg.parent_run_id),
            dest=Path(str(cfg.dest)),
            dry_run=_flag(cfg.dry_run, "dry_run"),
            register=_flag(cfg.register, "register"),
            model_name=str(cfg.model_name),
        )
    except PromoteError as error:
        print(f"error: {_first_line(str(error))}", file=sys.stderr)
        raise SystemExit(2) from None
    print(summary(record, Path(str(cfg.dest)), bool(cfg.dry_run), bool(cfg.register), str(cfg.model_name)))


def test_metric_warning(metric: str, run_id: str | None) -> str | None:
    """Why ranking by `metric` biases the page, for a test metric (None for a named run, which no metric picks)."""
    if run_id is not None or not metric.startswith("test_"):
        return None
    return (
        f"metric={metric} picks the run by its test split, so the test figures the page shows are the best of "
        "several draws, not a fair estimate; rank by a validation metric (evaluated_val_auc, the default, or val_loss mode=min)"
    )


def promote(
    *,
    experiment: str,
    metric: str,
    mode: str,
    run_id: str | None,
    parent_run_id: str | None,
    dest: Path,
    dry_run: bool,
    register: bool,
    model_name: str,
) -> dict[str, Any]:
    """Choose and check a run, then (unless `dry_run`) publish it to `dest`; return the promotion record."""
    check_options(metric, mode, model_name)
    try:
        dest = through_link(dest)
        check_dest(dest, Path.cwd())
        check_writable(dest)
    except OSError as error:  # a folder on the way that this user may not look into
        raise PromoteError(f"dest {dest} cannot be checked: {error.strerror or error}{f' ({error.filename})' if error.filename else ''}") from None
    try:
        tracking.check_reachable()  # a dead server: one line now, not minutes of retries and a traceback
    except tracking.TrackingUnavailable as error:
        raise PromoteError(str(error)) from None
    if not tracking.store_exists():
        raise PromoteError("no MLflow store here (run python -m forgery.train first, or set MLFLOW_TRACKING_URI)")
    choice = choose_run(experiment, metric, mode, run_id, parent_run_id)
    problem = artefact_problem(tracking.artifact_names(choice.run_id, REPORT_FOLDER))
    if problem:
        raise PromoteError(f"run {choice.run_id} cannot be promoted: {problem}")
    if register:
        check_has_model(choice.run_id)
    record = promotion_record(choice, sorted(REPORT_FILES + SITE_FILES), datetime.now(timezone.utc))
    if dry_run:
        return record
    return publish(choice.run_id, dest, record, model_name if register else None)


def check_options(metric: str, mode: str, model_name: str) -> None:
    """Refuse option values that cannot work, before touching MLflow."""
    if mode not in ("max", "min"):
        raise PromoteError(f"mode must be max or min, got {mode!r}")
    if not metric.strip():
        raise PromoteError("metric must be a metric name such as evaluated_val_auc")
    if not model_name.strip():
        raise PromoteError("model_name must be a non-empty name")


def through_link(dest: Path) -> Path:
    """The folder a symlinked `dest` points at, resolved once: promote publishes through the link rather than replacing it."""
    if not dest.is_symlink():
        return dest
    try:
        return dest.resolve(strict=True)
    except (OSError, RuntimeError):  # RuntimeError: a loop of links
        raise PromoteError(f"dest {dest} is a link to {os.readlink(dest)}, which leads nowhere; make that folder or remove the link") from None


def check_dest(dest: Path, working_folder: Path) -> None:
    """Refuse a `dest` whose replacement would destroy something promote did not write."""
    if working_folder.resolve().is_relative_to(dest.resolve()):
        raise PromoteError(f"dest {dest} is the working folder or holds it; choose a folder of its own")
    if dest.exists() and not dest.is_dir():
        raise PromoteError(f"dest {dest} is a file, not a folder")
    blocking = next((folder for folder in dest.parents if folder.exists() and not folder.is_dir()), None)
    if blocking is not None:
        raise PromoteError(f"dest {dest} cannot be made: {blocking} is a file, not a folder")
    # The swap deletes the old dest, so it must be empty or an earlier promotion.
    if dest.is_dir() and any(dest.iterdir()) and not (dest / PROMOTION_FILE).is_file():
        raise PromoteError(f"dest {dest} holds files but no {PROMOTION_FILE}, so promote did not write it; refusing to replace it")


def check_writable(dest: Path) -> None:
    """Refuse a `dest` whose folder promote cannot write in: it stages and swaps there (checked by a dry run too)."""
    folder = next(folder for folder in [dest.parent, *dest.parent.parents] if folder.exists())  # the one promote would create in
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PromoteError(f"dest {dest} cannot be written: {folder} is not writable")


def check_has_model(run_id: str) -> None:
    """Refuse to register a run that logged no model (checked by a dry run too, before anything is staged)."""
    try:
        found = tracking.has_model(run_id)
    except RuntimeError as error:
        raise PromoteError(f"could not register the model of run {run_id}: {error}") from None
    if not found:
        raise PromoteError(f"could not register the model of run {run_id}: it logged none (runs:/{run_id}/model)")


def choose_run(experiment: str, metric: str, mode: str, run_id: str | None, parent_run_id: str | None) -> Choice:
    """The named run when `run_id` is set, else the best FINISHED run of the experiment (or of one sweep)."""
    if run_id is not None and parent_run_id is not None:
        raise PromoteError("run_id and parent_run_id both pick the run; give one of them")
    if parent_run_id is not None:
        # A sweep logs to its own tracking.experiment: search where its parent run is, whatever experiment= says.
        parent = tracking.get_run(parent_run_id)
        if parent is None:
            raise PromoteError(f"parent run {parent_run_id} does not exist")
        if parent["tags"].get("sweep") != "parent":
            raise PromoteError(f"run {parent_run_id} is not a sweep's parent run (promote it with run_id={parent_run_id})")
        experiment = tracking.experiment_name(parent["experiment_id"])
    if run_id is not None:
        run = tracking.get_run(run_id)
        if run is None:
            raise PromoteError(tracking.deleted_run(run_id, "promote another run") or f"run {run_id} does not exist")
        return to_choice(check_named_run(run, metric), tracking.experiment_name(run["experiment_id"]), metric)
    found = tracking.experiment_id(experiment)
    if found is None:
        try:
            tracking.check_experiment(experiment, other="name another with experiment=")  # deleted in mlflow ui: say how to restore it
        except tracking.TrackingUnavailable as error:
            raise PromoteError(str(error)) from None
        raise PromoteError(f"experiment {experiment!r} does not exist (python -m forgery.train creates it)")
    return to_choice(best_run(tracking.search_runs(found), metric, mode, parent_run_id, experiment), experiment, metric)


def check_named_run(run: dict[str, Any], metric: str) -> dict[str, Any]:
    """The run itself, when it finished and has the metric."""
    if run["tags"].get("sweep") == "parent":  # its best_* metrics would pass, its missing report would not
        raise PromoteError(f"run {run['run_id']} is a sweep's parent run, which holds no report; promote its best job with parent_run_id={run['run_id']}")
    if run["status"] != "FINISHED":
        raise PromoteError(f"run {run['run_id']} is {run['status']}, not FINISHED")
    if metric_value(run, metric) is None:
        raise PromoteError(f"run {run['run_id']} has no metric {metric!r}{_known_metrics([run])}")
    return run


def best_run(runs: list[dict[str, Any]], metric: str, mode: str, parent_run_id: str | None, experiment: str) -> dict[str, Any]:
    """The FINISHED training run with the highest (`max`) or lowest (`min`) metric; on a tie the newest wins.

    A sweep's parent run is never a candidate: it holds a summary, not a report (its best_* metrics
    would otherwise win a ranking by such a name).
    """
    where = f"experiment {experiment!r}"
    parent = next((run for run in runs if run["run_id"] == parent_run_id), None)
    runs = [run for run in runs if run["tags"].get("sweep") != "parent"]
    if parent_run_id is not None:
        runs = [run for run in runs if run["tags"].get("mlflow.parentRunId") == parent_run_id]
        where += f" under parent run {parent_run_id}"
        recorded = sweep_best(parent, runs, metric, mode)
        if recorded is not None:
            return recorded
    finished = [run for run in runs if run["status"] == "FINISHED"]
    if not finished:
        raise PromoteError(f"no FINISHED run in {where} ({len(runs)} runs in all)")
    scored = [run for run in finished if metric_value(run, metric) is not None]
    if not scored:
        raise PromoteError(f"metric {metric!r} is missing on all {len(finished)} FINISHED runs in {where}{_known_metrics(finished)}")
    sign = 1.0 if mode == "max" else -1.0
    return max(scored, key=lambda run: (sign * metric_value(run, metric), run["start_time"]))


def sweep_best(parent: dict[str, Any] | None, children: list[dict[str, Any]], metric: str, mode: str) -> dict[str, Any] | None:
    """The child the sweep recorded as its best (tag best_run_id), when it ranked by this metric and mode.

    Ties (equal scores, common with small validation splits) are where two rankings can differ; deferring
    to the sweep's record makes `parent_run_id=` publish the run the sweep's summary names.
    """
    if parent is None or parent["params"].get("sweep.metric") != metric or parent["params"].get("sweep.mode") != mode:
        return None
    best = next((run for run in children if run["run_id"] == parent["tags"].get("best_run_id")), None)
    if best is None or best["status"] != "FINISHED" or metric_value(best, metric) is None:
        return None
    # A job killed in the sweep and resumed to FINISHED afterwards can beat the record: then the record is only a tie-break no more.
    scores = [value for run in children if run["status"] == "FINISHED" and (value := metric_value(run, metric)) is not None]
    top = max(scores) if mode == "max" else min(scores)
    return best if metric_value(best, metric) == top else None


def metric_value(run: dict[str, Any], metric: str) -> float | None:
    """A run's value of a metric; NaN counts as missing because it cannot be ranked."""
    value = run["metrics"].get(metric)
    return None if value is None or math.isnan(value) else float(value)


def to_choice(run: dict[str, Any], experiment: str, metric: str) -> Choice:
    """The facts about a chosen run that promotion records."""
    commit = next((run["tags"][tag] for tag in COMMIT_TAGS if run["tags"].get(tag)), None)
    return Choice(run["run_id"], run["run_name"], experiment, metric, float(run["metrics"][metric]), commit)


def artefact_problem(names: list[str]) -> str | None:
    """Why a run's report/ listing cannot be promoted (an unsafe or missing name), or None when it can."""
    unsafe = sorted(name for name in names if not is_plain_name(name))
    if unsafe:
        return f"unsafe artefact name {unsafe[0]!r} in {REPORT_FOLDER}/"
    missing = [name for name in REPORT_FILES if name not in names]
    if missing:
        return f"{REPORT_FOLDER}/{missing[0]} is missing" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
    return None


def is_plain_name(name: str) -> bool:
    """A bare file name: no folder part, no '..', nothing that could land outside `dest`."""
    return name not in ("", ".") and not any(part in name for part in ("/", "\\", ".."))


def gradcam_problem(gradcam_results: dict[str, Any]) -> str | None:
    """Why gradcam_results.json cannot be shown (not laid out as train writes it, or it names a file that is not a promoted report file), or None."""
    if not isinstance(gradcam_results, dict) or not isinstance(gradcam_results.get("samples"), list):
        return "gradcam_results.json is not laid out as train writes it (an object whose samples are a list)"
    for sample in gradcam_results["samples"]:
        overlays = sample.get("overlays", {}) if isinstance(sample, dict) else None
        if not isinstance(overlays, dict):
            return "gradcam_results.json has a sample that is not laid out as train writes it"
        for name in [sample.get("input"), *overlays.values()]:
            if not isinstance(name, str) or not is_plain_name(name) or name not in REPORT_FILES:
                return f"gradcam_results.json names {name!r}, which is not one of the promoted report files"
    return None


def promotion_record(choice: Choice, files: list[str], now: datetime) -> dict[str, Any]:
    """The promotion.json payload: which run, by what measure, from which commit, when, and what was copied."""
    return {
        "run_id": choice.run_id,
        "run_name": choice.run_name,
        "experiment": choice.experiment,
        "metric": choice.metric,
        "metric_value": choice.value,
        "source_commit": choice.source_commit,
        "promoted_at": now.astimezone(timezone.utc).isoformat(timespec="seconds"),
        "files": files,
    }


def publish(run_id: str, dest: Path, record: dict[str, Any], model_name: str | None) -> dict[str, Any]:
    """Stage the files beside `dest`, register the model if asked, then swap the staged folder in; one promote of `dest` at a time."""
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        lock = lock_file(dest).open("a")
    except OSError as error:
        raise PromoteError(f"promotion of run {run_id} failed before staging, {dest} left as it was: {error}") from error
    with lock:  # closing it frees the lock, however this ends
        wait_for_turn(lock, dest)
        return publish_locked(run_id, dest, record, model_name)


def lock_file(dest: Path) -> Path:
    """The file whose lock promotes of `dest` take turns on; it stays, as deleting a lock file lets two hold it."""
    return dest.with_name(f".{dest.name}.promote.lock")


def wait_for_turn(lock: IO[str], dest: Path) -> None:
    """Hold an exclusive lock on `lock` (freed when it is closed), saying so when another promote of `dest` holds it."""
    import fcntl

    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print(f"waiting for another promote of {dest} to finish", file=sys.stderr, flush=True)
        fcntl.flock(lock, fcntl.LOCK_EX)


def publish_locked(run_id: str, dest: Path, record: dict[str, Any], model_name: str | None) -> dict[str, Any]:
    """`publish`, holding dest's lock: a failure after registering puts the champion alias back where it was."""
    try:
        recover_interrupted(dest)
        # Same parent as dest, so the final rename is atomic (one filesystem).
        staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.staging-", dir=dest.parent))
    except OSError as error:
        raise PromoteError(f"promotion of run {run_id} failed before staging, {dest} left as it was: {error}") from error
    previous: str | None = None
    registered = False
    try:
        staging.chmod(0o755)  # mkdtemp makes it private; a static server running as another user must read it
        stage(run_id, staging)
        if model_name is not None:
            champion = tracking.model_version_by_alias(model_name, CHAMPION_ALIAS)
            previous = champion["version"] if champion else None
            version = tracking.register_model(run_id, model_name, CHAMPION_ALIAS)
            registered = True
            record = {**record, "registered_model": {"name": model_name, "version": version, "alias": CHAMPION_ALIAS}}
        (staging / PROMOTION_FILE).write_text(json.dumps(record, indent=2) + "\n")
        swap_in(staging, dest)
    except BaseException as error:
        shutil.rmtree(staging, ignore_errors=True)
        alias = restore_alias(str(model_name), previous) if registered else ""
        if isinstance(error, (OSError, RuntimeError, ValueError)):
            raise PromoteError(f"promotion of run {run_id} failed, {dest} left as it was{alias}: {error}") from error
        raise
    return record


def restore_alias(model_name: str, previous: str | None) -> str:
    """Point the champion alias back at `previous` (None: remove it); the error line's clause saying how that went."""
    where = f"version {previous}" if previous else "no version"
    try:
        tracking.point_alias(model_name, CHAMPION_ALIAS, previous)
    except RuntimeError as error:
        return f"; alias {CHAMPION_ALIAS!r} of {model_name!r} could not be put back on {where} ({error}), so it names the new version"
    return f", as is alias {CHAMPION_ALIAS!r} (back on {where})"


def stage(run_id: str, staging: Path) -> None:
    """Fill `staging` with the run's report files and the page files, then check what the page will read."""
    downloads = staging / ".download"
    for name in REPORT_FILES:
        copy_file(tracking.download_artifact(run_id, f"{REPORT_FOLDER}/{name}", downloads), staging / name)
    shutil.rmtree(downloads)
    for name in SITE_FILES:
        copy_file(SITE_FOLDER / name, staging / name)
    for name in REPORT_FILES:
        if name.endswith(".json"):
            try:
                json.loads((staging / name).read_text(), parse_constant=refuse_constant)
            except ValueError as error:
                raise ValueError(f"{REPORT_FOLDER}/{name} is not valid JSON ({error})") from None
    problem = gradcam_problem(json.loads((staging / "gradcam_results.json").read_text()))
    if problem:
        raise ValueError(problem)


def refuse_constant(name: str) -> None:
    """Refuse NaN and Infinity: Python's json reads them, a browser's JSON.parse does not."""
    raise ValueError(f"it holds {name}, which a browser cannot read; train writes null for an undefined value")


def copy_file(source: Path, target: Path) -> None:
    """Copy one file's bytes (tests replace this to inject a failure mid-copy)."""
    shutil.copyfile(source, target)


def swap_in(staging: Path, dest: Path) -> None:
    """Replace `dest` by `staging`: rename the old folder away, rename the new one in, delete the old one."""
    retired = dest.with_name(f".{dest.name}.old-{uuid.uuid4().hex[:12]}")
    had_old = dest.exists()
    if had_old:
        os.rename(dest, retired)
    try:
        os.rename(staging, dest)
    except BaseException:
        if had_old:
            os.rename(retired, dest)
        raise
    if had_old:
        try:
            shutil.rmtree(retired)
        except OSError as error:  # the new page is in place; a leftover must not pass for a page later
            print(f"warning: the previous page could not all be removed from {retired} ({error.strerror or error}); remove it by hand", file=sys.stderr)


def recover_interrupted(dest: Path) -> None:
    """Clean up after a promote that was killed: drop its staging folder, and restore the old page if it was mid-swap."""
    # Called under dest's promote lock, so no staging folder here belongs to a promote still running.
    leftovers = sorted(path for path in dest.parent.iterdir() if path.name.startswith(f".{dest.name}.staging-"))
    retired = sorted(
        (path for path in dest.parent.iterdir() if path.name.startswith(f".{dest.name}.old-")),
        key=lambda path: path.stat().st_mtime,
    )
    if not dest.exists() and retired:
        # The page renamed away mid-swap is whole; an older leftover that could not all be removed is not,
        # though its failed removal made it look newer.
        whole = [path for path in retired if is_whole_page(path)]
        chosen = (whole or retired)[-1]
        retired.remove(chosen)
        os.rename(chosen, dest)
    for path in leftovers + retired:
        shutil.rmtree(path, ignore_errors=True)


def is_whole_page(folder: Path) -> bool:
    """Whether `folder` holds a promotion.json and every file it lists."""
    try:
        files = json.loads((folder / PROMOTION_FILE).read_text())["files"]
        return isinstance(files, list) and all(isinstance(name, str) and (folder / name).is_file() for name in files)
    except (OSError, ValueError, KeyError, TypeError):
        return False


def summary(record: dict[str, Any], dest: Path, dry_run: bool, register: bool, model_name: str) -> str:
    """What was (or, for a dry run, would be) promoted, and how to look at it."""
    run = record["run_id"] + (f" ({record['run_name']})" if record.get("run_name") else "")
    metric = f"{record['metric']} = {record['metric_value']:.6g}"
    if dry_run:
        lines = [
            f"dry run: would promote run {run} of experiment {record['experiment']!r}, {metric}",
            f"  files: {', '.join(record['files'])} and {PROMOTION_FILE}",
            f"  into:  {dest}",
        ]
        if register:
            lines.append(f"  and register runs:/{record['run_id']}/model as {model_name!r} with alias {CHAMPION_ALIAS!r}")
        return "\n".join([*lines, "nothing was changed"])
    lines = [f"promoted run {run} of experiment {record['experiment']!r}, {metric}", f"  into:  {dest}"]
    if "registered_model" in record:
        model = record["registered_model"]
        lines.append(f"  model: {model['name']} version {model['version']}, alias {model['alias']!r}")
    lines.append(f"preview: python -m http.server --bind 127.0.0.1 --directory {dest} 8000  then open http://127.0.0.1:8000/")
    return "\n".join(lines)


def _optional_text(value: Any) -> str | None:
    """A config value as text, with null and '' meaning not set (Hydra reads an all-digit id as a number)."""
    return None if value is None or str(value) == "" else str(value)


def _flag(value: Any, key: str) -> bool:
    """A true/false option; any other text (`register=no`, which Python's bool() reads as true) is refused."""
    if not isinstance(value, bool):
        raise PromoteError(f"{key} must be true or false, got {value!r}")
    return value


def _known_metrics(runs: list[dict[str, Any]]) -> str:
    """A hint listing a few metric names the runs do have."""
    names = sorted({name for run in runs for name in run["metrics"]})
    if not names:
        return " (they log no metrics)"
    return f" (known: {', '.join(names[:8])}{', ...' if len(names) > 8 else ''})"


def _first_line(text: str) -> str:
    """The first non-empty line, so an error stays one line even when MLflow's message is several."""
    return next((line for line in text.splitlines() if line.strip()), text)


def cli() -> None:
    """`python -m forgery.promote`: refuse a misspelt key or bad value in one line, then hand over to Hydra."""
    from forgery.config import help_error, override_error

    arguments = sys.argv[1:]
    if all(not argument.startswith("-") for argument in arguments):  # --help, --cfg and the like are Hydra's
        problem = override_error(None, "promote", arguments)  # from the config store, as main composes it
        if problem:
            print(f"error: {problem}", file=sys.stderr)
            raise SystemExit(2)
    elif help_error(None, "promote", arguments):
        print(f"error: {help_error(None, 'promote', arguments)}", file=sys.stderr)
        raise SystemExit(2)
    main()


if __name__ == "__main__":
    cli()
