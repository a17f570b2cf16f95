"""Usernames and item ids: 1-64 characters of ``[A-Za-z0-9_.-]``; a client's idempotency key.

One rule for every edge that takes one: the HTTP body, the path, and the message on the broker;
the ``Idempotency-Key`` header, and the CLI that sends one.
"""

from typing import Annotated

from pydantic import StringConstraints

IDENTIFIER_PATTERN = r"^[A-Za-z0-9_.\-]{1,64}$"

Identifier = Annotated[str, StringConstraints(pattern=IDENTIFIER_PATTERN)]

# The key a client retries a reservation with (IETF httpapi draft "The Idempotency-Key HTTP
# Header Field"): a Structured Field string's characters, printable ASCII without a quote or a
# backslash (so no escapes), and not only spaces.
MAX_IDEMPOTENCY_KEY_CHARS = 255
IDEMPOTENCY_KEY_PATTERN = rf"^(?! *$)[\x20\x21\x23-\x5b\x5d-\x7e]{{1,{MAX_IDEMPOTENCY_KEY_CHARS}}}$"
# The rule in words, for the API's 400 and the CLI's refusal alike.
IDEMPOTENCY_KEY_RULE = f'1-{MAX_IDEMPOTENCY_KEY_CHARS} printable ASCII characters, without " or \\'
