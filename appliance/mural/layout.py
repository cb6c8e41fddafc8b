"""The printed mural's layout: content and a paper size in, a list of placed boxes out.

A pure function of its inputs (the fonts are only measured), so a test can check the result
without drawing it: no two boxes overlap, every box lies inside the page's margins, and
every text box holds its lines as measured with the font it is drawn with.

The page: the institution, the mural's title and the month at the top, over a rule; then
the body in columns (A3 two, A2 three, A1 four), where each area has a heading and each of
its activities a block: its title, when and where, then its photos in justified rows (every
photo keeps its shape; a row fills the column's width) with each caption under its photo;
a footer line with the photographers' credits and the sheet's number. Blocks flow down a
column and on to the next one; a block that fits in no column whole is split between its
rows, never inside a row; an area's heading always stays with its first activity.

Too much for one sheet: the photos shrink first (row height from about two thirds of a
column's width down to 24 mm on A3, more on larger paper), then each activity shows fewer of
its best photos (`mural.photos_per_activity` down to one). Only when one photo per activity
at the smallest size does not fit either does the mural continue on more sheets: as few as
that takes, and on those the most photos at the largest size that fit. The columns of a
one-sheet mural are balanced (they end at about the same height). Photos left out are
listed (`omitted`), and so is every text that had to end in "…" (`ellipsized`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from appliance.mural.content import MuralActivity, MuralContent, MuralPhoto
from appliance.mural.fonts import Fonts
from appliance.mural.text import fit, wrap

# paper -> (width mm, height mm, columns)
PAPERS: dict[str, tuple[int, int, int]] = {
    "A1": (594, 841, 4), "A2": (420, 594, 3), "A3": (297, 420, 2),
}
MM_PER_INCH = 25.4
# Colours by name; boxes carry the name, the renderer the values.
PALETTE: dict[str, tuple[int, int, int]] = {
    "paper": (255, 255, 255), "ink": (30, 30, 30), "accent": (122, 28, 58),
    "muted": (92, 92, 92),
}
CAPTION_LINES = 3
TITLE_LINES = 3
WHEN_LINES = 2
AREA_LINES = 2
# After an area's name when its heading is repeated on a later sheet (the mural is in Spanish).
CONTINUED = "(continuación)"
SHEET = "Hoja {page} de {pages}"
CREDITS = "Fotografías: {names}"


@dataclass(frozen=True)
class Page:
    paper: str
    dpi: int
    width: int  # px
    height: int
    scale: float  # typography and spacing relative to A3

    @classmethod
    def of(cls, paper: str, dpi: int) -> Page:
        if paper not in PAPERS:
            raise ValueError(f"unknown paper size {paper!r}: use one of {', '.join(PAPERS)}")
        width_mm, height_mm, _ = PAPERS[paper]
        return cls(paper=paper, dpi=dpi, width=round(width_mm * dpi / MM_PER_INCH),
                   height=round(height_mm * dpi / MM_PER_INCH),
                   scale=math.sqrt(width_mm / PAPERS["A3"][0]))

    def mm(self, value: float) -> int:
        """`value` mm (times the paper's scale) in px."""
        return max(1, round(value * self.scale * self.dpi / MM_PER_INCH))

    def pt(self, value: float) -> int:
        """A font size of `value` points (times the paper's scale) in px."""
        return max(6, round(value * self.scale * self.dpi / 72))

    @property
    def margin(self) -> int:
        return self.mm(12)

    @property
    def columns(self) -> int:
        return PAPERS[self.paper][2]

    @property
    def points(self) -> tuple[float, float]:
        """The page size in PDF points (1/72 in)."""
        return self.width * 72 / self.dpi, self.height * 72 / self.dpi


@dataclass(frozen=True)
class Box:
    """A placed rectangle: [x, x + w) x [y, y + h) in px on sheet `page` (from 0)."""

    page: int
    kind: str  # institution title month rule area area_rule activity when photo caption footer
    x: int
    y: int
    w: int
    h: int
    lines: tuple[str, ...] = ()
    style: str = ""  # font: regular or bold
    size: int = 0  # font size, px
    line_height: int = 0
    inset: int = 0  # room kept left and right of the lines
    top: int = 0  # from the top of a line box to the font's ascender line
    color: str = "ink"
    sha256: str = ""
    ellipsized: bool = False
    dropped: str = ""  # characters left out: the printing font has no glyph for them

    @property
    def right(self) -> int:
        return self.x + self.w

    @property
    def bottom(self) -> int:
        return self.y + self.h

    def overlaps(self, other: Box) -> bool:
        return (self.page == other.page and self.x < other.right and other.x < self.right
                and self.y < other.bottom and other.y < self.bottom)

    def moved(self, page: int, dx: int, dy: int) -> Box:
        return replace(self, page=page, x=self.x + dx, y=self.y + dy)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"page": self.page, "kind": self.kind, "x": self.x, "y": self.y,
                               "w": self.w, "h": self.h}
        if self.lines:
            out.update(lines=list(self.lines), style=self.style, size=self.size,
                       line_height=self.line_height, inset=self.inset, top=self.top,
                       ellipsized=self.ellipsized)
        out["color"] = self.color
        if self.sha256:
            out["sha256"] = self.sha256
        return out


