"""The provincial source system: HTTP client, schedule sync, media cache, reports."""
