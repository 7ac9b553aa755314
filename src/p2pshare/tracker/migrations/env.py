"""Alembic environment for the ``alembic`` command; the tracker itself uses migrate.upgrade."""

from p2pshare.tracker.migrate import run_env

run_env()
