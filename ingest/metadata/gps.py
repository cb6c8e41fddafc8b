"""GPS positions from EXIF (photos) and ISO 6709 strings (videos), checked for plausibility.

Why: receivers without a fix write 0,0 ("null island") or a GPSStatus of V, and hostile files
write anything; a wrong position in the catalog is worse than none, so such values become None.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from ingest.metadata.values import clean_text, finite, rational

_ISO6709_RE = re.compile(r"([+-][\d.]+)([+-][\d.]+)([+-][\d.]+)?(?:CRS[^/]*)?/?")


def gps_from_exif(gps: Mapping[int, object]) -> dict | None:
    """{"lat", "lon", "alt"} in decimal degrees and metres from an EXIF GPS IFD, or None."""
    if not gps or (clean_text(gps.get(9)) or "").upper() == "V":  # GPSStatus V: no fix
        return None
    lat, lon = _dms(gps.get(2)), _dms(gps.get(4))
    if lat is None or lon is None:
        return None
    if (clean_text(gps.get(1)) or "").upper() == "S":
        lat = -lat
    if (clean_text(gps.get(3)) or "").upper() == "W":
        lon = -lon
    alt = rational(gps.get(6))
    if alt is not None and gps.get(5) in (1, b"\x01"):  # GPSAltitudeRef 1: below sea level
        alt = -alt
    return plausible_gps(lat, lon, alt)


def _dms(raw: object) -> float | None:
    """EXIF degrees, minutes, seconds (three rationals) as decimal degrees."""
    if not isinstance(raw, tuple | list) or not 1 <= len(raw) <= 3:
        return None
    parts = [rational(v) for v in raw]
    if any(p is None or p < 0 for p in parts):
        return None
    return sum(p / 60**i for i, p in enumerate(parts))


def plausible_gps(lat: float | None, lon: float | None, alt: float | None) -> dict | None:
    """Decimal degrees, or None for missing, out-of-range, or 0,0 (a receiver without a fix)."""
    if lat is None or lon is None or not (-90 <= lat <= 90 and -180 <= lon <= 180):
        return None
    if lat == 0 and lon == 0:
        return None
    return {
        "lat": round(lat, 7),
        "lon": round(lon, 7),
        "alt": None if alt is None else round(alt, 2),
    }


def parse_iso6709(raw: object) -> dict | None:
    """ISO 6709 ("+19.4326-099.1332+2240.000/") from a video's location tag."""
    text = clean_text(raw)
    match = _ISO6709_RE.fullmatch(text) if text else None
    if match is None:
        return None
    lat = _iso6709_angle(match.group(1), 2)
    lon = _iso6709_angle(match.group(2), 3)
    alt = finite(match.group(3)) if match.group(3) else None
    return plausible_gps(lat, lon, alt)


def _iso6709_angle(text: str, degree_digits: int) -> float | None:
    """±DD.D, ±DDMM.M or ±DDMMSS.S (latitude; longitude has one more degree digit)."""
    sign = -1.0 if text[0] == "-" else 1.0
    whole, _, fraction = text[1:].partition(".")
    if not whole.isdigit() or (fraction and not fraction.isdigit()):
        return None
    if len(whole) - degree_digits not in (0, 2, 4):
        return None
    # Degrees, then two digits each of minutes and seconds; the fraction belongs to the last.
    fields = [whole[:degree_digits]]
    fields += [whole[i : i + 2] for i in range(degree_digits, len(whole), 2)]
    numbers = [float(f) for f in fields]
    numbers[-1] += float(f"0.{fraction}") if fraction else 0.0
    return sign * sum(n / 60**i for i, n in enumerate(numbers))
