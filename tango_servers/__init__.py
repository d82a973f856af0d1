"""Tango device servers of xrd-pipeline: thin layers that call ``pipeline_core``."""
