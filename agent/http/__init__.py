"""The health endpoint: /healthz, /status, /metrics."""