@dataclass
class Layout:
    page: Page
    pages: int
    boxes: list[Box]
    photos_per_activity: int  # the most any activity shows
    photo_height: int  # the row height aimed at, px
    omitted: list[str] = field(default_factory=list)  # approved photos left out (sha256)

    @property
    def ellipsized(self) -> list[Box]:
        """Texts printed otherwise than typed: shortened with "…", or without characters
        the font lacks (`dropped`)."""
        return [box for box in self.boxes if box.ellipsized or box.dropped]

    @property
    def photos(self) -> list[Box]:
        return [box for box in self.boxes if box.kind == "photo"]

    def as_dict(self) -> dict[str, Any]:
        width_pt, height_pt = self.page.points
        return {
            "paper": self.page.paper, "dpi": self.page.dpi, "width": self.page.width,
            "height": self.page.height, "width_pt": round(width_pt, 2),
            "height_pt": round(height_pt, 2), "margin": self.page.margin,
            "pages": self.pages, "photos_per_activity": self.photos_per_activity,
            "photo_height_mm": round(self.photo_height * MM_PER_INCH / self.page.dpi, 1),
            "omitted": list(self.omitted),
            "ellipsized": [{"kind": b.kind, "page": b.page, "sha256": b.sha256 or None,
                            "text": " ".join(b.lines), "shortened": b.ellipsized,
                            "dropped": b.dropped} for b in self.ellipsized],
            "boxes": [box.as_dict() for box in self.boxes],
        }


# --- measuring ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Type:
    style: str
    sizes: tuple[int, ...]  # largest first; the first is the one used when no shrinking
    color: str


class _Sizes:
    """The mural's type and spacing on one paper size."""

    def __init__(self, page: Page) -> None:
        pt, mm = page.pt, page.mm
        self.institution = _Type("bold", tuple(pt(v) for v in (15, 13, 11, 10)), "accent")
        self.title = _Type("bold", tuple(pt(v) for v in (40, 34, 28, 24)), "ink")
        self.month = _Type("regular", tuple(pt(v) for v in (26, 22, 18, 16)), "accent")
        self.area = _Type("bold", tuple(pt(v) for v in (21, 18, 16)), "accent")
        self.activity = _Type("bold", (pt(14),), "ink")
        self.when = _Type("regular", (pt(10),), "muted")
        self.caption = _Type("regular", (pt(8.5),), "ink")
        self.footer = _Type("regular", (pt(8),), "muted")
        self.gutter = mm(8)
        self.header_gap = mm(1.5)
        self.rule = max(2, mm(1.0))
        self.area_rule = max(1, mm(0.45))
        self.after_header = mm(7)
        self.before_footer = mm(4)
        self.block_gap = mm(7)
        self.unit_gap = mm(3)  # between the rows of photos of one activity
        self.after_area = mm(2.5)
        self.after_title = mm(1)
        self.after_when = mm(2.5)
        self.photo_gap = mm(2.5)
        self.caption_gap = mm(1.2)
        self.min_photo = mm(24)
        self.min_caption = mm(30)  # the narrowest photo, for its caption's sake


