"""The database of the gallery and the study (SQLAlchemy: SQLite by default, any URL it supports)."""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import JSON, Boolean, DateTime, Float, ForeignKey, Integer, String, TypeDecorator, create_engine, event
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship, sessionmaker


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator):
    """A moment in UTC that reads back with its time zone (SQLite stores none)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_result_value(self, value, dialect):
        return value.replace(tzinfo=timezone.utc) if value is not None and value.tzinfo is None else value


class Base(DeclarativeBase):
    pass


class StoredImage(Base):
    """An image file in the store: an upload or a stylisation, named by the sha256 of its bytes."""

    __tablename__ = "images"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    extension: Mapped[str] = mapped_column(String(8))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    origin: Mapped[str] = mapped_column(String(16))  # "upload" or "result"
    name: Mapped[str] = mapped_column(String(255), default="")
    #: In the deception study's pool of real artworks (uploaded style images, and artworks uploaded as such).
    artwork: Mapped[bool] = mapped_column(Boolean, default=False)
    created: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Result(Base):
    """One stylisation in the gallery, with every setting it was made with."""

    __tablename__ = "results"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    image_sha256: Mapped[str] = mapped_column(ForeignKey("images.sha256"), index=True)
    model: Mapped[str] = mapped_column(String(64))
    method: Mapped[str] = mapped_column(String(16))
    alpha: Mapped[float] = mapped_column(Float)
    style_weights: Mapped[list | None] = mapped_column(JSON, nullable=True)
    preserve_color: Mapped[str | None] = mapped_column(String(16), nullable=True)
    size: Mapped[int] = mapped_column(Integer)
    seconds: Mapped[float] = mapped_column(Float)
    title: Mapped[str] = mapped_column(String(200), default="")
    created: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)

    image: Mapped[StoredImage] = relationship(lazy="joined")
    inputs: Mapped[list[ResultInput]] = relationship(order_by="ResultInput.position", lazy="selectin",
                                                     cascade="all, delete-orphan")

    @property
    def content(self) -> str:
        return self.inputs[0].ref

    @property
    def styles(self) -> list[str]:
        return [item.ref for item in self.inputs[1:]]


class ResultInput(Base):
    """An input of a result: position 0 is the content, the styles follow in order."""

    __tablename__ = "result_inputs"

    result_id: Mapped[int] = mapped_column(ForeignKey("results.id"), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    #: ``sample:NAME`` or ``image:SHA256``.
    ref: Mapped[str] = mapped_column(String(80))
    #: Set for stored images, so that a file still in use is never deleted.
    image_sha256: Mapped[str | None] = mapped_column(ForeignKey("images.sha256"), nullable=True, index=True)


class Participant(Base):
    """A person taking part in the study, known by a token the server gave their browser."""

    __tablename__ = "participants"

    #: Random, and shown with the study's results: it says nothing about the person and does not act as the token.
    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    #: The sha256 of the token: the database alone does not let anyone answer as a participant.
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Trial(Base):
    """One screen of the study shown to a person; answered at most once, by the participant it was given to."""

    __tablename__ = "trials"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # random: not guessable, not countable
    study: Mapped[str] = mapped_column(String(16))  # "preference" or "deception"
    created: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    #: The id of the participant it was given to (in databases from before participant tokens: an id their
    #: browser chose).
    participant: Mapped[str | None] = mapped_column(String(64), nullable=True)
    answered: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    items: Mapped[list[TrialItem]] = relationship(order_by="TrialItem.position", lazy="selectin",
                                                  cascade="all, delete-orphan")


class TrialItem(Base):
    """An image of a trial. What it shows is copied here, so answers outlive a result deleted from the gallery."""

    __tablename__ = "trial_items"

    trial_id: Mapped[str] = mapped_column(ForeignKey("trials.id"), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    image_sha256: Mapped[str] = mapped_column(ForeignKey("images.sha256"), index=True)
    result_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    real: Mapped[bool] = mapped_column(Boolean)
    #: The model and settings being compared ("" for a real artwork).
    condition: Mapped[str] = mapped_column(String(120), default="")
    #: The answer: chosen as most appealing (preference) or marked as a real artwork (deception).
    picked: Mapped[bool | None] = mapped_column(Boolean, nullable=True)

    image: Mapped[StoredImage] = relationship(lazy="joined")


def connect(url: str) -> sessionmaker:
    """Sessions on the database at ``url``, its tables created when missing."""
    sqlite = url.startswith("sqlite")
    # SQLite: sessions move between the event loop and worker threads; wait for a writer instead of failing.
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30} if sqlite else {})
    if sqlite:
        @event.listens_for(engine, "connect")
        def _pragmas(connection, _record):
            cursor = connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA journal_mode=WAL")  # readers do not wait for a writer
            cursor.close()

    Base.metadata.create_all(engine)
    return sessionmaker(engine, expire_on_commit=False)
