"""messaging.lenient_decoding: pamqp's decoders, without the failures a publisher can cause."""

import datetime
from typing import Any

import pytest
from pamqp import commands, common, decode, encode, frame, header

from messaging import lenient_decoding
from messaging.lenient_decoding import MAX_DEPTH, field_table, short_str, timestamp


@pytest.fixture
def installed(monkeypatch: pytest.MonkeyPatch) -> None:
    """The decoders in pamqp's tables for this test only (install() changes them for good)."""
    for name in ("shortstr", "timestamp", "table"):
        monkeypatch.setitem(decode.METHODS, name, decode.METHODS[name])
    for kind in (b"T", b"F", b"A"):
        monkeypatch.setitem(decode.TABLE_MAPPING, kind, decode.TABLE_MAPPING[kind])
    lenient_decoding.install()
    lenient_decoding.install()  # twice is the same


def _short(data: bytes) -> bytes:
    return bytes([len(data)]) + data


def test_a_short_string_that_is_not_utf8_decodes_with_replacement_characters() -> None:
    data = _short(b"application/json\xff")
    with pytest.raises(UnicodeDecodeError):
        decode.short_str(data)
    assert short_str(data + b"rest") == (18, "application/json\ufffd")


def test_valid_data_decodes_as_pamqp_decodes_it() -> None:
    data = _short("caf\u00e9".encode())
    assert short_str(data) == decode.short_str(data)
    moment = datetime.datetime(2026, 12, 5, tzinfo=datetime.UTC)
    table = encode.field_table(
        {"a": "text", "nested": {"b": 1, "c": [1, "x", {"d": moment}]}, "t": moment}
    )
    assert field_table(table) == decode.field_table(table)
    stamp = encode.timestamp(moment)
    assert timestamp(stamp) == decode.timestamp(stamp)


def test_a_table_key_that_is_not_utf8_decodes_with_replacement_characters() -> None:
    # Keys of equal length, so the encoded lengths stay right when a byte is swapped in.
    table = encode.field_table({"kx": "v", "nested": {"jx": 1}, "list": [{"ix": 2}], "ok": "zzQ"})
    table = table.replace(b"kx", b"k\xff").replace(b"jx", b"j\xfe").replace(b"ix", b"i\xfd")
    table = table.replace(b"zzQ", b"zz\xff")
    with pytest.raises(UnicodeDecodeError):
        decode.field_table(table)
    # A long string value that is not UTF-8 stays bytes, as pamqp has it.
    expected = {"k\ufffd": "v", "nested": {"j\ufffd": 1}, "list": [{"i\ufffd": 2}], "ok": b"zz\xff"}
    assert field_table(table) == (len(table), expected)


def _nested(depth: int) -> common.FieldTable:
    table: common.FieldTable = {"leaf": 1}
    for _ in range(depth):
        table = {"kx": table, "jx": "after"}
    return table


def test_tables_nested_past_the_limit_are_kept_as_bytes() -> None:
    """Each level with a key that is not UTF-8 after its nested table: decoded once per level
    (a strict try first, then a lenient one, was 2 ** depth decodes: seconds at depth 20)."""
    encoded = encode.field_table(_nested(MAX_DEPTH + 8)).replace(b"jx", b"j\xff")
    consumed, decoded = field_table(encoded)
    assert consumed == len(encoded)
    level: Any = decoded
    for _ in range(MAX_DEPTH):
        assert isinstance(level, dict) and level["j\ufffd"] == "after"
        level = level["kx"]
    assert isinstance(level, bytes)  # the rest, undecoded


def test_a_timestamp_datetime_cannot_hold_decodes_as_none() -> None:
    far = common.Struct.timestamp.pack(2**63 - 1)
    with pytest.raises((ValueError, OverflowError, OSError)):
        decode.timestamp(far)
    assert timestamp(far) == (8, None)
    with pytest.raises(ValueError):
        timestamp(far[:5])  # not a timestamp at all


def test_malformed_framing_is_still_a_value_error() -> None:
    table = encode.field_table({"kx": "value"})
    with pytest.raises(ValueError, match="exceeds"):
        field_table(table[:-3])  # the length says more than there is
    inner = table[:4] + bytes([200]) + table[5:]  # a key length past the table's end
    with pytest.raises(ValueError, match="key length"):
        field_table(inner)


@pytest.mark.usefixtures("installed")
def test_installed_a_content_header_with_such_properties_unmarshals() -> None:
    """What aiormq's frame reader does with a delivery's content header."""
    moment = datetime.datetime(2026, 12, 5, tzinfo=datetime.UTC)
    properties = commands.Basic.Properties(
        content_type="application/jsonX",
        message_id="idX",
        headers={"hX": "v", "deep": _nested(MAX_DEPTH + 4)},
        timestamp=moment,
    )
    payload = frame.marshal(header.ContentHeader(0, 10, properties), 1)
    far = common.Struct.timestamp.pack(2**63 - 1)
    stamp = common.Struct.timestamp.pack(int(moment.timestamp()))
    payload = payload.replace(b"jsonX", b"json\xff").replace(b"idX", b"id\xfe")
    payload = payload.replace(b"hX", b"h\xfd").replace(stamp, far)
    with pytest.raises(Exception, match="unmarshal"):
        _unmarshal_strictly(payload)
    _, _, unmarshalled = frame.unmarshal(payload)
    assert isinstance(unmarshalled, header.ContentHeader)
    read = unmarshalled.properties
    assert (read.content_type, read.message_id) == ("application/json\ufffd", "id\ufffd")
    assert read.headers is not None and read.headers["h\ufffd"] == "v"
    assert read.timestamp is None


def _unmarshal_strictly(payload: bytes) -> None:
    """pamqp's own decoders, for the same bytes."""
    saved = dict(decode.METHODS), dict(decode.TABLE_MAPPING)
    decode.METHODS.update(shortstr=decode.short_str, timestamp=decode.timestamp)
    decode.METHODS["table"] = decode.field_table
    decode.TABLE_MAPPING.update({b"T": decode.timestamp, b"F": decode.field_table})
    decode.TABLE_MAPPING[b"A"] = decode.field_array
    try:
        frame.unmarshal(payload)
    finally:
        decode.METHODS.update(saved[0])
        decode.TABLE_MAPPING.update(saved[1])


def test_deep_arrays_are_kept_as_bytes_and_a_far_header_timestamp_is_none() -> None:
    array: common.FieldArray = [1]
    for _ in range(MAX_DEPTH + 4):
        array = [array, "after"]
    far = common.Struct.timestamp.pack(2**63 - 1)
    moment = datetime.datetime(2026, 12, 5, tzinfo=datetime.UTC)
    table = encode.field_table({"list": array, "when": moment})
    table = table.replace(common.Struct.timestamp.pack(int(moment.timestamp())), far)
    consumed, decoded = field_table(table)
    assert consumed == len(table) and isinstance(decoded, dict)
    assert decoded["when"] is None
    level: Any = decoded["list"]
    for _ in range(MAX_DEPTH - 1):  # the table is one level, its arrays the rest
        assert isinstance(level, list) and level[1] == "after"
        level = level[0]
    assert isinstance(level, bytes)
