"""The server's ``sbaudit`` subcommands, one module each (registered in pyproject.toml's
``sbaudit.commands`` entry-point group); ``common`` holds what they share (settings, migrations)."""
