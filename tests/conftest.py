"""Fixtures shared by the whole suite: a real Kafka-protocol broker and an isolated project state."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from lakeloop.services import EmbeddedBroker, free_port


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    """A fresh noida-db broker on a free 127.0.0.1 port, with its own data directory."""
    broker = EmbeddedBroker(state_dir=tmp_path_factory.mktemp("broker"), port=free_port())
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def lake(tmp_path: Path) -> Path:
    """An empty lake directory for one test."""
    path = tmp_path / "lake"
    path.mkdir()
    return path
