"""Settings come from the environment; nonsense stops start-up with a clear message."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.sample_images import ROOT

PROBE = (
    "import json; from django.conf import settings; "
    "db = settings.DATABASES['default']; "
    "print(json.dumps({'debug': settings.DEBUG, 'hosts': settings.ALLOWED_HOSTS, "
    "'engine': db['ENGINE'], 'name': str(db['NAME']), 'options': db.get('OPTIONS', {}), "
    "'key': settings.SECRET_KEY, 'base': settings.RUNFLOW_BASE_URL, "
    "'secrets': settings.RUNFLOW_CALLBACK_SECRETS, 'public': settings.SAM3WEB_PUBLIC_URL, "
    "'media': str(settings.MEDIA_ROOT), 'csrf': settings.CSRF_TRUSTED_ORIGINS}))"
)


def load(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("RUNFLOW_", "SAM3WEB_", "DATABASE_", "DEBUG", "SECRET_KEY"))
        and k not in ("ALLOWED_HOSTS", "MEDIA_ROOT")
    }
    clean.update({"DJANGO_SETTINGS_MODULE": "sam3web.settings", "SAM3WEB_DATA_DIR": str(tmp_path)})
    clean.update(env)
    return subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, env=clean, capture_output=True, text=True
    )


def test_a_fresh_checkout_runs_on_sqlite_with_safe_defaults(tmp_path: Path) -> None:
    result = load(tmp_path)
    assert result.returncode == 0, result.stderr
    s = json.loads(result.stdout)
    assert s["debug"] is False
    assert s["hosts"] == ["localhost", "127.0.0.1", "[::1]"]
    assert s["engine"] == "django.db.backends.sqlite3"
    assert s["name"] == str(tmp_path / "sam3web.sqlite3")
    assert "journal_mode=WAL" in s["options"]["init_command"]
    assert s["options"]["transaction_mode"] == "IMMEDIATE"
    assert s["base"] == "https://api.runflow.io"
    assert s["public"] == "" and s["secrets"] == []
    assert s["media"] == str(tmp_path / "media")
    # A secret key is generated once and kept.
    assert len(s["key"]) >= 50
    assert json.loads(load(tmp_path).stdout)["key"] == s["key"]
    assert (tmp_path / "secret_key").stat().st_mode & 0o077 == 0


def test_values_from_the_environment(tmp_path: Path) -> None:
    result = load(
        tmp_path,
        DEBUG="yes",
        ALLOWED_HOSTS="seg.example.com, localhost",
        DATABASE_URL="postgres://u:p@db.internal:5432/sam3web",
        RUNFLOW_BASE_URL="http://127.0.0.1:8765/",
        RUNFLOW_CALLBACK_SECRET="whsec_new,whsec_old",
        SAM3WEB_PUBLIC_URL="https://seg.example.com",
        SECRET_KEY="k" * 40,
        MEDIA_ROOT=str(tmp_path / "m"),
    )
    assert result.returncode == 0, result.stderr
    s = json.loads(result.stdout)
    assert s["debug"] is True
    assert s["hosts"] == ["seg.example.com", "localhost"]
    assert s["engine"] == "django.db.backends.postgresql"
    assert s["base"] == "http://127.0.0.1:8765"
    assert s["secrets"] == ["whsec_new", "whsec_old"]
    assert s["csrf"] == ["https://seg.example.com"]
    assert s["key"] == "k" * 40
    assert s["media"] == str(tmp_path / "m")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DEBUG": "maybe"}, "DEBUG must be true or false"),
        ({"DATABASE_URL": "nosuchdb://x"}, "DATABASE_URL"),
        ({"RUNFLOW_BASE_URL": "api.runflow.io"}, "RUNFLOW_BASE_URL must be an http"),
        ({"SAM3WEB_PUBLIC_URL": "ftp://x"}, "SAM3WEB_PUBLIC_URL must be an http"),
        ({"SAM3WEB_PUBLIC_URL": "https://x/?a=1"}, "must not have a query"),
        ({"SECRET_KEY": "short"}, "SECRET_KEY must be at least 32"),
        ({"RUNFLOW_TIMEOUT": "soon"}, "RUNFLOW_TIMEOUT must be a number"),
        ({"RUNFLOW_TIMEOUT": "nan"}, "RUNFLOW_TIMEOUT must be at least"),
        ({"RUNFLOW_MAX_ATTEMPTS": "0"}, "RUNFLOW_MAX_ATTEMPTS must be at least 1"),
        ({"SAM3WEB_MAX_IMAGE_PIXELS": "many"}, "SAM3WEB_MAX_IMAGE_PIXELS must be a whole number"),
        ({"SAM3WEB_DISPLAY_SIZE": "64"}, "SAM3WEB_DISPLAY_SIZE must be 0 (no display copies) or"),
    ],
)
def test_nonsense_is_refused_at_start_up(tmp_path: Path, env: dict[str, str], message: str) -> None:
    result = load(tmp_path, **env)
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert message in result.stderr
