"""The reservation domain, free of HTTP, AMQP and SQL.

- :mod:`domain.identifiers`: what a username or an item id may look like (shared by the HTTP
  schemas, the message contracts and the path parameters);
- :mod:`domain.reservations`: outcomes, reservations, balances and items;
- :mod:`domain.credits`: the credit decision, as a plain function.

Every other package imports it; it imports none of them.
"""
