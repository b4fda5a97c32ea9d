from pathlib import Path

import pytest

from coordd.config import ConfigError, Settings


def test_defaults_and_env() -> None:
    s = Settings.from_env({"XDG_DATA_HOME": "/d"})
    assert s.listen == "127.0.0.1:7420" and s.dsn is None and s.auth == "dev"
    assert s.data_dir == Path("/d/coordd")
    s = Settings.from_env(
        {
            "COORDD_LISTEN": "127.0.0.1:9",
            "COORDD_DSN": "postgresql://u:secret@h/db",
            "COORDD_POOL_MAX": "4",
            "COORDD_DATA_DIR": "/x",
        },
        listen="127.0.0.1:10",
    )
    assert s.listen == "127.0.0.1:10" and s.pool_max == 4 and s.data_dir == Path("/x")
    assert "secret" not in repr(s)


@pytest.mark.parametrize(
    ("env", "overrides", "text"),
    [
        ({}, {"listen": "0.0.0.0:7420"}, "refusing to listen on 0.0.0.0 without credentials"),
        ({}, {"listen": "nonsense"}, "must be host:port"),
        ({"COORDD_HEALTH_LISTEN": "7421"}, {}, "health listen address '7421' must be host:port"),
        ({}, {"auth": "token"}, "needs --policy"),
        ({"COORDD_POOL_MAX": "lots"}, {}, "COORDD_POOL_MAX='lots' is not a number"),
        ({"COORDD_POOL_MIN": "5", "COORDD_POOL_MAX": "2"}, {}, "pool sizes"),
    ],
)
def test_bad_settings_are_refused_with_a_reason(env, overrides, text) -> None:
    with pytest.raises(ConfigError) as exc:
        Settings.from_env(env, **overrides)
    assert text in str(exc.value)


def test_token_mode_off_loopback_needs_tls(tmp_path) -> None:
    with pytest.raises(ConfigError):
        Settings.from_env({}, listen="0.0.0.0:7420", auth="token", policy_file=tmp_path / "p")
    s = Settings.from_env(
        {},
        listen="0.0.0.0:7420",
        auth="token",
        policy_file=tmp_path / "p",
        tls_cert_file=tmp_path / "c",
        tls_key_file=tmp_path / "k",
    )
    assert s.listen == "0.0.0.0:7420" and s.tls
