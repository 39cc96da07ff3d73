"""Fixtures of the simulator's tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.browser import find_chromium


@pytest.fixture(scope="session")
def chromium() -> Path:
    """The headless browser that looks at the HTML report: skipped when missing, except under
    CI=true, where a missing browser is a failure (`make test` installs it)."""
    found = find_chromium()
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but no chromium binary (make browser installs it)")
        pytest.skip("no chromium here (make browser installs the Debian package)")
    return found
