"""Tests of the taylorism compatibility layer: fetching and adapting taylorism's own
suite (:mod:`.fetch_and_adapt`) and the footprints workers our own tests use
(:mod:`.compat_workers`, imported only by those tests)."""
