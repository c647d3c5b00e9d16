"""The daemon's NFD feature file: the node's labels, kept current while the agent runs.

NFD drops the file's labels at its `+expiry-time`, so a node whose agent stops loses
them instead of advertising stale hardware; the daemon therefore rewrites the file when
an input changes (discovery, hotplug, rail state, fabric, assignment, overrides, tiers)
and again at half its horizon. A file edited by hand is overwritten at the next tick.
A directory that is missing or read-only is an event and a log line, never a stop: the
writer tries again at every tick.

What the inventory decided (pool, profile, overrides, fleet tiers) is kept in the
state file, so `nodeagent labels --state-dir` computes the same map as the daemon.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from google.protobuf import json_format

from nodeagent.api.v1 import fabric_pb2 as fpb
from nodeagent.api.v1 import hardware_pb2 as pb
from nodeagent.labels import sinks
from nodeagent.labels.config import FEATURES_PATH, LabelConfig
from nodeagent.labels.features import NodeFeatures
from nodeagent.labels.node import Decided, NodeLabels, compute

log = logging.getLogger("nodeagent.labels")

# state.json keys the inventory's decisions are kept under
POOL, PROFILE, OVERRIDES, FLEET_TIERS, DRIFTED = (
    "assigned_pool",
    "assigned_profile",
    "label_overrides",
    "fleet_tiers",
    "drifted",
)


def tuning_label(data: Mapping[str, Any], drifted: bool) -> str:
    """The `<domain>/tuning` value: drift wins over the last apply's outcome."""
    if drifted:
        return "drift"
    record = data.get("tuning")
    if isinstance(record, dict) and record.get("outcome") in (
        "tuned",
        "failed",
        "reboot-required",
        "rebooting",
        "interrupted",
    ):
        return str(record["outcome"])
    return ""


def decided_from_state(data: Mapping[str, Any]) -> Decided:
    """What the inventory decided, as the daemon recorded it in state.json (with whether
    the last verify found drift, for the tuning label)."""
    overrides = data.get(OVERRIDES)
    tiers_json = data.get(FLEET_TIERS)
    tiers = None
    if isinstance(tiers_json, dict) and tiers_json:
        tiers = json_format.ParseDict(tiers_json, fpb.FabricTiers(), ignore_unknown_fields=True)
    return Decided(
        pool=str(data.get(POOL, "") or ""),
        profile=str(data.get(PROFILE, "") or ""),
        tuning=tuning_label(data, bool(data.get(DRIFTED))),
        overrides={str(k): str(v) for k, v in overrides.items()}
        if isinstance(overrides, dict)
        else {},
        fleet_tiers=tiers,
    )


def feature_path(root_path: str, config: LabelConfig) -> Path:
    """`feature_file`, or NFD's local-source directory under the agent's root."""
    return Path(config.feature_file or Path(root_path) / FEATURES_PATH)


class LabelFile:
    def __init__(
        self,
        root_path: str,
        config: Callable[[], LabelConfig],
        on_error: Callable[[str], None],
    ) -> None:
        self.root_path = root_path
        self.config = config
        self.on_error = on_error
        self.current: NodeLabels | None = None
        self.written_text = ""
        self.written_labels: dict[str, str] = {}
        self.written_at = 0.0  # monotonic
        self.writes = 0
        self.error = ""

    @property
    def path(self) -> Path:
        return feature_path(self.root_path, self.config())

    def refresh(
        self,
        inv: pb.HardwareInventory,
        obs: fpb.FabricObservation,
        features: NodeFeatures | None,
        decided: Decided,
    ) -> NodeLabels:
        """Compute the map and write the file when it changed, was edited, or is half-way
        to its expiry. Returns the map (also when the file could not be written)."""
        config = self.config()
        path = self.path
        # one read: the labels the file holds now (the last-good tiers and OCI values come
        # from them), and the text that shows a hand edit
        on_disk = self._on_disk(path)
        labels = compute(inv, obs, features, decided, config, self._labels_of(on_disk))
        self.current = labels
        due = time.monotonic() - self.written_at >= config.expiry_seconds / 2
        if (
            self.error
            or due
            or on_disk != self.written_text
            or self.written_labels != labels.labels
        ):
            self._write(path, labels.labels, config)
        return labels

    @staticmethod
    def _labels_of(text: str) -> dict[str, str]:
        return sinks.parse_feature_file(text) if text else {}

    @staticmethod
    def _on_disk(path: Path) -> str:
        try:
            return path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def _write(self, path: Path, labels: dict[str, str], config: LabelConfig) -> None:
        try:
            text = sinks.nfd_feature_file(labels, dt.datetime.now(dt.UTC), config.expiry_seconds)
            sinks.write_atomic(path, text)
        except (OSError, ValueError) as exc:
            error = f"cannot write the feature file {path}: {getattr(exc, 'strerror', None) or exc}"
            if error != self.error:
                log.error("%s (trying again at the next change or tick)", error)
                self.on_error(error)
            self.error = error
            return
        if self.error:
            log.info("feature file %s written again", path)
        self.error = ""
        self.written_text = text
        self.written_labels = dict(labels)
        self.written_at = time.monotonic()
        self.writes += 1
