"""Message consumers, one subpackage per worker (``python -m workers.<name>``)."""
