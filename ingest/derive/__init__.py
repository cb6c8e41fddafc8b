"""Derivatives of archived items (thumbnails, previews, proxies), kept in a regenerable tree."""
