"""Interrupts are held back during writes and delivered right after: real signals to this process."""

from __future__ import annotations

import os
import signal
import time

import pytest

from forgery import interrupts


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_inside_a_write_is_delivered_after_it(sig: int) -> None:
    steps: list[str] = []
    with pytest.raises(KeyboardInterrupt), interrupts.handled():
        with interrupts.deferred():
            os.kill(os.getpid(), sig)
            steps.append("write finished")  # still runs: the interrupt waits
            with interrupts.deferred():
                steps.append("nested write finished")
            steps.append("outer write finished")  # the inner block's end does not deliver it yet
        steps.append("never reached")
    assert steps == ["write finished", "nested write finished", "outer write finished"]


def test_a_signal_outside_writes_interrupts_at_once() -> None:
    with pytest.raises(KeyboardInterrupt), interrupts.handled():
        os.kill(os.getpid(), signal.SIGTERM)
        pytest.fail("SIGTERM should have interrupted here")


def test_handlers_are_restored() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with interrupts.handled():
        assert signal.getsignal(signal.SIGTERM) is not before
    assert signal.getsignal(signal.SIGTERM) is before


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the drop this test stages
def test_an_interrupt_python_drops_is_still_delivered_at_the_next_check() -> None:
    import gc
    import weakref

    class Thing:
        pass

    thing = Thing()
    # Python runs weakref callbacks during garbage collection and drops what they raise ("Exception ignored").
    finalizer = weakref.ref(thing, lambda _: os.kill(os.getpid(), signal.SIGINT) or sum(range(1000)))
    with interrupts.handled():
        del thing
        gc.collect()
        assert finalizer() is None  # the callback ran, and the interrupt it met was dropped: we got here
        with pytest.raises(KeyboardInterrupt):
            interrupts.raise_if_requested()
    interrupts.raise_if_requested()  # nothing carries over past handled()


def test_training_stops_at_the_next_batch_after_a_dropped_interrupt() -> None:
    import keras
    import numpy as np

    from forgery.train import stop_on_interrupt

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    seen: list[int] = []
    with interrupts.handled():
        try:
            interrupts._interrupt(signal.SIGINT, None)
        except KeyboardInterrupt:
            pass  # dropped, as Python drops it inside a weakref callback
        counter = keras.callbacks.LambdaCallback(on_train_batch_begin=lambda batch, logs: seen.append(batch))
        with pytest.raises(KeyboardInterrupt):
            model.fit(np.zeros((64, 2)), np.zeros((64, 1)), batch_size=8, epochs=3, verbose=0, callbacks=[counter, stop_on_interrupt()])
    assert seen == [0]


def dropped_interrupt() -> None:
    """Deliver SIGINT through the handler and drop the KeyboardInterrupt, as Python does inside a finaliser."""
    try:
        interrupts._interrupt(signal.SIGINT, None)
    except KeyboardInterrupt:
        pass


def test_a_nested_block_keeps_what_the_outer_one_recorded() -> None:
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt), interrupts.handled():
        dropped_interrupt()  # while the data loads, say
        with interrupts.handled():  # the run's own block begins: it must not forget the Ctrl-C
            assert signal.getsignal(signal.SIGINT) is interrupts._interrupt
            interrupts.raise_if_requested()
            pytest.fail("the interrupt recorded before the inner block was forgotten")
    assert signal.getsignal(signal.SIGINT) is before  # the outer block restores the handlers, once
    interrupts.raise_if_requested()


def test_decoding_stops_after_a_dropped_interrupt(tmp_path) -> None:
    from PIL import Image

    from forgery import data

    for split in ("train", "test"):
        for name in ("FAKE", "REAL"):
            (tmp_path / split / name).mkdir(parents=True)
            for index in range(3):
                Image.new("RGB", (32, 32), (index, 0, 0)).save(tmp_path / split / name / f"{index}.png")
    listing = data.list_cifake_files(tmp_path)
    assert len(data.decode_files(tmp_path, listing).train) == 6  # decodes when nothing was asked
    with interrupts.handled():
        dropped_interrupt()
        with pytest.raises(KeyboardInterrupt):
            data.decode_files(tmp_path, listing)


