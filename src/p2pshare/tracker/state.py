"""What the lifespan opens and the handlers use, kept on ``app.state.tracker``."""

from __future__ import annotations

from dataclasses import dataclass, field

from p2pshare.security.signing import ReplayGuard
from p2pshare.tracker.audit import AuditDesk
from p2pshare.tracker.clock import Clock
from p2pshare.tracker.db import Database
from p2pshare.tracker.liveness import Liveness
from p2pshare.tracker.repair import RepairDesk
from p2pshare.tracker.repository import Repository
from p2pshare.tracker.settings import TrackerSettings
from p2pshare.tracker.signatures import SignatureChecks


@dataclass(frozen=True, slots=True)
class TrackerState:
    """The open database, the liveness map and the repository of one running tracker."""

    settings: TrackerSettings
    clock: Clock
    db: Database
    liveness: Liveness
    repo: Repository
    repairs: RepairDesk
    audits: AuditDesk
    announce_ack: bytes
    """the answer to every announce, serialized once"""
    replays: ReplayGuard = field(default_factory=ReplayGuard)
    """the signed requests seen within the signature window (each is accepted once)"""
    signatures: SignatureChecks = field(default_factory=SignatureChecks)
    """the checker process of signed requests (started and stopped by the app)"""
