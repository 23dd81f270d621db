"""The remote cache of published generations in Azure Blob Storage (``BOOTSTRAP_REMOTE_CACHE``)."""
