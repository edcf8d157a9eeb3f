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

Fan-out (a `group`, or a `chord`'s header, anywhere in a chain): every run of every
task draws its claim of the one job, and publishes as its own unit (its task id): a
unit's claim fences only that unit's older attempts (a redelivery's first attempt, a
worker that lost its task), never its siblings. A unit that finishes calls
`self.publish_unit_done(stage, units_total, (start, end))`: the hub's script counts it
done once (a redelivered unit is not counted twice) and publishes `units_done`/
`units_total` with the progress of k of N done between `start` and `end`, so the
bar moves monotonically whatever order the units finish in.

Exactly one `complete` per job: the task that ends the canvas completes it (a chain's
last task, a chord's body) when its body did not publish it, with `COMPLETED`; in a bare
group (no chord body after it), the unit that counts the last of `units_total` done
does (counted atomically in Redis; a sibling that also sees them all done is refused by
the script: one `complete`). A failure for good publishes `FAILED` instead (above), and
the script refuses any second `complete` of a job.

A Celery task is synchronous: `async def` bodies (as in the original sketch) return
an un-awaited coroutine and never run. Write the task body synchronously with
`progress_hub.ProgressService`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
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
        """The job this run belongs to: the root of the task's chain (one generation);
        for a group sent on its own (each of its tasks is its own root), the group."""
        root = self.request.root_id
        if (root is None or root == self.request.id) and self._in_group():
            return str(self.request.group)
        return str(root or self.request.id)

    def progress_project(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
        """The project: the argument named `progress_project_arg`, wherever it is (a
        chord's body gets its header's results first), else the first argument."""
        value = kwargs.get(self.progress_project_arg)
        if value is None:
            try:
                bound = inspect.signature(self.run).bind_partial(*args, **kwargs)
                value = bound.arguments.get(self.progress_project_arg)
            except (TypeError, ValueError):
                value = None
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
        if claim is not None:
            # Each task is its own unit of the job: it fences only its own older runs.
            claim = dataclasses.replace(claim, unit=str(self.request.id))
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
            if claim is not None and project is not None and self._redelivered():
                self._say_taken_over(project, run)
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
                    self._report(project, run, exc, final=True)
                self._publish_quietly(ProgressService.publish_complete, project, "FAILED")
            raise
        finally:
            _sync.flush()
            _run.current_run.reset(token)
        # A run that stalled after its last publish must not continue the chain either:
        # the next task would draw a newer claim than the live run's. A run that
        # completed the job itself spent its claim (no publish under it is accepted
        # any more) but was not superseded.
        if claim is not None and project is not None and not run.completed:
            if not _sync.publisher().claim_is_current(project, claim):
                if run.unit_done and self._in_group():
                    return result  # a bare group's sibling counted the last unit and completed
                logger.warning(
                    "task %s[%s] was superseded; not continuing", self.name, self.request.id
                )
                raise Ignore()
            again = _run.current_run.set(run)  # completed under the run's own claim
            try:
                self._complete_at_canvas_end(project, run)
            finally:
                _sync.flush()
                _run.current_run.reset(again)
        return result

    def _redelivered(self) -> bool:
        """The broker delivers this task again: its worker (or pool process) died, or
        its visibility timeout passed while it ran."""
        info = self.request.delivery_info or {}
        return bool(info.get("redelivered"))

    def _say_taken_over(self, project: str, run: _run.Run) -> None:
        """A redelivered task takes its job over, as the hub's own worker says it
        (docs/PROTOCOL.md "Progress rules"): a WARNING `log`, then a `stage_change`
        whose `previous_stage` is its `current_stage` (the stage the run is in, at the
        progress it reached), so watchers mark the run "taken over" and keep the
        stage's timing. Nothing when the project's run is not the job's (or ended)."""
        fields = _sync.publisher().run_fields(project)
        status = fields.get("status")
        if run.claim is None or fields.get("fence_holder") != run.claim.job:
            return
        if fields.get("fence_ended") == run.claim.job or status not in _event.STAGES:
            return
        try:
            progress = int(fields.get("progress") or 0)
        except ValueError:
            progress = 0
        message = (
            f"the previous worker of task {self.name}[{self.request.id}] stopped; "
            f"another worker took it over and runs it again in {status}"
        )
        ProgressService.publish_log(project, "WARNING", message)
        ProgressService.publish_stage_change(project, str(status), str(status), progress)

    def _in_group(self) -> bool:
        """A member of a group (a chord's body shares its header's group id, without an
        index in it)."""
        return self.request.group is not None and self.request.group_index is not None

    def publish_unit_done(
        self,
        stage: str,
        units_total: int,
        progress: tuple[int, int],
        current_stage: str | None = None,
    ) -> str | None:
        """Publishes that this task, one of `units_total` parallel units of `stage` (a
        `group` or a `chord` header), is done: a `progress_update` of `stage` that the
        hub's script counts once per unit (a redelivered unit is not counted twice),
        carrying `units_done`/`units_total` and the progress of k of N done between
        `progress[0]` and `progress[1]`. Call it last in the task's body. Outside a run
        with a claim and a project (`apply()`, HTTP mode) it publishes `progress[1]`
        uncounted. Returns the event's id; raises as `ProgressService.publish_progress`,
        and `InvalidEvent` for a bad count or range."""
        if isinstance(units_total, bool) or not isinstance(units_total, int) or units_total < 1:
            raise _event.InvalidEvent("data.units_total", "an integer >= 1 expected")
        start, end = progress
        for value in (start, end):
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 100:
                raise _event.InvalidEvent("data.progress", "a range of integers 0 to 100 expected")
        if start > end:
            raise _event.InvalidEvent("data.progress", "the range's start is after its end")
        run = _run.current_run.get()
        project = self.progress_project(tuple(self.request.args or ()), self.request.kwargs or {})
        text = current_stage if current_stage is not None else f"{stage}: {self.name} done"
        if run is None or run.claim is None or run.claim.unit is None or project is None:
            return ProgressService.publish_progress(str(project), stage, end, text)
        claim = run.claim
        run.claim = dataclasses.replace(claim, done_of=(units_total, start, end))
        try:
            sent = ProgressService.publish_progress(project, stage, start, text)
        finally:
            run.claim = claim
        run.unit_done = True
        return sent

    def _complete_at_canvas_end(self, project: str, run: _run.Run) -> None:
        """Completes the job when this task ends its canvas and the job's run is still
        going: a chain's last task or a chord's body that returned without
        `publish_complete`, or the unit of a bare group that saw the last unit done."""
        request = self.request
        if request.chain or request.callbacks or request.chord or run.claim is None:
            return  # more of the canvas follows (a chord's header: its body completes)
        fields = _sync.publisher().run_fields(project)
        if fields.get("fence_holder") != run.claim.job:
            return  # the job never published: it has no run to complete
        if self._in_group():
            done, total = fields.get("units_done"), fields.get("units_total")
            if total is None:
                logger.warning(
                    "task %s[%s] ends a group whose units did not call publish_unit_done: "
                    "nobody can tell the last one, so the job is not completed",
                    self.name,
                    request.id,
                )
                return
            if int(done or 0) < int(total):
                return  # a sibling is still running: the last one completes
        logger.info(
            "task %s[%s] ends the canvas of job %s without publish_complete: completing it",
            self.name,
            request.id,
            run.claim.job,
        )
        # A sibling may complete it first (a bare group's last two units): refused.
        with contextlib.suppress(StaleClaim):
            ProgressService.publish_complete(project, "COMPLETED")

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

    def _report(
        self, project: str, run: _run.Run, exc: BaseException, *, final: bool = False
    ) -> None:
        """Publishes the `error` of a failed attempt: of the stage the run published,
        or else the stage the project's run is in (a chord's unit, a chain's later
        step). A failure for good is not retryable, whatever the catalog says of its
        code (the page must not say "the system retries automatically")."""
        code = getattr(exc, "error_code", "INTERNAL_ERROR")
        if code not in _contract.error_catalog():
            code = "INTERNAL_ERROR"
        max_retries = self.max_retries if self.max_retries is not None else 0
        retries = min(int(self.request.retries), max_retries + 1)
        stage = run.stage
        if not run.staged:
            try:
                status = _sync.publisher().run_fields(project).get("status")
            except PublishError:
                status = None
            stage = status if status in _event.STAGES else stage
        try:
            locale = _sync.config().locale
            event = _event.error(
                code,
                (str(exc) or type(exc).__name__)[: _event.MAX_MESSAGE],
                stage,
                retries,
                max_retries,
                locale,
            )
        except ValueError as err:
            logger.warning("could not publish the failure of a task: %s", err)
            return
        if final:
            event.data["is_retryable"] = False
        self._publish_quietly(_publish_event, project, event, stage)

    @staticmethod
    def _publish_quietly(method: Any, *args: Any) -> None:
        """Publishes while a failure is on its way out: a publish problem is logged,
        never raised over the task's own exception."""
        try:
            method(*args)
        except (PublishError, ValueError) as err:
            logger.warning("could not publish the failure of a task: %s", err)


def _publish_event(project: str, event: _event.Event, stage: str) -> str | None:
    """Publishes an event built here, as `ProgressService` publishes its own."""
    sent = _sync.publisher().publish(_event.check_project_id(project), event, _run.take_tags())
    _run.note(event.name, stage)
    return sent


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
