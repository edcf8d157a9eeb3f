"""The original sketch's `generate_video` pipeline as Celery tasks, publishing through
progress-hub: five stage tasks in a chain, mock providers with injectable transient
failures, retries with exponential backoff.

Run it next to a hub (both on the same Redis):

    progress-hub serve --redis-url redis://127.0.0.1:6379 --no-worker
    cd clients/python/examples && celery -A celery_app worker -l INFO
    python -m celery_app.start my-project          # then open http://127.0.0.1:8000/projects/my-project
"""

from .app import app
from .tasks import start_generation

__all__ = ["app", "start_generation"]
