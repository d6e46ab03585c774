"""What ``serve`` would die on, found before anything starts.

``authgate check-config`` and ``authgate serve`` both load their settings here, so they
agree: the model's problems (``config/loader.py``) and those of the files the settings name
(each signing key file exists, is a regular file authgate can read, is not open to other
users, and holds a PEM private key of an algorithm ``jwt.algorithms`` lists), all reported
at once, each under its key.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from authgate.config.loader import Problem, load_settings
from authgate.config.model import Settings
from authgate.crypto.keys import SigningKey, key_file_problems

KEY_FILES = "jwt.signing_key_files"


def _key_paths(settings: Settings | None, tree: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``(key, path)`` of every signing key file; read from the raw tree when the settings
    did not validate, so a key file's problems come together with the others."""
    if settings is not None:
        return [(f"{KEY_FILES}[{i}]", p) for i, p in enumerate(settings.jwt.signing_key_files)]
    jwt = tree.get("jwt")
    files = jwt.get("signing_key_files") if isinstance(jwt, Mapping) else None
    if isinstance(files, str):  # "must be a list" is reported too; the file is still checked
        return [(KEY_FILES, files)]
    if isinstance(files, list):
        return [(f"{KEY_FILES}[{i}]", p) for i, p in enumerate(files) if isinstance(p, str)]
    return []


def file_problems(settings: Settings | None, tree: Mapping[str, Any]) -> list[Problem]:
    """The problems of every file the settings name (a ``load_settings`` check)."""
    problems: list[Problem] = []
    for key, path in _key_paths(settings, tree):
        found = key_file_problems(path)
        problems += [(key, f"{path}: {msg}") for msg in found]
        if found or settings is None:
            continue
        alg = SigningKey.from_file(path).alg
        if alg not in settings.jwt.algorithms:
            problems.append(
                (
                    key,
                    f"{path}: an {alg} key, but jwt.algorithms does not list {alg}, so "
                    f"authgate would refuse its own tokens; add {alg} to jwt.algorithms",
                )
            )
    return problems


def load_checked_settings(
    path: str | os.PathLike[str] | None = None, *, environ: Mapping[str, str] | None = None
) -> Settings:
    """:func:`~authgate.config.loader.load_settings` plus the file checks; raises
    :class:`~authgate.errors.ConfigError` with every problem."""
    return load_settings(path, environ=environ, checks=(file_problems,))
