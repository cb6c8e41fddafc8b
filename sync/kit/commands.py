"""`acopio sync ...` commands (registered by appliance/cli.py).

- `acopio sync [--once]`: the sync role alone until SIGTERM/Ctrl-C (what `acopio run` runs
  as its `sync` role); `--once` sends everything and exits 0 only when the hub has
  acknowledged it all, 1 when it has not (the message says why), 2 when not paired, 75 when
  the sync role already runs on this data folder (acopio-sync.service, say).
- `acopio sync pair URL CODE`: pair this kit with the hub at URL using a code from
  `acopio hub pair`; keeps the token in `state/sync/credentials.json` (mode 0600).
- `acopio sync status [--json]`: what is pending (items, bytes), the upload in progress, the
  last success and the last error.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from typing import Any

from appliance.config import Config
from appliance.datadir import DataDir

EXIT_OK, EXIT_PROBLEM, EXIT_USAGE = 0, 1, 2


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add `acopio sync` and its subcommands to the CLI."""
    p = sub.add_parser("sync", help="send the archive to the headquarters hub (pair, status)")
    p.add_argument("--once", action="store_true",
                   help="send everything, then exit: 0 only when the hub acknowledged it all")
    p.set_defaults(handler=cmd_sync)
    sync_sub = p.add_subparsers(dest="sync_command", metavar="ACTION")
    a = sync_sub.add_parser("pair", help="pair this kit with a hub (code from `acopio hub "
                            "pair`)")
    a.add_argument("url", metavar="URL", help="the hub, http(s)://host:port")
    a.add_argument("code", metavar="CODE", help="the one-time pairing code")
    a.set_defaults(handler=cmd_sync_pair)
    a = sync_sub.add_parser("status", help="what is pending, being sent, and the last error")
    a.add_argument("--json", action="store_true", help="print one JSON object")
    a.set_defaults(handler=cmd_sync_status)


def cmd_sync(config: Config, args: argparse.Namespace) -> int:
    """The sync role as a service; `--once` runs it as one too (its lock and startup flag),
    so that it is refused while acopio-sync.service sends, rather than send the same files
    beside it."""
    from appliance.service import EXIT_BUSY, Service

    if not args.once:
        return Service(config, roles=("sync",)).run_until_signal()
    once = _Once(config)
    code = Service(config, roles=("sync",), make_role=lambda *_: once).run_until_signal()
    if code == EXIT_BUSY:
        print("acopio: the sync role is already sending this kit's archive (see `acopio sync "
              "status`); stop it first to run `acopio sync --once`", file=sys.stderr)
        return code
    code, message = once.result if code == 0 else (code, "the sync round failed (see the log)")
    print(f"{'acopio: ' if code else ''}{message}", file=sys.stderr if code else sys.stdout)
    return code


class _Once:
    """`SyncRole.run_once` as the role a Service runs; its exit code and message kept."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.result: tuple[int, str] = (EXIT_PROBLEM, "stopped before it began")

    def run(self, stop: threading.Event) -> None:
        from sync.kit.role import SyncRole

        self.result = SyncRole(self.config).run_once(stop)


def cmd_sync_pair(config: Config, args: argparse.Namespace) -> int:
    from sync.hlc import node_name
    from sync.kit import credentials
    from sync.kit.client import HubClient, HubError, HubRefused, SyncError
    from sync.kit.store import SyncStore, now_iso

    url = credentials.normalize_url(args.url)  # ValueError: exit 2 with the reason
    data = DataDir.at(config.data_dir)
    data.ensure()
    kit = node_name(config.kit.name)
    client = HubClient(url, ca_file=config.sync.ca_file)
    try:
        answer = client.pair(args.code.strip(), kit, credentials.kit_id(data))
    except HubRefused as exc:
        print(f"acopio: {exc}", file=sys.stderr)
        return EXIT_PROBLEM
    except HubError as exc:
        print(f"acopio: pairing failed: {exc}", file=sys.stderr)
        return EXIT_PROBLEM
    except SyncError as exc:
        print(f"acopio: {exc}", file=sys.stderr)
        return EXIT_PROBLEM
    finally:
        client.close()
    hub = str(answer.get("hub") or "")
    previous = credentials.load(data)
    if previous is not None and previous.hub and hub and previous.hub != hub:
        forgotten = SyncStore(data).forget_hub()
        print(f"paired with another hub ({hub}, was {previous.hub}): everything will be sent "
              f"to it again ({forgotten} acknowledgements forgotten)")
    credentials.save(data, credentials.Credentials(
        hub_url=url, kit=str(answer.get("kit") or kit), token=answer["token"],
        paired_at=now_iso(), hub=hub))
    print(f"paired with the hub {hub or url} at {url} as {answer.get('kit') or kit}")
    return EXIT_OK


def cmd_sync_status(config: Config, args: argparse.Namespace) -> int:
    from appliance.progress import human_bytes
    from sync.kit import status
    from sync.kit.outbox import Outbox

    data = DataDir.at(config.data_dir)
    report: dict[str, Any] = status.read(data)
    # Counted now from the catalog and the acknowledgements (the role may not be running;
    # a kit not paired yet has everything to send).
    pending = Outbox(data).scan()
    report["pending_items"] = pending.items
    report["pending_bytes"] = pending.bytes
    report["pending_records"] = len(pending.records)
    report["pending_originals"] = len(pending.originals)
    if args.json:
        json.dump(report, sys.stdout, ensure_ascii=True, indent=2)
        sys.stdout.write("\n")
        return EXIT_OK
    if report["state"] == "not_configured":
        print("sync: not paired with a hub (`acopio sync pair URL CODE`)")
        print(f"pending: {report['pending_items']} items, "
              f"{human_bytes(report['pending_bytes'])} to send once paired")
        return EXIT_OK
    print(f"sync: {report['state']} (hub {report['hub']})")
    if not report.get("running"):
        print("the sync role is not running (start acopio-sync.service, or `acopio sync`)")
    print(f"pending: {report['pending_items']} items, {human_bytes(report['pending_bytes'])} "
          f"({report['pending_records']} records, {report['pending_originals']} originals)")
    current = report.get("current")
    if current:
        print(f"sending: {current['name']} {human_bytes(current['offset'])} of "
              f"{human_bytes(current['size'])} at {human_bytes(current['rate_bps'])}/s")
    print(f"last success: {report.get('last_success') or 'never'}")
    error = report.get("last_error")
    if error:
        print(f"last error: {error.get('message')} ({error.get('at')})")
    return EXIT_OK
