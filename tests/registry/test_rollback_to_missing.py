"""`keel models rollback NAME --to V` for a version that does not exist says so and lists the
versions (California housing, two versions). It said "version 9 never held housing@production
(holders: 1, 2); rollback only returns to an earlier holder: promote version 9 instead", which
sends the user to promote a version that is not there."""

from __future__ import annotations

from pathlib import Path

import pytest

import keel
from keel.errors import ConflictError, NotFoundError
from tests.housing import needs_housing, two_versions

pytestmark = needs_housing


@pytest.fixture(scope="module")
def housing(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Version 2 holds production (it took it from version 1)."""
    return two_versions(tmp_path_factory.mktemp("rollback"), seed=4)


def test_rollback_to_a_missing_version_names_the_versions(housing: Path) -> None:
    with keel.registry(housing) as reg:
        with pytest.raises(NotFoundError) as info:
            reg.rollback("housing", to=9)
        assert "model 'housing' has no version 9; versions: 1, 2" in info.value.message
        assert reg.resolve("housing@production").version == 2  # nothing moved
        back = reg.rollback("housing", to=1)
        assert (back.previous_version, back.version) == (2, 1)
        with pytest.raises(ConflictError, match="already points at version 1"):
            reg.rollback("housing", to=1)
