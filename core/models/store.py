"""Model versions on disk: models_store/<name>-<version>/ with the trees (LightGBM text), the calibrator and a
manifest.json that says what the model is, what it was trained on, how well it did and what role it plays.

Manifest keys: name, version, created_at, role ("champion" | "challenger" | "retired"), scope, metrics (a flat
dict of floats), features (names, in order), feature_set (version), training_windows, data_fingerprint (sha256 of
the training rows), library_versions, training_data (what and under which licence)."""
from __future__ import annotations

import hashlib
import json
import platform
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from core.features.dataset import Dataset
from core.features.sets import FEATURES
from core.models.calibration import Calibrator
from core.models.lgbm import Trees, library_version
from core.models.reversion import ReversionModel

ROLES = ("champion", "challenger", "retired")
MANIFEST = "manifest.json"


def data_fingerprint(data: Dataset) -> str:
    """sha256 over the training rows (features, labels, times): the same data gives the same fingerprint."""
    h = hashlib.sha256()
    h.update(data.scope.encode())
    for a in (data.features, data.hit, data.net_return, data.decision_ns, data.end_ns):
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def _iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, UTC).isoformat()


def save_model(model: ReversionModel, models_dir: Path, name: str, data: Dataset, role: str = "challenger",
               extra_metrics: Mapping[str, float] | None = None, training_data: str = "",
               created_at: datetime | None = None) -> Path:
    """Write a new version folder and return its path. The version is the creation time and the data's
    fingerprint, so retraining on the same data at another time is another version."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, not {role!r}")
    created = created_at or datetime.now(UTC)
    fingerprint = data_fingerprint(data)
    version = f"{created:%Y%m%d%H%M%S}-{fingerprint[:8]}"
    folder = Path(models_dir) / f"{name}-{version}"
    folder.mkdir(parents=True, exist_ok=False)
    (folder / "classifier.txt").write_text(model.classifier.to_text())
    if model.regressor is not None:
        (folder / "regressor.txt").write_text(model.regressor.to_text())
    (folder / "calibrator.json").write_text(json.dumps(model.calibrator.to_dict()) + "\n")
    metrics = {k: float(v) for k, v in {**model.metrics, **(extra_metrics or {})}.items()}
    used = data.subset(data.end_ns <= model.trained_until_ns - embargo_of(model))
    cal = model.calibration_from_ns
    windows = [_window("classifier", used if cal is None else used.subset(used.end_ns <= cal - embargo_of(model)))]
    if cal is not None:
        windows.append(_window("calibrator", used.subset(used.decision_ns >= cal)))
    manifest: dict[str, Any] = {
        "name": name, "version": version, "created_at": created.isoformat(), "role": role, "scope": model.scope,
        "kind": "reversion-probability", "metrics": metrics, "features": list(model.features),
        "feature_set": model.feature_set,
        "training_windows": windows, "usable_from": _iso(model.trained_until_ns),
        "trained_until_ns": model.trained_until_ns, "calibration_from_ns": cal, "data_fingerprint": fingerprint,
        "library_versions": {"lightgbm": library_version(), "numpy": np.__version__,
                             "python": platform.python_version()},
        "training_data": training_data,
    }
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return folder


def embargo_of(model: ReversionModel) -> int:
    from core.models.training import embargo_ns, scope_timeframe

    return embargo_ns(scope_timeframe(model.scope))


def _window(role: str, rows: Dataset) -> dict[str, Any]:
    return {"role": role, "rows": len(rows),
            "decisions_from": _iso(int(rows.decision_ns.min())) if len(rows) else None,
            "decisions_to": _iso(int(rows.decision_ns.max())) if len(rows) else None,
            "labels_known_by": _iso(int(rows.end_ns.max())) if len(rows) else None}


def read_manifest(folder: Path) -> dict[str, Any]:
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"no {MANIFEST} in {folder}")
    out: dict[str, Any] = json.loads(path.read_text())
    return out


def load_model(folder: Path) -> ReversionModel:
    """The model saved in `folder`. Refuses a model that reads a feature this code does not compute."""
    m = read_manifest(folder)
    if not computable(m):
        raise ValueError(f"{folder.name}: feature set {m.get('feature_set')!r} reads features this code does not "
                         f"compute: {', '.join(str(f) for f in m.get('features') or ()) or 'none listed'}")
    folder = Path(folder)
    regressor = Trees.from_text((folder / "regressor.txt").read_text()) if (folder / "regressor.txt").is_file() else None
    return ReversionModel(str(m["scope"]), Trees.from_text((folder / "classifier.txt").read_text()),
                          Calibrator.from_dict(json.loads((folder / "calibrator.json").read_text())), regressor,
                          int(m["trained_until_ns"]), tuple(m["features"]), str(m["feature_set"]),
                          {k: float(v) for k, v in m["metrics"].items()},
                          None if m.get("calibration_from_ns") is None else int(m["calibration_from_ns"]))


def computable(manifest: dict[str, Any]) -> bool:
    """Whether this code computes every feature the model of `manifest` reads (its `features`, by name)."""
    features = manifest.get("features")
    return isinstance(features, list) and bool(features) and all(f in FEATURES for f in features)


def versions(models_dir: Path, name: str | None = None) -> list[tuple[Path, dict[str, Any]]]:
    """(folder, manifest) of every version in `models_dir` (of `name` when given), oldest first."""
    out = []
    root = Path(models_dir)
    if not root.is_dir():
        return []
    for folder in sorted(root.iterdir()):
        if (folder / MANIFEST).is_file():
            m = read_manifest(folder)
            if m.get("kind") == "reversion-probability" and (name is None or m.get("name") == name):
                out.append((folder, m))
    return sorted(out, key=lambda fm: str(fm[1].get("created_at", "")))


def champion(models_dir: Path, name: str) -> Path | None:
    """The newest version of `name` whose role is champion, or None."""
    found = [f for f, m in versions(models_dir, name) if m.get("role") == "champion"]
    return found[-1] if found else None


def set_role(folder: Path, role: str) -> None:
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, not {role!r}")
    m = read_manifest(folder)
    m["role"] = role
    (Path(folder) / MANIFEST).write_text(json.dumps(m, indent=2) + "\n")
