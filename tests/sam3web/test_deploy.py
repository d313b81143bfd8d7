"""`manage.py check --deploy` is clean under production settings (HTTPS, HSTS, secure cookies,
a real secret), and a laptop's defaults still work over plain HTTP."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from tests.sample_images import ROOT

PRODUCTION = {
    "SAM3WEB_PUBLIC_URL": "https://sam3.example.com",
    "ALLOWED_HOSTS": "sam3.example.com",
    "SAM3WEB_BEHIND_PROXY": "1",
}


def environment(tmp_path: Path, **values: str) -> dict[str, str]:
    """This process's environment without any of the app's settings, plus ``values``."""
    ours = ("SAM3WEB_", "SECRET_KEY", "DEBUG", "ALLOWED_HOSTS", "DJANGO_SETTINGS_MODULE")
    env = {k: v for k, v in os.environ.items() if not k.startswith(ours)}
    # Set in this process by the browser tests' fixtures (Playwright's sync API in a test
    # that also touches the database): never in a deployment, and its own check says so.
    env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    return {**env, "SAM3WEB_DATA_DIR": str(tmp_path / "data"), **values}


def manage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


SHOW = (
    "import json; from django.conf import settings as s; print(json.dumps({n: getattr(s, n, None)"
    " for n in ['SECURE_SSL_REDIRECT', 'SECURE_HSTS_SECONDS', 'SESSION_COOKIE_SECURE',"
    " 'CSRF_COOKIE_SECURE', 'SECURE_PROXY_SSL_HEADER', 'SECURE_REDIRECT_EXEMPT', 'DEBUG']}))"
)


def show(env: dict[str, str]) -> dict[str, Any]:
    done = manage(env, "shell", "-c", SHOW)
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize("secret", ["generated", "given"])
def test_check_deploy_is_clean_in_production(tmp_path: Path, secret: str) -> None:
    extra = {"SECRET_KEY": secrets.token_urlsafe(50)} if secret == "given" else {}
    env = environment(tmp_path, **PRODUCTION, **extra)
    done = manage(env, "check", "--deploy", "--fail-level", "WARNING")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "WARNINGS" not in done.stdout + done.stderr
    assert "System check identified no issues" in done.stdout
    shown = show(env)
    assert shown["SECURE_SSL_REDIRECT"] is True
    assert shown["SECURE_HSTS_SECONDS"] == 31536000
    assert shown["SESSION_COOKIE_SECURE"] is True and shown["CSRF_COOKIE_SECURE"] is True
    assert shown["SECURE_PROXY_SSL_HEADER"] == ["HTTP_X_FORWARDED_PROTO", "https"]
    assert shown["SECURE_REDIRECT_EXEMPT"] == ["^healthz$"]
    assert shown["DEBUG"] is False


def test_check_deploy_names_what_is_missing_over_http(tmp_path: Path) -> None:
    """The same check is not silently clean on a laptop's settings: it is what says HTTPS is
    off, and SAM3WEB_HTTPS (a proxy in front that serves HTTPS only) turns it on."""
    done = manage(environment(tmp_path), "check", "--deploy", "--fail-level", "WARNING")
    assert done.returncode != 0
    assert "security.W008" in done.stderr + done.stdout
    env = environment(tmp_path, SAM3WEB_HTTPS="yes", SAM3WEB_HSTS_SECONDS="600")
    shown = show(env)
    assert shown["SECURE_SSL_REDIRECT"] is True and shown["SECURE_HSTS_SECONDS"] == 600


def test_the_defaults_serve_plain_http(tmp_path: Path) -> None:
    shown = show(environment(tmp_path))
    assert shown["SECURE_SSL_REDIRECT"] is False
    assert shown["SESSION_COOKIE_SECURE"] is False
    assert shown["SECURE_PROXY_SSL_HEADER"] is None


@pytest.mark.django_db
def test_behind_a_proxy_https_is_recognised_and_http_redirected(settings: Any, owner: Any) -> None:
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
    settings.SECURE_HSTS_SECONDS = 31536000
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    client = Client()
    plain = client.get("/accounts/login/")
    assert plain.status_code == 301 and plain["Location"].startswith("https://")
    secure = client.get("/accounts/login/", headers={"X-Forwarded-Proto": "https"})
    assert secure.status_code == 200
    assert secure["Strict-Transport-Security"].startswith("max-age=31536000")


@pytest.mark.django_db
def test_a_laptop_signs_in_over_http(client: Client, owner: Any) -> None:
    assert client.get("/accounts/login/").status_code == 200
