"""Configuration: loading agent.yaml and conf.d, strict validation."""
