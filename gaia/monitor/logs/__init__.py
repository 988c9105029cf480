"""Logs: the bounded embedded store of container and platform lines, and the loop that fills it.

``store`` keeps lines in ``<data_dir>/logs.db`` (a total cap and a share per source, searched by
substring or a linear-time regex, followed live) and captures the platform's own log records
(``SystemLogHandler``, secrets redacted before storage); ``collector`` reads new container lines
from every cluster's provider into it.
"""
