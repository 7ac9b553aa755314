"""Pure logic, no I/O: errors, ids, sizes, chunk plans, Merkle trees and manifests.

Nothing in this package opens a file, a socket or a clock it was not handed; tests drive it
with plain values.
"""
