"""The Sanic gateway: clients' WebSocket, SSE and HTTP connections to Burrow."""
