"""`python -m celery_app.start PROJECT_ID [--fail STAGE=N ...]`: queues a generation."""

from __future__ import annotations

import argparse

from .tasks import start_generation


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("project_id")
    parser.add_argument("--topic", default="科技趨勢展望")
    parser.add_argument("--fail", action="append", default=[], metavar="STAGE=N")
    parser.add_argument("--mock-delay", type=float, default=1.0)
    args = parser.parse_args()
    failures = {stage: int(n) for stage, n in (f.split("=", 1) for f in args.fail)}
    result = start_generation(
        args.project_id, topic=args.topic, inject_failures=failures, mock_delay=args.mock_delay
    )
    print(f"queued {args.project_id}: job {result.id}")


if __name__ == "__main__":
    main()
