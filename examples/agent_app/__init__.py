"""A FastAPI agent app that streams its runs through pgbridge: ``python -m examples.agent_app``."""
