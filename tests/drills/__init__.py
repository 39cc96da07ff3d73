"""Operational drills: whole deployments started, hurt and audited (``make ha-drill``)."""
