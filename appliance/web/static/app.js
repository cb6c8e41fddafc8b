// Light script: live status (polled; ETag keeps an unchanged answer to a 304), live
// "Lo más reciente", record buttons, auto-submitting selects, and the editorial desk: the
// item page's editor (pick, stars, caption and the rest saved with PATCH, conflicts shown,
// keyboard), approval and re-filing, and the grids' selection mode with its action bar.
// Every page works without it (forms post to the server); this only makes it quicker.
// Text from the server is always inserted with textContent, never as HTML.
"use strict";

(function () {
  const POLL_MS = 2500;

  function csrfToken() {
    const match = document.cookie.match(/(?:^|; )acopio_csrf=([^;]*)/);
    return match ? decodeURIComponent(match[1]) : "";
  }

  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function fmt(template, values) {
    return template.replace(/\{(\w+)\}/g, (_, key) => values[key] ?? "");
  }

  function size(bytes) {
    const units = ["B", "KB", "MB", "GB", "TB"];
    let value = bytes, unit = 0;
    while (value >= 1000 && unit < units.length - 1) { value /= 1000; unit++; }
    return value.toLocaleString(document.documentElement.lang, {maximumFractionDigits: 1}) + " " + units[unit];
  }

  function duration(seconds) {  // as the server writes it: m:ss, or h:mm:ss
    if (seconds === null || seconds === undefined) return "";
    const total = Math.round(seconds);
    const h = Math.floor(total / 3600), m = Math.floor(total % 3600 / 60), s = total % 60;
    const two = (n) => String(n).padStart(2, "0");
    return h ? h + ":" + two(m) + ":" + two(s) : m + ":" + two(s);
  }

  let messages = {};
  const etags = {};
  const REQUEST_TIMEOUT_MS = 20000;  // a request stalled on a weak Wi-Fi fails, and says so
  let unsavedWork = () => false;  // the item editor's typed and unsaved fields, when any

  async function fetchSoon(url, options) {
    // fetch with a time limit; the browser's own (English) network errors said in Spanish
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), REQUEST_TIMEOUT_MS);
    try {
      return await fetch(url, {...options, signal: abort.signal});
    } catch (error) {
      throw new Error(messages["edit.offline"] || String(error.message || error));
    } finally {
      clearTimeout(timer);
    }
  }

  function loggedOut() {
    // The session ended (expired, password changed). A page with nothing typed goes to the
    // login page; one holding unsaved text stays, and the text with it.
    if (!unsavedWork()) window.location.reload();
    return new Error(messages["edit.logged_out"] || "logged out");
  }

  async function getJSON(url) {
    const headers = etags[url] ? {"If-None-Match": etags[url].etag} : {};
    const response = await fetchSoon(url, {headers, credentials: "same-origin"});
    if (response.status === 304) return etags[url].body;
    if (response.status === 401) throw loggedOut();
    if (!response.ok) throw new Error(url + ": " + response.status);
    const body = await response.json();
    const etag = response.headers.get("ETag");
    if (etag) etags[url] = {etag, body};
    return body;
  }

  function renderStatus(box, status) {
    const canRecord = box.dataset.canRecord === "1";
    const parts = [];
    for (const device of status.devices) {
      const row = el("span", {"class": "device", "data-device": device.id, "data-status": device.status});
      row.append(el("strong", {}, device.name || device.id));
      row.append(el("span", {"class": "state"}, messages["device." + device.status] || device.status));
      if (device.status === "importing" && device.total) {
        row.append(el("progress", {max: String(device.total), value: String(device.done)}));
        row.append(el("span", {}, fmt(messages["device.progress"], device)));
      }
      if (device.status === "safe_to_remove") row.querySelector(".state").className = "state safe";
      if (device.status === "error" || device.status === "removed_early") row.querySelector(".state").className = "state problem";
      if (canRecord && (device.kind === "microphone" || device.kind === "webcam")) {
        const recording = device.recording && device.recording.status === "recording";
        const button = el("button", {type: "button", "class": "record"},
                          recording ? messages["status.stop"] : messages["status.record"]);
        button.addEventListener("click", () => record(box, device.id, recording ? "stop" : "start", button));
        row.append(button);
      }
      parts.push(row);
    }
    if (!status.devices.length) parts.push(el("span", {"class": "hint"}, messages["status.no_devices"]));
    let jobs = status.jobs.pending ? fmt(messages["status.jobs_pending"], {count: status.jobs.pending.toLocaleString(document.documentElement.lang)})
                                   : messages["status.jobs_idle"];
    // Jobs given up on stay until retried: "Al día" alone hid them.
    if (status.jobs.parked) jobs += " · " + fmt(messages["status.jobs_parked"], {count: status.jobs.parked.toLocaleString(document.documentElement.lang)});
    parts.push(el("span", {"class": status.jobs.parked ? "jobs problem" : "jobs"}, messages["status.jobs"] + ": " + jobs));
    parts.push(el("span", {"class": "disk"}, messages["status.disk"] + ": " +
                  fmt(messages["status.disk_free"], {free: size(status.disk.free), total: size(status.disk.total)})));
    parts.push(syncPart(status.sync));
    box.replaceChildren(...parts);
  }

  // "Central: Enviando · 12 pendientes (340 MB) · IMG_0001.JPG a 8.2 MB/s"; the last error
  // as the tooltip. A paired kit whose sync service is not running says so.
  function syncPart(sync) {
    const stopped = sync.state !== "not_configured" && sync.running === false;
    const state = stopped ? "stopped" : sync.state;
    const words = [messages["status.sync." + state] || state];
    if (sync.pending_items) {
      words.push(fmt(messages[sync.pending_items === 1 ? "status.sync_pending.one" : "status.sync_pending"], {
        count: sync.pending_items.toLocaleString(document.documentElement.lang),
        size: size(sync.pending_bytes || 0)}));
    }
    if (sync.current && !stopped) {
      words.push(fmt(messages["status.sync_current"], {name: sync.current.name,
                                                       rate: size(sync.current.rate_bps || 0)}));
    }
    const attrs = {"class": "sync" + (stopped || state === "error" ? " problem" : "")};
    // The kind of error in the page's language, then the log's detail (file names, codes).
    if (sync.last_error && sync.last_error.message) {
      const said = messages["status.sync.error." + sync.last_error.code];
      attrs.title = said ? said + "\n" + sync.last_error.message : sync.last_error.message;
    }
    return el("span", attrs, messages["status.sync"] + ": " + words.join(" · "));
  }

  async function record(box, deviceId, action, button) {
    button.disabled = true;
    try {
      const response = await fetch(box.dataset.recordUrl.replace("DEVICE", encodeURIComponent(deviceId)), {
        method: "POST", credentials: "same-origin",
        headers: {"Content-Type": "application/json", "X-CSRF-Token": csrfToken()},
        body: JSON.stringify({action}),
      });
      if (!response.ok) {
        const body = await response.json().catch(() => ({}));
        button.replaceWith(el("span", {"class": "problem"}, body.message || String(response.status)));
      }
    } finally {
      button.disabled = false;
      poll(box, true);
    }
  }

  const lang = () => document.documentElement.lang;

  function stars(n) {
    return n === 1 ? messages["rating.stars.one"] : fmt(messages["rating.stars"], {count: n});
  }

  function marksFor(item) {  // as _desk.html's marks() draws them
    const span = el("span", {"class": "marks"});
    if (item.pick === "picked") span.append(el("span", {"class": "mark picked", title: messages["pick.picked"]}, "✓"));
    else if (item.pick === "rejected") span.append(el("span", {"class": "mark rejected", title: messages["pick.rejected"]}, "✗"));
    if (item.rating) span.append(el("span", {"class": "mark stars", title: stars(item.rating)}, "★" + item.rating));
    if (item.approved) span.append(el("span", {"class": "mark approved", title: messages["approval.badge"]}, messages["approval.badge"]));
    return span;
  }

  function cellFor(item) {  // as _grid.html draws a cell
    const li = el("li", {"class": "cell kind-" + item.kind, "data-sha": item.sha256, "data-revision": String(item.revision)});
    const a = el("a", {href: item.urls.page, title: item.original_name});
    const image = item.urls.thumb || item.urls.poster || item.urls.waveform;
    if (image) {
      a.append(el("img", {src: image, alt: item.original_name, loading: "lazy", decoding: "async", width: "320", height: "320"}));
    } else {
      a.append(el("span", {"class": "pending"}, messages["kind." + item.kind] || item.kind));
    }
    if (item.kind === "video" || item.kind === "audio") {
      a.append(el("span", {"class": "badge"}, (messages["kind." + item.kind] || item.kind) + " " + duration(item.duration)));
    }
    if (item.problems && item.problems.length) a.append(el("span", {"class": "badge warn"}, "!"));
    a.append(marksFor(item));
    li.append(a);
    const label = el("label", {"class": "check"});
    label.append(el("input", {type: "checkbox", name: "sha256", value: item.sha256,
                              "aria-label": fmt(messages["select.item"], {name: item.original_name})}));
    li.append(label);
    return li;
  }

  function renderGrid(grid, items) {
    const checked = new Set(Array.from(grid.querySelectorAll("input[name=sha256]:checked"), (box) => box.value));
    // Keyboard focus stays on the same item's link or box, not on the page's body.
    const focused = document.activeElement && grid.contains(document.activeElement) ? document.activeElement : null;
    const focusCell = focused && focused.closest("li[data-sha]");
    const focusBox = !!(focused && focused.matches("input"));
    grid.replaceChildren(...items.map(cellFor));
    for (const box of grid.querySelectorAll("input[name=sha256]")) box.checked = checked.has(box.value);
    if (focusCell) {
      const cell = grid.querySelector('li[data-sha="' + focusCell.dataset.sha + '"]');
      const target = cell && cell.querySelector(focusBox ? "input[name=sha256]" : "a");
      if (target) target.focus({preventScroll: true});
    }
    const empty = document.getElementById("empty");
    if (empty && items.length) empty.remove();
    if (selection) selection.refresh();
  }

  // -- the editorial desk ------------------------------------------------------------------

  function typing(target) {  // keys typed into a field (or a player) are not shortcuts
    if (!target || !target.closest) return false;
    if (target.matches("input[type=checkbox], input[type=radio], input[type=button], input[type=submit]")) return false;
    return !!target.closest("input, textarea, select, [contenteditable], video, audio");
  }

  function splitList(text) {
    return text.split(",").map((part) => part.trim()).filter(Boolean);
  }

  const sameText = (a, b) => a.replace(/\r\n/g, "\n").trim() === b.replace(/\r\n/g, "\n").trim();

  async function sendJSON(method, url, body) {
    const response = await fetchSoon(url, {
      method, credentials: "same-origin",
      headers: {"Content-Type": "application/json", "X-CSRF-Token": csrfToken()},
      body: JSON.stringify(body),
    });
    if (response.status === 401) throw loggedOut();
    const data = await response.json().catch(() => ({}));
    return {ok: response.ok, status: response.status, data};
  }

  function clock(at, zone) {  // "10:42" in the kit's zone
    try {
      return new Intl.DateTimeFormat(lang(), {hour: "numeric", minute: "2-digit", timeZone: zone || undefined}).format(new Date(at));
    } catch (error) {
      return at;
    }
  }

  function conflictLines(fields, zone) {  // who changed what, and when: one <li> each
    return Object.entries(fields || {}).map(([field, info]) => {
      const template = messages["conflict." + field];
      const values = {by: info.by, value: shown(field, info.value), time: clock(info.at, zone)};
      return el("li", {}, template ? fmt(template, values) : field + ": " + values.value);
    });
  }

  function shown(field, value) {  // a field's value as a person reads it
    if (field === "pick") return messages["pick." + (value || "none")] || String(value);
    if (Array.isArray(value)) return value.length ? value.join(", ") : messages["history.empty_value"];
    if (value === null || value === undefined || value === "") return messages["history.empty_value"];
    return String(value);
  }

  // Parts of the item page the server draws (history, marks, approval, details): fetched
  // again after a change and swapped in, rather than drawn twice.
  const ITEM_PARTS = ["history", "item-marks", "approval", "meta"];
  async function refreshParts(ids) {
    try {
      const response = await fetch(window.location.pathname, {credentials: "same-origin", cache: "no-store"});
      if (!response.ok) return;
      const page = new DOMParser().parseFromString(await response.text(), "text/html");
      for (const id of ids) {
        const fresh = page.getElementById(id), old = document.getElementById(id);
        if (fresh && old) old.replaceWith(document.importNode(fresh, true));
      }
    } catch (error) {
      // the page keeps what it shows; a reload brings the rest
    }
  }

  let leaving = false;  // a reload the user asked for: no "unsaved changes" prompt

  function initEditor(form) {
    const TEXT = ["caption", "credit", "place"], LISTS = ["tags", "people"];
    const status = form.querySelector("#edit-status");
    const live = form.querySelector("#conflict-live");
    const was = (name) => form.elements["was_" + name];
    let textBase = Number(form.elements.base_revision.value);  // what the text fields started from
    let latest = textBase;  // the newest revision seen (quick picks and stars use it)
    let pick = (form.querySelector("[data-pick][aria-pressed=true]") || {dataset: {}}).dataset.pick || null;
    let rating = form.querySelectorAll("[data-rating].filled").length;
    let held = null;  // the edit a conflict held back, for "save mine anyway"
    let queue = Promise.resolve();
    let lastButton = null;

    const say = (text, bad) => { status.textContent = text || ""; status.classList.toggle("error", !!bad); };
    unsavedWork = () => Object.keys(dirty()).length > 0;

    function dirty() {
      const changes = {};
      for (const name of TEXT) {
        if (!sameText(form.elements[name].value, was(name).value)) changes[name] = form.elements[name].value;
      }
      for (const name of LISTS) {
        const value = splitList(form.elements[name].value);
        if (value.join("\n") !== splitList(was(name).value).join("\n")) changes[name] = value;
      }
      return changes;
    }

    function showPick(value) {
      pick = value || null;
      for (const button of form.querySelectorAll("[data-pick]")) {
        const on = button.dataset.pick === pick;
        button.setAttribute("aria-pressed", on ? "true" : "false");
        button.value = on ? "" : button.dataset.pick;
      }
    }

    function showRating(value) {
      rating = value;
      for (const button of form.querySelectorAll("[data-rating]")) {
        const n = Number(button.dataset.rating);
        if (!n) continue;
        button.classList.toggle("filled", n <= value);
        button.setAttribute("aria-pressed", n === value ? "true" : "false");
        button.value = String(n === value ? 0 : n);
      }
    }

    function took(item, sent, kind) {
      const clean = !Object.keys(dirty()).length;
      latest = item.revision;
      if (kind === "text" || clean) textBase = item.revision;
      form.elements.base_revision.value = String(textBase);
      for (const name of [...TEXT, ...LISTS]) {
        const list = LISTS.includes(name);
        const value = list ? item[name].join(", ") : item[name];
        const input = form.elements[name];
        if (name in sent) {
          // saved; a field typed into meanwhile keeps the newer text (still to be saved)
          const still = list ? splitList(input.value).join("\n") === sent[name].join("\n")
                             : sameText(input.value, sent[name]);
          if (still) input.value = value;
          was(name).value = value;
        } else if (sameText(input.value, was(name).value)) {
          input.value = value;  // untouched here: show what the item holds now
          was(name).value = value;
        }
      }
      showPick(item.pick);
      showRating(item.rating);
      const caption = document.getElementById("shown-caption");
      if (caption) { caption.textContent = item.caption; caption.hidden = !item.caption; }
    }

    function conflict(body, changes, kind) {
      live.querySelector("ul").replaceChildren(...conflictLines(body.fields, form.dataset.zone));
      held = {changes, revision: body.revision, kind};
      live.hidden = false;
      live.scrollIntoView({block: "nearest"});
    }

    function send(changes, base, kind) {
      queue = queue.then(async () => {
        say(messages["edit.saving"]);
        try {
          const {ok, status: code, data} = await sendJSON("PATCH", form.dataset.api, {...changes, base_revision: base()});
          if (ok) {
            took(data, changes, kind);
            live.hidden = true;
            held = null;
            say(messages["edit.saved"]);
            refreshParts(ITEM_PARTS);
          } else if (code === 409 && data.error === "conflict") {
            say("");
            conflict(data, changes, kind);
          } else {
            say(fmt(messages["edit.failed"], {message: data.message || String(code)}), true);
          }
        } catch (error) {
          say(fmt(messages["edit.failed"], {message: String(error.message || error)}), true);
        }
      });
      return queue;
    }

    const saveText = () => {
      const changes = dirty();
      if (!Object.keys(changes).length) { say(messages["edit.saved"]); return; }
      send(changes, () => textBase, "text");
    };
    const quick = (changes) => send(changes, () => latest, "quick");
    const setPick = (value) => { if ((value || null) !== pick) quick({pick: value || null}); };
    const setRating = (value) => { if (value !== rating) quick({rating: value}); };

    form.addEventListener("click", (event) => { lastButton = event.target.closest("button"); });
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const button = event.submitter || lastButton;
      lastButton = null;
      if (button && button.dataset.pick) setPick(pick === button.dataset.pick ? null : button.dataset.pick);
      else if (button && button.dataset.rating !== undefined) {
        const n = Number(button.dataset.rating);
        setRating(n === rating ? 0 : n);
      } else saveText();
    });
    live.addEventListener("click", (event) => {
      const what = event.target.closest("[data-conflict]");
      if (!what) return;
      if (what.dataset.conflict === "reload") { leaving = true; window.location.reload(); return; }
      if (held) { const {changes, revision, kind} = held; send(changes, () => revision, kind); }
    });
    form.addEventListener("input", () => { if (Object.keys(dirty()).length) say(messages["edit.unsaved"]); });
    const chips = form.querySelector("#credit-chips");
    if (chips) {
      chips.hidden = false;
      chips.addEventListener("click", (event) => {
        const chip = event.target.closest("[data-credit]");
        if (!chip) return;
        form.elements.credit.value = chip.dataset.credit;
        say(messages["edit.unsaved"]);
      });
    }
    window.addEventListener("beforeunload", (event) => {
      if (!leaving && Object.keys(dirty()).length) { event.preventDefault(); event.returnValue = ""; }
    });
    return {setPick, setRating, caption: form.elements.caption};
  }

  function initItemKeys(editor) {
    document.addEventListener("keydown", (event) => {
      if (event.defaultPrevented || event.ctrlKey || event.metaKey || event.altKey || typing(event.target)) return;
      const key = event.key;
      if (key === "ArrowLeft" || key === "ArrowRight") {
        const link = document.getElementById(key === "ArrowLeft" ? "prev" : "next");
        if (link) { event.preventDefault(); window.location.href = link.href; }
        return;
      }
      if (!editor) return;
      const lower = key.toLowerCase();
      if (lower === "p") editor.setPick("picked");
      else if (lower === "x") editor.setPick("rejected");
      else if (lower === "u") editor.setPick(null);
      else if (/^[0-5]$/.test(key)) editor.setRating(Number(key));
      else if (lower === "e") editor.caption.focus();
      else return;
      event.preventDefault();
    });
  }

  function initRefile(form) {
    const status = form.querySelector(".refile-status");
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const select = form.elements.activity;
      if (select.value === "-") { select.focus(); return; }
      status.textContent = messages["select.working"];
      try {
        const {ok, status: code, data} = await sendJSON("POST", form.dataset.api, {sha256: [form.dataset.sha], activity: select.value || null});
        if (ok) { leaving = true; window.location.reload(); return; }
        status.textContent = fmt(messages["select.failed"], {message: data.message || String(code)});
      } catch (error) {
        status.textContent = fmt(messages["select.failed"], {message: String(error.message || error)});
      }
    });
  }

  async function approval(event) {  // the approve / withdraw button, through the API
    const form = event.target;
    event.preventDefault();
    const button = event.submitter || form.querySelector("button[name=approved]");
    const url = button.value === "1" ? form.dataset.approveUrl : form.dataset.withdrawUrl;
    button.disabled = true;
    const said = form.querySelector(".error, #approval-conflict");
    if (said) said.remove();  // one message at a time
    try {
      const base = Number(form.elements.base_revision.value);
      const {ok, status: code, data} = await sendJSON("POST", url, {base_revision: base});
      if (code === 409 && data.error === "conflict") {
        const zone = (document.querySelector("form[data-zone]") || {dataset: {}}).dataset.zone;
        const box = el("div", {"class": "conflict", id: "approval-conflict", role: "alert"});
        const list = el("ul");
        list.append(...conflictLines(data.fields, zone));
        box.append(el("p", {}, messages["approval.changed"]), list);
        form.prepend(box);
        form.elements.base_revision.value = String(data.revision);  // seen now: "Aprobar" again approves it
        await refreshParts(["history", "item-marks", "meta"]);
        return;
      }
      if (!ok) {
        form.append(el("span", {"class": "error", role: "alert"}, fmt(messages["edit.failed"], {message: data.message || String(code)})));
        return;
      }
      await refreshParts(ITEM_PARTS);
    } catch (error) {
      form.append(el("span", {"class": "error", role: "alert"}, fmt(messages["edit.failed"], {message: String(error.message || error)})));
    } finally {
      button.disabled = false;
    }
  }

  let selection = null;

  function initSelection(form) {
    const grid = form.querySelector("#grid");
    const toggle = form.querySelector("#select-toggle");
    const keys = form.querySelector("#select-keys");
    const bar = form.querySelector("#action-bar");
    const count = form.querySelector("#select-count");
    const status = form.querySelector("#bar-status");
    let last = null;  // the box clicked last, for shift-click ranges

    const boxes = () => Array.from(grid.querySelectorAll("input[name=sha256]"));
    const chosen = () => boxes().filter((box) => box.checked).map((box) => box.value);
    const selecting = () => form.classList.contains("selecting");
    const say = (text, bad) => { status.textContent = text || ""; status.classList.toggle("error", !!bad); };

    function refresh() {
      toggle.hidden = !grid.querySelector("li.cell");
      const n = chosen().length;
      count.textContent = n === 1 ? messages["select.count.one"] : fmt(messages["select.count"], {count: n.toLocaleString(lang())});
      for (const box of boxes()) box.closest("li").classList.toggle("chosen", box.checked);
    }

    function mode(on) {
      form.classList.toggle("selecting", on);
      bar.hidden = !on;
      keys.hidden = !on;
      toggle.setAttribute("aria-pressed", on ? "true" : "false");
      toggle.textContent = on ? messages["select.done"] : messages["select.toggle"];
      if (!on) { for (const box of boxes()) box.checked = false; last = null; say(""); }
      refresh();
    }

    function picked(box, shift) {  // box.checked has just changed
      const all = boxes(), index = all.indexOf(box);
      if (shift && last !== null && last !== index && last < all.length) {
        const [from, to] = last < index ? [last, index] : [index, last];
        for (let i = from; i <= to; i++) all[i].checked = box.checked;
      }
      last = index;
      refresh();
    }

    function setAll(on) {
      for (const box of boxes()) box.checked = on;
      refresh();
    }

    toggle.addEventListener("click", () => mode(!selecting()));
    grid.addEventListener("click", (event) => {
      if (!selecting()) return;
      const box = event.target.closest("input[name=sha256]");
      if (box) { picked(box, event.shiftKey); return; }
      const link = event.target.closest("li.cell a");
      if (!link) return;
      event.preventDefault();  // while selecting, a tap on the picture selects it
      const cellBox = link.closest("li").querySelector("input[name=sha256]");
      cellBox.checked = !cellBox.checked;
      picked(cellBox, event.shiftKey);
    });
    bar.querySelector("[data-select=all]").addEventListener("click", () => setAll(true));
    bar.querySelector("[data-select=none]").addEventListener("click", () => setAll(false));
    document.addEventListener("keydown", (event) => {
      if (typing(event.target) || !grid.querySelector("li.cell")) return;
      if ((event.ctrlKey || event.metaKey) && !event.altKey && event.key.toLowerCase() === "a") {
        event.preventDefault();
        if (!selecting()) mode(true);
        setAll(true);
      } else if (event.key === "Escape" && selecting()) {
        mode(false);
      } else if (selecting() && !event.ctrlKey && !event.metaKey && !event.altKey) {
        // the item page's keys, for the selection: P, X, U, 0-5
        const key = event.key.toLowerCase();
        const picks = {p: "picked", x: "rejected", u: ""};
        const button = key in picks ? bar.querySelector('button[data-batch=pick][data-value="' + picks[key] + '"]')
          : /^[0-5]$/.test(key) ? bar.querySelector('button[data-batch=rating][data-value="' + key + '"]') : null;
        if (button) { event.preventDefault(); run(button); }
      }
    });

    function updateCell(item) {
      const cell = grid.querySelector('li[data-sha="' + item.sha256 + '"]');
      if (cell) cell.dataset.revision = String(item.revision);
      const marks = cell && cell.querySelector(".marks");
      if (marks) marks.replaceWith(marksFor(item));
    }

    async function run(button) {
      const shas = chosen();
      if (!shas.length) { say(messages["select.empty"], true); return; }
      const action = button.dataset.batch, value = button.dataset.value;
      let url = form.dataset.batchUrl, body, reload = false;
      if (action === "pick") body = {sha256: shas, changes: {pick: value || null}};
      else if (action === "rating") body = {sha256: shas, changes: {rating: Number(value)}};
      else if (action === "describe") {
        const changes = {};
        for (const input of bar.querySelectorAll("[data-field]")) {
          const text = input.value.trim();
          if (text) changes[input.dataset.field] = input.hasAttribute("data-list") ? splitList(text) : text;
        }
        if (!Object.keys(changes).length) return;
        body = {sha256: shas, changes};
      } else if (action === "approve") {
        url = form.dataset.approvalUrl;
        body = {sha256: shas, approved: value === "1"};
      } else if (action === "refile") {
        const select = bar.querySelector("[data-refile]");
        if (select.value === "-") { select.focus(); return; }
        url = form.dataset.refileUrl;
        body = {sha256: shas, activity: select.value || null};
        reload = true;  // the items leave this page's folder or activity
      } else return;
      if (action !== "refile") {  // as this page showed them: what changed since is left alone
        body.base_revisions = {};
        for (const sha of shas) {
          const cell = grid.querySelector('li[data-sha="' + sha + '"]');
          if (cell && /^\d+$/.test(cell.dataset.revision || "")) body.base_revisions[sha] = Number(cell.dataset.revision);
        }
      }
      const buttons = bar.querySelectorAll("button");
      for (const b of buttons) b.disabled = true;
      say(messages["select.working"]);
      try {
        const {ok, status: code, data} = await sendJSON("POST", url, body);
        if (!ok) { say(fmt(messages["select.failed"], {message: data.message || String(code)}), true); return; }
        if (reload) { window.location.reload(); return; }
        const items = data.items || [], left = (data.conflicts || []).length;
        for (const item of items) updateCell(item);
        if (action === "describe" && !left) for (const input of bar.querySelectorAll("[data-field]")) input.value = "";
        const done = items.length - left;
        const said = done === 1 ? messages["select.done_n.one"]
                                : fmt(messages["select.done_n"], {count: done.toLocaleString(lang())});
        const why = action === "approve" ? "approval.changed_n" : "select.changed_meanwhile";
        say(left ? said + " " + fmt(messages[why], {count: left.toLocaleString(lang())}) : said, left > 0);
      } catch (error) {
        say(fmt(messages["select.failed"], {message: String(error.message || error)}), true);
      } finally {
        for (const b of buttons) b.disabled = false;
      }
    }

    bar.addEventListener("click", (event) => {
      const button = event.target.closest("button[data-batch]");
      if (button) run(button);
    });
    bar.addEventListener("keydown", (event) => {  // Enter applies the description (never the ZIP)
      const input = event.target.closest("[data-field]");
      if (!input || event.key !== "Enter" || (input.tagName === "TEXTAREA" && !(event.ctrlKey || event.metaKey))) return;
      event.preventDefault();
      run(bar.querySelector("button[data-batch=describe]"));
    });
    form.addEventListener("submit", (event) => {  // the ZIP: a plain post, streamed to disk
      if (!chosen().length) { event.preventDefault(); say(messages["select.empty"], true); }
    });
    refresh();
    return {refresh, selecting};
  }

  let pending = false;
  async function poll(box, force) {
    if (pending || (document.hidden && !force)) return;
    pending = true;
    try {
      const status = await getJSON(box.dataset.url);
      // Drawn again only when it changed (a 304 gives the same object back): a strip
      // rebuilt every 2.5 s made screen readers repeat it and took a focused button away.
      if (status !== box.shownStatus) renderStatus(box, status);
      box.shownStatus = status;
      box.classList.remove("offline");
      const grid = document.querySelector("#grid[data-live]");
      const waiting = grid && grid.querySelector(".pending");
      // Not while someone is choosing items: the cells would move under their thumb, and a
      // choice off the first page would be dropped. The grid catches up when they finish.
      const choosing = selection && selection.selecting();
      if (grid && !choosing && (status.latest_import !== grid.dataset.latest || waiting)) {
        const listing = await getJSON(grid.dataset.live);
        renderGrid(grid, listing.items);
        grid.dataset.latest = listing.latest_import || "";
      }
    } catch (error) {
      box.classList.add("offline");
    } finally {
      pending = false;
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    const data = document.getElementById("i18n");
    if (data) messages = JSON.parse(data.textContent);
    for (const select of document.querySelectorAll("select[data-autosubmit]")) {
      select.addEventListener("change", () => select.form.submit());
    }
    for (const img of document.querySelectorAll("img[data-fallback]")) {
      img.addEventListener("error", () => img.remove());
    }
    document.addEventListener("submit", (event) => {
      const form = event.target;
      if (form.dataset.confirm && !window.confirm(form.dataset.confirm)) event.preventDefault();
      else if (form.id === "approval-form") approval(event);
    });
    const selectionForm = document.getElementById("selection");
    if (selectionForm && data) selection = initSelection(selectionForm);
    const editForm = document.getElementById("edit");
    const editor = editForm && data ? initEditor(editForm) : null;
    const refileForm = document.getElementById("refile");
    if (refileForm && data) initRefile(refileForm);
    if (document.querySelector(".item-layout")) initItemKeys(editor);

    const box = document.getElementById("live-status");
    if (!box || !data) return;
    poll(box, true);
    setInterval(() => poll(box, false), POLL_MS);
    document.addEventListener("visibilitychange", () => poll(box, false));
  });
})();