class _Measure:
    """Text boxes measured with the fonts, cached (the layout is tried at many sizes)."""

    def __init__(self, fonts: Fonts) -> None:
        self.fonts = fonts
        self._boxes: dict[tuple[Any, ...], Box | None] = {}

    def text(self, kind: str, kind_type: _Type, text: str, width: int, max_lines: int, *,
             sha256: str = "", one_line_first: bool = False) -> Box | None:
        """A box `width` wide at (0, 0) holding `text`, or None for no text."""
        key = (kind, kind_type, text, width, max_lines, sha256, one_line_first)
        if key in self._boxes:
            return self._boxes[key]
        box = None
        text, dropped = self.fonts.drawable(kind_type.style, text)
        text = " ".join(text.split())
        if text:
            size = kind_type.sizes[0]
            inset = self.fonts.inset(size)
            if len(kind_type.sizes) > 1:
                fitted = fit(self.fonts, kind_type.style, list(kind_type.sizes), text,
                             width - 2 * inset, max_lines, one_line_first=one_line_first)
                size, wrapped = fitted.size, fitted.wrapped
            else:
                wrapped = wrap(self.fonts, kind_type.style, size, text, width - 2 * inset,
                               max_lines)
            line_height = self.fonts.line_height(kind_type.style, size)
            box = Box(page=0, kind=kind, x=0, y=0, w=width,
                      h=line_height * len(wrapped.lines), lines=wrapped.lines,
                      style=kind_type.style, size=size, line_height=line_height, inset=inset,
                      top=self.fonts.top(kind_type.style, size), color=kind_type.color,
                      sha256=sha256, ellipsized=wrapped.ellipsized, dropped=dropped)
        self._boxes[key] = box
        return box


# --- the blocks that flow into columns ------------------------------------------------------


@dataclass(frozen=True)
class _Unit:
    """Boxes that stay together in one column, at positions relative to the unit's corner."""

    height: int
    boxes: tuple[Box, ...]
    glue: bool = False  # stays in the same column as the unit after it


def _stack(parts: Iterable[tuple[Box | _Unit | None, int]]) -> _Unit:
    """Boxes and units one under the other, each followed by its gap (the last gap dropped)."""
    boxes: list[Box] = []
    y = 0
    last_gap = 0
    for part, gap in parts:
        if part is None:
            continue
        if isinstance(part, _Unit):
            boxes.extend(b.moved(0, 0, y) for b in part.boxes)
            y += part.height + gap
        else:
            boxes.append(part.moved(0, 0, y))
            y += part.h + gap
        last_gap = gap
    return _Unit(height=max(0, y - last_gap), boxes=tuple(boxes))


def _rows(photos: tuple[MuralPhoto, ...], target: int, width: int, sizes: _Sizes,
          measure: _Measure) -> list[_Unit]:
    """Justified rows: photos at height `target` side by side until they fill `width`; a full
    row is then scaled to exactly `width` (so lower than `target`); the last row keeps the
    target height. Each caption under its photo, as wide as the photo."""
    least = min(sizes.min_caption, width)
    # A photo narrower than `least` at the target height leaves no room for its caption: its
    # box is made wider (the photo is cropped to fill it).
    aspect = {p.sha256: max(p.aspect, least / target) for p in photos}

    def justified(row: list[MuralPhoto]) -> int | None:
        """The height that makes `row` exactly `width` wide, when it is at least that wide
        at the target height."""
        gaps = sizes.photo_gap * (len(row) - 1)
        aspects = sum(aspect[p.sha256] for p in row)
        if aspects * target + gaps < width:
            return None
        return max(1, math.floor((width - gaps) / aspects))

    rows: list[list[MuralPhoto]] = []
    current: list[MuralPhoto] = []
    for photo in photos:
        height = justified([*current, photo])
        if current and height is not None and \
                min(aspect[p.sha256] for p in [*current, photo]) * height < least * 0.8:
            rows.append(current)  # one more would leave a photo far too narrow for its caption
            current = []
            height = justified([photo])
        current.append(photo)
        if height is not None:
            rows.append(current)
            current = []
    if current:
        rows.append(current)
    units = []
    for row in rows:
        gaps = sizes.photo_gap * (len(row) - 1)
        full = justified(row)
        # A row that does not fill the column keeps the target height, left-aligned.
        height = full if full is not None else target
        widths = [max(1, math.floor(aspect[p.sha256] * height)) for p in row]
        if full is not None:
            widths[-1] += width - gaps - sum(widths)  # the rounding's pixels
        if sum(widths) + gaps > width:
            raise AssertionError("a row wider than its column")
        boxes: list[Box] = []
        caption_height = 0
        x = 0
        for photo, photo_width in zip(row, widths, strict=True):
            boxes.append(Box(page=0, kind="photo", x=x, y=0, w=photo_width, h=height,
                             sha256=photo.sha256, color="paper"))
            caption = measure.text("caption", sizes.caption, photo.caption, photo_width,
                                   CAPTION_LINES, sha256=photo.sha256)
            if caption is not None:
                boxes.append(caption.moved(0, x, height + sizes.caption_gap))
                caption_height = max(caption_height, sizes.caption_gap + caption.h)
            x += photo_width + sizes.photo_gap
        units.append(_Unit(height=height + caption_height, boxes=tuple(boxes)))
    return units


