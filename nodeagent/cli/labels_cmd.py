"""`nodeagent labels` (the node's label map and its sinks) and `nodeagent fabric`
(what the node sees of the RDMA fabric, and the tiers it derives)."""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

from nodeagent.cli.common import EXIT_OK, EXIT_PROBLEM, OUTPUT_FORMATS, CliError, add_output


def _load_config(path: str | None) -> Any:
    """labels.toml, or the agent's own configuration (its [labels] and [fabric] tables are
    the daemon's): a file with tables beyond those two is read, strictly, as the latter."""
    from nodeagent.labels import config as lconfig
    from nodeagent.tomlconfig import read

    if path is not None and set(read(Path(path), required=True)) - {"labels", "fabric"}:
        from nodeagent.agent import config as aconfig

        agent = aconfig.load(path, required=True)
        return lconfig.Config(agent.labels, agent.fabric)
    return lconfig.load(path)


def _config(args: argparse.Namespace) -> Any:
    from nodeagent.labels import config as lconfig

    cfg = _load_config(args.config)
    labels, fabric = cfg.labels, cfg.fabric
    changes: dict[str, Any] = {}
    if getattr(args, "domain", None):
        changes["domain"] = args.domain
    if getattr(args, "families", None):
        wanted = [f.strip() for f in args.families.split(",") if f.strip()]
        changes["families"] = lconfig.FAMILIES if wanted == ["all"] else tuple(wanted)
    if getattr(args, "expiry", None) is not None:
        changes["expiry_seconds"] = args.expiry
    if getattr(args, "taint", None) is not None:
        changes["taints"] = tuple(t for t in args.taint if t)
    labels = lconfig.check(dataclasses.replace(labels, **changes), "command line")
    if args.node_name:
        fabric = dataclasses.replace(fabric, node_name=args.node_name)
    return lconfig.Config(labels, fabric)


