"""An asyncio program publishing with `progress_hub.aio` (run by test_async_http.py):
`python async_program.py REDIS_URL PROJECT` prints the ids it got, as JSON. It ends
with an update still held by coalescing and no flush: the exit hook must send it."""

from __future__ import annotations

import asyncio
import json
import sys

import progress_hub
from progress_hub.aio import ProgressService


async def main(project: str) -> list[str | None]:
    ids = [
        await ProgressService.publish_stage_change(project, "INITIALIZED", "SCRIPT_GENERATING", 5)
    ]
    for p in (10, 11, 12):
        ids.append(
            await ProgressService.publish_progress(
                project, "SCRIPT_GENERATING", p, f"step {p}", 100 - p
            )
        )
    ids.append(await ProgressService.publish_log(project, "INFO", "between"))
    ids.append(await ProgressService.publish_progress(project, "SCRIPT_GENERATING", 13, "step 13"))
    ids.append(await ProgressService.publish_progress(project, "SCRIPT_GENERATING", 14, "step 14"))
    return ids


if __name__ == "__main__":
    progress_hub.configure(redis_url=sys.argv[1])
    print(json.dumps(asyncio.run(main(sys.argv[2]))))
