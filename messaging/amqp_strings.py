"""AMQP short strings that are not UTF-8, read without dropping the connection.

A message's properties (``content_type``, ``message_id``, ``reply_to``, ``correlation_id``,
``type``, …) and the keys of its headers table are AMQP short strings: bytes, which RabbitMQ
passes on unchecked. pamqp decodes them as strict UTF-8 (its long strings fall back to bytes
instead), so a single message published with, say, the content type ``b"application/json\\xff"``
fails to decode in aiormq's frame reader, before any of our code sees it: the consumer's whole
connection drops, the broker hands the message to the next consumer, which drops its connection
in turn, and every drop sends back the deliveries the consumer had prefetched too. On a fault
campaign's RabbitMQ 3.10, where each return counts towards the work queue's delivery limit,
that dead-lettered 2 to 40 innocent requests per such message, some after their commit.

:func:`tolerate_invalid_utf8` makes pamqp decode such bytes with U+FFFD in their place: the
message reaches the subscriber, which dead-letters it at once for what the property then says
(a content type other than ``application/json``), or handles it if the property is one it does
not read. The text encodes again, so a copy (a dead letter, a retry) can be published. Valid
UTF-8 decodes exactly as before: the lenient decoders run only after the strict ones failed.
"""

import struct

from pamqp import common, decode

_strict_short_str = decode.short_str
_strict_field_table = decode.field_table


def tolerate_invalid_utf8() -> None:
    """Install the lenient decoders in pamqp's decoder tables, for every connection in this
    process (the message properties, the headers table, and the tables nested in it). Safe to
    call more than once; :func:`messaging.connection.connect` calls it."""
    decode.METHODS["shortstr"] = short_str
    decode.METHODS["table"] = field_table
    decode.TABLE_MAPPING[b"F"] = field_table


def short_str(value: bytes) -> tuple[int, str]:
    """pamqp's short string, with U+FFFD for bytes that are not UTF-8."""
    try:
        return _strict_short_str(value)
    except UnicodeDecodeError:
        length = value[0]
        return length + 1, value[1 : length + 1].decode("utf-8", "replace")


def field_table(value: bytes) -> tuple[int, common.FieldTable]:
    """pamqp's field table, with U+FFFD for bytes of a key that are not UTF-8; its values
    decode as pamqp decodes them (a long string that is not UTF-8 stays bytes), through
    pamqp's mapping of value types, where :func:`tolerate_invalid_utf8` puts this function
    for the tables nested in it."""
    try:
        return _strict_field_table(value)
    except UnicodeDecodeError:
        pass
    try:
        end = 4 + common.Struct.integer.unpack(value[0:4])[0]
        offset, table = 4, {}
        while offset < end:
            key_end = offset + 1 + value[offset]
            key = value[offset + 1 : key_end].decode("utf-8", "replace")
            consumed, table[key] = decode.embedded_value(value[key_end:])
            offset = key_end + consumed
    except (struct.error, IndexError) as exc:
        raise ValueError("Could not unpack data") from exc
    return end, table
