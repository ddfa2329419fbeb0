"""Config composition, building every option, and the one-line refusals of bad values."""

from __future__ import annotations

import os
import re

import pytest
from hydra.errors import InstantiationException
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate

from forgery.config import IMAGE_SIDE, ConfigError, cnn_block_limit, condense_hydra_error, override_error, register_resolvers, sweep_without_multirun, validate
from forgery.data import IMAGE_SIZE
from tests.conftest import CONFIG_DIR, TINY_DEMO

GROUPS = {group: sorted(path.stem for path in (CONFIG_DIR / group).glob("*.yaml")) for group in ("model", "optimizer", "augment", "data")}


def test_groups_have_the_required_options() -> None:
    assert {"small", "wide"} <= set(GROUPS["model"])
    assert {"adam", "sgd", "adamw"} <= set(GROUPS["optimizer"])
    assert {"none", "light", "strong"} <= set(GROUPS["augment"])
    assert {"demo", "cifake"} <= set(GROUPS["data"])


def test_defaults_and_top_level_knobs(compose_train) -> None:
    cfg = compose_train()
    assert (cfg.epochs, cfg.batch_size, cfg.tracking.experiment) == (5, 8, "image-forgery")
    assert isinstance(cfg.seed, int)
    choices = HydraConfig.get().runtime.choices
    assert choices.data == "demo" and choices.augment == "light" and choices.model == "small"
    assert cfg.optimizer.name == "adam" and cfg.optimizer.lr == pytest.approx(1e-4)
    validate(cfg)


def test_the_run_log_file_takes_a_file_name_that_is_not_utf8(tmp_path) -> None:
    # Linux allows any bytes in a name; Python hands such a name over with lone surrogates, which a
    # strict UTF-8 log file cannot write: the loader's warning naming the file would be lost with a traceback.
    import logging
    import logging.config

    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    register_resolvers()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        cfg = compose(config_name="train", return_hydra_config=True)
    handler_config = OmegaConf.to_container(cfg.hydra.job_logging.handlers.file)
    handler_config["filename"] = str(tmp_path / "train.log")
    logging.config.dictConfig({
        "version": 1,
        "disable_existing_loggers": False,
        "handlers": {"file": handler_config},
        "formatters": {"simple": {"format": "%(message)s"}},
        "loggers": {"forgery.test_log": {"handlers": ["file"], "level": "INFO", "propagate": False}},
    })
    logger = logging.getLogger("forgery.test_log")
    try:
        logger.warning("skipped %s", "empty\udcfe.jpg")
    finally:
        for handler in logger.handlers:
            handler.close()
        logger.handlers.clear()
    assert (tmp_path / "train.log").read_text(encoding="utf-8") == "skipped empty\\udcfe.jpg\n"


def test_run_and_sweep_folders_are_named_by_the_second_and_the_process() -> None:
    # Two runs started in the same second must not share a folder (they would overwrite each other's checkpoints).
    from hydra import compose, initialize_config_dir

    register_resolvers()
    register_resolvers()  # a second registration (a sweep re-importing the module) is harmless
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        cfg = compose(config_name="train", return_hydra_config=True)
    for folder in (str(cfg.hydra.run.dir), str(cfg.hydra.sweep.dir)):
        day, moment = folder.split("/")[1:]
        assert len(day) == 10 and moment.endswith(f"_{os.getpid()}"), folder


@pytest.mark.parametrize("model", GROUPS["model"])
@pytest.mark.parametrize("augment", GROUPS["augment"])
def test_every_model_and_augmentation_builds(compose_train, model: str, augment: str) -> None:
    cfg = compose_train(f"model={model}", f"augment={augment}")
    built = instantiate(cfg.model, augmentation=instantiate(cfg.augment))
    assert built.output_shape == (None, 2)
    has_block = any(layer.name.startswith("augmentation_") for layer in built.layers)
    assert has_block == (augment != "none")


