"""The daemon's web pages: server-rendered HTML and SVG, a small hand-written script, no CDN.

``rhythmd.web.pages.router`` serves ``/`` (runs), ``/runs/{run_id}`` and ``/compare``.
"""
