"""Entrypoint: `python -m forgery.upload OUTPUT_DIR` sends a run that lost its tracking server to MLflow.

A training run journals every tracking call in `OUTPUT_DIR/tracking_journal.jsonl` before sending it.
When the server goes away mid-run, training finishes offline and prints this command; run it once the
server (MLFLOW_TRACKING_URI) is back. It replays the journal into a new run (params, every metric at its
step, artefacts, the model, the end status), tagged with `original_run_id` and `uploaded_from`; the
original, incomplete run is ended FAILED if still open and tagged `uploaded_as`. A journal is uploaded once,
and never when the store already holds its run whole (a copy would rank twice).
The folder may have moved since the run: the journal names its files relative to itself. An upload that
fails part-way (the server lost again) leaves its partial run without `upload_complete`, FAILED if the
store still answered, and is reported in one line naming the call that failed; the journal is untouched,
so the command can simply be run again, and the upload that completes ends any partial one FAILED and
tags it `superseded_by`. A run still training (its folder's lock held) is not uploaded, and the upload holds
that lock itself, so no resume or second upload of the folder runs beside it; nor is a journal
sent to a store that does not exist yet (a forgotten MLFLOW_TRACKING_URI would create one in the current
folder). A journal whose last line was cut off mid-write (the process killed) is uploaded without that line.
A run resumed after its upload (`resume=`) finishes in its own run and tags the upload `superseded_by` it.
"""

from __future__ import annotations

import sys
from pathlib import Path


def main(arguments: list[str]) -> int:
    """Replay one run's journal; 0 on success, 2 (with one `error:` line) when it cannot."""
    from forgery import checkpoints, tracking

    usage = "usage: python -m forgery.upload OUTPUT_DIR (the run's Hydra output folder)"
    if arguments in (["-h"], ["--help"]):
        print(usage)
        return 0
    if len(arguments) != 1 or arguments[0].startswith("-"):
        print(f"error: {usage}", file=sys.stderr)
        return 2
    folder = Path(arguments[0]).expanduser()
    journal = folder / tracking.JOURNAL_FILE
    if not journal.is_file():
        print(f"error: no tracking journal at {journal}", file=sys.stderr)
        return 2
    try:  # held for the whole upload: a resume (or a second upload) of this folder waits for none of it
        claim = checkpoints.claim(folder)
    except checkpoints.FolderBusy as busy:  # its journal is still growing: an upload now would be of part of the run
        print(f"error: the run in {folder} is still going (process {busy.holder}); upload it once it has ended", file=sys.stderr)
        return 2
    except OSError:  # a read-only folder: nothing can train into it meanwhile either
        claim = None
    try:
        return upload_journal(folder, journal)
    finally:
        if claim is not None:
            claim.close()


def upload_journal(folder: Path, journal: Path) -> int:
    """Replay the journal of the run in `folder`, which this process holds; the exit status."""
    from forgery import tracking
    from forgery.runtime import quiet_native_startup

    try:
        entries, cut = tracking.read_journal(journal)
    except tracking.JournalDamaged as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if not any(entry.get("kind") == "start" for entry in entries):
        print(f"error: the journal {journal} holds no run", file=sys.stderr)
        return 2
    start = next(entry for entry in entries if entry.get("kind") == "start")
    try:
        tracking.check_reachable()
    except tracking.TrackingUnavailable as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if not tracking.store_exists():
        recorded = f" (the run was tracked in {start['tracking_uri']})" if start.get("tracking_uri") else ""
        print(f"error: there is no MLflow store at {tracking.tracking_uri()}{recorded}; set MLFLOW_TRACKING_URI to the store to upload to", file=sys.stderr)
        return 2
    if cut:
        print(f"warning: {cut}", file=sys.stderr)
    earlier = tracking.uploads_of(start["experiment"], start["run_id"])
    original = tracking.get_run(start["run_id"])
    if earlier and original is not None and original["tags"].get(tracking.UPLOADED_AS_TAG) != earlier[0]:
        # An upload whose replay completed but whose last steps failed (the store lost again): finish those.
        try:
            tracking.mark_uploaded(start["run_id"], earlier[0])
            tracking.supersede_partial_uploads(start["experiment"], start["run_id"], earlier[0])
        except Exception as error:
            print(f"error: could not finish the upload of run {start['run_id']} as run {earlier[0]} ({reason(error)}); run this command again", file=sys.stderr)
            return 1
        print(f"finished the upload of {folder} as run {earlier[0]} to {tracking.tracking_uri()} (its replay had completed)")
        return 0
    if earlier:  # a second upload would add an identical run that a ranking could count twice
        print(f"error: run {start['run_id']} was already uploaded as run {earlier[0]}; delete that run to upload it again", file=sys.stderr)
        return 2
    if original is not None and tracking.complete_in_store(original):  # its calls all reached this store: a copy would rank twice
        print(f"error: run {start['run_id']} is already complete in {tracking.tracking_uri()} ({original['status']}); there is nothing to upload", file=sys.stderr)
        return 2
    try:
        with quiet_native_startup():  # logging the model starts TensorFlow, whose C++ start-up prints several lines
            run_id = tracking.replay_journal(entries, folder.resolve())
            tracking.mark_uploaded(start["run_id"], run_id)
            tracking.supersede_partial_uploads(start["experiment"], start["run_id"], run_id)
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except Exception as error:  # a server lost again, a refused call: the journal stays, so it can be retried
        print(f"error: the upload of run {start['run_id']} failed part-way ({reason(error)}); the journal is intact: run this command again", file=sys.stderr)
        return 1
    print(f"uploaded {folder} as run {run_id} to {tracking.tracking_uri()}")
    return 0


def reason(error: Exception) -> str:
    """An exception as "Type: its first line", cut to 300 characters, for an error line."""
    message = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {message[:300]}"


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