@pytest.mark.parametrize("optimizer", GROUPS["optimizer"])
def test_every_optimizer_builds_with_the_lr_override(compose_train, optimizer: str) -> None:
    cfg = compose_train(f"optimizer={optimizer}", "optimizer.lr=0.003")
    built = instantiate(cfg.optimizer)
    assert float(built.learning_rate) == pytest.approx(0.003)


@pytest.mark.parametrize("model", GROUPS["model"])
def test_every_model_option_states_its_parameter_count(compose_train, model: str) -> None:
    first_line = (CONFIG_DIR / "model" / f"{model}.yaml").read_text().splitlines()[0]
    stated = re.search(r"([\d,]+) parameters", first_line)
    assert stated, f"model={model}: its first line must state the parameter count"
    assert instantiate(compose_train(f"model={model}").model).count_params() == int(stated.group(1).replace(",", ""))


def test_demo_data_option_builds(compose_train) -> None:
    dataset = instantiate(compose_train(*TINY_DEMO).data)
    assert dataset.name == "demo" and len(dataset.test) == 40


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("batch_size=0", "batch_size"),
        ("batch_size=-1", "batch_size"),
        ("epochs=0", "epochs"),
        ("epochs=abc", "epochs"),
        ("optimizer.lr=-1", "optimizer.lr"),
        ("optimizer.lr=0", "optimizer.lr"),
        ("optimizer.lr=inf", "optimizer.lr"),
        ("optimizer.lr=nan", "optimizer.lr"),
        ("schedule=cosine schedule.warmup_epochs=nan", "schedule.warmup_epochs"),
        ("schedule=cosine schedule.final_fraction=nan", "schedule.final_fraction"),
        ("model.dropout=nan", "model.dropout"),
        ("data.val_fraction=1.5", "data.val_fraction"),
        ("optimizer.use_ema=sometimes", "optimizer.use_ema"),
        ("seed=1.5", "seed"),
        ("verbose=7", "verbose"),
        ("tracking.experiment=''", "tracking.experiment"),
        ("augment.shift_pixels=9", "augment.shift_pixels"),
        ("augment.shift_pixels=-1", "augment.shift_pixels"),
        ("augment.shift_pixels=2.5", "augment.shift_pixels"),
        ("augment.dihedral=sometimes", "augment.dihedral"),
        ("augment.cutout_pixels=17", "augment.cutout_pixels"),
        ("augment.cutout_pixels=-1", "augment.cutout_pixels"),
        ("augment.cutout_pixels=2.5", "augment.cutout_pixels"),
        ("augment.colour_shift=65", "augment.colour_shift"),
        ("augment.colour_shift=-1", "augment.colour_shift"),
        ("augment.colour_shift=0.5", "augment.colour_shift"),
    ],
)
def test_bad_values_are_refused_naming_the_key(compose_train, override: str, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{key} ") as refusal:
        validate(compose_train(*override.split()))
    assert "\n" not in str(refusal.value)


@pytest.mark.parametrize("group", ["augment", "optimizer"])
def test_every_shipped_augmentation_and_optimizer_is_within_range(compose_train, group: str) -> None:
    for option in GROUPS[group]:
        validate(compose_train(f"{group}={option}"))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model.filters=[]"], "model.filters must be a non-empty list of whole numbers above 0, such as [32, 64, 128], got []"),
        (["model.filters=[32,0]"], "model.filters must be a non-empty list"),
        (["model.filters=32"], "model.filters must be a non-empty list"),
        (["model.width=0"], "model.width must be greater than 0"),
        (["model=resnet", "model.widths=[]"], "model.widths must be a non-empty list"),
        (["model.filters=null"], "model.filters must be a non-empty list of whole numbers above 0, such as [32, 64, 128], got None"),
        (["model.filters=[32,true]"], "model.filters must be a non-empty list"),
        (["model.filters=[32,64.5]"], "model.filters must be a non-empty list"),
        (["model.filters=[32,abc]"], "model.filters must be a non-empty list"),
        (["model.padding=null"], "model.padding must be valid or same, got None"),
        (["model.padding=full"], "model.padding must be valid or same, got 'full'"),
        (["model=resnet", "model.widths=null"], "model.widths must be a non-empty list"),
        (["model=resnet", "model.widths=[8,8,8,8,8,8,8]"], "model.widths has 7 stages, but a 32-pixel image is one pixel wide after 6"),
        (["model=resnet", "model.blocks_per_stage=0"], "model.blocks_per_stage must be a whole number of at least 1, or one per stage such as [3, 3, 2], got 0"),
        (["model=resnet", "model.blocks_per_stage=2.5"], "model.blocks_per_stage must be a whole number of at least 1, or one per stage such as [3, 3, 2], got 2.5"),
        (["model=resnet", "model.blocks_per_stage=true"], "model.blocks_per_stage must be a whole number of at least 1, or one per stage such as [3, 3, 2], got True"),
        (["model=resnet", "model.blocks_per_stage=null"], "model.blocks_per_stage must be a whole number of at least 1, or one per stage such as [3, 3, 2], got None"),
        (["model=resnet", "model.blocks_per_stage=two"], "model.blocks_per_stage must be a whole number of at least 1, or one per stage such as [3, 3, 2], got 'two'"),
        (["model=resnet", "model.blocks_per_stage=[2,2]"], "model.blocks_per_stage has 2 counts for 3 stages (model.widths)"),
        (["model=resnet", "model.towers=0"], "model.towers must be at least 1, got 0"),
        (["model=highpass_resnet", "model.towers=1.5"], "model.towers must be a whole number, got 1.5"),
        (["model=resnet", "model.squeeze_excite=-1"], "model.squeeze_excite must be 0 (off) or a reduction ratio of at least 1, got -1"),
        (["model=resnet", "model.squeeze_excite=0.5"], "model.squeeze_excite must be a whole number, got 0.5"),
        (["model=resnet", "model.full_resolution_stages=0"], "model.full_resolution_stages must be from 1 to the 3 stages of model.widths, got 0"),
        (["model=highpass_resnet", "model.full_resolution_stages=4"], "model.full_resolution_stages must be from 1 to the 3 stages of model.widths, got 4"),
        (["model=resnet", "model.full_resolution_stages=two"], "model.full_resolution_stages must be a whole number, got 'two'"),
        (["model=resnet", "model.drop_path=1.0"], "model.drop_path must be from 0 (off) to below 1, got 1.0"),
        (["model=highpass_resnet", "model.drop_path=-0.1"], "model.drop_path must be from 0 (off) to below 1, got -0.1"),
        (["model=resnet", "model.drop_path=some"], "model.drop_path must be a number, got 'some'"),
        (["model=resnet", "model.spectrum_units=-8"], "model.spectrum_units must be 0 (no frequency branch) or more, got -8"),
        (["model=spectral_resnet", "model.spectrum_units=0.5"], "model.spectrum_units must be a whole number, got 0.5"),
        (["augment.zoom=1.5"], "augment.zoom must be in [0, 1), got 1.5"),  # the fused layer would mirror and collapse images
        (["augment.zoom=-0.1"], "augment.zoom must be in [0, 1), got -0.1"),
        (["augment.rotation=abc"], "augment.rotation must be a number, got 'abc'"),
        (["augment.rotation=0.75"], "augment.rotation must be in [0, 0.5], got 0.75"),
        (["augment=strong", "augment.contrast=1.5"], "augment.contrast must be in [0, 1], got 1.5"),
        (["augment.translation=-0.2"], "augment.translation must be in [0, 1), got -0.2"),
        (["optimizer=sgd", "optimizer.momentum=1.5"], "optimizer.momentum must be in [0, 1), got 1.5"),
        (["optimizer=sgd", "optimizer.nesterov=maybe"], "optimizer.nesterov must be true or false, got 'maybe'"),
        (["model.centre_colour=yes"], "model.centre_colour must be true or false, got 'yes'"),  # any text would switch it on
        (["model=resnet", "model.highpass=1"], "model.highpass must be true or false, got 1"),
        (["optimizer=adamw", "optimizer.weight_decay=-0.01"], "optimizer.weight_decay must be in [0, 1], got -0.01"),
        (["model=resnet", "model.blocks_per_stage=[2,0,2]"], "model.blocks_per_stage must be a whole number of at least 1, or one per stage such as [3, 3, 2], got [2, 0, 2]"),
    ],
)
def test_architectures_and_ranges_that_cannot_be_used_are_refused_in_one_line(compose_train, overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as refusal:
        validate(compose_train(*overrides))
    assert str(refusal.value).startswith(message) and "\n" not in str(refusal.value)


@pytest.mark.parametrize(("padding", "deepest"), [("valid", 3), ("same", 5)])
def test_the_block_limit_is_where_keras_runs_out_of_pixels(compose_train, padding: str, deepest: int) -> None:
    filters = [4] * deepest
    cfg = compose_train(f"model.padding={padding}", f"model.filters={filters}")
    validate(cfg)
    assert instantiate(cfg.model).output_shape == (None, 2)  # the deepest accepted stack builds
    deeper = compose_train(f"model.padding={padding}", f"model.filters={[*filters, 4]}")
    with pytest.raises(ConfigError, match=rf"down to nothing after block {deepest + 1}; use at most {deepest} blocks") as refusal:
        validate(deeper)
    # 'same' keeps more of the grid, so it is offered only where it would fit
    assert str(refusal.value).endswith("or model.padding=same") == (padding == "valid")
    # far too deep for either padding: 'same' is not offered
    with pytest.raises(ConfigError, match=rf"use at most {deepest} blocks$"):
        validate(compose_train(f"model.padding={padding}", f"model.filters={[4] * 6}"))
    with pytest.raises(InstantiationException, match="output size would be zero or negative"):  # nor can Keras
        instantiate(deeper.model)


def test_the_block_limit_follows_the_image_side() -> None:
    assert IMAGE_SIDE == IMAGE_SIZE  # the config check counts pixels of the images the loaders make
    assert (cnn_block_limit("valid"), cnn_block_limit("same")) == (3, 5)
    assert (cnn_block_limit("valid", side=64), cnn_block_limit("same", side=64)) == (4, 6)  # 64 -> 62 -> 31 -> 29 -> 14 -> 12 -> 6 -> 4 -> 2


def test_one_block_count_per_stage_is_accepted(compose_train) -> None:
    cfg = compose_train("model=resnet", "model.blocks_per_stage=[3,3,2]", "model.widths=[4,8,8]")
    validate(cfg)
    assert instantiate(cfg.model).output_shape == (None, 2)


@pytest.mark.parametrize("momentum", ["1.0", "-0.1", "fast"])
def test_bad_ema_momentum_is_refused_when_averaging(compose_train, momentum: str) -> None:
    validate(compose_train(f"optimizer.ema_momentum={momentum}"))  # unused while use_ema is false
    with pytest.raises(ConfigError, match=r"^optimizer.ema_momentum "):
        validate(compose_train("optimizer.use_ema=true", f"optimizer.ema_momentum={momentum}"))


@pytest.mark.parametrize("fraction", ["0", "1.2", "half"])
def test_bad_train_fraction_is_refused(compose_train, fraction: str) -> None:
    with pytest.raises(ConfigError, match=r"^data.train_fraction must"):
        validate(compose_train("data=cifake", "data.root=/anywhere", f"data.train_fraction={fraction}"))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data=cifake", "data.root=null"], "data.root must be a path, got None"),
        (["data=cifake", "data.root="], "data.root must be a path, got '' (is the variable in it set?)"),
        # Hydra reads a folder named 2024 as a number: say how to quote it rather than fail in pathlib.
        (["data=cifake", "data.root=2024"], "data.root must be a path, and Hydra read 2024 as a number; quote it: data.root=\"'2024'\""),
        (["data=cifake", "data.root=/x", "data.cache_dir=123"], "data.cache_dir must be a path, and Hydra read 123 as a number"),
        (["data=cifake", "data.root=/x", "data.cache_dir=true"], "data.cache_dir must be a path or null, got True"),
        # null would draw another validation split on every load, so a resume would train on validation images.
        (["data.seed=null"], "data.seed must be a whole number, got None"),
        (["data=cifake", "data.root=/x", "data.train_fraction=null"], "data.train_fraction must be a number, got None"),
        (["data.train_per_class=null"], "data.train_per_class must be a whole number, got None"),
        (["schedule=cosine", "schedule.final_fraction=1.5"], "schedule.final_fraction must be at most 1"),  # the rate would rise after warm-up
        (["schedule=cosine", "schedule.final_fraction=null"], "schedule.final_fraction must be a number, got None"),
    ],
)
def test_data_values_that_no_loader_can_use_are_refused(compose_train, overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as refusal:
        validate(compose_train(*overrides))
    assert str(refusal.value).startswith(message)


def test_data_paths_that_are_text_and_a_null_cache_dir_pass(compose_train) -> None:
    validate(compose_train("data=cifake", "data.root='2024'", "data.cache_dir=null"))
    validate(compose_train("data=cifake", "data.root=/x", "data.cache_dir=/tmp/cache"))


def test_missing_cifake_root_is_refused(compose_train) -> None:
    with pytest.raises(ConfigError, match=r"^data.root is required"):
        validate(compose_train("data=cifake"))


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["model=foo"], f"unknown model option 'foo'; choose from: {', '.join(GROUPS['model'])}"),
        (["optimizer=rmsprop"], "unknown optimizer option 'rmsprop'"),
        (["model=small,foo"], "unknown model option 'foo'"),
        (["nosuchkey=1"], "unknown config key 'nosuchkey'"),
        (["epochs=[1"], "no viable alternative"),
        # A browser's second download, a folder with "=": plain to the shell, syntax to Hydra.
        (["data=cifake", "data.root=/x/archive (1).zip"], "'data.root=/x/archive (1).zip' cannot be read: mismatched input ' (' expecting <EOF>; to give it as text, quote it: data.root=\"'/x/archive (1).zip'\""),
        (["data=cifake", "data.root=/x/a=b"], "'data.root=/x/a=b' cannot be read: mismatched input '=' expecting <EOF>; to give it as text"),
        (["model="], f"model= needs an option; choose from: {', '.join(GROUPS['model'])}"),
        (["data.root=/x"], "config key 'data.root' belongs to data=cifake, which this command does not choose; add data=cifake"),
        (["model.squeeze_excite=2"], "belongs to model=highpass_resnet, model=resnet and model=spectral_resnet, which this command does not choose; add one of model=highpass_resnet, model=resnet, model=spectral_resnet"),
        (["model=small", "model.squeeze_excite=2"], "config key 'model.squeeze_excite' is not in model=small; it belongs to model=highpass_resnet, model=resnet and model=spectral_resnet: choose one of model=highpass_resnet, model=resnet, model=spectral_resnet"),
        (["optimizer.lrate=1"], "unknown config key 'optimizer.lrate' (check the spelling"),  # no option has it: a misspelling
        (["+augment.flips=true"], "+augment.flips adds a key that nothing reads; check the spelling"),
        (["+foo=1,2"], "+foo adds a key that nothing reads"),
        (["++epochs=2", "+data.root=/x"], "+data.root adds a key that nothing reads"),  # the demo data's loader takes no root
        (["+model.depth=3"], "+model.depth adds a key that nothing reads"),  # nor does the model's builder take a depth
        (["experiment.epochs=3"], "unknown config key 'experiment.epochs' (check the spelling"),  # presets set top-level keys: no owner to name
        # A name only labels its option file: model.name=wide filed a run of the small network as wide.
        (["model.name=wide"], "model.name only names the chosen model file (the run would be recorded as wide, its network unchanged); choose the model with model=wide"),
        (["augment.name=strong,none"], "augment.name only names the chosen augment file (the run would be recorded as strong,none, its augmentation unchanged); choose the augment with augment=strong,none"),
        (["~model.name"], "model.name only names the chosen model file"),
        # Optuna's sweeper failed on 0 trials with a traceback, after the sweep's parent run had opened.
        (["hparams_search=optuna", "hydra.sweeper.n_trials=0"], "hydra.sweeper.n_trials must be a whole number of at least 1, got 0"),
        (["hparams_search=optuna", "hydra.sweeper.n_jobs=0"], "hydra.sweeper.n_jobs must be a whole number of at least 1, got 0"),
    ],
)
def test_override_errors_are_one_line(overrides: list[str], expected: str) -> None:
    problem = override_error(CONFIG_DIR, "train", overrides)
    assert problem is not None and expected in problem and "\n" not in problem


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["epochs=1,2"], "epochs=1,2 gives several values, a sweep: add -m to run one job each, or quote it to give the text itself: epochs=\"'1,2'\""),
        (["seed=3", "epochs=range(1,3)"], "epochs=range(1,3) gives several values, a sweep: add -m"),
        (["data=cifake", "data.root=/x/a,b"], "data.root=/x/a,b gives several values, a sweep: add -m to run one job each, or quote it to give the text itself: data.root=\"'/x/a,b'\""),
        (["epochs=2", "data.root='/x/a,b'"], None),
        (["epochs=[1"], None),  # unparsable: override_error names it
    ],
)
def test_several_values_without_multirun_are_named(overrides: list[str], expected: str | None) -> None:
    problem = sweep_without_multirun(overrides)
    assert problem == expected if expected is None else (problem is not None and problem.startswith(expected))


