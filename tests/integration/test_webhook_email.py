"""Email notifications through a real SMTP server (aiosmtpd on 127.0.0.1) that requires a login; the password from a file."""

from __future__ import annotations

import os

import pytest

from remora.config import Settings, with_overrides
from remora.notify import transport
from tests.support.receiver import SmtpSink

# aiosmtpd warns about AUTH without TLS (this sink listens on loopback only) and about its own deprecated fields
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")


def settings_for(sink: SmtpSink, **extra: object) -> Settings:
    values = {"smtp.host": "127.0.0.1", "smtp.port": sink.port, "smtp.user": "remora", "smtp.from": "remora@example.com", **extra}
    return with_overrides(Settings(), values)


def test_the_password_comes_from_a_private_file_and_a_readable_one_is_refused(tmp_path):
    with SmtpSink(login=("remora", "mail-pass")) as sink:
        secret = tmp_path / "smtp.pass"
        secret.write_text("mail-pass\n")
        os.chmod(secret, 0o600)
        result = transport.send_mail(settings_for(sink, **{"smtp.password_file": str(secret)}), ["a@example.com"], "[Remora] hi", "body")
        assert result.ok, result
        [message] = sink.wait(1)
        assert message["Subject"] == "[Remora] hi" and message["From"] == "remora@example.com"

        os.chmod(secret, 0o644)
        refused = transport.send_mail(settings_for(sink, **{"smtp.password_file": str(secret)}), ["a@example.com"], "x", "y")
        assert not refused.ok and "readable by others" in refused.error, refused
        wrong = transport.send_mail(settings_for(sink, **{"smtp.password": "nope", "smtp.timeout": "2s"}), ["a@example.com"], "x", "y")
        assert not wrong.ok and "SMTP" in wrong.error, wrong
        assert len(sink.messages) == 1


def test_without_an_smtp_host_email_is_not_sent_and_says_why():
    result = transport.send_mail(Settings(), ["a@example.com"], "x", "y")
    assert not result.ok and "smtp.host" in result.error
