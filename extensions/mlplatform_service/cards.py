"""Model cards, stored once and never changed: the audit record of a promotion names its card by hash."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

from sqlalchemy import DateTime, String, Text
from sqlalchemy.orm import Mapped, Session, mapped_column, sessionmaker

from .database import Base


class ModelCard(Base):
    __tablename__ = "mlplatform_model_cards"
    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    text: Mapped[str] = mapped_column(Text)
    stored_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class CardStore:
    def __init__(self, sessions: sessionmaker[Session]):
        self.sessions = sessions

    def put(self, text: str) -> str:
        """Store `text` (if it is new) and return its SHA-256: the same card twice is one row."""
        digest = hashlib.sha256(text.encode()).hexdigest()
        with self.sessions() as session, session.begin():
            if session.get(ModelCard, digest) is None:
                session.add(ModelCard(sha256=digest, text=text, stored_at=datetime.now(UTC)))
        return digest

    def get(self, digest: str) -> str | None:
        with self.sessions() as session:
            card = session.get(ModelCard, digest)
            return None if card is None else card.text
