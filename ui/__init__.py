"""The camvideo desktop app (PyQt6): live heatmaps in a window.

Qt lives only in this package; :mod:`camvideo` itself never imports it, so a headless
server can annotate videos without Qt. Start it with ``camvideo live [SOURCE]``
(:func:`camvideo.cli.live.run_live` checks the options, then calls :func:`ui.app.run`).
"""
