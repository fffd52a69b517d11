"""Helpers of the LiverSegmentation Slicer module, one concern per file (parameters, process, scene, install)."""