def _activity_units(activity: MuralActivity, cap: int, target: int, width: int,
                    sizes: _Sizes, measure: _Measure, heading: _Unit | None) -> list[_Unit]:
    title = measure.text("activity", sizes.activity, activity.title, width, TITLE_LINES)
    when_text = " · ".join(part for part in (activity.when, activity.place) if part)
    when = measure.text("when", sizes.when, when_text, width, WHEN_LINES)
    rows = _rows(activity.photos[:cap], target, width, sizes, measure)
    head = _stack([(title, sizes.after_title), (when, sizes.after_when), (rows[0], 0)])
    units = [head, *rows[1:]]
    if heading is not None:
        units.insert(0, replace(heading, glue=True))
    return units


def _heading(area: str, width: int, sizes: _Sizes, measure: _Measure) -> _Unit:
    box = measure.text("area", sizes.area, area, width, AREA_LINES, one_line_first=True)
    rule = Box(page=0, kind="area_rule", x=0, y=0, w=width, h=sizes.area_rule,
               color="accent")
    return _stack([(box, sizes.header_gap), (rule, sizes.after_area)])


@dataclass(frozen=True)
class _Block:
    """One activity's units; `area` names its area, and `again` is that area's heading for
    when the activity starts a sheet its area's heading is not on (None for the first
    activity of an area, which carries the heading itself)."""

    units: list[_Unit]
    area: int
    again: _Unit | None


def _blocks(content: MuralContent, cap: int, target: int, width: int, sizes: _Sizes,
            measure: _Measure) -> list[_Block]:
    blocks = []
    for number, (area, activities) in enumerate(content.areas):
        heading: _Unit | None = _heading(area, width, sizes, measure)
        again = _heading(f"{area} {CONTINUED}", width, sizes, measure)
        for activity in activities:
            blocks.append(_Block(_activity_units(activity, cap, target, width, sizes,
                                                 measure, heading),
                                 number, again if heading is None else None))
            heading = None
    return blocks


@dataclass(frozen=True)
class _Body:
    top: int
    left: int
    height: int  # of a column
    width: int  # of a column
    columns: int
    gutter: int


def _flow(blocks: list[_Block], body: _Body, column_height: int, unit_gap: int,
          block_gap: int, max_pages: int | None) -> list[Box] | None:
    """Blocks down the columns and on to the next sheet; None when they need more than
    `max_pages` sheets or a unit is taller than a column. An activity that starts a sheet
    its area's heading is not on gets the heading again ("… (continuación)"): a reader of
    the second sheet would not know whose activities those are."""
    placed: list[Box] = []
    page = column = y = 0
    headed: dict[int, int] = {}  # area -> the last sheet its heading is on

    def next_column() -> None:
        nonlocal page, column, y
        column += 1
        y = 0
        if column == body.columns:
            column = 0
            page += 1

    for whole_block in blocks:
        block = whole_block.units
        whole = sum(u.height for u in block) + unit_gap * (len(block) - 1)
        if y > 0 and y + whole > column_height and whole <= column_height:
            next_column()  # the block fits whole in an empty column: do not split it
        i = 0
        while i < len(block):
            j = i
            need = block[i].height
            while block[j].glue and j + 1 < len(block):
                j += 1
                need += unit_gap + block[j].height
            if need > column_height:
                return None
            if y > 0 and y + need > column_height:
                next_column()
            again = whole_block.again if i == 0 and \
                headed.get(whole_block.area) != page else None
            if again is not None:
                need += again.height + unit_gap
                if need > column_height:
                    return None
                if y > 0 and y + need > column_height:
                    next_column()
            if max_pages is not None and page >= max_pages:
                return None
            x = body.left + column * (body.width + body.gutter)
            for unit in ([again] if again is not None else []) + block[i:j + 1]:
                placed.extend(b.moved(page, x, body.top + y) for b in unit.boxes)
                y += unit.height + unit_gap
            if i == 0:
                headed[whole_block.area] = page
            i = j + 1
        y += block_gap - unit_gap
    return placed


