"""Delivery: originals, web-size JPEGs for social media, and ZIPs of a selection.

Core code, no web framework: the web layer calls these and streams what they return.

* ``web_copy(config, data, record)`` -> the path of a web-size JPEG of a photo or RAW item
  (long side ``editorial.web_long_side``, optional watermark, caption/credit/rights/tags
  embedded as IPTC and XMP), cached as a derivative ``derivatives/<ab>/<sha>/web-<key>.jpg``.
* ``zip_stream(data, records, variant=..., config=...)`` -> an iterator of bytes: a ZIP of
  the selection made while it is sent, in bounded memory, with nothing written to disk.
* ``zip_name(records, ...)`` -> a download file name for it.
"""

from appliance.delivery.webcopy import (
    DeliveryError,
    NotAPhoto,
    Undecodable,
    WatermarkError,
    embedded_metadata,
    original_path,
    web_copy,
    web_copy_name,
)
from appliance.delivery.zipstream import (
    ERRORS_ENTRY,
    TooManyItems,
    entry_names,
    safe_component,
    zip_name,
    zip_stream,
)

__all__ = [
    "ERRORS_ENTRY",
    "DeliveryError",
    "NotAPhoto",
    "TooManyItems",
    "Undecodable",
    "WatermarkError",
    "embedded_metadata",
    "entry_names",
    "original_path",
    "safe_component",
    "web_copy",
    "web_copy_name",
    "zip_name",
    "zip_stream",
]
