"""The one exception type for bad user input: printed as a single line by launch.py."""


class ConfigError(ValueError):
    """Bad input (config value, missing file, malformed data) detected before any model loads."""
