"""Model manifests shipped with gradprompt (installed as the ``toolkit.manifests`` package data)."""