@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("forgery.robustness", "robustness_report"),  # evaluation: scoring corrupted test images
        ("forgery.train", "write_outputs"),  # the report files and plots (matplotlib's finalisers drop it here)
        ("forgery.tracking", "Tracker.model"),  # the last stage: the model logged
    ],
)
def test_an_interrupt_dropped_after_training_still_ends_the_run_killed(
    module: str, name: str, compose_train, mlflow_store: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import importlib

    from mlflow.tracking import MlflowClient

    from forgery import train
    from tests.conftest import TINY_DEMO

    owner = importlib.import_module(module)
    for part in name.split(".")[:-1]:
        owner = getattr(owner, part)
    original = getattr(owner, name.split(".")[-1])

    def dropping(*args, **kwargs):
        dropped_interrupt()  # the Ctrl-C lands in a finaliser during this stage, and Python drops it
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name.split(".")[-1], dropping)
    cfg = compose_train(*TINY_DEMO, "epochs=1", "evidence.robustness_images=20", "evidence.gradcam_checks_per_class=2")
    with pytest.raises(SystemExit) as stopped:
        train.train(cfg)
    assert stopped.value.code == 130
    assert "ended KILLED; the checkpoint of epoch 1 is in" in capsys.readouterr().err
    client = MlflowClient(mlflow_store)
    (run,) = client.search_runs([client.get_experiment_by_name(cfg.tracking.experiment).experiment_id])
    assert run.info.status == "KILLED"


def test_the_exit_status_names_the_signal() -> None:
    with interrupts.handled():
        assert interrupts.exit_status() == 130  # nothing arrived yet: Ctrl-C's
        try:
            interrupts._interrupt(signal.SIGTERM, None)
        except KeyboardInterrupt:
            pass
    assert interrupts.exit_status() == 143  # still known once the block has ended, where train() exits
    with interrupts.handled():  # a new block starts clean
        assert interrupts.exit_status() == 130


@pytest.mark.parametrize("table", ["proc", "ps"])
def test_child_processes_lists_direct_children_only(tmp_path, monkeypatch, table: str) -> None:
    import subprocess
    import sys

    if table == "ps":  # a machine without /proc (macOS): `ps` lists the processes
        monkeypatch.setattr(interrupts, "PROC", tmp_path / "no-proc")
    # The child's name holds a space and parentheses, as /proc's "pid (comm) state ppid" line then does.
    script = tmp_path / "a (child).py"
    script.write_text("import subprocess, sys, time\nsubprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\ntime.sleep(60)\n")
    child = subprocess.Popen([sys.executable, str(script)])
    try:
        deadline = time.monotonic() + 20
        while not interrupts.child_processes(child.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        (grandchild,) = interrupts.child_processes(child.pid)
        mine = interrupts.child_processes(os.getpid())
        assert child.pid in mine
        for pid in mine:  # each one alive: not a lister that has ended by now (`ps` lists itself)
            os.kill(pid, 0)
        assert grandchild not in interrupts.child_processes(os.getpid())
        os.kill(grandchild, signal.SIGKILL)
    finally:
        child.kill()
        child.wait()


def test_without_proc_or_ps_no_child_is_found_and_none_signalled(tmp_path, monkeypatch) -> None:
    import subprocess
    import sys

    monkeypatch.setattr(interrupts, "PROC", tmp_path / "no-proc")
    monkeypatch.setenv("PATH", str(tmp_path))  # no `ps` on it
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert interrupts.child_processes(os.getpid()) == [] and interrupts.forward(signal.SIGTERM) == []
        assert child.poll() is None  # not signalled
    finally:
        child.kill()
        child.wait()


def test_forward_passes_the_signal_to_each_child(tmp_path) -> None:
    import subprocess
    import sys
    import textwrap

    # A parent whose children record the signal they get, as a sweep's workers end their runs on it.
    parent = textwrap.dedent(
        f"""
        import os, signal, subprocess, sys
        from forgery import interrupts
        child = "import os, signal, sys, time; signal.signal(signal.SIGTERM, lambda *a: (open(sys.argv[1], 'w').write('got'), os._exit(0))); print('ready', flush=True); time.sleep(60)"
        children = [subprocess.Popen([sys.executable, "-c", child, os.path.join({str(tmp_path)!r}, f"child{{i}}")], stdout=subprocess.PIPE, text=True) for i in range(2)]
        for process in children:
            process.stdout.readline()
        signalled = interrupts.forward(signal.SIGTERM)
        for process in children:
            process.wait(timeout=20)
        print(sorted(signalled) == sorted(process.pid for process in children))
        """
    )
    result = subprocess.run([sys.executable, "-c", parent], capture_output=True, text=True, timeout=120)
    assert (result.returncode, result.stdout.strip()) == (0, "True"), result.stderr[-2000:]
    assert [(tmp_path / f"child{index}").read_text() for index in range(2)] == ["got", "got"]
