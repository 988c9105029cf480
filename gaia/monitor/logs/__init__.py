"""Logs: the bounded stores of container and platform lines, and the loops that fill and trim them.

``store`` holds the contract (``LogStore``: pages with cursors, substring or linear-time regex
search, follow) and the SQLite store (``<data_dir>/logs.db``, one replica), and captures the
platform's own log records (``SystemLogHandler``, secrets redacted before storage);
``postgres`` is the same contract on the platform's PostgreSQL database, read by every replica;
``collector`` reads new container lines from every cluster's provider into the store;
``retention`` deletes lines older than the age bound.
"""
