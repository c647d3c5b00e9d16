"""`nodeagent inventory ...`: run the service, and the CA commands that work on its files
where it runs (the admin tree, which talks to it over mTLS, is admin_cmd)."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from typing import Any

from nodeagent.cli.common import EXIT_OK, CliError, add_command

DEFAULT_CONFIG = "/etc/nodeagent/inventory.toml"


def _config_path(given: str | None) -> str | None:
    """--config, else the default file when it exists: the CA commands run on the service's
    host, where the default names the data directory the service uses."""
    if given is not None:
        return given
    return DEFAULT_CONFIG if Path(DEFAULT_CONFIG).is_file() else None


def _config_source(given: str | None) -> str:
    """Where the settings came from, for an error that should say which --config to give."""
    path = _config_path(given)
    if given is not None:
        return f"--config {given}"
    if path is not None:
        return f"{path}, the default --config"
    return f"the built-in defaults: no {DEFAULT_CONFIG}; give --config FILE"


def _service_config(given: str | None) -> Any:
    from nodeagent.inventory import config

    try:
        return config.load(_config_path(given))
    except config.ConfigError as exc:
        raise CliError(f"{exc} (from {_config_source(given)})") from None


def _cmd_serve(args: argparse.Namespace) -> int:
    import asyncio
    import gc

    from nodeagent.agent import logs
    from nodeagent.inventory.service import InventoryService

    cfg = _service_config(args.config)
    logs.setup(cfg.log_format, cfg.log_level)

    async def run() -> None:
        service = InventoryService(cfg)
        await service.start()
        # what is loaded by now (modules, the API's descriptors, the warm node cache) lives
        # as long as the process: out of every full collection from here, which shortens
        # the collector's pauses that a fleet's heartbeats wait through (issue 20)
        gc.freeze()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        print(
            f"serving on {cfg.listen} (mTLS) and {cfg.bootstrap_address} (enrolment); "
            f"CA pin {service.ca.pin}",
            file=sys.stderr,
            flush=True,
        )
        await stop.wait()
        await service.stop()

    asyncio.run(run())
    return EXIT_OK


def _ca(args: argparse.Namespace) -> Any:
    from nodeagent.inventory import pki

    cfg = _service_config(args.config)
    cert, key = cfg.ca_paths
    try:
        return pki.CertificateAuthority.load_or_create(cert, key, create=False)
    except (pki.PkiError, OSError) as exc:
        raise CliError(
            f"{exc} (settings from {_config_source(args.config)}; run this where the "
            "inventory keeps its CA, or give its inventory.toml with --config)"
        ) from None


def _cmd_issue_admin_cert(args: argparse.Namespace) -> int:
    from cryptography import x509

    from nodeagent import tlsutil
    from nodeagent.inventory import certificates
    from nodeagent.inventory.store import Store, StoreError

    ca = _ca(args)
    cert, key = ca.issue_client(args.name, args.role, days=args.days)
    cfg = _service_config(args.config)
    try:  # on record, so `admin certs list` shows it and it can be revoked by name
        store = Store.open(cfg.database_url)
        store.migrate_sync()
        with store.tx() as cur:
            certificates.record(store, cur, x509.load_pem_x509_certificate(cert), args.role)
        store.close()
    except StoreError as exc:
        raise CliError(
            f"cannot record the certificate in {cfg.database_url}: {exc} "
            f"(settings from {_config_source(args.config)})"
        ) from None
    out = Path(args.dir)
    tlsutil.write_private(out / "admin.key", key)
    (out / "admin.crt").write_bytes(cert)
    (out / "ca.crt").write_bytes(ca.pem)
    print(f"wrote {out}/admin.crt, admin.key (0600), ca.crt for {args.role} {args.name!r}")
    return EXIT_OK


def _cmd_ca_hash(args: argparse.Namespace) -> int:
    print(_ca(args).pin)
    return EXIT_OK


def register(sub: Any) -> None:
    inv = sub.add_parser("inventory", help="the central inventory service")
    inv_sub = inv.add_subparsers(dest="inventory_command", required=True, metavar="ACTION")
    config_help = f"inventory.toml (default {DEFAULT_CONFIG} when it exists)"
    p = add_command(inv_sub, "serve", _cmd_serve, help="run the inventory service")
    p.add_argument("--config", help=config_help)
    p = add_command(
        inv_sub, "issue-admin-cert", _cmd_issue_admin_cert, help="make an admin client certificate"
    )
    p.add_argument("--config", help=f"{config_help}: where the CA and database are")
    p.add_argument("--role", required=True, choices=["viewer", "operator", "admin"])
    p.add_argument("--name", required=True)
    p.add_argument("--days", type=float, default=365)
    p.add_argument(
        "-d", "--dir", required=True, help="directory to write admin.crt, admin.key, ca.crt in"
    )
    p = add_command(inv_sub, "ca-hash", _cmd_ca_hash, help="print the CA pin agents bootstrap with")
    p.add_argument("--config", help=f"{config_help}: where the CA is")
