"""LiverSegmentation in a web browser: one-click liver segmentation and refinement with Slicer's own core.

Built on trame-slicer (Kitware's web front end over the MRML scene, segment editor and views of 3D Slicer) and on
the Slicer module's library (``LiverSegmentationLib``: background worker, segments with terminology, statistics)
and the engine (``liverseg``: inference, file writers). Optional: ``pip install liverseg[web]``; start with
``liverseg-web`` (see ``liverseg-web --help``). Each browser session gets its own server process and scene
(``launcher.py``); ``app.py`` is one session.
"""
