"""Signals other apps may follow runs by, without segmentation knowing who listens."""

from __future__ import annotations

from django.dispatch import Signal

# A run's status or its copied result may have changed (sent with run_id=): a worker's task
# or an engine's callback just acted on it. Sent after the change is committed.
run_changed = Signal()

# A worker is starting (manage.py worker), after segmentation's own recovery: a chance for
# other apps to queue again what a stopped worker left behind. Receivers return a count.
worker_starting = Signal()
