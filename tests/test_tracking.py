"""The MLflow door: params flattening, and runs that always end with the right status in a real store."""

from __future__ import annotations

from contextlib import nullcontext

import pytest
from mlflow.tracking import MlflowClient

from forgery import tracking


def test_flatten_params_uses_dotted_keys() -> None:
    params = tracking.flatten_params({"optimizer": {"lr": 0.001, "name": "adam"}, "epochs": 5, "model": {"filters": [32, 64]}})
    assert params == {"optimizer.lr": "0.001", "optimizer.name": "adam", "epochs": "5", "model.filters": "[32, 64]"}


def test_overlong_params_are_cut_not_fatal() -> None:
    assert len(tracking.flatten_params({"text": "x" * 7000})["text"]) == 6000


def _only_run(uri: str):
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("unit").experiment_id])
    assert len(runs) == 1
    return runs[0]


def test_run_ends_finished_with_metrics_at_steps(mlflow_store: str) -> None:
    tracker = tracking.Tracker(None)
    with tracker.run("unit", "ok", {"purpose": "test"}):
        tracker.metrics({"loss": 0.5}, step=1)
        tracker.metrics({"loss": 0.4}, step=2)
    run = _only_run(mlflow_store)
    assert run.info.status == "FINISHED" and run.data.tags["purpose"] == "test"
    history = MlflowClient(mlflow_store).get_metric_history(run.info.run_id, "loss")
    assert [(point.step, point.value) for point in history] == [(1, 0.5), (2, 0.4)]


def test_run_ends_failed_with_the_reason(mlflow_store: str) -> None:
    with pytest.raises(RuntimeError), tracking.Tracker(None).run("unit", None, {}):
        raise RuntimeError("disk full")
    run = _only_run(mlflow_store)
    assert run.info.status == "FAILED" and run.data.tags["failure_reason"] == "RuntimeError: disk full"


def test_a_reopened_run_that_finishes_drops_the_earlier_failure_reason(mlflow_store: str) -> None:
    with pytest.raises(KeyboardInterrupt), tracking.Tracker(None).run("unit", None, {}) as run_id:
        raise KeyboardInterrupt
    assert MlflowClient(mlflow_store).get_run(run_id).data.tags["failure_reason"] == "interrupted (KeyboardInterrupt)"
    with tracking.Tracker(None).run("unit", None, {}, run_id=run_id):  # as resume= reopens it
        pass
    run = MlflowClient(mlflow_store).get_run(run_id)
    assert run.info.status == "FINISHED" and "failure_reason" not in run.data.tags


def test_run_ends_killed_on_ctrl_c(mlflow_store: str) -> None:
    with pytest.raises(KeyboardInterrupt), tracking.Tracker(None).run("unit", None, {}):
        raise KeyboardInterrupt
    assert _only_run(mlflow_store).info.status == "KILLED"


def test_a_refused_call_leaves_the_store_copy_failed_and_the_whole_run_journalled(mlflow_store: str, tmp_path) -> None:
    import json

    journal = tmp_path / "out" / tracking.JOURNAL_FILE
    tracker = tracking.Tracker(journal)
    with tracker.run("unit", "refused", {}):
        tracker.params({"lr": "0.1"})
        tracker.params({"lr": "0.2"})  # MLflow refuses to change a logged param: the store's copy is now incomplete
        tracker.metrics({"test_accuracy": 0.9})
    assert tracker.lost is not None and tracker.lost.startswith("MlflowException: ")
    run = _only_run(mlflow_store)
    # Not FINISHED (MLflow's exit hook would have said so): promote must never take it for a complete run.
    assert run.info.status == "FAILED"
    assert run.data.tags["failure_reason"].endswith(f"python -m forgery.upload {journal.parent}")
    assert "test_accuracy" not in run.data.metrics
    entries = [json.loads(line) for line in journal.read_text().splitlines()]
    # the refused call is followed by `offline`: from there on nothing reached the store (a resume re-sends it)
    assert [entry["kind"] for entry in entries] == ["start", "params", "params", "offline", "metrics", "end"]
    assert tracking.missed_by_store(entries) == [entries[2], entries[4]]
    assert entries[-1]["status"] == "FINISHED"  # what forgery.upload replays: the run itself completed


def test_git_tags_outside_a_checkout_are_empty(tmp_path) -> None:
    assert tracking.git_tags(tmp_path) == {}


