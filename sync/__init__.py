"""Sync with the headquarters archive (tus uploads, metadata merge).

Empty until the sync issue lands; kept so the package layout matches the design card.
"""