def test_good_overrides_and_sweeps_pass_the_precheck() -> None:
    assert override_error(CONFIG_DIR, "train", ["model=wide", "optimizer.lr=1e-3,1e-4", "augment=none,light"]) is None
    # Adding to what the config has, a config group's option, or Hydra's own settings is not refused.
    assert override_error(CONFIG_DIR, "train", ["++epochs=2", "data=cifake", "++data.root=/x", "+hydra.job.env_set.X=1"]) is None
    assert override_error(CONFIG_DIR, "train", ["++output_dir=/tmp/out"]) is None  # a key whose value only a run resolves
    # The optimizer's factory passes any option on to the Keras optimizer, so what is added there is read.
    assert override_error(CONFIG_DIR, "train", ["optimizer=sgd", "+optimizer.weight_decay=5e-3", "+optimizer.clipnorm=1.0,2.0"]) is None


@pytest.mark.parametrize(
    ("sweep", "expected"),
    [
        ("optimizer.lr=interval(-1,-0.5)", "optimizer.lr must be greater than 0, got -1"),
        ("model.dropout=interval(0.5,1.5)", "model.dropout must be in [0, 1), got 1.5"),
        ("epochs=interval(1,5)", "epochs must be a whole number, got 1.0: interval(a, b) draws real numbers; int(interval(a, b)) draws whole ones"),
        ("epochs=int(interval(1,5))", None),
        ("epochs=int(interval(0,5))", "epochs must be at least 1, got 0"),
        ("optimizer.lr=tag(log,interval(1e-4,3e-3))", None),
        ("model.dropout=interval(0,1)", None),  # a real-valued draw stays below 1, which dropout may not reach
        ("label_smoothing=range(0.0,1.0,0.5)", "label_smoothing must be in [0, 1), got 1"),  # Optuna's plugin draws a range's stop too
        ("seed=range(1,4)", None),
    ],
)
def test_a_sampled_interval_is_checked_at_both_ends(sweep: str, expected: str | None) -> None:
    from forgery.train import validate_printed

    assert override_error(CONFIG_DIR, "train", ["hparams_search=optuna", sweep], check=validate_printed) == expected


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["hparams_search=optuna"], None),
        (["experiment=lr_sweep"], None),
        (["hparams_search=optuna", "hydra.sweeper.params.augment='choice(none, heavy)'"], "the preset's search (hydra.sweeper.params) sweeps augment=choice(none, heavy), but unknown augment option 'heavy'; choose from: "),
        (["experiment=lr_sweep", "+hydra.sweeper.params.epochs='0,1'"], "the preset's search (hydra.sweeper.params) sweeps epochs=0,1, but epochs must be at least 1, got 0"),
        (["hparams_search=optuna", "+hydra.sweeper.params.epochs='interval(1,5)'"], "the preset's search (hydra.sweeper.params) sweeps epochs=interval(1,5), but epochs must be a whole number, got 1.0: interval(a, b) draws real numbers"),
        (["hparams_search=optuna", "model=resnet"], "the preset's search (hydra.sweeper.params) sweeps model.width=choice(0.5, 1.0, 1.5, 2.0), but config key 'model.width' is not in model=resnet; it belongs to model=small and model=wide: choose one of model=small, model=wide"),
        (["label_smoothing=range(0.0,1.0,0.5)"], None),  # Hydra's own sweeper stops before a range's stop
        (["augment=glob(*)"], None),  # options Hydra matches itself
        (["model=resnet,highpass_resnet", "model.drop_path=0.1"], None),  # each job has a model that takes it
        (["model=small,resnet", "model.drop_path=0.1"], "config key 'model.drop_path' is not in model=small, one of this sweep's jobs; it belongs to model=highpass_resnet, model=resnet and model=spectral_resnet: sweep only those"),  # the small job cannot
        (["model=small", "model.drop_path=0.1", "seed=1,2"], "config key 'model.drop_path' is not in model=small; it belongs to model=highpass_resnet, model=resnet and model=spectral_resnet: choose one of"),  # chosen, not swept
        (["data=demo,cifake", "data.root=/x"], "config key 'data.root' is not in data=demo, one of this sweep's jobs; it belongs to data=cifake: sweep only it"),
        (["hparams_search=optuna", "+hydra.sweeper.params.epochs='interval(1'"], "hydra.sweeper.params.epochs: no viable alternative at input 'interval(1'"),
        (["hparams_search=optuna", "hydra.sweeper.params.augment='choice(none, heavy)'", "augment=light"], None),  # the command line's value replaces the preset's sweep
    ],
)
def test_a_presets_own_sweep_is_checked_like_the_command_lines(overrides: list[str], expected: str | None) -> None:
    from forgery.train import validate_sweep_job

    problem = override_error(CONFIG_DIR, "train", overrides, check=validate_sweep_job)
    assert problem == expected if expected is None else problem is not None and problem.startswith(expected)