def test_seeded_runs_still_get_different_names(mlflow_store: str) -> None:
    import random

    names = []
    for _ in range(2):
        random.seed(42)  # what keras.utils.set_random_seed does before every run
        with tracking.Tracker(None).run("unit", None, {}):
            pass
        names.append(MlflowClient(mlflow_store).search_runs([MlflowClient(mlflow_store).get_experiment_by_name("unit").experiment_id], max_results=1, order_by=["start_time DESC"])[0].info.run_name)
    assert names[0] != names[1]
    random.seed(42)
    expected = random.random()
    random.seed(42)
    with tracking.Tracker(None).run("unit", None, {}):
        assert random.random() == expected  # the training's seeded stream is left as it was


MLFLOW_LOG_PREFIX = "20"  # MLflow's own INFO lines (creating the database) start with the date


def journalled_run(tmp_path, experiment: str = "unit", lost: bool = True) -> tuple:
    """A finished run journalled in tmp_path/out: params, a metric, a report folder and a model; (folder, original run id).

    With `lost`, the store refuses the run's first artefact upload (as a server that went away would),
    so the store's copy is incomplete and only the journal has the whole run.
    """
    from unittest import mock

    import keras
    import mlflow
    import numpy as np

    out = tmp_path / "out"
    (out / "report").mkdir(parents=True)
    (out / "report" / "training_metrics.json").write_text("{}")
    inputs = keras.Input((32, 32, 3))
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(keras.layers.GlobalAveragePooling2D()(inputs)))
    (out / "model").mkdir()
    model.save(out / "model" / "model.keras")
    example = np.zeros((1, 32, 32, 3), "uint8")
    tracker = tracking.Tracker(out / tracking.JOURNAL_FILE)
    with tracker.run(experiment, "journalled", {}) as run_id:
        tracker.params({"epochs": "1"})
        tracker.metrics({"val_auc": 0.9}, step=1)
        with mock.patch.object(mlflow, "log_artifacts", side_effect=ConnectionError("the server went away")) if lost else nullcontext():
            tracker.folder(out / "report", "report")
        tracker.model(model, out / "model" / "model.keras", example, model.predict(example, verbose=0))
    assert (tracker.lost is not None) == lost
    return out, run_id


def test_an_upload_of_a_run_the_store_has_whole_is_refused(mlflow_store: str, tmp_path, capsys) -> None:
    # Every call of this run reached the store: an upload would add a second FINISHED copy that a ranking counts twice.
    from forgery import upload

    out, original = journalled_run(tmp_path, lost=False)
    client = MlflowClient(mlflow_store)
    experiment_id = client.get_experiment_by_name("unit").experiment_id
    assert upload.main([str(out)]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if not line.startswith(MLFLOW_LOG_PREFIX)]
    assert lines == [f"error: run {original} is already complete in {mlflow_store} (FINISHED); there is nothing to upload"]
    assert len(client.search_runs([experiment_id])) == 1


def test_a_deleted_upload_can_be_made_again(mlflow_store: str, tmp_path, capsys) -> None:
    # The refusal of a second upload says to delete the first; the original, now tagged uploaded_as, stays uploadable.
    from forgery import upload

    out, original = journalled_run(tmp_path)
    # As a server that died for good leaves it: the store's copy still RUNNING, no reason (the upload then ends it FAILED).
    client = MlflowClient(mlflow_store)
    client.delete_tag(original, tracking.FAILURE_TAG)
    client.update_run(original, status="RUNNING")
    assert upload.main([str(out)]) == 0
    assert client.get_run(original).info.status == "FAILED"
    (first,) = tracking.uploads_of("unit", original)
    client.delete_run(first)
    assert upload.main([str(out)]) == 0, capsys.readouterr().err
    (second,) = tracking.uploads_of("unit", original)
    assert second != first


@pytest.mark.parametrize(("arguments", "code"), [(["--help"], 0), (["-h"], 0), (["--force"], 2), ([], 2), (["a", "b"], 2)])
def test_upload_usage(arguments: list[str], code: int, capsys) -> None:
    from forgery import upload

    assert upload.main(arguments) == code
    captured = capsys.readouterr()
    usage = "usage: python -m forgery.upload OUTPUT_DIR (the run's Hydra output folder)"
    assert (captured.out.strip(), captured.err.strip()) == ((usage, "") if code == 0 else ("", f"error: {usage}"))


