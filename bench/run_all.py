"""Run every benchmark in turn (`make bench`). Needs PostgreSQL, as the tests do."""

from __future__ import annotations

from bench import (
    consolidation_worker,
    memory_listing,
    nightly,
    retention,
    threshold_probe,
    tick_fanout,
)

BENCHMARKS = (
    threshold_probe,
    tick_fanout,
    consolidation_worker,
    nightly,
    retention,
    memory_listing,
)


def main() -> None:
    for benchmark in BENCHMARKS:
        benchmark.main()
        print()


if __name__ == "__main__":
    main()
