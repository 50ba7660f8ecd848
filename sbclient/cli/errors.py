"""What every CLI subcommand shares."""


class CliError(Exception):
    """A user-facing error: printed as one line, exit status 2."""
