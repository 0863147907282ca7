"""The app <-> CRE runtime bridge (seed 000) and the backend callback endpoints (seed 001 §3)."""
