"""Code every taskfarm process runs: the messages and how they travel, process
mechanics, system discovery, errors, the Worker class, shared arrays.
"""
