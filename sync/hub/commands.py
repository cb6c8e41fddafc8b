"""`acopio hub ...` commands (registered by appliance/cli.py).

- `acopio hub [--host H] [--port P]`: serve the headquarters hub (sync + web UI) until
  SIGTERM/Ctrl-C.
- `acopio hub pair`: issue a one-time pairing code, printed alone on the last line.
- `acopio hub kits [--json]`: the paired kits.
- `acopio hub revoke KIT`: end a kit's access (its token stops working at once).
"""

from __future__ import annotations

import argparse
import json
import sys

from appliance.config import Config
from appliance.datadir import DataDir

EXIT_OK, EXIT_PROBLEM, EXIT_USAGE = 0, 1, 2


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add `acopio hub` and its subcommands to the CLI."""
    p = sub.add_parser("hub", help="the headquarters hub: serve it, pair kits, list or revoke "
                       "them")
    p.add_argument("--host", help="address to listen on (default: the hub.host setting)")
    p.add_argument("--port", type=int, help="TCP port (default: the hub.port setting; 0 "
                   "picks a free one)")
    p.set_defaults(handler=cmd_hub_serve)
    hub_sub = p.add_subparsers(dest="hub_command", metavar="ACTION")
    a = hub_sub.add_parser("pair", help="issue a one-time pairing code for a kit")
    a.set_defaults(handler=cmd_hub_pair)
    a = hub_sub.add_parser("kits", help="list paired kits")
    a.add_argument("--json", action="store_true", help="print one JSON array")
    a.set_defaults(handler=cmd_hub_kits)
    a = hub_sub.add_parser("revoke", help="end a kit's access to the hub")
    a.add_argument("kit", metavar="KIT", help="the kit's name (`acopio hub kits`)")
    a.set_defaults(handler=cmd_hub_revoke)


def _kits(config: Config):  # type: ignore[no-untyped-def]
    from sync.hub.kits import Kits

    state = DataDir.at(config.data_dir).state / "hub"
    state.mkdir(parents=True, exist_ok=True)
    return Kits(state, code_minutes=config.hub.pair_code_minutes)


def cmd_hub_serve(config: Config, args: argparse.Namespace) -> int:
    from sync.hub.server import serve

    if args.port is not None and not 0 <= args.port <= 65535:
        raise ValueError(f"--port must be between 0 and 65535, got {args.port}")
    return serve(config, args.host, args.port)


def cmd_hub_pair(config: Config, args: argparse.Namespace) -> int:
    code, expires = _kits(config).issue_code()
    print(f"Pairing code for a kit, valid until {expires} (once):")
    print(f"  on the kit: acopio sync pair http://<this hub>:<its port>/ CODE  (hub.port is "
          f"{config.hub.port}; `acopio hub --port` overrides it)")
    print(code)
    return EXIT_OK


def cmd_hub_kits(config: Config, args: argparse.Namespace) -> int:
    from sync.hub.ledger import Hub

    hub = Hub(config)
    try:
        kits = hub.kit_summary()
    finally:
        hub.close()
    if args.json:
        json.dump(kits, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return EXIT_OK
    for kit in kits:
        state = f"revoked {kit['revoked_at']}" if kit["revoked"] else "active"
        contact = (f"last contact {kit['last_contact']} from {kit['last_address']}"
                   if kit["last_contact"] else "never in contact")
        print(f"{kit['kit']:<24} paired {kit['paired_at']}  {state:<32} "
              f"{kit['items']} items, {kit['pending_records']} originals awaited, "
              f"{kit['uploads_in_progress']} uploads in progress, {contact}")
    print(f"{len(kits)} kits")
    return EXIT_OK


def cmd_hub_revoke(config: Config, args: argparse.Namespace) -> int:
    from sync.hub.kits import PairingError

    try:
        kit = _kits(config).revoke(args.kit)
    except PairingError as exc:
        print(f"acopio: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"revoked {kit.name} at {kit.revoked_at}: its token no longer works")
    return EXIT_OK