def test_an_upload_reads_a_moved_folder_and_one_that_fails_part_way_can_run_again(mlflow_store: str, tmp_path, monkeypatch, capsys) -> None:
    import json

    import mlflow

    from forgery import upload

    out, original = journalled_run(tmp_path)
    entries = [json.loads(line) for line in (out / tracking.JOURNAL_FILE).read_text().splitlines()]
    # files inside the output folder are journalled relative to it, so the folder can move
    assert [entry.get("folder") or entry.get("path") for entry in entries if entry["kind"] in ("folder", "model")] == ["report", "model/model.keras"]
    moved = out.rename(tmp_path / "moved")

    def lost(*arguments, **keywords):
        raise ConnectionError("the server went away\nsecond line")

    with monkeypatch.context() as patched:
        patched.setattr(mlflow, "log_artifacts", lost)
        assert upload.main([str(moved)]) == 1
    lines = [line for line in capsys.readouterr().err.splitlines() if not line.startswith(MLFLOW_LOG_PREFIX)]
    assert lines == [f"error: the upload of run {original} failed part-way (ConnectionError: the server went away); the journal is intact: run this command again"]
    assert tracking.uploads_of("unit", original) == []  # the partial replay does not count as an upload
    # Nor does one whose server went away between its last tag and its end: tagged complete, left RUNNING.
    client = MlflowClient(mlflow_store)
    stale = client.create_run(client.get_experiment_by_name("unit").experiment_id, tags={"original_run_id": original, tracking.UPLOAD_COMPLETE_TAG: "true"})
    assert client.get_run(stale.info.run_id).info.status == "RUNNING"
    assert tracking.uploads_of("unit", original) == []
    assert upload.main([str(moved)]) == 0
    (uploaded,) = tracking.uploads_of("unit", original)
    assert client.get_run(uploaded).info.status == "FINISHED"
    assert [entry.path for entry in client.list_artifacts(uploaded, "report")] == ["report/training_metrics.json"]
    assert client.get_run(original).data.tags["uploaded_as"] == uploaded
    # the partial copies are ended FAILED and point to the upload that completed (the stale one was left RUNNING)
    partial = [run for run in client.search_runs([client.get_experiment_by_name("unit").experiment_id]) if run.data.tags.get("original_run_id") == original and run.info.run_id != uploaded]
    assert len(partial) == 2 and {run.info.status for run in partial} == {"FAILED"}
    assert {run.data.tags["superseded_by"] for run in partial} == {uploaded}
    assert upload.main([str(moved)]) == 2  # now a second upload would be a duplicate
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"error: run {original} was already uploaded as run {uploaded}; delete that run to upload it again"


def test_an_upload_that_fails_after_its_replay_is_finished_by_running_it_again(mlflow_store: str, tmp_path, monkeypatch, capsys) -> None:
    # The replay made a whole copy, then pointing the original at it failed: "run this command again" must
    # then finish that step, not refuse the rerun as a duplicate and leave the original unpointed.
    from forgery import upload

    out, original = journalled_run(tmp_path)

    def lost(*arguments, **keywords):
        raise ConnectionError("the server went away")

    with monkeypatch.context() as patched:
        patched.setattr(tracking, "mark_uploaded", lost)
        assert upload.main([str(out)]) == 1
    (uploaded,) = tracking.uploads_of("unit", original)
    assert tracking.UPLOADED_AS_TAG not in tracking.get_run(original)["tags"]
    capsys.readouterr()
    assert upload.main([str(out)]) == 0
    assert capsys.readouterr().out.startswith(f"finished the upload of {out} as run {uploaded}")
    assert tracking.get_run(original)["tags"][tracking.UPLOADED_AS_TAG] == uploaded
    assert tracking.uploads_of("unit", original) == [uploaded]  # no second copy
    assert upload.main([str(out)]) == 2  # done: now a rerun is the duplicate it refuses


def test_an_upload_whose_files_are_gone_sends_nothing(mlflow_store: str, tmp_path, capsys) -> None:
    import shutil

    from forgery import upload

    out, original = journalled_run(tmp_path)
    shutil.rmtree(out / "report")
    runs_before = len(MlflowClient(mlflow_store).search_runs([MlflowClient(mlflow_store).get_experiment_by_name("unit").experiment_id]))
    assert upload.main([str(out)]) == 2
    assert [line for line in capsys.readouterr().err.splitlines() if not line.startswith(MLFLOW_LOG_PREFIX)] == [f"error: the journal's folder {out.resolve() / 'report'} is gone; upload from the folder the run wrote"]
    assert len(MlflowClient(mlflow_store).search_runs([MlflowClient(mlflow_store).get_experiment_by_name("unit").experiment_id])) == runs_before
    assert tracking.uploads_of("unit", original) == []


