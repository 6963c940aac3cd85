"""The daemon's web pages: server-rendered HTML and SVG, interactive charts drawn with the
vendored uPlot when scripts run, nothing loaded from outside the daemon.

``rhythmd.web.pages.router`` serves ``/`` (runs), ``/runs/{run_id}`` and ``/compare``.
"""
