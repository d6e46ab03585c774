"""The Redis store contract on every redis-py major release the package allows.

``pyproject.toml`` admits ``redis>=5.1,<9``; the main suite runs on whatever a fresh install
picks (the newest). This test installs the oldest allowed release and the newest of each
other major line into a directory of their own and runs the Redis contract tests (event bus
liveness on RESP2 and RESP3, nonces, revocations, rate limits, failure handling, a nonce
write re-sent after its reply was lost, the auto-pipeline's own packing and reading) against
the real Redis with that redis-py first on the path. redis-py 8's reply to a subscribed PING, which kept the event bus flapping, is
exactly the kind of difference this catches (and redis-py 5 re-sent nothing after a lost
reply until the client options listed the error in ``retry_on_error`` as well).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
VERSIONS = ["5.1.1", "6.4.0", "7.4.1", "8.0.1"]
CONTRACTS = [
    "tests/contracts/test_events.py",
    "tests/contracts/test_nonce_store.py",
    "tests/contracts/test_revocation_store.py",
    "tests/contracts/test_rate_limit_store.py",
    "tests/contracts/test_redis_failures.py",
    "tests/contracts/test_redis_retries.py",
    "tests/stores/test_autopipeline.py",
]


@pytest.mark.redis
@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("version", VERSIONS)
def test_store_contract_holds_on_redis_py(version: str, tmp_path: Path) -> None:
    """The standalone Redis contract tests pass with redis-py ``version`` installed."""
    target = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
         f"redis=={version}"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr
    # This checkout's own src (not whichever authgate the interpreter has installed), the
    # tests package, and the redis-py under test ahead of the installed one.
    path = [str(target), str(REPO / "src"), str(REPO)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(path))
    probe = subprocess.run(
        [sys.executable, "-c", "import redis; print(redis.__version__)"],
        capture_output=True, text=True, env=env, timeout=60, check=True,
    )  # fmt: skip
    assert probe.stdout.strip() == version
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "-m", "redis and not redis_topology", *CONTRACTS],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=600, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert " passed" in run.stdout.splitlines()[-1]


@pytest.mark.redis
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_store_contract_holds_with_hiredis(tmp_path: Path) -> None:
    """With the `fast` extra's hiredis parser under the installed redis-py, the standalone
    Redis contract tests pass (and the parser in use is hiredis)."""
    target = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
         "hiredis>=3.0"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(target), str(REPO / "src"), str(REPO)]))
    probe = subprocess.run(
        [sys.executable, "-c", "from redis.utils import HIREDIS_AVAILABLE as h; print(h)"],
        capture_output=True, text=True, env=env, timeout=60, check=True,
    )  # fmt: skip
    assert probe.stdout.strip() == "True"
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "-m", "redis and not redis_topology", *CONTRACTS],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=600, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert " passed" in run.stdout.splitlines()[-1]
