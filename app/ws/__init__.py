"""The WebSocket gateway (flow 3): authentication, per-socket delivery, the node's fan-out consumer."""
