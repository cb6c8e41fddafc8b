// Light script: live status (polled; ETag keeps an unchanged answer to a 304), live
// "Lo más reciente", record buttons, and auto-submitting selects. Text from the server is
// always inserted with textContent, never as HTML.
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

  async function getJSON(url) {
    const headers = etags[url] ? {"If-None-Match": etags[url].etag} : {};
    const response = await fetch(url, {headers, credentials: "same-origin"});
    if (response.status === 304) return etags[url].body;
    if (response.status === 401) { window.location.reload(); throw new Error("logged out"); }
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
        row.append(el("progress", {max: String(device.total), value: String(device.verified)}));
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
    const jobs = status.jobs.pending ? fmt(messages["status.jobs_pending"], {count: status.jobs.pending.toLocaleString(document.documentElement.lang)})
                                     : messages["status.jobs_idle"];
    parts.push(el("span", {"class": "jobs"}, messages["status.jobs"] + ": " + jobs));
    parts.push(el("span", {"class": "disk"}, messages["status.disk"] + ": " +
                  fmt(messages["status.disk_free"], {free: size(status.disk.free), total: size(status.disk.total)})));
    parts.push(el("span", {"class": "sync"}, messages["status.sync"] + ": " +
                  (messages["status.sync." + status.sync.state] || status.sync.state)));
    box.replaceChildren(...parts);
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

  function renderGrid(grid, items) {
    const cells = items.map((item) => {
      const li = el("li", {"class": "cell kind-" + item.kind});
      const a = el("a", {href: item.urls.page, title: item.original_name});
      const image = item.urls.thumb || item.urls.poster || item.urls.waveform;
      if (image) {
        a.append(el("img", {src: image, alt: item.original_name, loading: "lazy", decoding: "async", width: "320", height: "320"}));
      } else {
        const pending = el("span", {"class": "pending"}, messages["kind." + item.kind] || item.kind);
        a.append(pending);
      }
      if (item.kind === "video" || item.kind === "audio") {  // as the server's grid shows it
        a.append(el("span", {"class": "badge"}, (messages["kind." + item.kind] || item.kind) + " " + duration(item.duration)));
      }
      if (item.problems && item.problems.length) a.append(el("span", {"class": "badge warn"}, "!"));
      li.append(a);
      return li;
    });
    grid.replaceChildren(...cells);
    const empty = document.getElementById("empty");
    if (empty && items.length) empty.remove();
  }

  let pending = false;
  async function poll(box, force) {
    if (pending || (document.hidden && !force)) return;
    pending = true;
    try {
      const status = await getJSON(box.dataset.url);
      renderStatus(box, status);
      box.classList.remove("offline");
      const grid = document.querySelector("#grid[data-live]");
      const waiting = grid && grid.querySelector(".pending");
      if (grid && (status.latest_import !== grid.dataset.latest || waiting)) {
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
    for (const select of document.querySelectorAll("select[data-autosubmit]")) {
      select.addEventListener("change", () => select.form.submit());
    }
    for (const img of document.querySelectorAll("img[data-fallback]")) {
      img.addEventListener("error", () => img.remove());
    }
    const box = document.getElementById("live-status");
    const data = document.getElementById("i18n");
    if (!box || !data) return;
    messages = JSON.parse(data.textContent);
    poll(box, true);
    setInterval(() => poll(box, false), POLL_MS);
    document.addEventListener("visibilitychange", () => poll(box, false));
  });
})();
