"""The desired set: the committed file and the runtime overlay, read under the operator's policy,
checked against the host. Built once per sync and never changed after."""

from __future__ import annotations

import dataclasses

from bootstrap.inputs import host, orgs, overlay, requirements
from bootstrap.inputs.requirements import Desired
from bootstrap.settings import Settings
from bootstrap.store.fs import file_sha256, text_sha256


def policy_for(settings: Settings) -> requirements.Policy:
    """What the operator allows a requirements file (committed, or the runtime overlay) to say."""
    return requirements.Policy(
        allow_index_options=settings.allow_index_options,
        allow_direct_references=settings.allow_direct_references,
        allow_outside_includes=settings.allow_outside_includes,
    )


def read_desired(
    settings: Settings, *, runtime: bool = True, overlay_text: str | None = None
) -> tuple[Desired, host.HostScan]:
    """The desired set and what the host has (its application's packages, bootstrap's own tools).

    The committed file, and with ``runtime`` the packages added at run time (``overlay_text``, the
    overlay as it is to be, or else the overlay on disk), read under the operator's policy and
    checked against the host's own packages.
    """
    policy = policy_for(settings)
    # An organisation's set is the workspace's pins and its own file (``inputs.orgs``).
    desired = (
        orgs.layered(settings, policy)
        if settings.org is not None
        else requirements.read(settings.requirements_file, policy)
    )
    if runtime:
        overlay_file = settings.layout.runtime_requirements
        if overlay_text is None:
            lines = overlay.read_overlay(overlay_file, policy)
            sha256 = file_sha256(overlay_file)
        else:
            lines = overlay.parse_overlay(overlay_file, overlay_text, policy)
            sha256 = text_sha256(overlay_text)
        desired = overlay.merged(desired, lines, {str(overlay_file): sha256}, settings.org)
    # The host's packages, bootstrap's generations left out: the workspace's folder holds every organisation's.
    found = host.scan(settings.workspace.packages_dir if settings.workspace is not None else settings.packages_dir)
    host_dists = found.packages
    host.check_requirements(desired, host_dists, settings.host_overrides)
    desired = dataclasses.replace(
        desired,
        host_constraints=host.constraints_text(host_dists, settings.host_overrides),
        require_hashes=settings.require_hashes,
    )
    return desired, found