def test_a_sweep_job_is_not_held_to_this_process_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    # Jobs may run on a cluster node or under hydra.job.env_set with another backend; each checks its own.
    from forgery.train import validate_printed, validate_sweep_job

    monkeypatch.setenv("KERAS_BACKEND", "tensorflow")
    overrides = ["runtime.loop=scan", "seed=1,2"]
    assert override_error(CONFIG_DIR, "train", overrides, check=validate_sweep_job) is None
    assert "runtime.loop=scan needs the jax backend" in override_error(CONFIG_DIR, "train", overrides, check=validate_printed)
    assert "optimizer.lr must be greater than 0" in override_error(CONFIG_DIR, "train", [*overrides, "optimizer.lr=1e-3,-1"], check=validate_sweep_job)


def test_condense_keeps_the_key_of_a_type_error() -> None:
    message = "Error merging override epochs=abc\nValue 'abc' could not be converted to Integer\n    full_key: epochs\n    object_type=dict"
    assert condense_hydra_error(message) == "epochs: Error merging override epochs=abc Value 'abc' could not be converted to Integer"


def test_config_files_start_with_a_comment_line() -> None:
    for path in CONFIG_DIR.rglob("*.yaml"):
        text = path.read_text().removeprefix("# @package _global_\n")  # Hydra needs this header first
        assert text.startswith("# ") and "@package" not in text.splitlines()[0], f"{path} must start with a one-line comment"


