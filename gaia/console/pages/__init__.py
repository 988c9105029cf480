"""The console's pages, one module per group: ``home`` (login, overview, language), ``clusters``
(nodes, GPU topology tree, node actions), ``businesses`` (members, quotas, instance
configurations, ConfigMaps and Secrets), ``apps`` (list, create, the app's tabs), ``alerts``,
``alert_policies`` and ``alert_targets`` (alert records and silencing; policies and built-in
rules; channels, receivers and silences), ``live`` (monitoring charts, logs with follow, the web
terminal) and ``records`` (operation records and events). Each reads and acts through the API as
the logged-in user (``gaia.console.web``)."""
