"""Test support for trustee-rl: loopback OpenAI-compatible servers with scripted and schema-driven
responders, and the ground-truth policies that prove the benchmarks' plumbing. Production code never
imports this package."""