def help_examples(app: str) -> list[list[str]]:
    """The arguments of each `python -m forgery.<app> ...` example in the app's --help footer, notes in brackets and Hydra's --cfg dropped."""
    from omegaconf import OmegaConf

    footer = OmegaConf.load(CONFIG_DIR / f"{app}.yaml").hydra.help.footer
    lines = [line.strip().split("(")[0] for line in footer.splitlines() if line.strip().startswith(f"python -m forgery.{app} ")]
    return [[word for word in line.split()[3:] if word not in ("--cfg", "job")] for line in lines]


@pytest.mark.parametrize("app", ["train", "promote", "bench"])
def test_every_example_in_an_entrypoints_help_is_a_command_it_accepts(app: str) -> None:
    import importlib

    importlib.import_module("forgery.promote")  # registers promote's config, composed from the store as its entrypoint does
    from forgery.bench import bracketed_list
    from forgery.train import validate_sweep_job

    examples = help_examples(app)
    assert len(examples) >= 3 and all(examples)
    for arguments in examples:
        if app == "train":
            problem = override_error(CONFIG_DIR, "train", arguments, check=validate_sweep_job)  # every check but the data path's
        elif app == "bench":
            problem = override_error(CONFIG_DIR, "bench", [bracketed_list(argument) for argument in arguments])
        else:
            problem = override_error(None, "promote", arguments)
        assert problem is None, (arguments, problem)


