"""Upload and download orchestration (async), the transfer manager behind the node's control
API, and the assembly of a node process (runtime.py)."""
