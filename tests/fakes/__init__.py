"""Fakes of the paid outside services, spoken to over real HTTP on loopback."""
