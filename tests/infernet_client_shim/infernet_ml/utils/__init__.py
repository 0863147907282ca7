"""See infernet_ml/__init__.py: a stand-in, written for the client tests."""
