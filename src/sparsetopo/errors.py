"""Errors meant for the user: the CLI prints them as one line and exits with status 2."""


class UserError(Exception):
    """Bad input or a bad file: a clear one-line message, no traceback."""


class DataError(UserError):
    """A dataset file is missing, truncated, corrupt or fails its checksum."""


class ConfigError(UserError, ValueError):
    """An invalid hyperparameter, spec or option value."""
