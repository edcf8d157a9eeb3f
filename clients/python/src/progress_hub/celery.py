"""Celery integration: a task base that fences a task's events by its claim, and
reports failures.

    from progress_hub.celery import ProgressTask

    @app.task(bind=True, base=ProgressTask, max_retries=3)
    def generate_script_task(self, project_id): ...

Every run of a task (the first, each retry, each redelivery of an `acks_late` task
after its worker died) draws a new claim of the job (the job is the chain's root task
id: one generation job): a fencing token larger than every earlier run's. Events
published by the run carry it; `publish.lua` refuses an event under an older claim,
and any event of a job whose `complete` is in. A stalled or superseded run's publishes
raise `StaleClaim`, which ends that run quietly (it is not the job's any more): the task
is acknowledged and ignored (`celery.exceptions.Ignore`), so it does not continue its
chain either; nor does a run whose claim was superseded after its last publish, or
whose job another job took over since (checked when its body returns, unless the run
completed the job itself).

When the body raises: a retry (`self.retry`, `autoretry_for`) publishes an `error`
with `retry_count=self.request.retries` and `max_retries=self.max_retries` (unless the
body published one itself); a final failure publishes the `error` and then `complete`
with `FAILED`. Celery's control-flow exceptions (`Ignore`, `Reject`) pass through
untouched: they publish nothing. At the end of every run, held `progress_update`s are flushed.

A cancelled job (`progress_hub.control.cancel`, or `POST .../cancel` from the page):
the hub ends its run with `complete` `CANCELLED` under the job's fence, so the running
task's next publish raises `StaleClaim` (ended quietly, as above), a task that polls
`self.is_cancelled()` between its provider calls can stop sooner, and the chain's next
tasks do not start (each checks its claim before its body runs).

A Celery task is synchronous: `async def` bodies (as in the original sketch) return
an un-awaited coroutine and never run. Write the task body synchronously with
`progress_hub.ProgressService`.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Task
from celery.exceptions import Ignore, Retry, TaskPredicate
from celery.signals import worker_process_shutdown

from . import _contract, _event, _run, _sync
from ._service_sync import ProgressService
from .errors import PublishError, StaleClaim

__all__ = ["ProgressTask"]

logger = logging.getLogger("progress_hub")


class ProgressTask(Task):  # type: ignore[misc]
    """Base class for tasks that publish a project's progress."""

    #: Redelivered when its worker dies mid-run (with `reject_on_worker_lost`).
    acks_late = True
    reject_on_worker_lost = True
    #: The name of the task argument that holds the project id.
    progress_project_arg = "project_id"
    #: The name of the task argument that holds the run's tags (a list such as
    #: ``["user:7"]``): its first publish gives them to the project's run.
    progress_tags_arg = "tags"

    def progress_job(self) -> str:
        """The job this run belongs to: the root of the task's chain (one generation)."""
        return str(self.request.root_id or self.request.id)

    def progress_project(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
        value = kwargs.get(self.progress_project_arg)
        if value is None and args:
            value = args[0]
        return value if isinstance(value, str) else None

    def progress_tags(self, kwargs: dict[str, Any]) -> tuple[str, ...] | None:
        """The run's tags (`progress_tags_arg`), checked; None when the task has none."""
        value = kwargs.get(self.progress_tags_arg)
        return None if value is None else _event.check_tags(value)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        project = self.progress_project(args, kwargs)
        claim = None
        if self.request.id is not None:
            claim = _sync.publisher().next_claim(self.progress_job())
        # The job was cancelled, completed, or taken over: this task is not its.
        if (
            claim is not None
            and project is not None
            and not _sync.publisher().claim_is_current(project, claim)
        ):
            logger.warning(
                "task %s[%s]: its job %s has ended or was taken over; not starting",
                self.name,
                self.request.id,
                claim.job,
            )
            raise Ignore()
        run = _run.Run(claim, tags=self.progress_tags(kwargs))
        token = _run.current_run.set(run)
        try:
            result = super().__call__(*args, **kwargs)
        except StaleClaim as stale:
            # Ignore: acknowledged, and no chain continuation (the live run has its own).
            logger.warning(
                "task %s[%s] was superseded; ending this run: %s", self.name, self.request.id, stale
            )
            raise Ignore() from stale
        except PublishError:
            raise  # the hub's Redis is out of reach: nothing can be reported there either
        except Retry as retry:
            cause = _cause_of(retry)
            if project is not None and not run.error_published:
                self._report(project, run, cause)
            raise
        except TaskPredicate:
            raise  # Ignore, Reject: the task's own control flow, not a failure of the job
        except Exception as exc:
            if project is not None:
                if not run.error_published:
                    self._report(project, run, exc)
                self._publish_quietly(ProgressService.publish_complete, project, "FAILED")
            raise
        finally:
            _sync.flush()
            _run.current_run.reset(token)
        # A run that stalled after its last publish must not continue the chain either:
        # the next task would draw a newer claim than the live run's. A run that
        # completed the job itself spent its claim (no publish under it is accepted
        # any more) but was not superseded.
        superseded = (
            claim is not None
            and project is not None
            and not run.completed
            and not _sync.publisher().claim_is_current(project, claim)
        )
        if superseded:
            logger.warning("task %s[%s] was superseded; not continuing", self.name, self.request.id)
            raise Ignore()
        return result

    def is_cancelled(self) -> bool:
        """Whether this run's job is over for it: cancelled (or completed, or taken
        over by a newer run), so its next publish would be refused. A task calls it
        between provider calls to stop before paying for the next one; raising
        `progress_hub.StaleClaim` (or returning) then ends it quietly. False outside a
        run with a claim and a project."""
        run = _run.current_run.get()
        project = self.progress_project(tuple(self.request.args or ()), self.request.kwargs or {})
        if run is None or run.claim is None or project is None:
            return False
        return not _sync.publisher().claim_is_current(project, run.claim)

    def _report(self, project: str, run: _run.Run, exc: BaseException) -> None:
        code = getattr(exc, "error_code", "INTERNAL_ERROR")
        if code not in _contract.error_catalog():
            code = "INTERNAL_ERROR"
        max_retries = self.max_retries if self.max_retries is not None else 0
        retries = min(int(self.request.retries), max_retries + 1)
        self._publish_quietly(
            ProgressService.publish_error,
            project,
            code,
            (str(exc) or type(exc).__name__)[: _event.MAX_MESSAGE],
            run.stage,
            retries,
            max_retries,
        )

    @staticmethod
    def _publish_quietly(method: Any, *args: Any) -> None:
        """Publishes while a failure is on its way out: a publish problem is logged,
        never raised over the task's own exception."""
        try:
            method(*args)
        except (PublishError, ValueError) as err:
            logger.warning("could not publish the failure of a task: %s", err)


def _cause_of(retry: BaseException) -> BaseException:
    """The failure a retry is for. `retry.exc` is a pickle-safe stand-in when the
    exception does not pickle; the exception itself is the retry's cause or context."""
    for cause in (retry.__cause__, retry.__context__, getattr(retry, "exc", None)):
        if isinstance(cause, Exception) and not isinstance(cause, Retry):
            return cause
    return retry


@worker_process_shutdown.connect  # type: ignore[untyped-decorator]
def _flush_at_shutdown(**_: Any) -> None:
    _sync.flush()
