"""The repository stands alone: nothing it runs or documents reads a file beside it.

A plain clone, with no folder next to it, must run the whole suite; the team's design notes
and test data outside the repository are for reading, and what the code and tests need was
copied in (``tests/data/wycheproof``) or written down (``docs/protocols.md``).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUTSIDE = re.compile(r"\.\./shared|/work/shared|shared/testdata|PROTOCOLS\.md|parents\[[3-9]\]")


def test_no_tracked_file_reaches_outside_the_repository() -> None:
    """No source, test, bench, doc or CI file names a path outside the clone."""
    tracked = (
        subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True)
        .stdout.decode()
        .split("\0")
    )
    offenders = []
    for name in tracked:
        path = REPO / name
        if (
            not name
            or name.startswith("tests/data/")
            or path.suffix
            not in {".py", ".md", ".sh", ".yaml", ".yml", ".toml", ".cfg", ".txt", ""}
        ):
            continue
        if path == Path(__file__).resolve() or not path.is_file():
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        offenders += [f"{name}:{m.group(0)}" for m in OUTSIDE.finditer(text)]
    assert offenders == []
