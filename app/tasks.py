"""Imports every module that declares Dramatiq actors, so workers and the scheduler know all of them."""

import app.auth.tasks  # noqa: F401