def _pages(boxes: list[Box]) -> int:
    return max((b.page for b in boxes), default=0) + 1


# --- the whole page -------------------------------------------------------------------------


def _header(content: MuralContent, page: Page, sizes: _Sizes,
            measure: _Measure) -> _Unit:
    width = page.width - 2 * page.margin
    institution = measure.text("institution", sizes.institution, content.institution, width,
                               2, one_line_first=True)
    title = measure.text("title", sizes.title, content.title, width, 2, one_line_first=True)
    month = measure.text("month", sizes.month, content.month_label, width, 1)
    rule = Box(page=0, kind="rule", x=0, y=0, w=width, h=sizes.rule, color="accent")
    return _stack([(institution, sizes.header_gap), (title, sizes.header_gap),
                   (month, sizes.header_gap * 2), (rule, 0)])


def _footer(content: MuralContent, page: Page, sizes: _Sizes, fonts: Fonts, number: int,
            pages: int) -> Box:
    """One line: the credits (ellipsized when too many) and the sheet's number."""
    width = page.width - 2 * page.margin
    kind_type = sizes.footer
    size = kind_type.sizes[0]
    inset = fonts.inset(size)
    sheet = SHEET.format(page=number + 1, pages=pages)
    names = ", ".join(content.credits)
    lines = (sheet,)
    ellipsized = False
    if names:
        room = width - 2 * inset - math.ceil(fonts.length(kind_type.style, size,
                                                          f" · {sheet}"))
        wrapped = wrap(fonts, kind_type.style, size, CREDITS.format(names=names), room, 1)
        lines = (f"{wrapped.lines[0]} · {sheet}",)
        ellipsized = wrapped.ellipsized
    line_height = fonts.line_height(kind_type.style, size)
    return Box(page=number, kind="footer", x=page.margin,
               y=page.height - page.margin - line_height, w=width, h=line_height,
               lines=lines, style=kind_type.style, size=size, line_height=line_height,
               inset=inset, top=fonts.top(kind_type.style, size), color=kind_type.color,
               ellipsized=ellipsized)


def _ladder(page: Page, sizes: _Sizes, column_width: int) -> list[int]:
    """Row heights to try, largest first."""
    heights = []
    height = column_width * 2 // 3
    while height > sizes.min_photo:
        heights.append(height)
        height = math.floor(height * 0.88)
    heights.append(sizes.min_photo)
    return heights


