"""Security: identity keys, TLS contexts, request signing and chunk encryption (design.md §6).

This room sits between the services (tracker, node, transfer) and ``core``: it imports only
``core``, and the tracker and the node both use it.
"""
