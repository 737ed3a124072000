"""Settings are parsed strictly from the environment: no value silently means something else."""

import subprocess
import sys

import pytest

from tests.support import ROOT, learner_env


def config_value(name, **settings):
    """Import config.py in a fresh interpreter with `settings` in the environment; return (rc, output)."""
    result = subprocess.run(
        [sys.executable, "-c", f"import config; print(repr(config.Config.{name}))"],
        cwd=ROOT, env=learner_env(**settings), capture_output=True, text=True, timeout=60,
    )
    return result.returncode, (result.stdout + result.stderr).strip()


@pytest.mark.parametrize("written", ["true", "True", "yes", "1", "on"])
def test_mail_use_tls_accepts_the_usual_spellings_of_true(written):
    assert config_value("MAIL_USE_TLS", MAIL_USE_TLS=written) == (0, "True")


@pytest.mark.parametrize("written", ["false", "no", "0"])
def test_mail_use_tls_accepts_the_usual_spellings_of_false(written):
    assert config_value("MAIL_USE_TLS", MAIL_USE_TLS=written) == (0, "False")


def test_a_value_that_means_nothing_stops_the_app_with_its_name():
    returncode, output = config_value("MAIL_USE_TLS", MAIL_USE_TLS="maybe")
    assert returncode != 0
    assert "MAIL_USE_TLS" in output and "Not a valid boolean" in output


def test_retry_intervals_are_a_list_of_seconds():
    assert config_value("MAIL_RETRY_INTERVALS", MAIL_RETRY_INTERVALS="1,2,3") == (0, "[1, 2, 3]")


def test_mail_links_follow_the_dev_servers_port():
    assert config_value("SITE_URL", PORT="5001") == (0, "'http://localhost:5001'")
    assert config_value("SITE_URL", PORT="5001", SITE_URL="https://mailer.example.com") == (0, "'https://mailer.example.com'")