def _read_previous(path: str) -> dict[str, Any]:
    """A previous label map: JSON (labels -o json, or fabric -o json) or an NFD feature file."""
    from nodeagent.labels import sinks

    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise CliError(f"--previous {path}: {exc.strerror or exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return sinks.parse_feature_file(text)
    if not isinstance(data, dict):
        raise CliError(f"--previous {path}: not a JSON object")
    return data


def _observe(args: argparse.Namespace, cfg: Any) -> tuple[Any, Any, Any, Any]:
    """(inventory, features, observation, recordings) of the root."""
    from nodeagent.hardware.discover import discover
    from nodeagent.hardware.probes.recording import Recordings
    from nodeagent.host import open_root
    from nodeagent.labels.features import read_features
    from nodeagent.topology.observe import observe

    recordings: Recordings = {}
    with open_root(args.root) as root:
        inv = discover(root)
        features = read_features(root)
        obs = observe(root, inv, cfg.fabric, recordings)
    return inv, features, obs, recordings


def _decided(args: argparse.Namespace) -> Any:
    """What the inventory decided, as the daemon keeps it (--state-dir), under the
    command line's --pool, --profile and --tuning."""
    from nodeagent.labels.node import Decided

    decided = Decided()
    if args.state_dir:
        from nodeagent.agent.label_file import decided_from_state
        from nodeagent.agent.state import StateFile

        state = Path(args.state_dir) / "state.json"
        if not state.is_file():
            raise CliError(f"--state-dir: no {state} (is this the agent's state_dir?)")
        decided = decided_from_state(StateFile(state).load())
    return dataclasses.replace(
        decided,
        pool=args.pool or decided.pool,
        profile=args.profile or decided.profile,
        tuning=args.tuning or decided.tuning,
    )


def _cmd_labels(args: argparse.Namespace) -> int:
    from nodeagent.agent.label_file import feature_path
    from nodeagent.labels import sinks
    from nodeagent.labels.node import compute

    cfg = _config(args)
    lcfg = cfg.labels
    target = Path(args.features_dir) / sinks.FEATURE_FILE if args.features_dir else None
    if target is None and args.output == "nfd" and not args.print:
        target = feature_path(args.root or "/", lcfg)
    previous: dict[str, Any] = {}
    if args.previous:
        previous = _read_previous(args.previous)
    elif target is not None and target.is_file():
        previous = sinks.parse_feature_file(target.read_text(encoding="utf-8", errors="replace"))
    previous = {str(k): str(v) for k, v in previous.items() if isinstance(v, str)}
    inv, features, obs, _ = _observe(args, cfg)
    labels = compute(inv, obs, features, _decided(args), lcfg, previous).labels
    if args.output == "json":
        sys.stdout.write(sinks.to_json(labels))
    elif args.output in ("yaml", "table"):
        from nodeagent.cli import render

        flat = dict(sorted(labels.items()))
        sys.stdout.write(
            render.dump(flat, "yaml")
            if args.output == "yaml"
            else render.table([[k, v] for k, v in flat.items()], ["KEY", "VALUE"]) + "\n"
        )
    elif args.output == "kubespray":
        sys.stdout.write(sinks.kubespray_host_vars(labels, lcfg.resolved_taints()))
    else:
        text = sinks.nfd_feature_file(labels, dt.datetime.now(dt.UTC), lcfg.expiry_seconds)
        if args.print or target is None:
            sys.stdout.write(text)
        else:
            sinks.write_atomic(target, text)
            print(f"wrote {target}: {len(labels)} labels, expiring in {lcfg.expiry_seconds} s")
    for error in obs.errors:
        print(f"warning: {error}", file=sys.stderr)
    return EXIT_OK


def _cmd_fabric(args: argparse.Namespace) -> int:
    from google.protobuf import json_format

    from nodeagent.api.v1 import fabric_pb2 as fpb
    from nodeagent.cli import render
    from nodeagent.hardware.probes import recording
    from nodeagent.labels.derive import previous_tiers
    from nodeagent.topology.tiers import node_tiers

    cfg = _config(args)
    previous = None
    if args.previous:
        data = _read_previous(args.previous)
        if isinstance(data.get("tiers"), dict):
            previous = json_format.ParseDict(data["tiers"], fpb.FabricTiers())
        else:
            labels = {str(k): str(v) for k, v in data.items()}
            previous = previous_tiers(labels, cfg.labels.domain)
    _, _, obs, recordings = _observe(args, cfg)
    tiers = node_tiers(obs, previous)
    if args.record:
        for name, data in sorted(recordings.items()):
            print(f"recorded {recording.save(args.record, name, data)}", file=sys.stderr)
    if args.output in ("json", "yaml"):
        doc = {"observation": render.to_dict(obs), "tiers": render.to_dict(tiers)}
        sys.stdout.write(render.dump(doc, args.output))
    else:
        sys.stdout.write(_table(obs, tiers))
    return EXIT_PROBLEM if tiers.degraded else EXIT_OK


def _table(obs: Any, tiers: Any) -> str:
    from nodeagent.cli.render import table

    rows = [
        [
            r.name,
            r.netdev or "-",
            r.link_layer,
            "active" if r.active else "DOWN",
            f"{r.rate_gbps:g}",
            r.leaf.name or r.leaf.id or "-",
            r.leaf.port or "-",
            str(len(r.spines)),
            r.neighbour_source or "-",
        ]
        for r in obs.rails
    ]
    head = ["RAIL", "NETDEV", "LINK", "STATE", "GB/S", "LEAF", "LEAF PORT", "SPINES", "SOURCE"]
    out = [
        f"Node      {obs.node}",
        f"Tiers     fabric={tiers.fabric} tier-2={tiers.tier_2} tier-1={tiers.tier_1} "
        f"tier-0={tiers.tier_0} (tier-0 from {tiers.source})",
        f"Rails     {tiers.rails_active} of {tiers.rails_expected} active, slowest "
        f"{tiers.rate_gbps:g} Gb/s" + (", DEGRADED" if tiers.degraded else ""),
    ]
    out += [f"          {reason}" for reason in tiers.degraded_reasons]
    if obs.cloud.provider:
        out.append(
            f"Cloud     {obs.cloud.provider}: "
            + (
                f"island {obs.cloud.hpc_island}, block {obs.cloud.network_block}, "
                f"local block {obs.cloud.local_block}"
                if obs.cloud.available
                else obs.cloud.error
            )
        )
    out += ["", table(rows, head) if rows else "No compute rails."]
    out += [f"warning: {e}" for e in obs.errors]
    return "\n".join(out) + "\n"


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--root", help="a directory laid out like / or a snapshot archive")
    p.add_argument(
        "--config",
        help="TOML file with [labels] and [fabric] tables "
        "(default /etc/nodeagent/labels.toml when it exists)",
    )
    p.add_argument("--node-name", help="name of this node in the fabric (default: hostname)")
    p.add_argument("--domain", help="domain of our own keys (default nodeagent.io)")
    p.add_argument(
        "--previous",
        metavar="FILE",
        help="the node's current labels (JSON or NFD feature file): keeps last-good "
        "tiers and real OCI values while a source is down",
    )


def register(sub: Any) -> None:
    p = sub.add_parser("labels", help="print or write the node's Kubernetes labels")
    _common(p)
    # json (the flat map) stays the default: scripts and the README rely on it
    add_output(p, ["json", "yaml", "table", "nfd", "kubespray"], default="json")
    p.add_argument("--pool", help="node pool (nodeagent.io/pool, truefoundry.com/nodepool)")
    p.add_argument("--profile", help="golden profile name")
    p.add_argument("--tuning", help="tuning state (pending, applied, drift, ...)")
    p.add_argument(
        "--state-dir",
        metavar="DIR",
        help="the agent's state_dir: take the pool, profile, label overrides and fleet "
        "tiers the inventory gave the daemon, so the map is the one the daemon writes",
    )
    p.add_argument(
        "--families",
        help="comma list of own,nfd,gfd,oci,platform, or all (default own,nfd,gfd,oci)",
    )
    p.add_argument("--print", action="store_true", help="-o nfd: print instead of writing")
    p.add_argument(
        "--features-dir",
        help="-o nfd: directory to write the feature file in "
        "(default <root>/etc/kubernetes/node-feature-discovery/features.d)",
    )
    p.add_argument(
        "--expiry",
        type=int,
        metavar="SECONDS",
        help="-o nfd: labels expire this long after writing (default 600)",
    )
    p.add_argument(
        "--taint",
        action="append",
        metavar="KEY=VALUE:EFFECT",
        help="-o kubespray: a node taint (repeatable; '' for none; default "
        "<domain>/validating=true:NoSchedule)",
    )
    p.set_defaults(func=_cmd_labels)

    p = sub.add_parser("fabric", help="show the node's compute rails, fabric neighbours, tiers")
    _common(p)
    add_output(p, OUTPUT_FORMATS)
    p.add_argument(
        "--record",
        metavar="DIR",
        help="also save the fabric probes' data as recordings in root DIR",
    )
    p.set_defaults(func=_cmd_fabric)
