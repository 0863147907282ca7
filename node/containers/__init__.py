"""Docker container management (the docker SDK, always off the event loop)."""