def test_a_resumed_run_sends_what_an_earlier_attempt_journalled_offline(mlflow_store: str, tmp_path) -> None:
    """The store lost at epoch 2 of 3, then the run resumed: it ended FINISHED without epochs 2 and 3, and
    forgery.upload refused it as complete. The resume now sends the missed calls first, once."""
    from unittest import mock

    import mlflow

    journal = tmp_path / "out" / tracking.JOURNAL_FILE
    first = tracking.Tracker(journal)
    with pytest.raises(KeyboardInterrupt), first.run("unit", "offline", {}) as run_id:
        first.params({"epochs": "4"})
        first.metrics({"val_auc": 0.7}, step=1)
        with mock.patch.object(mlflow, "log_metrics", side_effect=ConnectionError("the server went away")):
            first.metrics({"val_auc": 0.8}, step=2)
        first.metrics({"val_auc": 0.85}, step=3)  # offline: journalled only
        raise KeyboardInterrupt  # Ctrl-C; the server is back by the resume
    client = MlflowClient(mlflow_store)
    assert [point.step for point in client.get_metric_history(run_id, "val_auc")] == [1]
    for attempt in range(2):  # the second resume finds them sent and sends nothing again
        resumed = tracking.Tracker(journal)
        with resumed.run("unit", None, {}, run_id=run_id):
            if attempt == 0:
                resumed.metrics({"val_auc": 0.9}, step=4)
        assert resumed.lost is None
        history = client.get_metric_history(run_id, "val_auc")
        assert sorted((point.step, point.value) for point in history) == [(1, 0.7), (2, 0.8), (3, 0.85), (4, 0.9)]
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED" and tracking.FAILURE_TAG not in run.data.tags
    assert tracking.complete_in_store(tracking.get_run(run_id))


def test_a_resume_stopped_while_it_resends_ends_killed_not_finished_with_a_gap(mlflow_store: str, tmp_path, monkeypatch) -> None:
    # MLflow's exit hook ended such a run FINISHED with step 2 missing, and resume then refused it as finished.
    import mlflow

    journal = tmp_path / "out" / tracking.JOURNAL_FILE
    first = tracking.Tracker(journal)
    with pytest.raises(KeyboardInterrupt), first.run("unit", "offline", {}) as run_id:
        first.metrics({"val_auc": 0.7}, step=1)
        with monkeypatch.context() as patched:
            patched.setattr(mlflow, "log_metrics", lambda *args, **kwargs: (_ for _ in ()).throw(ConnectionError("the server went away")))
            first.metrics({"val_auc": 0.8}, step=2)  # journalled, not sent
        raise KeyboardInterrupt

    def interrupted(entry, path) -> None:
        raise KeyboardInterrupt  # Ctrl-C while the missed calls are re-sent

    monkeypatch.setattr(tracking, "send_entry", interrupted)
    with pytest.raises(KeyboardInterrupt), tracking.Tracker(journal).run("unit", None, {}, run_id=run_id):
        pass
    run = tracking.get_run(run_id)
    assert run["status"] == "KILLED"  # resumable: the next attempt re-sends step 2
    monkeypatch.undo()
    with tracking.Tracker(journal).run("unit", None, {}, run_id=run_id):
        pass
    steps = [point.step for point in MlflowClient(mlflow_store).get_metric_history(run_id, "val_auc")]
    assert sorted(steps) == [1, 2] and tracking.get_run(run_id)["status"] == "FINISHED"


def test_a_resume_that_loses_the_store_at_once_still_has_its_offline_calls_sent_later(mlflow_store: str, tmp_path, monkeypatch) -> None:
    # The first call a resumed attempt makes can fail; what it journals offline must still count as missed.
    journal = tmp_path / "out" / tracking.JOURNAL_FILE
    first = tracking.Tracker(journal)
    with pytest.raises(KeyboardInterrupt), first.run("unit", "r", {}) as run_id:
        first.metrics({"val_auc": 0.7}, step=1)
        raise KeyboardInterrupt
    second = tracking.Tracker(journal)
    with monkeypatch.context() as patched:
        patched.setattr(tracking, "take_back_upload", lambda run_id: (_ for _ in ()).throw(ConnectionError("the server went away")))
        with pytest.raises(KeyboardInterrupt), second.run("unit", None, {}, run_id=run_id):
            second.metrics({"val_auc": 0.8}, step=2)  # offline: journalled only
            raise KeyboardInterrupt
    assert second.lost is not None
    third = tracking.Tracker(journal)
    with third.run("unit", None, {}, run_id=run_id):
        third.metrics({"val_auc": 0.9}, step=3)
    steps = sorted(point.step for point in MlflowClient(mlflow_store).get_metric_history(run_id, "val_auc"))
    assert steps == [1, 2, 3] and tracking.get_run(run_id)["status"] == "FINISHED"


