"""The tracker: the catalogue service every node talks to (design.md §1, §4).

It knows which nodes are online and how much space they offer, which files exist, and which
node holds which chunk. Modules, one idea each:

- :mod:`.settings`   the tracker's frozen settings, taken from :class:`p2pshare.config.Settings`
- :mod:`.clock`      wall and monotonic time, injectable for tests
- :mod:`.db`         engine and sessions (SQLite WAL pragmas, one writer at a time on SQLite)
- :mod:`.models`     the SQLAlchemy tables
- :mod:`.migrate`    Alembic migrations, applied on start
- :mod:`.liveness`   announces kept in memory, written behind in batches
- :mod:`.repository` every query; the one owner check
- :mod:`.problems`   errors -> ``application/problem+json``
- :mod:`.limits`     the request body size limit (pure ASGI middleware)
- :mod:`.routes`     the thin ``/v1`` handlers
- :mod:`.guard`      per-source rate, request head size and read deadlines
- :mod:`.fastlane`   announces and file details answered past FastAPI (announces below ASGI)
- :mod:`.app`        ``create_app`` and its lifespan
- :mod:`.server`     uvicorn runner

The tracker imports only :mod:`p2pshare.core` and :mod:`p2pshare.config`.
"""
