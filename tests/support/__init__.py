"""Helpers shared by the tests: servers, proxies, seeds, models."""
