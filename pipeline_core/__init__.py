"""Pure-Python core of xrd-pipeline: read, stitch, integrate and merge area-detector frames.

Nothing in this package imports Tango: the device servers in ``tango_servers`` call into it, and
it is unit-tested on its own.
"""

__version__ = "0.1.0"
