"""Signals other apps may follow runs by, without segmentation knowing who listens."""

from __future__ import annotations

from django.dispatch import Signal

# A run's status or its copied result may have changed (sent with run_id=): a worker's task
# or an engine's callback just acted on it. Sent after the change is committed.
run_changed = Signal()
