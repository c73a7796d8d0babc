"""The one exception type for bad user input: printed as a single line by launch.py."""


class ConfigError(ValueError):
    """Bad input (config value, missing file, malformed data) detected before any model loads."""


class HubError(ConfigError):
    """A hub repo the config needs cannot be had (gated without access, needs a login, offline and not
    cached): one line that names the fix (forgetting/hub.py: explain)."""