@pytest.mark.parametrize("app", ["train", "promote", "bench"])
def test_help_says_what_the_entrypoint_does_and_shows_its_examples(tmp_path, app: str) -> None:
    from tests.conftest import run_forgery

    printed = run_forgery(app, "--help", cwd=tmp_path, timeout=120)
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout.startswith(f"python -m forgery.{app} ")
    assert "Examples:" in printed.stdout and "--hydra-help lists Hydra's own flags" in printed.stdout
    groups = "experiment: cifake_best, lr_sweep, seed_repro, small_fast"
    assert (groups in printed.stdout) == (app == "train")  # promote and the bench take no training groups
    assert ("data=demo" in printed.stdout) == (app == "bench")
    assert not list(tmp_path.glob("outputs")) and not list(tmp_path.glob("mlflow.db"))  # --help runs nothing


@pytest.mark.parametrize(
    ("app", "arguments", "expected"),
    [
        ("train", ["--help", "model=foo"], "error: unknown model option 'foo'; choose from: highpass_resnet, resnet, small, spectral_resnet, wide"),
        ("train", ["--cfg", "job", "epochs=1,2"], "error: epochs=1,2 gives several values, a sweep: --cfg prints one config, so give one value, or quote it"),
        ("bench", ["--hydra-help", "data=foo"], "error: unknown data option 'foo'; choose from: cifake, demo"),
        ("promote", ["-h", "dest2=x"], "error: unknown config key 'dest2' (check the spelling"),
    ],
)
def test_a_bad_override_beside_help_or_cfg_is_one_line(tmp_path, app: str, arguments: list[str], expected: str) -> None:
    # Hydra answered these with a traceback (--help) or its own "Ambiguous value" report (--cfg).
    from tests.conftest import run_forgery

    printed = run_forgery(app, *arguments, cwd=tmp_path, timeout=120)
    assert printed.returncode == 2 and printed.stdout == ""
    assert printed.stderr.strip().startswith(expected) and len(printed.stderr.strip().splitlines()) == 1, printed.stderr


def test_help_error_names_what_help_could_not_compose() -> None:
    import importlib

    from forgery.config import help_error

    importlib.import_module("forgery.promote")  # its config lives in Hydra's store
    assert help_error(None, "promote", ["--help", "dest2=x"]).startswith("unknown config key 'dest2'")
    assert help_error(None, "promote", ["--help", "dest=x"]) is None
    assert help_error(CONFIG_DIR, "train", ["-h", "seed=1,2"]).startswith("seed=1,2 gives several values, a sweep: --help prints one config")
    assert help_error(CONFIG_DIR, "train", ["model=foo"]) is None  # not a --help command: the run's own checks answer it
    assert help_error(CONFIG_DIR, "train", ["--help"]) is None
