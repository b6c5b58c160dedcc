"""The user API: `TFSparkTrainer` defaults, and importing it without TensorFlow or pyspark."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tfspark.trainer import TFSparkTrainer


def test_the_public_api_imports_without_tensorflow_or_pyspark():
    probe = (
        "import sys; from tfspark import TFSparkTrainer, TrainContext; "
        "print(sorted(m for m in ('tensorflow', 'keras', 'pyspark') if m in sys.modules))"
    )
    imported = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert imported.stdout.strip() == "[]"


def test_trainer_args_arrive_as_strings_and_defaults_are_documented_values():
    trainer = TFSparkTrainer(epochs="3", lake="file:///lake")
    assert trainer.args == {"epochs": "3", "lake": "file:///lake"}
    assert (trainer.batch_size, trainer.epochs, trainer.label_column, trainer.checkpoint_every) == (
        1024,
        1,
        "label",
        200,
    )
    trainer.shutdown()


def test_a_trainer_must_say_how_to_prepare_and_train():
    with pytest.raises(NotImplementedError, match="pre_train"):
        TFSparkTrainer().pre_train(None)
    with pytest.raises(NotImplementedError, match="train"):
        TFSparkTrainer().train(None, None)
