"""The web interface (``xrd-pipeline web``): Starlette + uvicorn over :mod:`..chain_client`.

Only :mod:`.command` (and the configuration it reads) is imported without the ``[web]`` extra.
"""
