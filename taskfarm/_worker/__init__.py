"""Worker and zygote processes: run tasks and report how each ended. Runs in
worker (and zygote) processes only.
"""