def layout(content: MuralContent, paper: str, dpi: int, *, photos_per_activity: int = 4,
           fonts: Fonts | None = None) -> Layout:
    """Place `content` on sheets of `paper` ("A1", "A2", "A3") at `dpi`."""
    if not content.activities:
        raise ValueError("nothing to lay out: no activity has an approved photo")
    if photos_per_activity < 1:
        raise ValueError("photos_per_activity must be at least 1")
    page = Page.of(paper, dpi)
    fonts = fonts or Fonts()
    sizes = _Sizes(page)
    measure = _Measure(fonts)
    header = _header(content, page, sizes, measure)
    footer_height = fonts.line_height(sizes.footer.style, sizes.footer.sizes[0])
    top = page.margin + header.height + sizes.after_header
    bottom = page.height - page.margin - footer_height - sizes.before_footer
    most = max(len(a.photos) for a in content.activities)
    caps = list(range(min(photos_per_activity, most), 0, -1))
    # One sheet: the paper's columns, or one fewer when that holds as many photos per
    # activity, larger (a sparse month fills the sheet better with wider columns).
    candidates = [page.columns] + ([page.columns - 1] if page.columns > 2 else [])
    best: _Choice | None = None
    for columns in candidates:
        solver = _Solver(content, page, sizes, measure, top, bottom, columns)
        found = solver.one_sheet(caps)
        if found is not None and (best is None or (found.cap, found.area) >
                                  (best.cap, best.area)):
            best = found
    if best is None:
        solver = _Solver(content, page, sizes, measure, top, bottom, page.columns)
        best = solver.sheets(caps)
    cap, target, placed = best.cap, best.target, best.placed
    pages = _pages(placed)
    boxes: list[Box] = []
    for number in range(pages):
        boxes.extend(b.moved(number, page.margin, page.margin) for b in header.boxes)
        boxes.extend(b for b in placed if b.page == number)
        boxes.append(_footer(content, page, sizes, fonts, number, pages))
    omitted = [p.sha256 for a in content.activities for p in a.photos[cap:]]
    return Layout(page=page, pages=pages, boxes=boxes, photos_per_activity=cap,
                  photo_height=target, omitted=omitted)


@dataclass(frozen=True)
class _Choice:
    cap: int  # photos per activity at most
    target: int  # row height aimed at
    placed: list[Box]

    @property
    def area(self) -> int:
        return sum(b.w * b.h for b in self.placed if b.kind == "photo")


class _Solver:
    """Tries the content in `columns` columns at several photo sizes and counts."""

    def __init__(self, content: MuralContent, page: Page, sizes: _Sizes, measure: _Measure,
                 top: int, bottom: int, columns: int) -> None:
        self.content, self.sizes, self.measure = content, sizes, measure
        width = (page.width - 2 * page.margin - sizes.gutter * (columns - 1)) // columns
        self.body = _Body(top=top, left=page.margin, height=bottom - top, width=width,
                          columns=columns, gutter=sizes.gutter)
        self.heights = _ladder(page, sizes, width)
        self.paper = page.paper

    def attempt(self, cap: int, target: int, max_pages: int | None,
                column_height: int | None = None) -> list[Box] | None:
        blocks = _blocks(self.content, cap, target, self.body.width, self.sizes, self.measure)
        return _flow(blocks, self.body, column_height or self.body.height,
                     self.sizes.unit_gap, self.sizes.block_gap, max_pages)

    def one_sheet(self, caps: list[int]) -> _Choice | None:
        """The most photos per activity, then the largest photos, that fit one sheet; its
        columns balanced."""
        heights = self.heights
        for cap in caps:
            for step, target in enumerate(heights):
                placed = self.attempt(cap, target, 1)
                if placed is None:
                    continue
                if step > 0:  # the largest height between this step and the one that failed
                    low, high = target + 1, heights[step - 1] - 1
                    while low <= high:
                        middle = (low + high) // 2
                        larger = self.attempt(cap, middle, 1)
                        if larger is None:
                            high = middle - 1
                        else:
                            target, placed, low = middle, larger, middle + 1
                return _Choice(cap, target, self.balanced(cap, target, placed))
        return None

    def balanced(self, cap: int, target: int, placed: list[Box]) -> list[Box]:
        """The same content on one sheet with the shortest columns that hold it, so that
        the columns end at about the same height, not the first ones full and the last
        empty."""
        low, high, best = 1, self.body.height, placed
        while low < high:
            middle = (low + high) // 2
            found = self.attempt(cap, target, 1, middle)
            if found is None:
                low = middle + 1
            else:
                high, best = middle, found
        return best

    def sheets(self, caps: list[int]) -> _Choice:
        """More than one sheet: as few as one small photo per activity needs, and on them
        the most photos per activity, then the largest, that fit."""
        least = self.attempt(1, self.heights[-1], None)
        if least is None:
            raise ValueError(f"an activity does not fit in a column of {self.paper} even "
                             "with one small photo (a title far too long?)")
        allowed = _pages(least)
        for cap in caps:
            for target in self.heights:
                placed = self.attempt(cap, target, allowed)
                if placed is not None:
                    return _Choice(cap, target, placed)
        raise AssertionError("one small photo per activity fitted before")  # unreachable
