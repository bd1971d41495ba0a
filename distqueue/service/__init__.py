"""The service layer: the rules (submit, claim, ack, stats...) between every front
end and the Store. The protocol server (distqueue.server), direct mode
(distqueue.client.direct) and the admin port (distqueue.web) all sit on it; it
imports none of them."""

from distqueue.service.core import (
    BUILTIN_TYPES,
    Service,
    StoreHealth,
    WorkerInfo,
    keep_trying,
)

__all__ = ["BUILTIN_TYPES", "Service", "StoreHealth", "WorkerInfo", "keep_trying"]
