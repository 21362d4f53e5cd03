"""`remora up`'s admin token file, handled through services (SQLite in tmp_path)."""

from __future__ import annotations

from remora import auth, models
from remora.cli.up import TOKEN_NAME, ensure_admin_token
from remora.models import ApiToken


def test_up_keeps_a_valid_admin_token_and_replaces_a_revoked_one(tmp_path):
    """`remora up`'s token file: reused while valid; a revoked token gets a fresh one under a new name."""
    models.init_db(f"sqlite:///{tmp_path / 'up.db'}")
    token_file = tmp_path / "admin.token"
    first = ensure_admin_token(token_file)
    assert ensure_admin_token(token_file) == first == token_file.read_text().strip()
    auth.revoke_token(TOKEN_NAME)
    second = ensure_admin_token(token_file)
    assert second != first and token_file.read_text().strip() == second
    row = ApiToken.get(ApiToken.token_hash == auth.hash_token(second))
    assert row.role == "admin" and row.name.startswith(f"{TOKEN_NAME}-") and not row.revoked
