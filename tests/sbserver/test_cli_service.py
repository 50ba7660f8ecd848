"""The service subcommands: migrate, keys create / list, and their one-line errors."""

from __future__ import annotations

from sbclient.cli.entry import main
from service.migrate import head_revision


def test_migrate_then_keys(tmp_path, monkeypatch, capsys, clean_env):
    monkeypatch.setenv("SBAUDIT_DATA_DIR", str(tmp_path / "data"))
    assert main(["keys", "list"]) == 2
    assert "run `sbaudit migrate`" in capsys.readouterr().err

    assert main(["migrate"]) == 0
    assert f"is at revision {head_revision()}" in capsys.readouterr().out

    assert main(["keys", "create", "--owner", "carol"]) == 0
    created = capsys.readouterr()
    key = created.out.strip()
    assert key.startswith("sbk_") and "\n" not in key
    assert "carol" in created.err

    assert main(["keys", "list"]) == 0
    listing = capsys.readouterr().out
    assert "carol" in listing and key not in listing and key[:12] in listing

    assert main(["keys", "create", "--owner", " "]) == 2
    assert "owner must be" in capsys.readouterr().err


def test_worker_needs_a_broker(tmp_path, monkeypatch, capsys, clean_env):
    monkeypatch.setenv("SBAUDIT_DATA_DIR", str(tmp_path / "data"))
    assert main(["worker"]) == 2
    assert "SBAUDIT_BROKER_URL" in capsys.readouterr().err


def test_bad_settings_are_one_line_errors(tmp_path, monkeypatch, capsys, clean_env):
    monkeypatch.setenv("SBAUDIT_WORKERS", "0")
    assert main(["serve"]) == 2
    assert capsys.readouterr().err.strip().startswith("sbaudit: error: invalid setting SBAUDIT_WORKERS")


def test_several_api_processes_need_a_broker(tmp_path, monkeypatch, capsys, clean_env):
    monkeypatch.setenv("SBAUDIT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("SBAUDIT_API_WORKERS", "2")
    assert main(["serve", "--port", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("sbaudit: error: SBAUDIT_API_WORKERS > 1 needs SBAUDIT_BROKER_URL"), err
    assert not (tmp_path / "data").exists(), "refused before creating anything"
