"""CPython's own ``concurrent.futures`` tests run against ``taskfarm.Executor``: the
fetch script (``fetch.sh``) and the adapter that substitutes the executor class."""
