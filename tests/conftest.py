from __future__ import annotations

from tests.fixtures.environment import prepare

DATABASE_URL, SIMULATOR_PORT = prepare()

pytest_plugins = ["tests.fixtures.database", "tests.fixtures.client", "tests.fixtures.browser"]
