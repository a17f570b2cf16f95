"""Usernames and item ids: 1-64 characters of ``[A-Za-z0-9_.-]``.

One rule for every edge that takes one: the HTTP body, the path, and the message on the broker.
"""

from typing import Annotated

from pydantic import StringConstraints

IDENTIFIER_PATTERN = r"^[A-Za-z0-9_.\-]{1,64}$"

Identifier = Annotated[str, StringConstraints(pattern=IDENTIFIER_PATTERN)]
