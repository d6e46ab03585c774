"""A nonce store call names its own write with a token (``stores/redis/nonces.py``): a retry
recognises the write by it, so no two calls, in this process or another, may share one."""

from __future__ import annotations

import os

from authgate.stores.redis.nonces import _call_token


def test_tokens_are_unique_within_a_process() -> None:
    tokens = [_call_token() for _ in range(100_000)]
    assert len(set(tokens)) == len(tokens)


def test_a_forked_child_draws_its_own_prefix() -> None:
    """Workers may be forked from one parent: a child continuing the parent's counter under
    the parent's prefix would repeat the parent's tokens."""
    before = _call_token()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report two tokens, then leave without running pytest's exit
        try:
            os.write(write, f"{_call_token()}\n{_call_token()}".encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child = pipe.read().split("\n")
    os.waitpid(pid, 0)
    after = _call_token()
    prefix = before.rpartition(":")[0]
    assert after.rpartition(":")[0] == prefix
    assert all(token.rpartition(":")[0] != prefix for token in child)
    assert len({before, after, *child}) == 4
