"""The Litestar application: REST controllers, the WebSocket gateway, the CLI."""
