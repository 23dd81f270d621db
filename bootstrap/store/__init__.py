"""The packages folder on disk, and the start-up fast path: the standard library only.

``paths`` (where things are, from the environment), ``fs`` (atomic writes,
hashes), ``layout`` (the folder's parts), ``manifest`` (the typed pointer),
``freshness`` (is the active generation still what the files ask for?),
``records`` (a site folder's distributions and their RECORD files), ``registry``
(running hosts and the generations they use), ``locks`` (the build lock) and
``safety`` (folders that are safe to import from). Nothing here imports a
layer above, and nothing but ``locks`` imports beyond the standard library.
"""
