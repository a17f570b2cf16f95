"""Message properties that pamqp cannot decode, read without dropping the connection.

A delivery's properties (``content_type``, ``message_id``, ``reply_to``, ``timestamp``, …) and
its headers table are bytes that RabbitMQ passes on unchecked, and pamqp decodes them in
aiormq's frame reader, before any of our code sees the message. Where pamqp's decoding fails,
the consumer's whole connection drops; the broker hands the message to the next consumer,
which drops its connection in turn; and every drop sends back the deliveries the consumer had
prefetched too. On a fault campaign's RabbitMQ 3.10, where each return counts towards the work
queue's delivery limit, one message with the content type ``b"application/json\\xff"``
dead-lettered 2 to 40 innocent requests, some after their commit.

:func:`install` puts decoders into pamqp's tables that never fail on what a publisher can
send, where pamqp's own do:

- a short string (a property; a table key) that is not UTF-8 decodes with U+FFFD in place of
  the bad bytes: such a content type is then dead-lettered at once by the subscriber, and any
  other property is handled as usual (a copy or a reply cuts one that grew past 255 bytes so:
  :mod:`messaging.envelope`);
- a timestamp past what ``datetime`` holds (year 9999) decodes as None;
- tables and arrays nested deeper than :data:`MAX_DEPTH` are kept as their bytes, instead of
  a RecursionError some hundreds of levels down.

Each decodes in one pass, as pamqp does, and valid data decodes to the same values; scalar
values are pamqp's own. Malformed framing (a length past the data) is still a ValueError.
"""

import datetime
import struct
from typing import Any

from pamqp import common, decode

# Tables and arrays nested deeper than this are kept as their bytes, undecoded.
MAX_DEPTH = 32


def install() -> None:
    """Use these decoders for every connection in this process: the properties, the headers
    table and what is nested in it. Safe to call more than once;
    :func:`messaging.connection.connect` calls it."""
    decode.METHODS["shortstr"] = short_str
    decode.METHODS["timestamp"] = timestamp
    decode.METHODS["table"] = field_table
    decode.TABLE_MAPPING[b"T"] = timestamp
    decode.TABLE_MAPPING[b"F"] = field_table
    decode.TABLE_MAPPING[b"A"] = field_array


def short_str(value: bytes) -> tuple[int, str]:
    """pamqp's short string, with U+FFFD for bytes that are not UTF-8."""
    if not value:
        raise ValueError("Could not unpack short string value")
    end = 1 + value[0]
    return end, value[1:end].decode("utf-8", "replace")


def timestamp(value: bytes) -> tuple[int, datetime.datetime | None]:
    """pamqp's timestamp, or None for one that ``datetime`` cannot hold."""
    try:
        return decode.timestamp(value)
    except (OverflowError, OSError):
        return 8, None
    except ValueError:
        if len(value) < 8:
            raise  # not a timestamp at all
        return 8, None


def field_table(value: bytes, depth: int = 0) -> tuple[int, common.FieldTable | bytes]:
    """pamqp's field table, with U+FFFD for bytes of a key that are not UTF-8."""
    end = _end(value)
    if depth >= MAX_DEPTH:
        return end, value[4:end]
    offset, table = 4, {}
    while offset < end:
        key_end = offset + 1 + value[offset]
        if key_end > end:
            raise ValueError("Field table key length exceeds data")
        key = value[offset + 1 : key_end].decode("utf-8", "replace")
        consumed, table[key] = _embedded_value(value[key_end:end], depth)
        offset = key_end + consumed
    return end, table


def field_array(value: bytes, depth: int = 0) -> tuple[int, common.FieldArray | bytes]:
    """pamqp's field array, its values decoded as :func:`field_table` decodes them."""
    end = _end(value)
    if depth >= MAX_DEPTH:
        return end, value[4:end]
    offset, array = 4, []
    while offset < end:
        consumed, item = _embedded_value(value[offset:end], depth)
        array.append(item)
        offset += consumed
    return end, array


def _end(value: bytes) -> int:
    """Where a table or array that starts with its 4-byte length ends."""
    try:
        end = 4 + int(common.Struct.integer.unpack(value[0:4])[0])
    except struct.error as exc:
        raise ValueError("Could not unpack data") from exc
    if end > len(value):
        raise ValueError("Field table length exceeds available data")
    return end


def _embedded_value(value: bytes, depth: int) -> tuple[int, Any]:
    kind = value[0:1]
    nested: Any
    if kind == b"F":
        consumed, nested = field_table(value[1:], depth + 1)
    elif kind == b"A":
        consumed, nested = field_array(value[1:], depth + 1)
    elif kind == b"T":
        consumed, nested = timestamp(value[1:])
    else:
        return decode.embedded_value(value)  # a scalar, or an unknown type (ValueError)
    return consumed + 1, nested
