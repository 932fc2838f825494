"""Test doubles for trustee-rl: a loopback OpenAI-compatible server."""
