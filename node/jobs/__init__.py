"""Container jobs: the one orchestrator every front door (HTTP, chain, CRE, registry) uses."""
