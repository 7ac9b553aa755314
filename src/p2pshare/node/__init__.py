"""The node daemon: the aiohttp server (peer API + local control API), the clients it uses to
talk to the tracker and to other nodes, and the heartbeat."""
