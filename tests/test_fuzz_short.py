"""The short fuzzing run: every harness in fuzz/ for a few thousand inputs (CI).

Each harness (``fuzz/fuzz_<parser>.py``) asserts its parser's contract: a value or the
documented error, never another exception, and its round trips. Here each runs, through
``fuzz/run.py``, from its committed seed corpus (which holds every input the fuzzer once
crashed on) into a scratch directory. The long run (a million inputs per parser) and its
figures are in docs/security.md.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("atheris", reason="atheris is in the dev extra (pip install -e '.[dev]')")

REPO = Path(__file__).resolve().parents[1]
HARNESSES = sorted(p.stem.removeprefix("fuzz_") for p in (REPO / "fuzz").glob("fuzz_*.py"))
RUNS = 3000


def test_every_parser_that_takes_client_bytes_has_a_harness() -> None:
    """The list docs/security.md and fuzz/README.md give."""
    assert HARNESSES == [
        "bpc_wire",
        "config",
        "dpop",
        "forwarded",
        "hmac_proof",
        "jws",
        "strict_json",
        "target",
    ]
    for name in HARNESSES:
        assert any((REPO / "fuzz" / "corpus" / name).iterdir()), f"no seed corpus for {name}"


@pytest.mark.parametrize("name", HARNESSES)
def test_a_short_fuzzing_run_finds_nothing(name: str, tmp_path: Path) -> None:
    """A few thousand inputs from the seed corpus: no crash, every input executed."""
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "fuzz" / "run.py"),
            f"--runs={RUNS}",
            f"--only={name}",
            f"--work={tmp_path}",
        ],
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr[-4000:]
    line = re.search(rf"^{name}\s+(\d+)\s+\S+\s+\S+\s+ok$", done.stdout, re.MULTILINE)
    assert line is not None, done.stdout
    assert int(line.group(1)) >= RUNS
