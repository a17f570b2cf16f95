"""The fulfilment worker: consumes ``reservation.confirmed`` and prepares the download.

It runs after the HTTP response has gone back, yet its spans continue the same trace: the
asynchronous tail that Tempo makes visible.
"""
