"""The Celery application: Redis as the broker (the same Redis as the hub's, or not)."""

from __future__ import annotations

import os

from celery import Celery

app = Celery(
    "celery_app",
    broker=os.environ.get("CELERY_BROKER_URL")
    or os.environ.get("REDIS_URL", "redis://127.0.0.1:6379"),
    include=["celery_app.tasks"],
)
app.conf.update(
    # A task whose worker dies mid-run is delivered again (ProgressTask sets acks_late
    # and reject_on_worker_lost): after the visibility timeout when the whole worker
    # died, at once when only its pool process did.
    # (The tests shorten both, to see a redelivery within seconds.)
    broker_transport_options={
        "visibility_timeout": float(os.environ.get("CELERY_VISIBILITY_TIMEOUT", "3600")),
        # How often a worker looks for deliveries whose visibility timed out.
        "unacked_restore_interval": int(os.environ.get("CELERY_UNACKED_RESTORE_INTERVAL", "10")),
        "unacked_restore_throttle": int(os.environ.get("CELERY_UNACKED_RESTORE_THROTTLE", "10")),
    },
    worker_prefetch_multiplier=1,
    task_serializer="json",
    accept_content=["json"],
    broker_connection_retry_on_startup=True,
)
