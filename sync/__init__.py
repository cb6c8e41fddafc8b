"""Sync with the headquarters archive: the hub (`sync.hub`), the kit's side (`sync.kit`), and
what both speak (hybrid logical clocks and the per-field merge). See README "Sync with
headquarters" for the wire protocol. Nothing here imports Flask except the hub's web layer.
"""
