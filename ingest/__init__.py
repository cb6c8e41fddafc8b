"""Getting media off cards, cameras and folders into the archive without losing a byte.

This package never imports Flask: the web UI, the device watcher and the CLI all drive the
same pipeline (`ingest.pipeline`) and only answer its questions.
"""
