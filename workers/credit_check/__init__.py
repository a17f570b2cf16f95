"""The credit-check worker: consumes ``reservation.requested``, checks and deducts credits,
replies to the API and announces confirmed reservations."""
