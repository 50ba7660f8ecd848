"""Key revocation is effective at once: `sbaudit keys revoke` refuses unknown and ambiguous ids, is a no-op
the second time, and the very next request with the key gets 401 although the API caches verified keys."""

from __future__ import annotations

import argparse

import pytest
from service_testing import problem

from sbclient.cli.errors import CliError
from sbserver.commands import keys as cli_keys
from service.auth import KeyCache, Principal, create_key, hash_key
from service.revocation import revoke_key, signal_revocation


@pytest.fixture
def keys_cli(settings, monkeypatch):
    """``sbaudit keys ...`` run in-process against the test's data dir (the same parser and handler)."""
    monkeypatch.setenv("SBAUDIT_DATA_DIR", str(settings.data_dir))

    def run(*argv: str) -> int:
        parser = argparse.ArgumentParser(prog="sbaudit")
        cli_keys.register(parser.add_subparsers(dest="command"))
        args = parser.parse_args(["keys", *argv])
        return args.handler(args)

    return run


def test_the_next_request_after_revoke_gets_401(client, app, db, keys_cli, capsys):
    app.state.key_cache.ttl = 3600.0  # only the revocation marker can end the cached entry
    key, row = create_key(db, owner="carol")
    auth = {"Authorization": f"Bearer {key}"}
    assert client.get("/v1/datasets", headers=auth).status_code == 200
    assert client.get("/v1/datasets", headers=auth).status_code == 200  # served from the cache
    assert app.state.key_cache.knows(hash_key(key))

    assert keys_cli("revoke", row.id) == 0
    assert f"revoked {row.id}" in capsys.readouterr().out

    body = problem(client.get("/v1/datasets", headers=auth), 401)
    assert body["detail"] == "invalid or revoked API key"
    # POSTs too, and another owner's key is unaffected.
    other, _ = create_key(db, owner="dave")
    assert client.get("/v1/datasets", headers={"Authorization": f"Bearer {other}"}).status_code == 200
    problem(client.post("/v1/datasets", json={"preset": "LMS-5"}, headers=auth), 401)


def test_revoke_by_prefix_twice_and_in_the_listing(db, keys_cli, capsys):
    key, row = create_key(db, owner="erin")
    assert keys_cli("revoke", key[:12] + "...") == 0  # the key prefix as `keys list` shows it
    assert f"revoked {row.id} (owner 'erin')" in capsys.readouterr().out
    assert keys_cli("revoke", row.id[:10]) == 0
    assert "already revoked; nothing changed" in capsys.readouterr().out
    assert keys_cli("list") == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith(row.id))
    assert line.endswith("revoked")


def test_unknown_and_ambiguous_keys_are_refused_in_one_line(db, keys_cli):
    create_key(db, owner="a")
    create_key(db, owner="b")
    with pytest.raises(CliError, match="no API key matches 'key_nothing-like-this'"):
        keys_cli("revoke", "key_nothing-like-this")
    with pytest.raises(CliError, match="is ambiguous: it matches key_"):
        keys_cli("revoke", "key_")
    with pytest.raises(CliError, match="at least 4 characters"):
        keys_cli("revoke", "k")


def test_revoking_writes_the_row_and_the_marker(db, settings):
    _, row = create_key(db, owner="frank")
    marker = settings.key_revocation_file
    result = revoke_key(db, row.id, marker=marker)
    assert not result.already_revoked and marker.read_text().strip().endswith(row.id)
    assert revoke_key(db, row.id, marker=marker).already_revoked


ALICE = Principal(key_id="key_a", owner="alice", is_admin=False)


def test_the_cache_empties_when_the_marker_changes(tmp_path):
    marker = tmp_path / "keys-revoked"
    cache = KeyCache(ttl=3600, revocation_marker=marker)
    assert cache.get("h") is None
    cache.put("h", ALICE)
    assert cache.get("h") == ALICE
    signal_revocation(marker, "key_a")  # the file appears
    assert cache.get("h") is None
    cache.put("h", ALICE)
    assert cache.get("h") == ALICE
    signal_revocation(marker, "key_b")  # the file grows
    assert cache.get("h") is None


def test_a_lookup_racing_a_revocation_is_not_cached(tmp_path):
    """The lookup read the key before the revocation committed; its answer must not outlive the marker."""
    marker = tmp_path / "keys-revoked"
    cache = KeyCache(ttl=3600, revocation_marker=marker)
    assert cache.get("h") is None  # request 1 misses and starts its database lookup
    signal_revocation(marker, "key_a")  # meanwhile the key is revoked
    assert cache.get("h") is None  # request 2 notices the marker (its lookup will say: revoked)
    cache.put("h", ALICE)  # request 1's stale answer arrives
    assert not cache.knows("h")
    assert cache.get("h") is None


def test_a_put_without_a_miss_is_ignored(tmp_path):
    cache = KeyCache(ttl=3600, revocation_marker=tmp_path / "keys-revoked")
    cache.put("h", ALICE)
    assert not cache.knows("h")