def test_a_journal_cut_mid_line_loses_only_that_line_and_damage_elsewhere_names_its_line(mlflow_store: str, tmp_path, capsys) -> None:
    from forgery import upload

    out, original = journalled_run(tmp_path)
    journal = out / tracking.JOURNAL_FILE
    whole = journal.read_text()
    lines = whole.splitlines(keepends=True)
    journal.write_text("".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])  # killed while writing the end
    entries, warning = tracking.read_journal(journal)
    assert len(entries) == len(lines) - 1 and warning == f"the journal's last line ({len(lines)}) was cut off mid-write; that call is left out"
    garbled = lines[:]
    garbled[2] = '{"kind": "metr\n'
    journal.write_text("".join(garbled))
    with pytest.raises(tracking.JournalDamaged, match="damaged at line 3$"):
        tracking.read_journal(journal)
    assert upload.main([str(out)]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"error: the journal {journal} is damaged at line 3"
    journal.write_text("".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])
    assert upload.main([str(out)]) == 0
    assert f"warning: the journal's last line ({len(lines)}) was cut off mid-write" in capsys.readouterr().err
    (uploaded,) = tracking.uploads_of("unit", original)
    run = MlflowClient(mlflow_store).get_run(uploaded)
    assert run.info.status == "FAILED" and run.data.tags["failure_reason"] == "the journal ends before the run did"
    assert "val_auc" in run.data.metrics


def test_an_upload_ends_as_the_last_attempt_did_not_as_an_earlier_one(mlflow_store: str, tmp_path, capsys) -> None:
    # A resumed attempt killed outright leaves no end line: the upload must not take the earlier attempt's.
    import json

    from forgery import upload

    out, original = journalled_run(tmp_path)
    journal = out / tracking.JOURNAL_FILE
    start = next(line for line in journal.read_text().splitlines() if json.loads(line)["kind"] == "start")
    with journal.open("a") as appended:
        appended.write(start + "\n" + json.dumps({"kind": "metrics", "metrics": {"val_auc": 0.9}, "step": 2}) + "\n")
    assert upload.main([str(out)]) == 0
    (uploaded,) = tracking.uploads_of("unit", original)
    run = MlflowClient(mlflow_store).get_run(uploaded)
    assert run.info.status == "FAILED" and run.data.tags["failure_reason"] == "the journal ends before the run did"


def test_an_upload_holds_the_folder_while_it_replays(mlflow_store: str, tmp_path, monkeypatch) -> None:
    # A resume (or a second upload) of the folder started meanwhile would make a second whole copy of the run.
    from forgery import checkpoints, upload

    out, original = journalled_run(tmp_path)
    seen = []
    replay = tracking.replay_journal

    def watched(entries, origin):
        seen.append(checkpoints.holder(out))
        return replay(entries, origin)

    monkeypatch.setattr(tracking, "replay_journal", watched)
    assert upload.main([str(out)]) == 0
    assert seen and seen[0] is not None  # held during the replay
    assert checkpoints.holder(out) is None  # and let go after it


def test_an_upload_refuses_a_run_still_going_and_a_store_that_is_not_there(mlflow_store: str, tmp_path, monkeypatch, capsys) -> None:
    import os

    import mlflow

    from forgery import checkpoints, upload

    out, original = journalled_run(tmp_path)
    held = checkpoints.claim(out)  # what a training process holds while it runs
    try:
        assert upload.main([str(out)]) == 2
        assert capsys.readouterr().err.strip().splitlines()[-1] == f"error: the run in {out} is still going (process {os.getpid()}); upload it once it has ended"
    finally:
        held.close()
    assert checkpoints.holder(out) is None
    elsewhere = tmp_path / "elsewhere" / "mlflow.db"  # a forgotten MLFLOW_TRACKING_URI: MLflow's default in another folder
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{elsewhere}")
    mlflow.set_tracking_uri(f"sqlite:///{elsewhere}")
    assert upload.main([str(out)]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"error: there is no MLflow store at sqlite:///{elsewhere} (the run was tracked in {mlflow_store}); set MLFLOW_TRACKING_URI to the store to upload to"
    )
    assert not elsewhere.exists()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_store)
    mlflow.set_tracking_uri(mlflow_store)
    assert tracking.uploads_of("unit", original) == []


