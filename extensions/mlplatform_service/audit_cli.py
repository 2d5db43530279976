"""`mlplatform audit verify` and `mlplatform audit export`: the audit log from a shell.

    mlplatform audit verify --catalog platform.yaml
    mlplatform audit export --database-url postgresql+psycopg://... --format csv --team team-vision --out audit.csv

The arguments are declared here and run by `run(args)`; `mlplatform`'s parser only dispatches. The
database modules are imported when a command runs, so `mlplatform render` does not need them.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime


def add_parser(commands) -> None:
    """Add `audit verify` and `audit export` to `commands` (the subparsers of `mlplatform`)."""
    audit = commands.add_parser("audit", help="verify or export the platform service's audit log",
                                description="The audit log is append-only and hash-chained in the platform "
                                            "service's database; these read it, never change it.")
    actions = audit.add_subparsers(dest="audit_command", required=True)
    verify = actions.add_parser("verify", help="recompute the hash chain: exit 0 if intact, 1 if not",
                                description="Prints 'audit log intact: N records, seq A to B' and the head's "
                                            "hash (keep a copy elsewhere: a rewrite up to the head is only "
                                            "seen against it), or each problem found, and exits 1.")
    _database(verify)
    export = actions.add_parser("export", help="write the records (filtered) as CSV or JSON lines")
    _database(export)
    export.add_argument("--format", required=True, choices=("csv", "jsonl"), dest="fmt")
    export.add_argument("--since", type=_moment, help="from this time on (RFC 3339; UTC if no offset, e.g. 2026-05-01)")
    export.add_argument("--until", type=_moment, help="before this time (RFC 3339; UTC if no offset)")
    export.add_argument("--actor", help="hub username, or `platform`")
    export.add_argument("--team")
    export.add_argument("--action", help="e.g. promote (a bad one is answered with the list)")
    export.add_argument("--target", help="part of the target, e.g. team-vision/iris")
    export.add_argument("--outcome", help="intent, succeeded, failed or refused")
    export.add_argument("--out", metavar="FILE", help="write here instead of standard output")


def _database(p: argparse.ArgumentParser) -> None:
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--catalog", metavar="FILE", help="the platform catalog: its platform_service.database_url")
    source.add_argument("--database-url", metavar="URL",
                        help="SQLAlchemy URL of the service's database (sqlite:///..., postgresql+psycopg://...)")


def _moment(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: allowed: an RFC 3339 time or date, e.g. 2026-05-04T09:00:00Z "
                                         "or 2026-05-04") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def run(args: argparse.Namespace) -> int:
    from mlplatform_core.catalog import CatalogError, load_catalog
    from sqlalchemy.exc import SQLAlchemyError

    try:
        url = args.database_url or load_catalog(args.catalog).platform_service.database_url
    except CatalogError as e:
        print(e, file=sys.stderr)
        return 2
    try:
        log = _open(url)
        if args.audit_command == "verify":
            return _verify(log)
        return _export(log, args)
    except SQLAlchemyError as e:
        # The driver's message names host and user, never the password; the URL is shown without it.
        print(f"audit log at {_shown(url)}: {type(e.orig or e).__name__}: {str(e.orig or e).strip()}",
              file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError) as e:  # a filter the log refuses (with what it allows); no database
        print(e, file=sys.stderr)
        return 2
    except OSError as e:
        print(f"cannot write {getattr(args, 'out', None) or 'standard output'}: {e.strerror}", file=sys.stderr)
        return 2


def _open(url: str):
    from pathlib import Path

    from sqlalchemy.engine import make_url

    from .audit_log import AuditLog
    from .database import connect

    # connect() creates what is missing: a mistyped SQLite path would "verify" as an empty, intact log.
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database and not Path(parsed.database).is_file():
        raise FileNotFoundError(f"no SQLite database at {parsed.database}")
    return AuditLog(connect(url))


def _shown(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL at all: say so rather than echo it (it may hold a password)
        return "(a database URL SQLAlchemy cannot parse)"


def _verify(log) -> int:
    result = log.verify()
    pruned = (f", after seq {result.anchor_seq} (pruned by retention, up to {result.anchor_time})"
              if result.anchor_seq else "")
    if result.ok:
        span = f", seq {result.first_seq} to {result.last_seq}" if result.checked else ""
        print(f"audit log intact: {result.checked} records{span}{pruned}")
        print(f"head hash: {result.head_hash}")
        return 0
    print(f"audit log NOT intact: {result.problem_count} problem(s) in {result.checked} records{pruned}")
    for problem in result.problems:
        print(f"  {problem}")
    if (more := result.problem_count - len(result.problems)) > 0:
        print(f"  ... and {more} more")
    return 1


def _export(log, args) -> int:
    filters = {name: getattr(args, name) for name in ("since", "until", "actor", "team", "action", "target",
                                                      "outcome")}
    chunks = log.export(args.fmt, **filters)
    if args.out is None:
        sys.stdout.writelines(chunks)
        return 0
    with open(args.out, "w", encoding="utf-8", newline="") as out:  # newline="": CSV ends its own lines
        out.writelines(chunks)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0
