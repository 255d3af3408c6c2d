"""Teacher-side methods: student-friendly teachers (:mod:`kdjax.teachers.sftn`) and intermediate
checkpoint selection (:mod:`kdjax.teachers.selection`).

Submodules are imported explicitly (``from kdjax.teachers import sftn``); this package imports
nothing eagerly, so registering the ``sftn`` model stays cheap.
"""
