"""Message contracts: frozen, versioned pydantic models serialized as JSON (never pickle).

Commands are imperative, events and replies past tense. A consumer that meets a version it
does not know must dead-letter the message rather than guess, so every model pins ``version``.
"""

from email.message import Message as MimeHeaders
from typing import ClassVar, Literal, Self
from uuid import UUID

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from domain.identifiers import Identifier
from domain.reservations import Outcome

CONTENT_TYPE = "application/json"


def is_json(content_type: str | None) -> bool:
    """``application/json``, read as a MIME type (any case, parameters allowed, by the stdlib's
    header parser), so a producer's ``application/json; charset=utf-8`` is JSON too. UTF-8 is
    JSON's only charset between systems (RFC 8259): any other is refused."""
    if content_type == CONTENT_TYPE:  # what every producer here sends: no parse (6 µs)
        return True
    if not content_type:
        return False
    header = MimeHeaders()
    header["content-type"] = content_type
    charset = header.get_content_charset("utf-8")
    return header.get_content_type() == CONTENT_TYPE and charset in ("utf-8", "utf8")


class InvalidMessage(ValueError):
    """A body that is not valid JSON for the expected contract (a poison message)."""


class Message(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    @classmethod
    def from_body(cls, body: bytes) -> Self:
        try:
            return cls.model_validate_json(body)
        except ValidationError as exc:
            raise InvalidMessage(_summary(exc)) from None

    def to_body(self) -> bytes:
        return self.model_dump_json().encode()

    @property
    def message_id(self) -> str | None:
        """The AMQP ``message_id`` this message travels with (none by default)."""
        return None


class ReservationMessage(Message):
    """A message about one reservation: its message id is the reservation id, and the kind of
    message it is (:attr:`KIND`), so that a request, its reply and its event each have one of
    their own. The worker publishes the reply and the event together, and aiormq matches a
    message the broker returns (unroutable) to its publish by message id: with one id for
    both, a returned event was reported confirmed and its return given to the reply (a fault
    campaign: an event lost, logged as a reply not sent)."""

    # The message id's suffix after the reservation id; the request's is the id alone.
    KIND: ClassVar[str] = ""

    version: Literal[1] = 1
    reservation_id: UUID

    @field_validator("version", mode="before")
    @classmethod
    def _a_number(cls, value: object) -> object:
        """JSON ``true`` equals 1 to Python, and the literal check alone took it for version 1."""
        if isinstance(value, bool):
            raise ValueError("the version is a number, not a boolean")
        return value

    @property
    def message_id(self) -> str:
        return f"{self.reservation_id}{self.KIND}"


class ReservationRequested(ReservationMessage):
    """The API asks for a reservation; the credit-check worker answers with CreditChecked."""

    version: Literal[1] = 1
    username: Identifier
    item_id: Identifier


class CreditChecked(ReservationMessage):
    """The credit-check worker's reply. A rejection is an answer, not an error."""

    KIND = ".credit-checked"

    version: Literal[1] = 1
    outcome: Outcome
    credits_left: int | None = None
    price: int | None = None


class ReservationConfirmed(ReservationMessage):
    """Published after a confirmed reservation commits; the fulfilment worker prepares it."""

    KIND = ".confirmed"

    version: Literal[1] = 1
    username: Identifier
    item_id: Identifier
    price: int


def _summary(exc: ValidationError) -> str:
    """A short, bounded reason for a dead-letter header: the first errors, no input values."""
    parts = [f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors()[:3]]
    return "; ".join(parts)[:256]
