"""Typed application state (``web.AppKey``): the services and the HTTP-side objects."""

from __future__ import annotations

from aiohttp import web

from authgate.compose import Services
from authgate.config.model import Settings
from authgate.metrics import Metrics
from authgate.stores.base import Stores
from authgate.tokens.revocation import RevocationList
from authgate.web.context import Doors
from authgate.web.identity import IdentityHeaders
from authgate.web.reload import ConfigReloader

SERVICES = web.AppKey("services", Services)
SETTINGS = web.AppKey("settings", Settings)
METRICS = web.AppKey("metrics", Metrics)
STORES = web.AppKey("stores", Stores)
REVOCATIONS = web.AppKey("revocations", RevocationList)
IDENTITY = web.AppKey("identity", IdentityHeaders)
DOORS = web.AppKey("doors", Doors)
DRAINING = web.AppKey("draining", list[bool])
RELOADER = web.AppKey("reloader", ConfigReloader)
# The ops listener's application (server.ops_port): the operations endpoints and the admin
# API, sharing the traffic application's state. Absent: those are on the traffic port.
OPS_APP = web.AppKey("ops_app", web.Application)
