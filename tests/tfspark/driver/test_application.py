"""The driver application: loading the trainer and reading the command line."""

from __future__ import annotations

import pytest

from tfspark.driver.application import load_trainer, parser


def test_the_trainer_is_imported_by_module_and_class_and_receives_its_args():
    trainer = load_trainer("tiny_trainer:TinyRatingsTrainer", {"epochs": "2", "uneven": "1"})
    assert type(trainer).__name__ == "TinyRatingsTrainer"
    assert trainer.epochs == 2
    assert trainer.args == {"epochs": "2", "uneven": "1"}


def test_a_trainer_spec_must_name_a_tfspark_trainer():
    with pytest.raises(ValueError, match="module:Class"):
        load_trainer("tiny_trainer.TinyRatingsTrainer", {})
    with pytest.raises(TypeError, match="not a subclass"):
        load_trainer("pathlib:Path", {})
    with pytest.raises(ModuleNotFoundError):
        load_trainer("no_such_module:Trainer", {})


def test_driver_options_default_to_one_cpu_worker_per_executor():
    options = parser().parse_args(["--trainer", "m:T"])
    assert (options.num_workers, options.gpus_per_worker, options.checkpoint_dir, options.output_dir) == (
        None,
        0,
        None,
        None,
    )
    assert options.cache_memory_mb == 2048
    assert (options.checkpoint_every, options.checkpoint_seconds) == (None, None), "the trainer's own interval"
