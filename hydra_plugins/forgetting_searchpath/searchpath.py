"""Adds the repository root to Hydra's config search path, so the named sweeps in `sweeps/`
compose as a group: `python launch.py -m +sweeps=lr_epochs`."""
from pathlib import Path

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin

ROOT = Path(__file__).resolve().parents[2]


class ForgettingSearchPath(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        if (ROOT / "sweeps").is_dir():
            search_path.append(provider="forgetting-sweeps", path=f"file://{ROOT}")
