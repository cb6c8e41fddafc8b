"""The printed mural and the monthly results report (no Flask: the CLI and the web UI call
this).

Reading order:
- content.py: what goes on the mural: the month's activities by area, their best approved
  photos (rating, picked, capture time), read from the query index and the agenda.
- layout.py: a pure function from that content and a paper size to placed boxes (header,
  areas, activities, photos, captions, footer) that never overlap and stay inside the
  margins; when the month does not fit, photos shrink, then fewer per activity, then more
  sheets.
- text.py and fonts.py: text cleaned of control and bidi characters, wrapped to its box with
  DejaVu Sans's own measurements, ellipsized ("…") at a word boundary when it must be.
- render.py: Pillow draws the boxes at the print resolution; the PDF (exact paper size in
  points) and a PNG preview; the web UI's cache under state/reports/.
- results.py: the results report's figures per area, and its A4 PDF with bar charts.
"""

from appliance.mural.content import NoApprovedPhotos
from appliance.mural.layout import PAPERS

__all__ = ["PAPERS", "NoApprovedPhotos"]
