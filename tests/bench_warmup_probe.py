"""Run under KERAS_BACKEND=jax: warm the bench's harness up, then time two rounds with JAX's compile log on;
print, as JSON, how many compilations each round set off (a warm-up at the timed shapes leaves none).

Usage: python tests/bench_warmup_probe.py LOOP SCRATCH_FOLDER (LOOP: fit or scan)
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from forgery import bench, train
from forgery.data import Dataset
from forgery.demo_data import load_demo

STEPS, WARMUP_STEPS, BATCH = 40, 2, 4  # 40 steps, 4 to a call: the timed scan's calls are not the warm-up's one call of 2


class CompileCounter(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += record.getMessage().startswith("Compiling")


def main(loop: str, scratch: Path) -> None:
    import jax

    with initialize_config_dir(version_base="1.3", config_dir=str(train.CONFIG_DIR)):
        run_cfg = compose("train", overrides=["verbose=0", f"output_dir={scratch / 'run'}", f"batch_size={BATCH}", f"runtime.loop={loop}"])
    cfg = OmegaConf.create(OmegaConf.to_container(run_cfg, resolve=True))
    dataset = load_demo(seed=42, val_fraction=0.1, train_per_class=40, test_per_class=10)
    validation_steps = max(1, round(STEPS * len(dataset.val) / len(dataset.train)))
    warm = Dataset(dataset.name, bench.cycled(dataset.train, WARMUP_STEPS * BATCH), bench.cycled(dataset.val, BATCH), dataset.test)
    timed = Dataset(dataset.name, bench.cycled(dataset.train, STEPS * BATCH), bench.cycled(dataset.val, validation_steps * BATCH), dataset.test)
    counter = CompileCounter()
    jax.config.update("jax_log_compiles", True)
    logging.getLogger("jax").addHandler(counter)
    run = bench.harness_runner(cfg, 4, warm, timed, WARMUP_STEPS, scratch / "checkpoints")
    rounds = []
    for _ in range(2):
        counter.count = 0
        run()
        rounds.append(counter.count)
    print(json.dumps({"compilations_per_round": rounds}))


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
