"""bootstrap: a declarative package bootstrapper for Python workflow hosts.

The public API is three functions. ``startup()`` syncs the packages folder with
the committed requirements file if needed and puts the active generation on
``sys.path``; ``activate()`` only does the latter; ``read_manifest()`` returns
what the active generation holds. Importing this package is cheap: the sync
machinery loads only when a sync is needed.
"""

from __future__ import annotations

from bootstrap.activation import activate, read_manifest, startup

__all__ = ["activate", "read_manifest", "startup"]
__version__ = "0.1.0"
