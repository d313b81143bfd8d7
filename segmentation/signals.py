"""Signals other apps may follow runs by, without segmentation knowing who listens."""

from __future__ import annotations

from django.dispatch import Signal

# A run's status or its copied result may have changed (sent with run_id= and run=, the Run as
# the sender had loaded it): a worker's task or an engine's callback just acted on it. Sent
# after the change is committed.
run_changed = Signal()

# A worker is starting (manage.py worker), after segmentation's own recovery: a chance for
# other apps to queue again what a stopped worker left behind. Receivers return a count.
worker_starting = Signal()
