"""The web dashboard (``ui.*``): login, sessions, pages and the ``{path}/api/*`` JSON routes."""
