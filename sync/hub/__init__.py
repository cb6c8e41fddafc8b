"""The headquarters hub: tus uploads from paired kits, verified, merged into one archive."""
