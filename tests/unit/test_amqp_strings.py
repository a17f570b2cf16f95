"""messaging.amqp_strings: pamqp's decoders, lenient about bytes that are not UTF-8."""

import pytest
from pamqp import commands, decode, encode, frame, header

from messaging.amqp_strings import field_table, short_str, tolerate_invalid_utf8


def _short(data: bytes) -> bytes:
    return bytes([len(data)]) + data


def test_a_short_string_that_is_not_utf8_decodes_with_replacement_characters() -> None:
    assert short_str(_short(b"application/json\xff") + b"rest") == (18, "application/json\ufffd")


def test_valid_short_strings_and_tables_decode_as_pamqp_decodes_them() -> None:
    data = _short("caf\u00e9".encode())
    assert short_str(data) == decode.short_str(data)
    table = encode.field_table({"a": "text", "nested": {"b": 1}, "list": [1, "x"]})
    assert field_table(table) == decode.field_table(table)


def test_a_table_key_that_is_not_utf8_decodes_with_replacement_characters() -> None:
    # Keys of equal length, so the encoded lengths stay right when a byte is swapped in.
    table = encode.field_table({"kx": "v", "nested": {"jx": 1}, "ok": "zzQ"})
    table = table.replace(b"kx", b"k\xff").replace(b"jx", b"j\xfe").replace(b"zzQ", b"zz\xff")
    with pytest.raises(UnicodeDecodeError):
        decode.field_table(table)
    tolerate_invalid_utf8()  # a nested table decodes through pamqp's mapping of value types
    consumed, decoded = field_table(table)
    assert consumed == len(table)
    # A long string value that is not UTF-8 stays bytes, as pamqp has it.
    assert decoded == {"k\ufffd": "v", "nested": {"j\ufffd": 1}, "ok": b"zz\xff"}


def test_a_truncated_table_is_still_a_value_error() -> None:
    table = encode.field_table({"kx": "value"}).replace(b"kx", b"k\xff")
    with pytest.raises(ValueError):
        field_table(table[:-3])


def test_installed_a_content_header_with_such_properties_unmarshals() -> None:
    """What aiormq's frame reader does with a delivery's content header."""
    properties = commands.Basic.Properties(
        content_type="application/jsonX", message_id="idX", headers={"hX": "v"}
    )
    payload = frame.marshal(header.ContentHeader(0, 10, properties), 1)
    payload = payload.replace(b"jsonX", b"json\xff").replace(b"idX", b"id\xfe")
    payload = payload.replace(b"hX", b"h\xfd")
    tolerate_invalid_utf8()
    tolerate_invalid_utf8()  # twice is the same
    _, _, unmarshalled = frame.unmarshal(payload)
    assert isinstance(unmarshalled, header.ContentHeader)
    read = unmarshalled.properties
    assert (read.content_type, read.message_id) == ("application/json\ufffd", "id\ufffd")
    assert read.headers == {"h\ufffd": "v"}
