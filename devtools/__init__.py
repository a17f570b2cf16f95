"""What the CLI, the benchmark and the tests share to run the system on this machine.

Child processes (:mod:`devtools.processes`), local addresses and free ports
(:mod:`devtools.addresses`), bounded waits (:mod:`devtools.waiting`), private RabbitMQ
virtual hosts (:mod:`devtools.vhosts`), load statistics (:mod:`devtools.load_stats`) and the
span tree of a trace (:mod:`devtools.span_tree`). None of it is imported by the services.
"""
