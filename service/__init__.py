"""What a long-running service process needs besides its work, shared by the API and the workers.

- :mod:`service.startup`: a service that cannot start says so in one line; the start-up
  failures it knows (``STARTUP_FAILURES``) are listed once, for every composition root.
- :mod:`service.gc_tuning`: the garbage collector's settings for a long-running service.
- :mod:`service.open_files`: the API's soft limit on open files, raised to the hard one.
- :mod:`service.notify`: a worker tells a supervisor that asked (``NOTIFY_SOCKET``) it is ready.
"""