def test_an_upload_refuses_a_folder_that_lost_one_of_its_files(mlflow_store: str, tmp_path, capsys) -> None:
    from forgery import upload

    out, original = journalled_run(tmp_path)
    (out / "report" / "training_metrics.json").unlink()  # the folder is there, a file in it is not
    assert upload.main([str(out)]) == 2
    message = f"error: 1 file(s) of the journal's folder {out.resolve() / 'report'} are gone, first {out.resolve() / 'report' / 'training_metrics.json'}; upload from the folder the run wrote"
    assert capsys.readouterr().err.strip().splitlines()[-1] == message
    assert tracking.uploads_of("unit", original) == []


def test_an_upload_that_loses_the_server_names_the_call_that_failed(mlflow_store: str, tmp_path, monkeypatch, capsys) -> None:
    import mlflow

    from forgery import upload

    out, original = journalled_run(tmp_path)

    def lost(*arguments, **keywords):
        raise ConnectionError("the server went away")

    def cannot_end(*arguments, **keywords):
        raise OSError("connection refused")  # ending the partial run needs the server that is gone

    with monkeypatch.context() as patched:
        patched.setattr(mlflow, "log_artifacts", lost)
        patched.setattr(mlflow.MlflowClient, "set_terminated", cannot_end)
        assert upload.main([str(out)]) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"error: the upload of run {original} failed part-way (ConnectionError: the server went away); the journal is intact: run this command again"
    )
    assert mlflow.active_run() is None


def test_a_run_resumed_after_its_upload_supersedes_the_upload(mlflow_store: str, tmp_path, capsys) -> None:
    """Interrupted offline, uploaded, then resumed: the resumed run is the whole one, so the partial upload
    points to it, the original is no longer tagged `uploaded_as` (incomplete), and nothing is uploaded twice."""
    from unittest import mock

    import mlflow

    from forgery import upload

    journal = tmp_path / "out" / tracking.JOURNAL_FILE
    first = tracking.Tracker(journal)
    with pytest.raises(KeyboardInterrupt), first.run("unit", "offline", {}) as run_id:
        with mock.patch.object(mlflow, "log_metrics", side_effect=ConnectionError("the server went away")):
            first.metrics({"val_auc": 0.8}, step=1)
        raise KeyboardInterrupt
    assert upload.main([str(journal.parent)]) == 0, capsys.readouterr().err
    client = MlflowClient(mlflow_store)
    (copy,) = tracking.uploads_of("unit", run_id)
    assert client.get_run(copy).info.status == "KILLED" and client.get_run(run_id).data.tags[tracking.UPLOADED_AS_TAG] == copy
    resumed = tracking.Tracker(journal)
    with resumed.run("unit", None, {}, run_id=run_id):
        resumed.metrics({"val_auc": 0.9}, step=2)
    original = client.get_run(run_id)
    assert original.info.status == "FINISHED" and tracking.UPLOADED_AS_TAG not in original.data.tags
    assert client.get_run(copy).data.tags[tracking.SUPERSEDED_TAG] == run_id
    assert tracking.uploads_of("unit", run_id) == []
    assert tracking.complete_in_store(tracking.get_run(run_id))
    assert upload.main([str(journal.parent)]) == 2  # the store holds the resumed run whole
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"error: run {run_id} is already complete in {mlflow_store} (FINISHED); there is nothing to upload"


def test_taking_back_a_deleted_upload_only_clears_the_tag(mlflow_store: str) -> None:
    client = MlflowClient(mlflow_store)
    experiment = client.create_experiment("unit")
    original, copy = (client.create_run(experiment).info.run_id for _ in range(2))
    assert tracking.take_back_upload(original) is None  # never uploaded: nothing to do
    client.set_tag(original, tracking.UPLOADED_AS_TAG, copy)
    client.delete_run(copy)
    assert tracking.take_back_upload(original) == copy
    assert tracking.UPLOADED_AS_TAG not in client.get_run(original).data.tags
    assert tracking.SUPERSEDED_TAG not in client.get_run(copy).data.tags
