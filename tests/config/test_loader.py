"""Configuration: YAML plus environment, every problem named by its key, secrets masked."""

from __future__ import annotations

from pathlib import Path

import pytest

from authgate.config.loader import effective_config, load_settings
from authgate.config.reference import render
from authgate.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str, mode: int = 0o600) -> Path:
    path = tmp_path / "authgate.yaml"
    path.write_text(text)
    path.chmod(mode)
    return path


def test_zero_config_is_development_mode() -> None:
    """No file and no environment: in-memory stores, ephemeral key, development flag."""
    settings = load_settings(None, environ={})
    assert settings.development
    assert settings.stores.backend == "memory"
    assert settings.server.workers == 1


def test_environment_overrides_file(tmp_path: Path) -> None:
    """AUTHGATE_<SECTION>__<KEY> wins over the file and is parsed as YAML."""
    path = write(tmp_path, "server: {port: 9000}\n")
    settings = load_settings(
        path,
        environ={
            "AUTHGATE_SERVER__PORT": "9100",
            "AUTHGATE_SERVER__TRUSTED_PROXIES": "[10.0.0.0/8]",
        },
    )
    assert settings.server.port == 9100
    assert settings.server.trusted_proxies == ("10.0.0.0/8",)


def test_every_problem_is_reported_with_its_key(tmp_path: Path) -> None:
    """Unknown keys and bad values are all reported at once, each naming its key."""
    path = write(tmp_path, "server: {port: 0, colour: blue}\nstores: {backend: mongo}\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ={})
    keys = {key for key, _ in info.value.problems}
    assert {"server.port", "server.colour", "stores.backend"} <= keys
    assert dict(info.value.problems)["server.colour"] == "unknown key"


def test_workers_with_memory_stores_is_refused() -> None:
    """More than one worker needs Redis, or replay protection breaks across processes."""
    with pytest.raises(ConfigError) as info:
        load_settings(None, environ={"AUTHGATE_SERVER__WORKERS": "2"})
    assert info.value.problems[0][0] == "server.workers"


def test_workers_with_redis_is_accepted() -> None:
    """The same with a Redis back end starts."""
    settings = load_settings(
        None, environ={"AUTHGATE_SERVER__WORKERS": "2", "AUTHGATE_STORES__BACKEND": "redis"}
    )
    assert settings.server.workers == 2


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644], ids=["group", "other", "both"])
def test_secret_bearing_file_readable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    """A config file holding a Redis URL must not be readable by group or others."""
    path = write(tmp_path, "stores: {redis: {url: 'redis://:hunter2@127.0.0.1:6379/0'}}\n", mode)
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ={})
    assert str(path) in str(info.value)
    assert "hunter2" not in str(info.value)


def test_secret_free_file_may_be_world_readable(tmp_path: Path) -> None:
    """Files without secrets are not held to the permission rule."""
    path = write(tmp_path, "server: {port: 9000}\n", 0o644)
    assert load_settings(path, environ={}).server.port == 9000


def test_effective_config_masks_secrets(tmp_path: Path) -> None:
    """check-config output never shows the Redis password."""
    path = write(tmp_path, "stores: {backend: redis, redis: {url: 'redis://:hunter2@h:6379/0'}}\n")
    text = effective_config(load_settings(path, environ={}))
    assert "hunter2" not in text
    assert "url: '**********'" in text


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("server: {port: 1}\nserver: {port: 2}\n", "duplicate key"),
        ("- a\n- b\n", "top level must be a mapping"),
        ("server: [\n", "invalid YAML"),
    ],
    ids=["duplicate-key", "not-a-mapping", "bad-yaml"],
)
def test_unreadable_files_are_refused(tmp_path: Path, text: str, fragment: str) -> None:
    """YAML problems are reported rather than half-applied."""
    with pytest.raises(ConfigError, match=fragment):
        load_settings(write(tmp_path, text), environ={})


@pytest.mark.parametrize(
    "text",
    [
        "? [a, b]\n: c\n",
        "? {a: 1}\n: c\n",
        "server: {port: !!int x}\n",
        "server: {port: !!float x}\n",
        "a,: 12\nb: !!float",
        "development: !!bool maybe\n",
        "when: !!timestamp x\n",
        "when: 2001-13-01\n",
        "server: {port: " + "1" * 5000 + "}\n",
        "[" * 2000,
    ],
    ids=[
        "list-key",
        "mapping-key",
        "int-tag",
        "float-tag",
        "empty-float-tag",
        "bool-tag",
        "timestamp-tag",
        "bad-date",
        "huge-int",
        "deep-nesting",
    ],
)
def test_yaml_a_constructor_cannot_read_is_a_config_error(tmp_path: Path, text: str) -> None:
    """Found by fuzzing (fuzz/fuzz_config.py): PyYAML's constructors raise TypeError,
    ValueError, KeyError or AttributeError, and its composer RecursionError, for these; each
    is one `invalid YAML` problem naming the file, never a traceback."""
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match="invalid YAML") as caught:
        load_settings(path, environ={})
    assert caught.value.problems[0][0] == str(path)


def test_a_variable_a_yaml_constructor_cannot_read_stays_a_string() -> None:
    """`AUTHGATE_SERVER__PORT='!!int x'` is the string `!!int x` (then not a port), as any
    other unparsable variable is, never a ValueError."""
    with pytest.raises(ConfigError, match=r"server\.port: must be a whole number"):
        load_settings(None, environ={"AUTHGATE_SERVER__PORT": "!!int x"})


def test_any_configuration_leaves_development_mode(tmp_path: Path) -> None:
    """Only true zero-config is development mode; a config file or variable is not."""
    assert not load_settings(None, environ={"AUTHGATE_SERVER__PORT": "9000"}).development
    assert not load_settings(write(tmp_path, "server: {port: 9000}\n"), environ={}).development
    assert load_settings(None, environ={"AUTHGATE_DEVELOPMENT": "true"}).development


def test_configuration_reference_matches_the_model() -> None:
    """docs/configuration.md is regenerated whenever the model changes."""
    committed = (REPO / "docs" / "configuration.md").read_text()
    assert committed == render(), "run: python -m authgate.config.reference > docs/configuration.md"
