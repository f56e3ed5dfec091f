"""W&B Artifacts with lineage, online and offline: the generic plumbing (which stage makes which files is
:mod:`culturespa.stages.lineage`).

How the two ends find each other without a server: an artifact is a deterministic function of files on disk (a
:class:`Spec`: a name per role, canonical entry names, the files). The producer logs it; a consumer builds the same
spec from the files it reads and declares it as input. W&B identifies a version by the manifest digest, which hashes
only entry names and file checksums (MD5), so both ends compute the same digest and the server resolves the input to
the version the producer logged: the link holds whatever order the runs are synced in, and a cached pipeline stage
reused by a later run links the very same version.

* Producers add files (copied to W&B's staging folder, so a file changed later cannot corrupt the upload); a file
  larger than ``logger.wandb.artifacts.reference_mb`` is added as a checksummed ``file://`` reference instead
  (same digest, nothing uploaded: only this machine can open it).
* Consumers add ``file://`` references: declaring an input copies nothing.
* ``run.use_artifact`` refuses to work offline (``TypeError: Cannot use artifact when in offline mode``), so offline
  runs write the same record it writes online for a draft artifact: an artifact marked user-created and
  used-after-commit, which ``wandb sync`` turns into a "used by" edge.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from culturespa import compat

log = logging.getLogger("culturespa.artifacts")

DEFAULT_REFERENCE_MB = 100.0

# The outputs logged inside the innermost ``recording()`` block (None outside one): a pipeline stage keeps its share.
_RECORDER: ContextVar[list[dict[str, Any]] | None] = ContextVar("culturespa_produced", default=None)


@dataclass(frozen=True)
class Spec:
    """An artifact as files: ``files`` maps the entry name inside the artifact to the file on disk."""

    name: str
    type: str
    files: Mapping[str, str]
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type, "files": dict(self.files)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Spec:
        return cls(str(data["name"]), str(data["type"]), dict(data["files"]))

    def missing(self) -> list[str]:
        return [path for path in self.files.values() if not Path(path).is_file()]


def files_under(folder: Path, patterns: Sequence[str] = ("**/*",)) -> dict[str, str]:
    """Files under ``folder`` matching ``patterns`` by path relative to it, sorted (no partial files)."""
    found: dict[str, str] = {}
    for pattern in patterns:
        for path in sorted(folder.glob(pattern)):
            rel = path.relative_to(folder).as_posix()
            if path.is_file() and not rel.endswith((".part", ".tmp")) and "/wandb/" not in f"/{rel}":
                found[rel] = str(path.resolve())
    return dict(sorted(found.items()))


def one_file(entry: str, path: str | Path) -> dict[str, str]:
    """``{entry: path}`` when ``path`` is a file, else nothing."""
    path = Path(path)
    return {entry: str(path.resolve())} if path.is_file() else {}


# ---------------------------------------------------------------- logging


def reference_bytes(cfg: DictConfig | None) -> float:
    """Files above this size go in by reference (``logger.wandb.artifacts.reference_mb``)."""
    mb = OmegaConf.select(cfg, "logger.wandb.artifacts.reference_mb", default=None) if cfg is not None else None
    return float(DEFAULT_REFERENCE_MB if mb is None else mb) * 1024 * 1024


def enabled(cfg: DictConfig | None) -> bool:
    """Artifacts are on unless ``logger.wandb.artifacts.enabled=false``."""
    if cfg is None:
        return True
    return bool(OmegaConf.select(cfg, "logger.wandb.artifacts.enabled", default=True))


def build(spec: Spec, copy_up_to: float, metadata: bool = True) -> Any:
    """A draft ``wandb.Artifact``: files up to ``copy_up_to`` bytes added (checksummed, staged), larger ones and all
    files when ``copy_up_to`` is 0 added as checksummed ``file://`` references. Both give the same digest."""
    import wandb  # slow to import: only when an artifact is built

    art = wandb.Artifact(spec.name, type=spec.type, metadata=dict(spec.metadata) if metadata else None)
    for entry, path in spec.files.items():
        if copy_up_to > 0 and os.path.getsize(path) <= copy_up_to:
            art.add_file(path, name=entry)
        else:
            art.add_reference(Path(path).resolve().as_uri(), name=entry, checksum=True)
    return art


def _usable(run: Any, spec: Spec, role: str) -> bool:
    if run is None:
        return False
    if not spec.files:
        log.debug("artifact %s: no files, not logged as %s", spec.name, role)
        return False
    missing = spec.missing()
    if missing:
        log.warning("artifact %s: %s missing; not logged as %s", spec.name, missing[0], role)
        return False
    return True


def log_output(run: Any, spec: Spec, cfg: DictConfig | None = None) -> str | None:
    """Log ``spec`` as an output of ``run``; returns its digest (None when nothing was logged)."""
    if not enabled(cfg) or not _usable(run, spec, "output"):
        return None
    art = build(spec, reference_bytes(cfg))
    digest = art.manifest.digest()
    run.log_artifact(art)
    produced = _RECORDER.get()
    if produced is not None:
        produced.append({**spec.to_dict(), "digest": digest})
    return digest


def use_input(run: Any, spec: Spec, cfg: DictConfig | None = None) -> str | None:
    """Declare ``spec`` as an input of ``run`` (works offline too); returns its digest."""
    if not enabled(cfg) or not _usable(run, spec, "input"):
        return None
    art = build(spec, copy_up_to=0, metadata=False)
    digest = art.manifest.digest()
    if bool(getattr(run, "offline", False)):
        # what run.use_artifact does for a draft artifact online, minus its offline refusal
        compat.log_input_artifact_offline(run, art)
    else:
        run.use_artifact(art)
    return digest


def use_inputs(run: Any, specs: Iterable[Spec], cfg: DictConfig | None = None) -> list[str | None]:
    return [use_input(run, spec, cfg) for spec in specs]


@contextmanager
def recording() -> Iterator[list[dict[str, Any]]]:
    """Collect every output logged inside the block, in order (the pipeline stores a stage's share with it)."""
    produced: list[dict[str, Any]] = []
    token = _RECORDER.set(produced)
    try:
        yield produced
    finally:
        _RECORDER.reset(token)
