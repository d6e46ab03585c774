"""Run every fuzz harness (or one) for a number of inputs, one after another.

    PYTHONPATH=src python fuzz/run.py --runs 1000000
    PYTHONPATH=src python fuzz/run.py --runs 5000 --only target

Each harness runs as its own process (``fuzz/fuzz_<name>.py -atheris_runs=N``) over a
scratch corpus directory (new inputs land there, never in the committed seed corpus) and
its seeds in ``fuzz/corpus/<name>/``. Prints, per harness, the inputs executed, the wall
time and the rate; a crash leaves its input in the work directory and the exit status is
non-zero.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FUZZ = Path(__file__).resolve().parent
HARNESSES = tuple(
    sorted(p.stem.removeprefix("fuzz_") for p in FUZZ.glob("fuzz_*.py") if p.is_file())
)
_DONE = re.compile(r"Done (\d+) in (\d+) second")
_EXECUTED = re.compile(r"stat::number_of_executed_units: (\d+)")


def run_one(
    name: str, runs: int, work: Path, *, max_seconds: int | None = None, quiet: bool = True
) -> tuple[bool, int, float]:
    """Run ``name`` for ``runs`` inputs; ``(ok, inputs executed, wall seconds)``."""
    scratch = work / name
    scratch.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        str(FUZZ / f"fuzz_{name}.py"),
        f"-atheris_runs={runs}",
        f"-artifact_prefix={scratch}/",
        "-timeout=30",
        "-rss_limit_mb=2048",
        "-print_final_stats=1",
    ]
    if max_seconds is not None:
        command.append(f"-max_total_time={max_seconds}")
    command += [str(scratch / "corpus"), str(FUZZ / "corpus" / name)]
    (scratch / "corpus").mkdir(exist_ok=True)
    env = dict(os.environ)
    src = str(FUZZ.parent / "src")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))
    started = time.monotonic()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    elapsed = time.monotonic() - started
    log = f"{done.stdout}{done.stderr}\nexit status: {done.returncode}\n"
    (scratch / "log.txt").write_text(log)
    match = _DONE.search(log) or _EXECUTED.search(log)  # "Done" is not printed on a crash
    executed = int(match.group(1)) if match else 0
    ok = done.returncode == 0
    if not ok or not quiet:
        print(log[-4000:], file=sys.stderr)
    return ok, executed, elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, required=True, help="inputs per harness")
    parser.add_argument("--only", choices=HARNESSES, action="append", help="this harness only")
    parser.add_argument("--work", type=Path, help="scratch directory (default: a new temp dir)")
    parser.add_argument("--max-seconds", type=int, help="stop a harness after this long")
    parser.add_argument("--verbose", action="store_true", help="print each harness's log")
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="authgate-fuzz-"))
    print(f"work directory: {work}")
    print(f"{'harness':<12} {'inputs':>10} {'seconds':>9} {'inputs/s':>9}  result")
    failed = []
    for name in args.only or HARNESSES:
        ok, executed, elapsed = run_one(
            name, args.runs, work, max_seconds=args.max_seconds, quiet=not args.verbose
        )
        rate = executed / elapsed if elapsed else 0.0
        result = "ok" if ok else f"CRASH (see {work / name})"
        print(f"{name:<12} {executed:>10} {elapsed:>9.1f} {rate:>9.0f}  {result}", flush=True)
        if not ok:
            failed.append(name)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
