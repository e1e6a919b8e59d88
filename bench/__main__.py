"""`make bench`: every benchmark in one run, each figure beside its ceiling.

Benchmarks are not tests: they print figures (and the ratio to a ceiling or a
target measured in the same run, since these machines are noisy) for
docs/performance.md.
"""

from __future__ import annotations

import importlib
import sys

BENCHES = [
    "bench.bench_sim",
    "bench.bench_ingest",
    "bench.bench_delivery",
    "bench.bench_kinesis",
    "bench.bench_predictor",
]


def main(names: list[str]) -> int:
    for name in names or BENCHES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            print(f"== {name}: not available", flush=True)
            continue
        print(f"== {name}", flush=True)
        module.main()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
