"""The chunk store on disk: content-addressed files, per-chunk locks, quota, reservations,
atomic writes and the integrity scan. Disk I/O happens here, always off the event loop."""
