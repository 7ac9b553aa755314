"""p2pshare: a peer-to-peer file sharing and storage network."""

__version__ = "0.1.0"
