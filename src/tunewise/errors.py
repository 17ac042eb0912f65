"""Errors a user can fix. The CLI prints them as one line and exits with code 2."""


class TunewiseError(ValueError):
    """Bad input: the message says what was given, what is allowed and what to do."""


class DataError(TunewiseError):
    """The data cannot be read or is not usable for the task."""


class BackboneError(TunewiseError):
    """The backbone cannot be found or loaded."""


class ConfigError(TunewiseError):
    """A setting is out of its allowed range."""
