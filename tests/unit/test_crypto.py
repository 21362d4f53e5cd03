from __future__ import annotations

import stat

import pytest

from remora import config
from remora.crypto import SecretBox
from remora.errors import SecretError


def settings_for(tmp_path, **env):
    return config.load(None, {"HOME": str(tmp_path), "REMORA_DATA_DIR": str(tmp_path / "data"), **env})


def test_key_file_is_created_0600_and_reused(tmp_path):
    box = SecretBox.from_settings(settings_for(tmp_path))
    key_file = tmp_path / "data" / "secret.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    token = box.encrypt("hunter2")
    assert b"hunter2" not in token
    assert SecretBox.from_settings(settings_for(tmp_path)).decrypt_str(token) == "hunter2"


def test_configured_secret_key_is_used_and_a_wrong_key_is_a_clear_error(tmp_path):
    token = SecretBox.from_settings(settings_for(tmp_path, REMORA_SECRET_KEY="one")).encrypt(b"\x00key")
    assert SecretBox.from_settings(settings_for(tmp_path, REMORA_SECRET_KEY="one")).decrypt(token) == b"\x00key"
    with pytest.raises(SecretError, match="secret key differs"):
        SecretBox.from_settings(settings_for(tmp_path, REMORA_SECRET_KEY="two")).decrypt(token)
