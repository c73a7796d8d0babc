"""The Hugging Face hub as the user has it: their HF_HOME, hub cache and login are never moved.

Offline mode is decided per run, after Hydra has composed the config (`apply`, called by run.main):
- `hub.offline=true|false`: set (HF_HUB_OFFLINE etc. = 1 or 0) whatever the environment says;
- `hub.offline=auto` (default): the user's own HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE / HF_DATASETS_OFFLINE,
  when they set any; otherwise offline exactly when `needs(cfg)` is empty (built presets, vendored pkg://
  data, the refusal judge), so the offline presets never reach for the network.
huggingface_hub and datasets read these variables once, at import; `apply` sets the variables and the
constants they were read into, so the decision holds whatever was imported before.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")
_SAVED = "FORGETTING_USER_HUB_ENV"  # the user's own values of VARS, inherited by jobs a launcher spawns
_TRUE = {"1", "ON", "YES", "TRUE"}  # huggingface_hub's and datasets' truthy values
_REPO_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")


@dataclass(frozen=True)
class Need:
    """One hub repo a config needs."""
    repo_id: str
    purpose: str
    repo_type: str = "model"  # model | dataset
    revision: str | None = None
    config: str | None = None  # dataset: load_dataset's config name
    split: str | None = None  # dataset: the split loaded (None: every split)
    data_files: tuple[str, ...] | None = None  # dataset: these files of the repo only
    header: bool = True  # dataset data_files: CSVs with a header row


def user_env() -> dict:
    """The user's values of VARS (None = unset), as they were before this project set any (env.setup calls
    this first)."""
    saved = os.environ.get(_SAVED)
    if saved is None:
        saved = json.dumps({k: os.environ.get(k) for k in VARS})
        os.environ[_SAVED] = saved
    return json.loads(saved)


def is_repo(x) -> bool:
    """A hub repo id (`owner/name` or `name`), not a local path, a built preset (None) or "build"."""
    return isinstance(x, str) and x != "build" and bool(_REPO_ID.match(x)) and not Path(x).expanduser().exists()


def unaligned_uses(cfg) -> list[str]:
    """Why the run loads model.unaligned, if it does: its method reads its weights (safelora, magmax), or
    the poison rows are its answers (data.poison.answers=unaligned, or auto with a named model; ratio > 0)."""
    from hydra.utils import get_class

    from . import poison

    target = cfg.method.get("_target_")
    uses = [f"method {cfg.method.name}"] if target and getattr(get_class(target), "needs_unaligned", False) else []
    if cfg.data.poison.ratio > 0 and poison.generated(cfg):
        uses.append("poison answers")
    return uses


def needs(cfg) -> list[Need]:
    """Every hub repo the composed run config loads, each once, in load order."""
    m, d, p, j = cfg.model, cfg.data, cfg.data.poison, cfg.judge
    out = []
    if is_repo(m.name_or_path):
        out.append(Need(m.name_or_path, "policy model", revision=m.get("revision")))
    if is_repo(m.get("adapter")):  # an evaluation-only run's PEFT adapter, when one names a hub repo
        out.append(Need(m.adapter, "adapter"))
    uses = unaligned_uses(cfg) if is_repo(m.get("unaligned")) else []
    if uses:
        out.append(Need(m.unaligned, f"unaligned model ({', '.join(uses)})"))
    if is_repo(j.get("model_name_or_path")):  # a local judge model (Llama Guard); the openai judge is remote
        out.append(Need(j.model_name_or_path, f"judge ({j.get('name', '?')})", revision=j.get("revision")))
    t = cfg.get("task")
    math_task = t is None or t.get("prefix") == "math"
    if math_task and d.source == "hub":
        out.append(Need(d.hub_name, "math data (data.source=hub)", "dataset", config="main"))
    if not math_task and t.get("source") == "hub":  # sst2 / code rows from the hub (forgetting/tasks: hub_needs)
        from .tasks import build

        for repo, purpose, kw in build(cfg).hub_needs(cfg):
            out.append(Need(repo, purpose, "dataset", **kw))
    if p.source == "hub" and p.ratio > 0:
        out.append(Need(p.hub_name, "poison rows (data.poison.source=hub)", "dataset", split=p.hub_split))
    for name, h in cfg.eval.harmful_sets.items():
        if h is not None and h.get("hub"):
            out.append(Need(h.hub, f"ASR set {name}", "dataset", config=h.get("hub_config"),
                            split=h.get("hub_split", "train"), data_files=tuple(h.hub_files) if h.get("hub_files") else None,
                            header=h.get("header", True)))
    seen, unique = set(), []
    for n in out:  # e.g. a judge that is the policy model
        if (n.repo_id, n.repo_type, n.revision) not in seen:
            seen.add((n.repo_id, n.repo_type, n.revision))
            unique.append(n)
    return unique


def wanted(cfg) -> bool | None:
    """True / False: offline or online for this run; None: the user's environment decides."""
    mode = str(cfg.get("hub", {}).get("offline", "auto")).lower()
    if mode in ("true", "false"):
        return mode == "true"
    if any(v is not None for v in user_env().values()):
        return None
    return True if not needs(cfg) else None


