"""Budget overrides: a platform admin lets a team's allocations past its budget until a time, for a reason.

Granted (and revoked) through the service's admin API, each audited (`budget-override`); admission
(the hub's spawns, the local backend's GPU deploys) consults `active(team)` only when the budget would
refuse, and audits each allocation an override admitted under the granting admin's name.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import DateTime, Integer, String, Text, select
from sqlalchemy.orm import Mapped, Session, mapped_column, sessionmaker

from .database import Base


class OverrideRow(Base):
    __tablename__ = "mlplatform_budget_overrides"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    team: Mapped[str] = mapped_column(String(63), index=True)
    granted_by: Mapped[str] = mapped_column(String(255))
    reason: Mapped[str] = mapped_column(Text)
    granted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    until: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


@dataclass(frozen=True)
class Override:
    id: int
    team: str
    granted_by: str
    reason: str
    granted_at: datetime
    until: datetime

    def as_dict(self) -> dict:
        return {"id": self.id, "team": self.team, "granted_by": self.granted_by, "reason": self.reason,
                "granted_at": self.granted_at.isoformat(), "until": self.until.isoformat()}


class Overrides:
    def __init__(self, sessions: sessionmaker[Session], clock=None):
        self.sessions = sessions
        self.clock = clock or (lambda: datetime.now(UTC))
        Base.metadata.create_all(sessions.kw["bind"], tables=[OverrideRow.__table__])

    def grant(self, team: str, *, granted_by: str, until: datetime, reason: str) -> Override:
        now = self.clock()
        if until.tzinfo is None:
            raise ValueError(f"until {until.isoformat()!r} is not allowed: give a time with its UTC offset")
        if until <= now:
            raise ValueError(f"until {until.isoformat()!r} is not allowed: it must be in the future")
        if not reason.strip():
            raise ValueError("reason '' is not allowed: say why the team may exceed its budget")
        with self.sessions.begin() as session:
            row = OverrideRow(team=team, granted_by=granted_by, reason=reason.strip(), granted_at=now, until=until)
            session.add(row)
            session.flush()
            return _override(row)

    def revoke(self, team: str) -> int:
        """End every active override of `team` now; how many there were."""
        now = self.clock()
        with self.sessions.begin() as session:
            rows = session.scalars(self._active(team, now)).all()
            for row in rows:
                row.revoked_at = now
            return len(rows)

    def active(self, team: str) -> Override | None:
        """The team's override in force now (the latest granted), or None."""
        with self.sessions() as session:
            row = session.scalars(self._active(team, self.clock()).order_by(OverrideRow.granted_at.desc())).first()
            return None if row is None else _override(row)

    @staticmethod
    def _active(team: str, now: datetime):
        return select(OverrideRow).where(OverrideRow.team == team, OverrideRow.until > now,
                                         OverrideRow.revoked_at.is_(None))


def _override(row: OverrideRow) -> Override:
    aware = (lambda t: t if t.tzinfo else t.replace(tzinfo=UTC))  # SQLite gives naive datetimes back
    return Override(id=row.id, team=row.team, granted_by=row.granted_by, reason=row.reason,
                    granted_at=aware(row.granted_at), until=aware(row.until))
