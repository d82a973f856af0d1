"""The operator panel (``xrd-pipeline panel``): Taurus widgets on Qt, over :mod:`..chain_client`.

Only :mod:`.command` is imported without the ``[panel]`` extra; the widgets load when it runs.
"""
