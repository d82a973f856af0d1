"""The chain's clients: what operators use, apart from the device servers (``tango_servers``) and the core.

``chain_client`` and its neighbours (device names, settings requests, the scan read so far, state
colours, shared event subscriptions) are the one Tango-side layer both user interfaces stand on:
``panel`` (Taurus/Qt, ``xrd-pipeline panel``) and ``web`` (Starlette, ``xrd-pipeline web``).
"""
