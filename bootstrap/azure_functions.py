"""``from bootstrap.azure_functions import register``: the documented import for Azure Functions hosts.

The implementation lives in ``bootstrap.host.azure_functions``; this name stays as the README gives it.
"""

from __future__ import annotations

from bootstrap.host.azure_functions import WORKFLOW_NAME, register

__all__ = ["WORKFLOW_NAME", "register"]
