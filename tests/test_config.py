"""Settings: precedence, file discovery, one-line errors, masked secrets, the seed API."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st

from crawler.config import (
    TOML_KEYS,
    CacheConfig,
    CostConfig,
    SchedulerConfig,
    Settings,
    default_data_dir,
    get_settings,
    load_settings,
    mask_secret,
    reset_settings,
    resolve_socket_path,
    set_settings,
)
from crawler.utils.exceptions import ConfigError

REPO = Path(__file__).resolve().parents[1]
KEY = "bd-key-0123456789abcdef"  # a plausible API key: long enough to mask as ****cdef

_OUR_ENV = {name.upper() for name in Settings.model_fields} | {
    "CRAWLER_CONFIG",
    "CREDENTIALS_DIRECTORY",
    "STATE_DIRECTORY",
    "RUNTIME_DIRECTORY",
    "XDG_CONFIG_HOME",
    "XDG_DATA_HOME",
    "XDG_RUNTIME_DIR",
}


@pytest.fixture(autouse=True)
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """No setting leaks in from the developer's shell or the repo's config.toml."""
    for name in list(os.environ):
        if name.upper() in _OUR_ENV:
            monkeypatch.delenv(name)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    reset_settings()
    yield cwd
    reset_settings()


def write_toml(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def error_of(overrides: dict[str, object] | None = None, *, config_file: Path | None = None) -> str:
    with pytest.raises(ConfigError) as caught:
        load_settings(overrides, config_file=config_file)
    message = str(caught.value)
    assert "\n" not in message and "pydantic" not in message.lower()
    return message


# -- defaults and precedence ------------------------------------------------------------------


def test_defaults_match_the_issue(tmp_path: Path) -> None:
    s = load_settings()
    assert s.total_budget == Decimal("5.50") and isinstance(s.total_budget, Decimal)
    assert s.cost_per_request == Decimal("0.0015") and isinstance(s.cost_per_request, Decimal)
    assert (s.cache_ttl_seconds, s.update_interval_seconds) == (900, 900)
    assert s.auto_update_enabled is True and s.market_hours_enabled is True
    assert s.bright_data_api_key is None
    assert s.bright_data_zone == "web_unlocker1"
    assert s.bright_data_endpoint == "https://api.brightdata.com"
    assert s.yfinance_endpoint == "" and s.crawler_socket is None
    assert s.budget_timezone == "UTC"
    assert s.sources_order == ("bright_data", "yfinance")
    assert s.history_retention_days == 365
    assert (s.log_format, s.log_level) == ("auto", "info")
    assert (s.request_timeout_seconds, s.quote_deadline_seconds) == (10, 30)
    assert (s.max_workers, s.metrics_port, s.collection_jitter_seconds) == (16, 0, 10)
    assert s.data_dir == tmp_path / "home" / ".local" / "share" / "crawler"
    assert s.config_file is None


# (field, toml section/key and value, env value, override value, the three expected values)
PRECEDENCE = [
    ("update_interval_seconds", "[scheduler]\nupdate_interval_seconds = 120", "180", 240,
     (120, 180, 240)),
    ("total_budget", "[budget]\ntotal_usd = 7.25", "8.10", "9.99",
     (Decimal("7.25"), Decimal("8.10"), Decimal("9.99"))),
    ("log_level", '[daemon]\nlog_level = "debug"', "WARNING", "error",
     ("debug", "warning", "error")),
    ("sources_order", '[sources]\norder = ["yfinance"]', "yfinance,bright_data", ["bright_data"],
     (("yfinance",), ("yfinance", "bright_data"), ("bright_data",))),
    ("auto_update_enabled", "[scheduler]\nauto_update_enabled = false", "true", False,
     (False, True, False)),
    ("cache_ttl_seconds", "[cache]\nttl_seconds = 60", "30", 5, (60, 30, 5)),
]  # fmt: skip


@pytest.mark.parametrize(("field", "toml", "env", "override", "expected"), PRECEDENCE)
def test_default_then_toml_then_env_then_override(
    clean_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    field: str,
    toml: str,
    env: str,
    override: object,
    expected: tuple[object, object, object],
) -> None:
    default = Settings.model_fields[field].default
    assert getattr(load_settings(), field) == default
    write_toml(clean_env / "config.toml", toml)
    assert getattr(load_settings(), field) == expected[0]
    monkeypatch.setenv(field.upper(), env)
    assert getattr(load_settings(), field) == expected[1]
    assert getattr(load_settings({field: override}), field) == expected[2]
    assert expected[0] != default


def test_none_overrides_are_flags_not_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAX_WORKERS", "4")
    assert load_settings({"max_workers": None}).max_workers == 4


def test_empty_env_value_means_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRAWLER_SOCKET", "")
    monkeypatch.setenv("CACHE_TTL_SECONDS", "")
    s = load_settings()
    assert s.crawler_socket is None and s.cache_ttl_seconds == 900


def test_sources_order_env_accepts_json_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCES_ORDER", '["yfinance"]')
    assert load_settings().sources_order == ("yfinance",)


# -- which config.toml ------------------------------------------------------------------------


def test_crawler_config_beats_the_local_file(
    clean_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_toml(clean_env / "config.toml", "[scheduler]\nmax_workers = 2")
    elsewhere = write_toml(tmp_path / "etc" / "prod.toml", "[scheduler]\nmax_workers = 3")
    assert load_settings().max_workers == 2
    assert load_settings().config_file == clean_env / "config.toml"
    monkeypatch.setenv("CRAWLER_CONFIG", str(elsewhere))
    s = load_settings()
    assert (s.max_workers, s.config_file) == (3, elsewhere)


def test_explicit_config_file_beats_crawler_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = write_toml(tmp_path / "a.toml", "[scheduler]\nmax_workers = 5")
    b = write_toml(tmp_path / "b.toml", "[scheduler]\nmax_workers = 6")
    monkeypatch.setenv("CRAWLER_CONFIG", str(a))
    assert load_settings(config_file=b).max_workers == 6


def test_missing_crawler_config_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "nope.toml"
    monkeypatch.setenv("CRAWLER_CONFIG", str(missing))
    assert error_of() == (
        f'config: CRAWLER_CONFIG = "{missing}" is not a file; point it at a config.toml or unset it'
    )


def test_user_config_dir_is_the_last_resort(
    clean_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home_file = write_toml(
        tmp_path / "home" / ".config" / "crawler" / "config.toml", "[history]\nretention_days = 7"
    )
    assert load_settings().config_file == home_file
    xdg_file = write_toml(
        tmp_path / "xdg" / "crawler" / "config.toml", "[history]\nretention_days = 8"
    )
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert load_settings().history_retention_days == 8
    assert load_settings().config_file == xdg_file
    write_toml(clean_env / "config.toml", "[history]\nretention_days = 9")
    assert load_settings().history_retention_days == 9


def test_relative_paths_resolve_against_the_toml_directory(
    clean_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    toml = write_toml(
        tmp_path / "etc" / "c.toml", '[storage]\ndata_dir = "d"\n[daemon]\nsocket = "s/c.sock"'
    )
    monkeypatch.setenv("CRAWLER_CONFIG", str(toml))
    s = load_settings()
    assert s.data_dir == tmp_path / "etc" / "d"
    assert s.socket_path == tmp_path / "etc" / "s" / "c.sock"
    monkeypatch.setenv("DATA_DIR", "here")  # relative in the env: the current directory
    assert load_settings().data_dir == clean_env / "here"


def test_config_file_is_not_settable_by_toml_or_env(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONFIG_FILE", "/etc/passwd")
    assert load_settings().config_file is None
    write_toml(clean_env / "config.toml", '[storage]\nconfig_file = "x.toml"')
    assert error_of() == (
        "config.toml: unknown key 'storage.config_file'; known keys in [storage]: data_dir"
    )


# -- one-line errors --------------------------------------------------------------------------

# (overrides, the exact message)
BAD_VALUES = [
    ({"update_interval_seconds": 30},
     "config: update_interval_seconds = 30 is too small; use 60 or more (seconds)"),
    ({"update_interval_seconds": 86401},
     "config: update_interval_seconds = 86401 is too large; use 86400 or less (seconds)"),
    ({"total_budget": 0},
     "config: total_budget = 0 is too small; use more than 0 (USD per day)"),
    ({"total_budget": "-1"},
     "config: total_budget = -1 is too small; use more than 0 (USD per day)"),
    ({"total_budget": "five"},
     'config: total_budget = "five" is not a number; use a number more than 0 (USD per day)'),
    ({"total_budget": "NaN"},
     "config: total_budget = NaN is not a number; use a number more than 0 (USD per day)"),
    ({"cost_per_request": "-0.01"},
     "config: cost_per_request = -0.01 is too small; use 0 or more (USD)"),
    ({"cache_ttl_seconds": 0},
     "config: cache_ttl_seconds = 0 is too small; use more than 0 (seconds)"),
    ({"cache_ttl_seconds": True},
     "config: cache_ttl_seconds = true is not a number; use a whole number more than 0 (seconds)"),
    ({"cache_ttl_seconds": 1.5},
     "config: cache_ttl_seconds = 1.5 is not a number; use a whole number more than 0 (seconds)"),
    ({"max_workers": 0}, "config: max_workers = 0 is too small; use 1 or more"),
    ({"max_workers": 257}, "config: max_workers = 257 is too large; use 256 or less"),
    ({"metrics_port": 70000}, "config: metrics_port = 70000 is too large; use 65535 or less"),
    ({"history_retention_days": 0},
     "config: history_retention_days = 0 is too small; use 1 or more (days)"),
    ({"budget_timezone": "Mars/Olympus"},
     'config: budget_timezone = "Mars/Olympus" is not a known time zone; '
     "use an IANA name such as UTC or Europe/London"),
    ({"sources_order": ["bright_data", "bloomberg"]},
     'config: sources_order = ["bright_data", "bloomberg"] names an unknown source '
     "'bloomberg'; use a list of distinct names from: bright_data, yfinance"),
    ({"sources_order": ["yfinance", "yfinance"]},
     'config: sources_order = ["yfinance", "yfinance"] names a source twice; '
     "use a list of distinct names from: bright_data, yfinance"),
    ({"sources_order": []},
     "config: sources_order = [] is empty; use a list of distinct names from: bright_data, "
     "yfinance"),
    ({"log_format": "xml"},
     'config: log_format = "xml" is not allowed; use one of: auto, console, json'),
    ({"auto_update_enabled": "maybe"},
     'config: auto_update_enabled = "maybe" is not true or false; use true or false'),
    ({"bright_data_endpoint": "api.brightdata.com"},
     'config: bright_data_endpoint = "api.brightdata.com" is not a URL; '
     "use http://host[:port] or https://host"),
    ({"quote_deadline_seconds": 5},
     "config: quote_deadline_seconds = 5.0 is shorter than request_timeout_seconds = 10.0; "
     "use at least the request timeout (seconds)"),
    ({"collection_jitter_seconds": 60, "update_interval_seconds": 60},
     "config: collection_jitter_seconds = 60.0 is not below update_interval_seconds = 60; "
     "use less than the interval (seconds)"),
]  # fmt: skip


@pytest.mark.parametrize(("overrides", "message"), BAD_VALUES)
def test_each_bad_value_is_one_line_naming_key_value_and_fix(
    overrides: dict[str, object], message: str
) -> None:
    assert error_of(overrides) == message + "; from a command-line flag"


def test_error_names_the_env_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UPDATE_INTERVAL_SECONDS", "30")
    assert error_of() == (
        "config: update_interval_seconds = 30 is too small; use 60 or more (seconds); "
        "from env UPDATE_INTERVAL_SECONDS"
    )


def test_error_names_the_toml_key(clean_env: Path) -> None:
    write_toml(clean_env / "config.toml", '[budget]\ntotal_usd = "lots"')
    assert error_of() == (
        'config: total_budget = "lots" is not a number; use a number more than 0 (USD per day); '
        "from config.toml budget.total_usd"
    )


def test_several_problems_are_counted_not_listed() -> None:
    assert error_of({"max_workers": 0, "metrics_port": -1}) == (
        "config: max_workers = 0 is too small; use 1 or more; from a command-line flag (and 1 more)"
    )


def test_unknown_override_is_named() -> None:
    message = error_of({"update_intervall_seconds": 60})
    assert message.startswith("config: unknown setting 'update_intervall_seconds'; known ")
    assert "update_interval_seconds" in message


def test_unknown_toml_key_lists_the_known_ones(clean_env: Path) -> None:
    write_toml(clean_env / "config.toml", "[cache]\ntll_seconds = 60")
    assert error_of() == (
        "config.toml: unknown key 'cache.tll_seconds'; known keys in [cache]: ttl_seconds"
    )


def test_unknown_toml_section(clean_env: Path) -> None:
    write_toml(clean_env / "config.toml", "[cashe]\nttl_seconds = 60")
    assert error_of().startswith(
        "config.toml: unknown section [cashe]; known sections: budget, cache, scheduler"
    )


def test_top_level_key_needs_a_section(clean_env: Path) -> None:
    write_toml(clean_env / "config.toml", "cache = 60")
    assert error_of() == "config.toml: 'cache' must be a section; write [cache] above it"


def test_toml_syntax_error_is_one_line(clean_env: Path) -> None:
    write_toml(clean_env / "config.toml", "[cache]\nttl_seconds = \n")
    message = error_of()
    assert message.startswith("config.toml: invalid TOML: ")
    assert "line 2" in message


@hyp_settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(min_value=-(10**6), max_value=10**6))
def test_interval_is_accepted_exactly_inside_its_range(interval_s: int) -> None:
    if 60 <= interval_s <= 86400:
        assert load_settings({"update_interval_seconds": interval_s}).update_interval_seconds == (
            interval_s
        )
    else:
        with pytest.raises(ConfigError, match=f"update_interval_seconds = {interval_s} is too"):
            load_settings({"update_interval_seconds": interval_s})


# -- secrets ----------------------------------------------------------------------------------


def test_public_dict_masks_the_key_and_is_json(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().public_dict()["bright_data_api_key"] == "(not set)"
    monkeypatch.setenv("BRIGHT_DATA_API_KEY", KEY)
    s = load_settings()
    assert s.bright_data_api_key is not None
    assert s.bright_data_api_key.get_secret_value() == KEY
    public = s.public_dict()
    text = json.dumps(public)
    assert KEY not in text and KEY not in repr(s) and KEY not in str(s)
    assert public["bright_data_api_key"] == "****cdef"
    assert public["total_budget"] == "5.50" and public["sources_order"] == [
        "bright_data",
        "yfinance",
    ]
    assert set(public) == set(Settings.model_fields) | {"socket_path"}


def test_mask_secret_hides_short_keys_entirely() -> None:
    assert mask_secret("abcdefgh") == "****"
    assert mask_secret(KEY) == "****cdef"
    assert mask_secret(None) == "(not set)"


def test_a_bad_key_is_masked_in_the_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRIGHT_DATA_API_KEY", "bd-key 0123456789abcdef")
    message = error_of()
    assert message == (
        "config: bright_data_api_key = ****cdef contains spaces or control characters; "
        "use the key as issued; from env BRIGHT_DATA_API_KEY"
    )


def test_a_key_pasted_into_another_setting_is_scrubbed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRIGHT_DATA_API_KEY", KEY)
    monkeypatch.setenv("BRIGHT_DATA_ENDPOINT", KEY)  # the kind of slip that leaks keys to logs
    message = error_of()
    assert KEY not in message
    assert message.startswith('config: bright_data_endpoint = "****cdef" is not a URL')


def test_systemd_credential_supplies_the_key_below_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "bright_data_api_key").write_text("from-credential-1234\n", encoding="utf-8")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    key = load_settings().bright_data_api_key
    assert key is not None and key.get_secret_value() == "from-credential-1234"
    monkeypatch.setenv("BRIGHT_DATA_API_KEY", KEY)
    key = load_settings().bright_data_api_key
    assert key is not None and key.get_secret_value() == KEY


# -- derived paths ----------------------------------------------------------------------------


def test_data_dir_default_chain(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert default_data_dir() == tmp_path / "home" / ".local" / "share" / "crawler"
    monkeypatch.setenv("XDG_DATA_HOME", "relative/ignored")
    assert default_data_dir() == tmp_path / "home" / ".local" / "share" / "crawler"
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_data_dir() == tmp_path / "xdg" / "crawler"
    monkeypatch.setenv("STATE_DIRECTORY", f"{tmp_path / 'state'}:{tmp_path / 'other'}")
    assert load_settings().data_dir == tmp_path / "state"


def test_socket_path_chain(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = load_settings({"data_dir": tmp_path / "d"})
    assert s.socket_path == tmp_path / "d" / "crawler.sock"
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run-user"))
    assert resolve_socket_path(s) == tmp_path / "run-user" / "crawler" / "crawler.sock"
    monkeypatch.setenv("RUNTIME_DIRECTORY", str(tmp_path / "run"))
    assert s.socket_path == tmp_path / "run" / "crawler.sock"
    monkeypatch.setenv("CRAWLER_SOCKET", str(tmp_path / "explicit.sock"))
    assert load_settings().socket_path == tmp_path / "explicit.sock"


# -- the seed API and the process-wide instance -----------------------------------------------


def seed_values() -> tuple[object, ...]:
    """The six seed class attributes, read the way seed code reads them."""
    return (
        CostConfig.TOTAL_BUDGET,
        CostConfig.COST_PER_REQUEST,
        CacheConfig.TTL_SECONDS,
        CacheConfig.DATA_DIR,
        SchedulerConfig.UPDATE_INTERVAL_SECONDS,
        SchedulerConfig.AUTO_UPDATE_ENABLED,
    )


def test_seed_class_attributes_read_the_current_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TOTAL_BUDGET", "12.5")
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "d"))
    first = (Decimal("12.5"), Decimal("0.0015"), 900, tmp_path / "d", 900, True)
    assert seed_values() == first
    assert isinstance(seed_values()[0], Decimal)
    monkeypatch.setenv("TOTAL_BUDGET", "1")
    assert seed_values() == first  # cached until reset
    reset_settings()
    assert seed_values()[0] == Decimal("1")
    overrides = {
        "data_dir": tmp_path / "x",
        "update_interval_seconds": 61,
        "auto_update_enabled": False,
        "cache_ttl_seconds": 7,
        "cost_per_request": "0.002",
    }
    set_settings(load_settings(overrides))
    assert seed_values() == (Decimal("1"), Decimal("0.002"), 7, tmp_path / "x", 61, False)
    assert get_settings().update_interval_seconds == 61


def test_invalid_settings_surface_from_get_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BUDGET_TIMEZONE", "Nowhere/Special")
    with pytest.raises(ConfigError, match="budget_timezone"):
        get_settings()


def test_settings_are_frozen() -> None:
    s = load_settings()
    with pytest.raises(ValueError):
        setattr(s, "max_workers", 3)  # noqa: B010 (mypy does not know the model is frozen)
    assert s.model_copy(update={"max_workers": 3}).max_workers == 3


# -- the toml mapping and the repo's config.toml ----------------------------------------------


def test_toml_keys_map_every_field_once() -> None:
    mapped = [field for table in TOML_KEYS.values() for field in table.values()]
    assert sorted(mapped) == sorted(set(Settings.model_fields) - {"config_file"})


def test_repo_config_toml_loads_and_its_commented_defaults_are_true(tmp_path: Path) -> None:
    text = (REPO / "config.toml").read_text(encoding="utf-8")
    assert "api_key" not in re.sub(r"(?m)^#.*$", "", text)  # no key, even commented-in
    s = load_settings(config_file=REPO / "config.toml")
    assert s.data_dir == REPO / "data"
    # `# key = value` lines document the defaults: switched on, they must change nothing.
    defaults_on = re.sub(r"(?m)^# (\w+ = .+)$", r"\1", text)
    defaults_on = re.sub(r"(?m)^socket = .*$", "", defaults_on)  # an example, not a default
    toml = write_toml(tmp_path / "all" / "config.toml", defaults_on)
    documented = load_settings(config_file=toml).model_dump()
    # Every field is documented but config_file (not a toml key), data_dir (set) and api_key.
    assert len(re.findall(r"(?m)^# \w+ = ", text)) == len(Settings.model_fields) - 3
    plain = load_settings({"data_dir": tmp_path / "all" / "data"}).model_dump()
    assert documented == plain | {"config_file": toml}


# -- import weight ----------------------------------------------------------------------------


def test_importing_config_stays_light() -> None:
    code = (
        "import sys, crawler.config\n"
        "heavy = {'pandas', 'yfinance', 'requests', 'curl_cffi', 'numpy', 'apscheduler'}\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & heavy))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "[]"