def set_offline(offline: bool | None) -> bool:
    """Set VARS (None: back to the user's values) and the constants huggingface_hub and datasets read them
    into at import. Returns whether the hub is now offline."""
    for k, v in user_env().items():
        v = v if offline is None else ("1" if offline else "0")
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    from huggingface_hub import constants

    hub = (os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or "").upper() in _TRUE
    constants.HF_HUB_OFFLINE = hub  # read by huggingface_hub.is_offline_mode(): transformers, peft
    dconf = sys.modules.get("datasets.config")
    if dconf is not None:  # datasets.config: HF_DATASETS_OFFLINE, when set, overrides the hub's flag
        ds = os.environ.get("HF_DATASETS_OFFLINE")
        dconf.HF_HUB_OFFLINE = dconf.HF_DATASETS_OFFLINE = hub if ds is None else ds.upper() in _TRUE
    return hub


def apply(cfg) -> bool:
    """This run's offline mode (see the module docstring); → offline?"""
    return set_offline(wanted(cfg))


def download_command() -> str:
    """`forgetting download <this job's overrides>`, or with a placeholder outside a Hydra job."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return "forgetting download " + " ".join(shlex.quote(o) for o in HydraConfig.get().overrides.task)
    return "forgetting download <the same overrides>"


def _chain(err: BaseException):
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__ or err.__context__


def explain(repo: str, err: BaseException, unreachable_fix: str | None = None) -> str | None:
    """One line naming the fix when `err` (or an error it was raised from) is a hub access failure: a gated
    repo without access, a repo needing a login, or a repo missing from the cache while the hub cannot be
    reached (fix: `unreachable_fix`, by default the `forgetting download` command). None for anything else."""
    from huggingface_hub import constants
    from huggingface_hub.errors import GatedRepoError, LocalEntryNotFoundError, RepositoryNotFoundError

    for e in _chain(err):
        if isinstance(e, GatedRepoError):
            return (f"{repo} is gated: accept its licence at https://huggingface.co/{repo}, then `hf auth login` "
                    "or set HF_TOKEN")
        if isinstance(e, RepositoryNotFoundError):
            code = getattr(getattr(e, "response", None), "status_code", "?")
            return (f"{repo} is not on the hub or not visible to you (HTTP {code}): check the name; for a private "
                    "or gated repo, `hf auth login` or set HF_TOKEN")
        if isinstance(e, (LocalEntryNotFoundError, ConnectionError)):  # OfflineModeIsEnabled is a ConnectionError
            why = "the hub is offline (HF_HUB_OFFLINE)" if constants.HF_HUB_OFFLINE else "the hub cannot be reached"
            fix = unreachable_fix or f"run `{download_command()}` on a machine with internet"
            return f"{repo} is not in the hub cache ({constants.HF_HUB_CACHE}) and {why}: {fix}"
    return None


def load_dataset(name: str, config: str | None = None, split: str | None = None,
                 data_files: list[str] | tuple[str, ...] | None = None, header: bool = True):
    """datasets.load_dataset, its hub access failures as one line (HubError). `forgetting download` calls
    this too, so a compute node finds exactly what it loads in the datasets cache. `data_files`: only these
    files of the repo; `header=False`: CSVs without a header row (one column, named "prompt")."""
    from datasets import load_dataset as load

    from .errors import HubError

    extra = {"data_files": list(data_files)} if data_files else {}
    if data_files and not header:
        extra.update(header=None, column_names=["prompt"])
    try:
        return load(name, *[config] if config else [], split=split, **extra)
    except Exception as e:
        hint = explain(name, e)
        if hint is None:
            raise
        raise HubError(hint) from None
