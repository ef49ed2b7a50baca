from __future__ import annotations

import pytest

from pulmo.triage.model import TriageModel
from synthetic_triage import make_synthetic_model

PUBLISHED = ("triage", "published-2020")


@pytest.fixture(scope="session")
def published_model(tmp_path_factory):
    """The published model imported from ../shared (skips when absent), saved and reloaded."""
    from shared_data import shared_path

    from pulmo.triage.published import import_published_model

    model = import_published_model(shared_path(*PUBLISHED, "models.zip"))
    path = tmp_path_factory.mktemp("model") / "published.pulmo-triage"
    model.save(path)
    return TriageModel.load(path)


@pytest.fixture
def synthetic_model():
    return make_synthetic_model()
