"""Our own stand-in for the one name infernet-client 1.4.0 imports from `infernet-ml`.

infernet-client declares `infernet-ml` as a dependency, but imports only
`infernet_ml.utils.spec.ServiceResources`, as a type in `cast(...)` around `/resources`
answers. The real package cannot be installed here (its pins clash with this machine's
packages), so tests/daemon/test_infernet_client.py puts this directory on the client venv's
path instead. Written for these tests; not a copy of infernet-ml.
"""
