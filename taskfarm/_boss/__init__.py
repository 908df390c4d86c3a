"""The boss process: its event loop and the pieces it composes (task book,
deadlines, prefetch, error policy, dependencies, the local worker backend). Runs in
the boss process only.
"""
