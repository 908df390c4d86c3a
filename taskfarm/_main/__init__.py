"""The main program's side of a farm: the Boss handle, checking and matching
instructions, the receiver thread, reports. Runs in the main program only.
"""
