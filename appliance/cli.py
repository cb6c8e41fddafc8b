"""The `acopio` command (also `python -m appliance`).

Each subcommand is a thin handler: parse, call the core, print. Exit codes: 0 success,
1 the work found a problem (a file failed, check found a disagreement), 2 bad usage or
configuration.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from appliance import __version__, privileges
from appliance import config as config_mod
from appliance.agenda import Activity, Agenda, AgendaError, check_slug, parse_time, slugify
from appliance.catalog import Catalog, SchemaTooNewError
from appliance.config import Config, ConfigError
from appliance.datadir import DataDir
from appliance.fsutil import DISK_REFUSED
from appliance.storage import CorruptStateError, repair_hint

if TYPE_CHECKING:
    from pathlib import Path

    from appliance.accounts import User
    from ingest.devices.capture import Recorder

EXIT_OK, EXIT_PROBLEM, EXIT_USAGE = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="acopio", description="Acopio media appliance for a press office."
    )
    parser.add_argument("--config", metavar="FILE", help="configuration file (TOML)")
    parser.add_argument("--data-dir", metavar="DIR", help="data folder (overrides data_dir)")
    parser.add_argument(
        "--version", action="version", version=f"acopio {__version__}",
        help="print the version and exit",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("config", help="configuration")
    config_sub = p.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    c = config_sub.add_parser("check", help="validate the configuration and print it")
    c.add_argument("--json", action="store_true", help="print the effective settings as JSON")
    c.set_defaults(handler=cmd_config_check)

    p = sub.add_parser("ingest", help="import a card or folder into the archive")
    p.add_argument("source", metavar="SOURCE", help="mounted card or folder")
    p.add_argument("--activity", metavar="SLUG", help="file items outside the agenda here")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(handler=cmd_ingest)

    p = sub.add_parser("items", help="list catalogued items (or edit one: `items set`)")
    p.add_argument("--json", action="store_true", help="print one JSON array")
    p.add_argument("--month", metavar="YYYY-MM", help="only this month")
    p.add_argument("--activity", metavar="SLUG", help="only this activity")
    p.set_defaults(handler=cmd_items)
    items_sub = p.add_subparsers(dest="items_command", metavar="ACTION")
    e = items_sub.add_parser("set", help="describe, pick, rate or approve an item")
    e.add_argument("sha256", help="the item's content hash")
    e.add_argument("--caption", help="the caption (empty to clear)")
    e.add_argument("--tag", action="append", dest="tags", metavar="T",
                   help="a tag; repeat for several (replaces the item's tags)")
    e.add_argument("--credit", help="the credit line")
    e.add_argument("--place", help="the place")
    pick = e.add_mutually_exclusive_group()
    pick.add_argument("--pick", action="store_const", const="picked", dest="pick",
                      help="mark it picked (a keeper)")
    pick.add_argument("--reject", action="store_const", const="rejected", dest="pick",
                      help="mark it rejected")
    pick.add_argument("--unpick", action="store_const", const="none", dest="pick",
                      help="neither picked nor rejected")
    e.add_argument("--rating", type=int, metavar="N", help="stars, 0 to 5")
    approval = e.add_mutually_exclusive_group()
    approval.add_argument("--approve", action="store_const", const="approve", dest="approval",
                          help="approve it for publication (role: approve)")
    approval.add_argument("--withdraw", action="store_const", const="withdraw",
                          dest="approval", help="withdraw its approval")
    e.add_argument("--as", dest="as_user", required=True, metavar="USER",
                   help="the web UI user this is done as (recorded in the history; their "
                        "role must allow it)")
    e.add_argument("--json", action="store_true", help="print the item as JSON")
    e.set_defaults(handler=cmd_items_set)
    # -- re-filing (appliance.refile) --
    e = items_sub.add_parser("refile", help="move items to another activity (the files move)")
    e.add_argument("sha256", nargs="+", metavar="SHA256", help="the items' content hashes")
    where = e.add_mutually_exclusive_group(required=True)
    where.add_argument("--activity", dest="refile_activity", metavar="SLUG",
                       help="an agenda activity (its folder is dated by its first day)")
    where.add_argument("--unsorted", action="store_true",
                       help="back to the capture day's sin-actividad folder")
    e.add_argument("--as", dest="as_user", required=True, metavar="USER",
                   help="the web UI user this is done as (recorded in the history; their "
                        "role must allow editing items)")
    e.add_argument("--json", action="store_true", help="print the moved items as JSON")
    e.set_defaults(handler=cmd_items_refile)
    # -- end re-filing --

    p = sub.add_parser("check", help="compare the catalog with the archive")
    p.add_argument("--deep", action="store_true", help="re-hash every file")
    p.add_argument("--repair", action="store_true",
                   help="rebuild damaged shards, adopt uncatalogued files, remove crash debris")
    p.add_argument("--json", action="store_true", help="print findings as JSON")
    p.set_defaults(handler=cmd_check)

    p = sub.add_parser("agenda", help="the activities that items are filed into")
    agenda_sub = p.add_subparsers(dest="agenda_command", metavar="ACTION", required=True)
    a = agenda_sub.add_parser("add", help="add an activity")
    a.add_argument("title", help="the activity's name, as the agenda and the mural show it")
    a.add_argument("--start", required=True, help="ISO 8601, local time unless an offset is given")
    a.add_argument("--end", required=True, help="ISO 8601")
    a.add_argument("--area", default="", help="the office area (e.g. Cultura)")
    a.add_argument("--place", default="", help="where it takes place")
    a.add_argument("--slug", help="folder name part (default: from the title)")
    a.set_defaults(handler=cmd_agenda_add)
    a = agenda_sub.add_parser("list", help="list activities")
    a.add_argument("--json", action="store_true", help="print one JSON array")
    a.set_defaults(handler=cmd_agenda_list)
    a = agenda_sub.add_parser("remove", help="remove an activity (its items stay filed)")
    a.add_argument("slug", help="the activity's slug (`acopio agenda list`)")
    a.set_defaults(handler=cmd_agenda_remove)
    a = agenda_sub.add_parser("current", help="show or set the kit's current activity")
    group = a.add_mutually_exclusive_group()
    group.add_argument("slug", nargs="?", help="set this activity as current")
    group.add_argument("--clear", action="store_true", help="no current activity")
    a.set_defaults(handler=cmd_agenda_current)

    p = sub.add_parser("users", help="accounts of the web UI")
    users_sub = p.add_subparsers(dest="users_command", metavar="ACTION", required=True)
    u = users_sub.add_parser("add", help="create a user")
    u.add_argument("name", help="the user's login name")
    u.add_argument("--role", required=True, choices=_roles(), help="what the user may do")
    u.add_argument("--password-stdin", action="store_true",
                   help="read the password from standard input (one line)")
    u.set_defaults(handler=cmd_users_add)
    u = users_sub.add_parser("list", help="list users")
    u.add_argument("--json", action="store_true", help="print one JSON array")
    u.set_defaults(handler=cmd_users_list)
    u = users_sub.add_parser("passwd", help="set a user's password (ends their sessions)")
    u.add_argument("name", help="the user's login name")
    u.add_argument("--password-stdin", action="store_true",
                   help="read the new password from standard input (one line)")
    u.set_defaults(handler=cmd_users_passwd)
    u = users_sub.add_parser("remove", help="remove a user")
    u.add_argument("name", help="the user's login name")
    u.set_defaults(handler=cmd_users_remove)

    p = sub.add_parser("devices", help="cards, cameras and capture devices")
    devices_sub = p.add_subparsers(dest="devices_command", metavar="ACTION", required=True)
    d = devices_sub.add_parser("watch", help="watch udev and import what is plugged in")
    d.set_defaults(handler=cmd_devices_watch)
    d = devices_sub.add_parser("list", help="what is attached now and its state")
    d.add_argument("--json", action="store_true", help="print JSON")
    d.set_defaults(handler=cmd_devices_list)
    d = devices_sub.add_parser("cards", help="cards seen and their import history")
    d.add_argument("--json", action="store_true", help="print JSON")
    d.set_defaults(handler=cmd_devices_cards)

    p = sub.add_parser("record", help="record from a microphone or webcam")
    record_sub = p.add_subparsers(dest="record_command", metavar="ACTION", required=True)
    r = record_sub.add_parser("start", help="start recording from a capture device")
    r.add_argument("--device", required=True, metavar="ID", help="see `acopio devices list`")
    r.add_argument("--activity", metavar="SLUG", help="file the recording here when no agenda "
                   "activity holds its time")
    r.add_argument("--json", action="store_true", help="print the recording as JSON")
    r.set_defaults(handler=cmd_record_start)
    r = record_sub.add_parser("stop", help="stop recording and import the file")
    r.add_argument("--device", required=True, metavar="ID",
                   help="the device's id (`acopio devices list`)")
    r.add_argument("--json", action="store_true", help="print the import summary as JSON")
    r.set_defaults(handler=cmd_record_stop)
    r = record_sub.add_parser("list", help="recordings in progress (or ended on their own)")
    r.add_argument("--json", action="store_true", help="print one JSON array")
    r.set_defaults(handler=cmd_record_list)
    r = record_sub.add_parser("recover", help="import recordings left by a crash or a failed "
                              "import")
    r.add_argument("--json", action="store_true", help="print the import summaries as JSON")
    r.set_defaults(handler=cmd_record_recover)

    p = sub.add_parser("worker", help="make thumbnails, previews and proxies from the queue")
    p.add_argument("--once", action="store_true", help="exit when no job is ready")
    p.set_defaults(handler=cmd_worker)

    p = sub.add_parser("jobs", help="the derivative job queue")
    p.add_argument("--json", action="store_true", help="print counts and jobs as JSON")
    p.add_argument("--retry", nargs="?", const="all", metavar="ID",
                   help="put a parked job (or all) back in the queue")
    p.add_argument("--repair", action="store_true",
                   help="move damaged queue files aside (then `acopio derive --rebuild`)")
    p.set_defaults(handler=cmd_jobs)

    p = sub.add_parser("derive", help="derivatives (thumbnails, previews, proxies)")
    p.add_argument("--rebuild", action="store_true", required=True,
                   help="delete derivatives and queue them again")
    p.add_argument("--item", metavar="SHA256", help="only this item")
    p.set_defaults(handler=cmd_derive)

    p = sub.add_parser("run", help="run the whole appliance (device watcher, inbox, ...)")
    p.add_argument("--roles", metavar="LIST",
                   help="comma-separated roles (default: devices,inbox,recordings,worker,web,sync)")
    p.set_defaults(handler=cmd_run)

    # -- mural and informe --
    p = sub.add_parser("mural", help="the printed mural of a month: PDF and PNG preview")
    p.add_argument("--month", required=True, metavar="YYYY-MM", help="the month")
    p.add_argument("--size", default="A2", choices=("A1", "A2", "A3"), help="paper size")
    p.add_argument("--out", required=True, metavar="FILE.pdf",
                   help="the PDF to write (the preview goes beside it as FILE.png)")
    p.add_argument("--json", action="store_true", help="print the layout and report as JSON")
    p.set_defaults(handler=cmd_mural)

    p = sub.add_parser("informe", help="the month's results report: figures per area, PDF")
    p.add_argument("--month", required=True, metavar="YYYY-MM", help="the month")
    p.add_argument("--out", metavar="FILE.pdf", help="write the report as a PDF too")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.set_defaults(handler=cmd_informe)
    # -- end mural and informe --

    from sync.hub import commands as hub_commands
    from sync.kit import commands as sync_commands

    hub_commands.add_parsers(sub)  # acopio hub ...
    sync_commands.add_parsers(sub)  # acopio sync ...

    p = sub.add_parser("serve", help="serve the web UI alone (what `run` runs as its web role)")
    p.add_argument("--host", help="address to listen on (default: the web.host setting)")
    p.add_argument("--port", type=int, help="TCP port (default: the web.port setting)")
    p.set_defaults(handler=cmd_serve)

    # -- the kiosk screen (appliance.kiosk) --
    p = sub.add_parser("kiosk", help="show the mural's kiosk screen: Chromium full screen on "
                                     "the box's display")
    p.add_argument("--url", help="page to show (default: kiosk.url, else this box's "
                                 "http://127.0.0.1:<web.port>/mural)")
    p.set_defaults(handler=cmd_kiosk)
    # -- end kiosk --
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = config_mod.load(args.config, data_dir=args.data_dir)
    except ConfigError as exc:
        print(f"acopio: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    handler: Callable[[Config, argparse.Namespace], int] = args.handler
    # As root on a data folder that is another user's (the box's `acopio`): run as its owner,
    # or the services could not open what this command writes (appliance.privileges).
    owner = privileges.owner_to_act_as(config.data_dir,
                                       needs_root=handler in (cmd_devices_watch, cmd_run))
    if owner is not None:
        privileges.act_as(owner, config.data_dir)
    try:
        return handler(config, args)
    except (AgendaError, ValueError) as exc:
        print(f"acopio: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (CorruptStateError, SchemaTooNewError) as exc:
        print(f"acopio: {exc}\n  {repair_hint(DataDir.at(config.data_dir), exc)}",
              file=sys.stderr)
        return EXIT_PROBLEM
    except PermissionError as exc:
        print(f"acopio: {exc}", file=sys.stderr)
        return EXIT_PROBLEM
    except KeyboardInterrupt:
        print("acopio: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`acopio items --json | head`): not an error. Point stdout
        # at /dev/null so the interpreter's final flush does not complain either.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except OSError as exc:
        if exc.errno not in DISK_REFUSED:
            raise
        # A full disk, or one the kernel remounted read-only after an error: said as such,
        # with what to do, rather than a traceback.
        print(f"acopio: {exc.filename or config.data_dir}: {exc.strerror} ("
              f"{DISK_REFUSED[exc.errno]})", file=sys.stderr)
        return EXIT_PROBLEM



def _existing(config: Config) -> DataDir:
    """The data folder a command only reads: a mistyped --data-dir listed "0 items" and
    exit 0, as if the archive were empty."""
    data = DataDir.at(config.data_dir)
    if not (data.state.is_dir() or data.archive.is_dir()):
        raise ValueError(f"no Acopio data folder at {data.root} (data_dir; --data-dir, "
                         "ACOPIO_DATA_DIR)")
    return data


def _print_json(value: Any) -> None:
    # ensure_ascii: names with undecodable bytes are kept as \\udcXX escapes, valid JSON.
    json.dump(value, sys.stdout, ensure_ascii=True, indent=2)
    sys.stdout.write("\n")


# -- handlers -------------------------------------------------------------------------


def cmd_config_check(config: Config, args: argparse.Namespace) -> int:
    problems = config_mod.file_problems(config)
    for problem in problems:
        print(f"acopio: {problem}", file=sys.stderr)
    if args.json:
        _print_json(config_mod.as_dict(config))
    else:
        plain = config_mod.as_dict(config)
        for key, _ in config_mod.iter_settings():
            value: Any = plain
            for part in key.split("."):
                value = value[part]
            # JSON's strings, numbers, booleans and arrays are TOML's too: lines to paste
            print(f"{key} = {json.dumps(value, ensure_ascii=False)}")
        print("configuration OK" if not problems else
              f"configuration loads, with {len(problems)} problem(s) above")
    return EXIT_PROBLEM if problems else EXIT_OK


def cmd_ingest(config: Config, args: argparse.Namespace) -> int:
    from appliance.progress import TerminalProgress, human_bytes
    from ingest.pipeline import Importer, IngestError

    importer = Importer(config, reporter=TerminalProgress())
    if args.activity:
        _warn_unplanned(config, args.activity)
    try:
        summary = importer.run(args.source, activity=args.activity)
    except IngestError as exc:
        print(f"acopio: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.json:
        _print_json(summary.as_dict())
    else:
        print(f"Imported:   {summary.imported} ({human_bytes(summary.bytes_imported)}) "
              f"in {summary.seconds:.1f} s")
        print(f"Duplicates: {summary.duplicates}")
        print(f"Skipped:    {len(summary.skipped)}")
        for rel, reason in summary.skipped:
            print(f"  {_display(rel)}: {reason}")
        print(f"Unknown:    {len(summary.unknown)} (not imported)")
        for rel in summary.unknown:
            print(f"  {_display(rel)}")
        print(f"Failed:     {len(summary.failed)}")
        for outcome in summary.failed:
            print(f"  {outcome.path}: {outcome.reason}")
    if summary.stopped:
        print(f"acopio: import stopped: {summary.stopped} "
              f"({summary.not_attempted} files not attempted)", file=sys.stderr)
    return EXIT_OK if summary.ok else EXIT_PROBLEM


def _display(rel: bytes) -> str:
    from ingest.walk import display

    return display(rel)


def cmd_items(config: Config, args: argparse.Namespace) -> int:
    if args.month and not _is_month(args.month):
        raise ValueError(f"--month must be YYYY-MM, got {args.month!r}")
    if args.activity:
        check_slug(args.activity)
    from ingest.derive import plan

    data = _existing(config)
    catalog = Catalog(data)
    from appliance.editorial import public

    items = [
        public(item) for item in catalog.items(month=args.month)
        if not args.activity or item.get("activity") == args.activity
    ]
    for item in items:
        item["derivatives"] = plan.existing(data, item)
    items.sort(key=lambda i: (i["captured_at"], i["archive_path"]))
    if args.json:
        _print_json(items)
    else:
        for item in items:
            print(f"{item['captured_at'][:19]}  {item['kind']:<6} {item['activity']:<24} "
                  f"{item['archive_path']}")
        print(f"{len(items)} items")
    return EXIT_OK


def _acting_user(data: DataDir, name: str) -> User:
    """The web UI user a CLI edit is done as (`--as`): it must exist and be enabled."""
    from appliance.accounts import Users

    user = Users(data.state).get(name)
    if user is None or user.disabled:
        raise ValueError(f"--as {name!r}: no such user (see `acopio users list`)")
    return user


def cmd_items_set(config: Config, args: argparse.Namespace) -> int:
    from appliance.accounts import allowed
    from appliance.editorial import EditConflict, Editor, NotFound, public

    data = DataDir.at(config.data_dir)
    user = _acting_user(data, args.as_user)
    changes: dict[str, Any] = {k: getattr(args, k) for k in
                               ("caption", "tags", "credit", "place", "rating")
                               if getattr(args, k) is not None}
    if args.pick is not None:
        changes["pick"] = None if args.pick == "none" else args.pick
    if not changes and args.approval is None:
        raise ValueError("nothing to set: give --caption, --tag, --credit, --place, --pick, "
                         "--reject, --unpick, --rating, --approve or --withdraw")
    if changes and not allowed(user.role, "edit_items"):
        raise ValueError(f"{user.name} ({user.role}) may not edit items")
    if args.approval and not allowed(user.role, "approve"):
        raise ValueError(f"{user.name} ({user.role}) may not approve or withdraw items")
    editor = Editor(data, node=config.kit.name)
    try:
        record = editor.edit(args.sha256, changes, by=user.name) if changes else None
        if args.approval == "approve":
            [record] = editor.approve([args.sha256], by=user.name)
        elif args.approval == "withdraw":
            [record] = editor.withdraw([args.sha256], by=user.name)
    except NotFound:
        print(f"acopio: no item {args.sha256} in the catalog", file=sys.stderr)
        return EXIT_PROBLEM
    except EditConflict as exc:  # only with a base revision, which the CLI never sends
        print(f"acopio: {exc}", file=sys.stderr)
        return EXIT_PROBLEM
    assert record is not None
    if args.json:
        _print_json(public(record))
    else:
        print(f"{record['sha256'][:12]}  revision {record['revision']}"
              + ("  approved" if record.get("approved") else ""))
    return EXIT_OK


# -- re-filing (appliance.refile) --
def cmd_items_refile(config: Config, args: argparse.Namespace) -> int:
    from appliance.accounts import allowed
    from appliance.editorial import public
    from appliance.refile import Refiler
    from ingest.derive import plan

    data = DataDir.at(config.data_dir)
    user = _acting_user(data, args.as_user)
    if not allowed(user.role, "edit_items"):
        raise ValueError(f"{user.name} ({user.role}) may not re-file items")
    records = Refiler(config, data).refile(
        args.sha256, None if args.unsorted else args.refile_activity, by=user.name)
    if args.json:
        items = [public(r) for r in records]
        for item in items:
            item["derivatives"] = plan.existing(data, item)
        _print_json(items)
    else:
        for record in records:
            print(f"{record['sha256'][:12]}  {record['archive_path']}")
        print(f"{len(records)} items re-filed")
    return EXIT_OK
# -- end re-filing --


def _is_month(text: str) -> bool:
    return len(text) == 7 and text[4] == "-" and text[:4].isdigit() and text[5:].isdigit() \
        and 1 <= int(text[5:]) <= 12


def cmd_check(config: Config, args: argparse.Namespace) -> int:
    from appliance.check import check

    _existing(config)
    report = check(config, deep=args.deep, repair=args.repair)
    if args.json:
        _print_json({"clean": report.clean, "folders": report.folders, "items": report.items,
                     "findings": [f.as_dict() for f in report.findings]})
    else:
        for finding in report.findings:
            mark = "repaired" if finding.repaired else "PROBLEM" if finding.problem else "note"
            print(f"{mark}: {finding.code}: {finding.path}: {finding.detail}")
        state = "clean" if report.clean else "problems found"
        print(f"{report.items} items in {report.folders} folders: {state}")
    return EXIT_OK if report.clean else EXIT_PROBLEM


def cmd_devices_watch(config: Config, args: argparse.Namespace) -> int:
    from appliance.service import Service

    return Service(config, roles=("devices",)).run_until_signal()


def cmd_worker(config: Config, args: argparse.Namespace) -> int:
    from ingest.derive.worker import Worker

    if args.once:
        from appliance.service import configure_logging

        configure_logging(config.log_level)
        count = Worker(config).run_once()
        print(f"{count} jobs run")
        return EXIT_OK
    from appliance.service import Service

    return Service(config, roles=("worker",)).run_until_signal()


def cmd_jobs(config: Config, args: argparse.Namespace) -> int:
    from appliance.jobs import JobNotFound, JobQueue

    queue = JobQueue(DataDir.at(config.data_dir))
    if args.repair:
        for moved in queue.repair():
            print(f"moved aside: {moved.path} -> {moved.aside}")
    if args.retry:
        try:
            retried = queue.retry(None if args.retry == "all" else args.retry)
        except JobNotFound as exc:
            print(f"acopio: {exc.args[0]}", file=sys.stderr)
            return EXIT_USAGE
        print(f"{len(retried)} jobs back in the queue")
    jobs = queue.jobs()
    if args.json:
        _print_json({"counts": queue.counts(), "jobs": [j.to_record() for j in jobs]})
    else:
        for kind, counts in sorted(queue.counts().items()):
            print(f"{kind:<12} " + "  ".join(f"{k} {v}" for k, v in counts.items()))
        for job in jobs:
            state = f"{job.state} {job.progress:.0f}%" if job.progress is not None else job.state
            print(f"{job.id[:8]}  {job.kind:<12} {job.item[:12]}  {state}"
                  + (f"  {job.error}" if job.error else ""))
    return EXIT_OK


def cmd_derive(config: Config, args: argparse.Namespace) -> int:
    from ingest.derive.worker import rebuild

    print(f"{rebuild(config, args.item)} jobs queued")
    return EXIT_OK


def cmd_run(config: Config, args: argparse.Namespace) -> int:
    from appliance.service import ALL_ROLES, Service

    if args.roles is None:
        roles = ALL_ROLES
    else:
        roles = tuple(r.strip() for r in args.roles.split(",") if r.strip())
        if not roles:  # `--roles "$ROLES"` with the variable unset: not "everything"
            print(f"acopio: --roles names no role; choose from {','.join(ALL_ROLES)}",
                  file=sys.stderr)
            return EXIT_USAGE
    return Service(config, roles=roles).run_until_signal()


def cmd_serve(config: Config, args: argparse.Namespace) -> int:
    from appliance.web.server import serve

    if args.port is not None and not 0 <= args.port <= 65535:
        raise ValueError(f"--port must be between 0 and 65535, got {args.port}")
    return serve(config, args.host, args.port)


def cmd_kiosk(config: Config, args: argparse.Namespace) -> int:
    """Wait for the web UI, then become Chromium in kiosk mode (systemd supervises it)."""
    from appliance.kiosk import launch

    return launch(config, args.url)


def cmd_devices_list(config: Config, args: argparse.Namespace) -> int:
    from ingest.devices.capture import Recorder
    from ingest.devices.state import DeviceStates

    devices = DeviceStates(DataDir.at(config.data_dir).state).all()
    recording = {r.device_id for r in Recorder.from_config(config).active()
                 if r.status == "recording"}
    for d in devices:  # the recorder owns this part of a capture device's state
        if d.kind in ("microphone", "webcam") and d.status == "ready" and d.id in recording:
            d.status = "recording"
    if args.json:
        _print_json([d.to_record() for d in devices])
    else:
        for d in devices:
            counts = f"{d.verified + d.duplicates}/{d.total}" if d.total else ""
            print(f"{d.id:<12} {d.kind:<10} {d.status:<15} {counts:<9} {d.name}"
                  + (f"  ({d.reason})" if d.reason else ""))
        if not devices:
            print("no devices attached")
    return EXIT_OK


def cmd_devices_cards(config: Config, args: argparse.Namespace) -> int:
    from ingest.devices.history import CardHistory

    cards = CardHistory(DataDir.at(config.data_dir).state).cards()
    if args.json:
        _print_json(cards)
    else:
        for card in cards:
            print(f"{card['card_id']}  {card['label'] or '(no label)'}  UUID {card['uuid']}  "
                  f"first seen {card['first_seen'][:19]}")
            for imp in card["imports"]:
                print(f"  {imp['started_at'][:19]}  {imp['status']:<15} "
                      f"{imp['verified']} imported, {imp['duplicates']} duplicates, "
                      f"{imp['failed']} failed of {imp['total']}")
    return EXIT_OK


def cmd_agenda_add(config: Config, args: argparse.Namespace) -> int:
    zone = config.zone
    activity = Activity(
        slug=args.slug or slugify(args.title),
        title=args.title,
        start=parse_time(args.start, zone),
        end=parse_time(args.end, zone),
        area=args.area,
        place=args.place,
    )
    Agenda(DataDir.at(config.data_dir).state, node=config.kit.name).add(activity)
    print(activity.slug)
    return EXIT_OK


def cmd_agenda_list(config: Config, args: argparse.Namespace) -> int:
    activities = Agenda(DataDir.at(config.data_dir).state).activities()
    if args.json:
        _print_json([a.to_record() for a in activities])
    else:
        for a in activities:
            print(f"{a.slug:<32} {a.start.isoformat()} – {a.end.isoformat()}  {a.title}"
                  + (f"  [{a.area}]" if a.area else ""))
    return EXIT_OK


def cmd_agenda_remove(config: Config, args: argparse.Namespace) -> int:
    Agenda(DataDir.at(config.data_dir).state, node=config.kit.name).remove(args.slug)
    return EXIT_OK


def _warn_unplanned(config: Config, slug: str) -> None:
    """A slug the agenda does not hold still files (by capture day: a kit offline before the
    hub sent the agenda down), but a typo would start a stray folder, so say so."""
    check_slug(slug)
    if Agenda(DataDir.at(config.data_dir).state).get(slug) is None:
        print(f"acopio: warning: {slug!r} is not in the agenda (`acopio agenda list`); items "
              "are filed under it by their capture day", file=sys.stderr)


def cmd_agenda_current(config: Config, args: argparse.Namespace) -> int:
    agenda = Agenda(DataDir.at(config.data_dir).state)
    if args.clear:
        agenda.set_current(None)
    elif args.slug:
        agenda.set_current(args.slug)
        _warn_unplanned(config, args.slug)
    else:
        print(agenda.current() or "")
    return EXIT_OK


def cmd_record_start(config: Config, args: argparse.Namespace) -> int:
    from ingest.devices.capture import Recorder, RecordError
    from ingest.devices.state import DeviceStates

    device = DeviceStates(DataDir.at(config.data_dir).state).get(args.device)
    if device is None:
        print(f"acopio: no device {args.device!r} (see `acopio devices list`)", file=sys.stderr)
        return EXIT_USAGE
    if args.activity:
        _warn_unplanned(config, args.activity)
    try:
        recording = Recorder.from_config(config).start(device, args.activity)
    except RecordError as exc:
        print(f"acopio: {exc}", file=sys.stderr)
        return EXIT_PROBLEM
    if args.json:
        _print_json(recording.as_dict())
    else:
        print(f"Recording {recording.device_id} into {recording.output}")
    return EXIT_OK


def cmd_record_stop(config: Config, args: argparse.Namespace) -> int:
    from ingest.devices.capture import Recorder, RecordError

    recorder = Recorder.from_config(config)
    try:
        path = recorder.stop(args.device)
    except RecordError as exc:
        print(f"acopio: {exc}", file=sys.stderr)
        return EXIT_PROBLEM
    return _import_recordings(config, recorder, [path], args.json)


def cmd_record_list(config: Config, args: argparse.Namespace) -> int:
    from ingest.devices.capture import Recorder

    recordings = Recorder.from_config(config).active()
    if args.json:
        _print_json([r.as_dict() for r in recordings])
    else:
        for r in recordings:
            print(f"{r.device_id:<10} {r.status:<10} {r.started_at[:19]}  {r.output}")
        print(f"{len(recordings)} recordings")
    return EXIT_OK


def cmd_record_recover(config: Config, args: argparse.Namespace) -> int:
    from ingest.devices.capture import Recorder

    recorder = Recorder.from_config(config)
    return _import_recordings(config, recorder, recorder.recover(), args.json)


def _import_recordings(config: Config, recorder: Recorder, paths: list[Path],
                       as_json: bool) -> int:
    """Import finished recordings one by one; a failed one stays for `acopio record recover`."""
    from ingest.devices.capture import RecordError, import_recording
    from ingest.pipeline import IngestError

    results, code = [], EXIT_OK
    for path in paths:
        try:
            summary = import_recording(config, path, recorder.activity_for(path))
        except (RecordError, IngestError) as exc:
            results.append({"recording": str(path), "error": str(exc)})
            code = EXIT_PROBLEM
            continue
        results.append({"recording": str(path), **summary.as_dict()})
        if not summary.ok:
            code = EXIT_PROBLEM
    if as_json:
        _print_json(results)
    else:
        for result in results:
            problem = result.get("error") or result.get("stopped") or "; ".join(
                f"{f['path']}: {f['reason']}" for f in result.get("failed", []))
            state = f"kept for `acopio record recover`: {problem}" if problem else "imported"
            print(f"{result['recording']}: {state}")
    return code


def _roles() -> tuple[str, ...]:
    from appliance.accounts import ROLES

    return ROLES


def _read_password(args: argparse.Namespace) -> str | None:
    """The password from standard input (one line, newline stripped), never from argv: the
    command line is visible to every user of the box (ps, /proc) and kept in shell history."""
    if not args.password_stdin:
        print("acopio: give the password on standard input with --password-stdin "
              "(never on the command line)", file=sys.stderr)
        return None
    if sys.stdin.isatty():
        import getpass

        password = getpass.getpass("Password: ")
        if getpass.getpass("Password again: ") != password:
            raise ValueError("the passwords do not match")
        return password
    line = sys.stdin.buffer.readline()
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("the password on standard input is not UTF-8 text") from None
    return text.removesuffix("\n").removesuffix("\r")


def cmd_users_add(config: Config, args: argparse.Namespace) -> int:
    from appliance.accounts import Users

    password = _read_password(args)
    if password is None:
        return EXIT_USAGE
    user = Users(DataDir.at(config.data_dir).state).add(args.name, args.role, password)
    print(f"created {user.name} ({user.role})")
    return EXIT_OK


def cmd_users_list(config: Config, args: argparse.Namespace) -> int:
    from appliance.accounts import Users

    users = Users(DataDir.at(config.data_dir).state).list()
    if args.json:
        _print_json([u.to_public() for u in users])
    else:
        for u in users:
            print(f"{u.name:<32} {u.role:<13} {u.created_at}"
                  + ("  disabled" if u.disabled else ""))
        print(f"{len(users)} users")
    return EXIT_OK


def cmd_users_passwd(config: Config, args: argparse.Namespace) -> int:
    from appliance.accounts import Users

    password = _read_password(args)
    if password is None:
        return EXIT_USAGE
    user = Users(DataDir.at(config.data_dir).state).set_password(args.name, None, password)
    print(f"password changed for {user.name}; their sessions are ended")
    return EXIT_OK


def cmd_users_remove(config: Config, args: argparse.Namespace) -> int:
    from appliance.accounts import Users

    Users(DataDir.at(config.data_dir).state).remove(args.name)
    print(f"removed {args.name}")
    return EXIT_OK


# -- mural and informe --


def cmd_mural(config: Config, args: argparse.Namespace) -> int:
    import time
    from pathlib import Path

    from appliance.mural.content import NoApprovedPhotos
    from appliance.mural.fonts import FontError
    from appliance.mural.render import make_mural

    if not _is_month(args.month):
        raise ValueError(f"--month must be YYYY-MM, got {args.month!r}")
    out = Path(args.out)
    if out.suffix.lower() != ".pdf":
        raise ValueError(f"--out must name a .pdf file, got {args.out!r}")
    started = time.monotonic()
    try:
        made = make_mural(config, DataDir.at(config.data_dir), args.month, args.size, out)
    except (NoApprovedPhotos, FontError) as exc:
        print(f"acopio: {exc}", file=sys.stderr)
        return EXIT_PROBLEM
    report = made.summary
    if args.json:
        _print_json(report)
    else:
        print(f"{made.pdf}: {report['paper']}, {report['pages']} sheet(s) of "
              f"{report['width_pt']:.0f} x {report['height_pt']:.0f} pt at {report['dpi']} dpi "
              f"({report['width']} x {report['height']} px)")
        print(f"{made.png}: preview")
        print(f"{report['activities']} activities, {report['photos']} of {report['approved']} "
              f"approved photos (at most {report['photos_per_activity']} per activity), "
              f"in {time.monotonic() - started:.1f} s")
        if report["omitted"]:
            print(f"left out for room: {len(report['omitted'])} approved photos "
                  "(each activity shows its best)")
        for entry in report["ellipsized"]:
            what = f"caption of {entry['sha256']}" if entry["sha256"] else entry["kind"]
            if entry["shortened"]:
                print(f"shortened to fit: {what}: {entry['text']}")
            if entry["dropped"]:
                print(f"printed without {entry['dropped']} (not in the printing font): "
                      f"{what}: {entry['text']}")
    for sha in report["unavailable"]:
        print(f"acopio: photo {sha} could not be drawn (missing or damaged): a grey box "
              "stands in for it", file=sys.stderr)
    return EXIT_PROBLEM if report["unavailable"] else EXIT_OK


def cmd_informe(config: Config, args: argparse.Namespace) -> int:
    from pathlib import Path

    from appliance.mural.results import figures, write_pdf
    from appliance.query import ItemIndex

    if not _is_month(args.month):
        raise ValueError(f"--month must be YYYY-MM, got {args.month!r}")
    if args.out and Path(args.out).suffix.lower() != ".pdf":
        raise ValueError(f"--out must name a .pdf file, got {args.out!r}")
    data = DataDir.at(config.data_dir)
    with ItemIndex(data, config.zone) as index:
        result = figures(index, Agenda(data.state, config.kit.name), config.zone, args.month)
    if args.out:
        sheets = write_pdf(config, result, Path(args.out))
    if args.json:
        _print_json(result)
    else:
        print(f"{result['month_label']}")
        print(f"{'area':<28} {'activities':>10} {'planned':>8} {'photos':>7} {'videos':>7} "
              f"{'audio':>6} {'approved':>9}")
        for row in [*result["areas"], {"area": "total", **result["totals"]}]:
            name = row["area"] or "(no area)"
            print(f"{name[:28]:<28} {row['activities']:>10} {row['planned']:>8} "
                  f"{row['photos']:>7} {row['videos']:>7} {row['audio']:>6} "
                  f"{row['approved']:>9}")
        if args.out:
            print(f"{args.out}: {sheets} sheet(s)")
    return EXIT_OK


# -- end mural and informe --
