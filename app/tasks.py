"""Imports every module that declares Dramatiq actors, so workers and the scheduler know all of them."""

import app.auth.tasks
import app.bookings.tasks
import app.donations.tasks
import app.feed.tasks
import app.ledger.tasks
import app.reconciliation.tasks
import app.settlements.tasks  # noqa: F401
