// The kiosk screen (/mural): shows the slides of /api/mural full screen and follows changes
// by itself, for hours, unattended.
//
// - Polls /api/mural every POLL_MS with its ETag (an unchanged answer is a 304). A failed
//   poll (the web server restarting, a broken answer) keeps everything on screen and tries
//   again with a growing wait (up to BACKOFF_MAX_MS). The page never navigates or reloads,
//   so a server restart never shows a browser error page.
// - An item that leaves the answer (its approval withdrawn) leaves the screen at once, even
//   from the slide being shown; an item that joins it (approved) is shown within a couple of
//   seconds, ahead of the rotation.
// - Every picture is loaded and decoded off screen (new Image(), decode()) and every video
//   loaded until it can play, before the slide is shown: one that fails (404, server down) is
//   left out, so no broken image is ever on screen. A slide none of whose items load is
//   skipped; when none loads, the slide on screen stays.
// - Memory stays flat: two slide layers are reused (one shown, one being filled), tiles are
//   dropped when their slide leaves (videos are emptied first, so their decoders go), no
//   object URLs, no listeners left behind, only the latest answer kept.
// Text from the server is inserted with textContent only.
"use strict";

(function () {
  const POLL_MS = 2500;
  const BACKOFF_MAX_MS = 8000;
  const LOAD_TIMEOUT_MS = 15000;
  const FADE_MS = 700;  // a little over the CSS opacity transition
  const NEW_ITEM_WAIT_MS = 1500;  // a newly approved item waits at most this for the screen

  const root = document.getElementById("mural");
  if (!root) return;
  const layers = [...root.querySelectorAll(".mural-slide")];
  const empty = document.getElementById("mural-empty");
  const area = document.getElementById("mural-area");
  const title = document.getElementById("mural-title");
  const when = document.getElementById("mural-date");
  const period = document.getElementById("mural-period");
  const ticker = document.getElementById("mural-ticker");
  const track = document.getElementById("mural-ticker-track");
  let logo = document.getElementById("mural-logo");

  let data = null;  // the latest answer
  let etag = null;
  let failures = 0;
  let settingsKey = "";
  let present = new Set();  // sha256 of every item in the latest answer
  let seen = null;  // ... in the answer before (null until the first one)
  let priority = [];  // ids of slides holding newly approved items: shown next
  let current = null;  // {slide, layer, shownAt, duration}
  let cursor = -1;  // index in data.slides of the slide last shown
  let timer = null;
  let advancing = false;
  let rotations = 0;
  let wantedLogo = null;

  // -- polling ----------------------------------------------------------------------------

  async function poll() {
    let wait = POLL_MS;
    try {
      const headers = etag ? {"If-None-Match": etag} : {};
      const response = await fetch(root.dataset.api, {
        headers, cache: "no-store", credentials: "omit", redirect: "error"});
      if (response.status === 200) {
        const body = await response.json();
        etag = response.headers.get("ETag");
        update(body);
      } else if (response.status !== 304) {
        throw new Error("status " + response.status);
      }
      failures = 0;
      root.dataset.online = "1";
    } catch (error) {
      failures += 1;
      root.dataset.online = "0";
      wait = Math.min(BACKOFF_MAX_MS, POLL_MS * 2 ** Math.min(failures, 4));
    }
    setTimeout(poll, wait);
  }

  function update(body) {
    if (!body || !Array.isArray(body.slides) || !body.settings) return;
    data = body;
    applySettings(body.settings, body.period || "");
    const now = new Set();
    for (const slide of body.slides) for (const item of slide.items) now.add(item.sha256);
    present = now;
    if (seen !== null) {
      const fresh = body.slides.filter((s) => s.items.some((i) => !seen.has(i.sha256)));
      for (const slide of fresh) if (!priority.includes(slide.id)) priority.push(slide.id);
    }
    seen = now;
    prune();
    refreshText();
    if (!current) {
      if (!advancing) schedule(0);
    } else if (priority.length) {
      const left = current.duration - (performance.now() - current.shownAt);
      if (left > NEW_ITEM_WAIT_MS) schedule(NEW_ITEM_WAIT_MS);
    }
  }

  // -- settings: colours, logo, ticker ----------------------------------------------------

  function applySettings(settings, periodLabel) {
    const key = JSON.stringify([settings, periodLabel]);
    if (key === settingsKey) return;
    settingsKey = key;
    const style = document.documentElement.style;
    const colours = settings.colours || {};
    if (colours.background) style.setProperty("--m-bg", colours.background);
    if (colours.text) style.setProperty("--m-fg", colours.text);
    if (colours.accent) style.setProperty("--m-accent", colours.accent);
    root.dataset.layout = settings.layout;
    period.textContent = periodLabel;
    const messages = Array.isArray(settings.ticker) ? settings.ticker : [];
    track.replaceChildren(...messages.map((text) => {
      const span = document.createElement("span");
      span.textContent = text;
      return span;
    }));
    ticker.hidden = messages.length === 0;
    const chars = messages.reduce((sum, text) => sum + text.length, 0);
    track.style.animationDuration = Math.max(15, Math.round(chars * 0.2 + 12)) + "s";
    setLogo(settings.logo || null);
  }

  function setLogo(url) {
    wantedLogo = url;
    if (!url) {
      logo.hidden = true;
      return;
    }
    if (logo.dataset.url === url && !logo.hidden) return;
    const next = new Image();
    next.alt = "";
    next.src = url;
    next.decode().then(() => {
      if (wantedLogo !== url || !next.naturalWidth) return;
      next.id = logo.id;
      next.className = logo.className;
      next.dataset.url = url;
      logo.replaceWith(next);
      logo = next;
    }, () => {
      // the server is restarting? try again in a while, as long as it is still wanted
      setTimeout(() => { if (wantedLogo === url) setLogo(url); }, POLL_MS * 2);
    });
  }

  // -- rotation ---------------------------------------------------------------------------

  function schedule(ms) {
    clearTimeout(timer);
    timer = setTimeout(advance, ms);
  }

  async function advance() {
    if (advancing) return;  // the slide being prepared will be shown soon
    advancing = true;
    clearTimeout(timer);
    timer = null;
    try {
      await step();
    } finally {
      advancing = false;
    }
  }

  function pick(slides) {
    while (priority.length) {
      const id = priority.shift();
      const index = slides.findIndex((s) => s.id === id);
      if (index >= 0) { cursor = index; return slides[index]; }
    }
    if (current) {
      const index = slides.findIndex((s) => s.id === current.slide.id);
      if (index >= 0) cursor = index;
    }
    cursor = (cursor + 1) % slides.length;
    return slides[cursor];
  }

  async function step() {
    const tries = data ? data.slides.length : 0;
    if (!tries) {
      showEmpty();
      return;
    }
    for (let attempt = 0; attempt < tries; attempt++) {
      const slides = data.slides;
      if (!slides.length) break;
      const slide = pick(slides);
      const tiles = (await Promise.all(slide.items.map(load))).filter(Boolean);
      // Withdrawn while it was loading: never shown.
      const live = tiles.filter((tile) => present.has(tile.dataset.sha256));
      for (const tile of tiles) if (!live.includes(tile)) release(tile);
      if (live.length) {
        show(slide, live);
        return;
      }
    }
    if (!data.slides.length) {
      showEmpty();
      return;
    }
    // Nothing could be loaded (the server is away?): what is on screen stays.
    schedule(current ? current.duration : POLL_MS);
  }

  function show(slide, tiles) {
    const layer = layers.find((l) => !current || l !== current.layer);
    clear(layer);
    const layout = data && data.settings ? data.settings.layout : "collage";
    layer.className = "mural-slide layout-" + layout + " n" + tiles.length;
    layer.dataset.slide = slide.id;
    layer.append(...tiles);
    area.textContent = slide.area || "";
    title.textContent = slide.title || "";
    when.textContent = slide.date || "";
    empty.hidden = true;
    layer.classList.add("is-shown");
    const previous = current;
    current = {slide, layer, shownAt: performance.now(),
               duration: Math.max(1, slide.duration_s || 10) * 1000};
    if (previous && previous.layer !== layer) {
      const old = previous.layer;
      old.classList.remove("is-shown");
      setTimeout(() => { if (!current || current.layer !== old) clear(old); }, FADE_MS);
    }
    for (const video of layer.querySelectorAll("video")) video.play().catch(() => {});
    rotations += 1;
    root.dataset.rotations = String(rotations);
    root.dataset.slide = slide.id;
    root.dataset.duration = String(current.duration / 1000);
    schedule(current.duration);
  }

  function showEmpty() {
    for (const layer of layers) {
      layer.classList.remove("is-shown");
      clear(layer);
    }
    current = null;
    area.textContent = title.textContent = when.textContent = "";
    empty.hidden = false;
    root.dataset.slide = "";
  }

  // A withdrawn item leaves the slide on screen now; the others close up.
  function prune() {
    if (!current) return;
    let removed = false;
    for (const tile of [...current.layer.children]) {
      if (!present.has(tile.dataset.sha256)) {
        release(tile);
        tile.remove();
        removed = true;
      }
    }
    if (!removed) return;
    const left = current.layer.children.length;
    if (left) {
      current.layer.className = current.layer.className.replace(/\bn\d\b/, "n" + left);
      return;
    }
    current.layer.classList.remove("is-shown");
    current = null;
    area.textContent = title.textContent = when.textContent = "";
    if (!advancing) schedule(0);
  }

  // Captions and credits edited meanwhile, on the slide being shown.
  function refreshText() {
    if (!current) return;
    const items = new Map();
    for (const slide of data.slides) for (const item of slide.items) items.set(item.sha256, item);
    for (const tile of current.layer.children) {
      const item = items.get(tile.dataset.sha256);
      if (item) caption(tile, item);
    }
  }

  // -- tiles ------------------------------------------------------------------------------

  function timeout(promise, ms) {
    let handle;
    const limit = new Promise((_, reject) => {
      handle = setTimeout(() => reject(new Error("timeout")), ms);
    });
    return Promise.race([promise, limit]).finally(() => clearTimeout(handle));
  }

  function load(item) {
    return item.video ? loadVideo(item) : loadImage(item);
  }

  async function loadImage(item) {
    if (!item.image) return null;
    const img = new Image();
    img.alt = item.caption || "";
    img.decoding = "async";
    img.src = item.image;
    try {
      await timeout(img.decode(), LOAD_TIMEOUT_MS);
    } catch (error) {
      return null;
    }
    return img.naturalWidth > 0 ? tile(item, img) : null;
  }

  function loadVideo(item) {
    const video = document.createElement("video");
    video.muted = true;
    video.defaultMuted = true;
    video.setAttribute("muted", "");
    video.playsInline = true;
    video.loop = true;
    video.preload = "auto";
    video.disablePictureInPicture = true;
    return new Promise((resolve) => {
      let handle = null;
      const done = (ok) => {
        clearTimeout(handle);
        video.removeEventListener("canplay", good);
        video.removeEventListener("error", bad);
        if (ok) {
          resolve(tile(item, video));
        } else {
          emptyVideo(video);
          resolve(null);
        }
      };
      const good = () => done(true);
      const bad = () => done(false);
      video.addEventListener("canplay", good);
      video.addEventListener("error", bad);
      handle = setTimeout(bad, LOAD_TIMEOUT_MS);
      video.src = item.video;
    });
  }

  function tile(item, media) {
    const figure = document.createElement("figure");
    figure.className = "tile";
    figure.dataset.sha256 = item.sha256;
    media.classList.add("tile-media");
    const text = document.createElement("figcaption");
    text.className = "tile-caption";
    const line = document.createElement("p");
    line.className = "tile-text";
    const credit = document.createElement("p");
    credit.className = "tile-credit";
    text.append(line, credit);
    figure.append(media, text);
    caption(figure, item);
    return figure;
  }

  function caption(figure, item) {
    const line = figure.querySelector(".tile-text");
    const credit = figure.querySelector(".tile-credit");
    if (line.textContent !== (item.caption || "")) line.textContent = item.caption || "";
    if (credit.textContent !== (item.credit || "")) credit.textContent = item.credit || "";
  }

  function emptyVideo(video) {
    video.pause();
    video.removeAttribute("src");
    video.load();  // lets the decoder and its buffers go now, not at garbage collection
  }

  function release(figure) {
    for (const video of figure.querySelectorAll("video")) emptyVideo(video);
  }

  function clear(layer) {
    for (const figure of layer.children) release(figure);
    layer.replaceChildren();
  }

  // -- keep the screen awake, start -------------------------------------------------------

  async function keepAwake() {
    try {
      if (navigator.wakeLock && document.visibilityState === "visible") {
        await navigator.wakeLock.request("screen");
      }
    } catch (error) {
      // not offered here (headless, no permission): the display's own settings decide
    }
  }

  document.addEventListener("visibilitychange", keepAwake);
  document.addEventListener("contextmenu", (event) => event.preventDefault());
  keepAwake();
  poll();
})();
