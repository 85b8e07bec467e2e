// jaxfactor view: the page's logic. No libraries; every request goes to this server.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const page = {            // what tests and curious users can read from the console
    config: null, latencies: [], renders: 0, superseded: 0, errors: 0,
    shown: null,            // {seq, query, latencyMs} of the image on screen
  };
  window.jaxfactorView = page;
  const client = "p" + Array.from(crypto.getRandomValues(new Uint8Array(8)),
                                  (b) => b.toString(16).padStart(2, "0")).join("");
  let seq = 0, shownSeq = 0, shownUrl = null, snippetTimer = null;

  function currentSet() { return page.config.sets[Number($("set").value)]; }

  function query() {
    const p = new URLSearchParams();
    p.set("set", $("set").value);
    p.set("seed", String(Number($("seed").value)));
    for (const s of document.querySelectorAll("#sliders input")) {
      if (Number(s.value) !== 0) p.append("a", s.dataset.index + ":" + s.value);
    }
    const set = currentSet();
    if (set.layer_range) {
      const lo = Number($("layer-from").value), hi = Number($("layer-to").value);
      if (lo !== 0 || hi !== page.config.num_ws - 1) p.set("layers", lo + "-" + hi);
    }
    return p.toString();
  }

  function showError(message) {
    const e = $("error");
    e.textContent = message;
    e.hidden = !message;
  }

  async function render() {
    const q = query(), mine = ++seq, t0 = performance.now();
    let r;
    try {
      r = await fetch("/api/render?" + q + "&client=" + client, {cache: "no-store"});
    } catch (err) {
      page.errors++; showError("the server does not answer: " + err); return;
    }
    if (r.status === 204) { page.superseded++; return; }   // a newer request replaced it
    if (!r.ok) {
      page.errors++;
      let msg = "HTTP " + r.status;
      try { msg = (await r.json()).error || msg; } catch (_) { /* not JSON */ }
      if (mine > shownSeq) showError(msg);
      return;
    }
    const blob = await r.blob();
    if (mine < shownSeq) return;                           // an older image arrived late
    // decode off-screen, then swap the element: what is on screen is always the image
    // page.shown names (an <img> whose src changes can fire a late load of the old one)
    const url = URL.createObjectURL(blob), im = new Image();
    im.src = url;
    try {
      await im.decode();
    } catch (err) {
      URL.revokeObjectURL(url);
      if (mine > shownSeq) showError("the image does not decode: " + err);
      return;
    }
    if (mine < shownSeq) { URL.revokeObjectURL(url); return; }
    shownSeq = mine;
    const old = $("image");
    Object.assign(im, {id: "image", alt: old.alt, width: old.width, height: old.height});
    old.replaceWith(im);
    if (shownUrl) URL.revokeObjectURL(shownUrl);
    shownUrl = url;
    const ms = performance.now() - t0;
    page.latencies.push(ms); page.renders++;
    page.shown = {seq: mine, query: q, latencyMs: ms};
    $("status").textContent = "rendered in " + ms.toFixed(0) + " ms";
    showError("");
    clearTimeout(snippetTimer);
    snippetTimer = setTimeout(() => snippet(q), 120);
  }

  async function snippet(q) {
    const r = await fetch("/api/snippet?" + q, {cache: "no-store"});
    const body = await r.json();
    if (!r.ok) { showError(body.error); return; }
    $("json").textContent = JSON.stringify(body.json, null, 1);
    $("command").textContent = body.command || body.note;
  }

  async function copy(id) {
    const text = $(id).textContent;
    try { await navigator.clipboard.writeText(text); $("status").textContent = "copied"; }
    catch (_) {   // no clipboard permission: select the text for Ctrl-C
      const range = document.createRange(); range.selectNodeContents($(id));
      const sel = window.getSelection(); sel.removeAllRanges(); sel.addRange(range);
      $("status").textContent = "selected: press Ctrl-C";
    }
  }

  function buildSliders() {
    const box = $("sliders"), set = currentSet(), cfg = page.config;
    box.textContent = "";
    const n = Math.min(cfg.sliders, set.count);
    for (let i = 0; i < n; i++) {
      const row = document.createElement("div"); row.className = "slider";
      const label = document.createElement("label"); label.textContent = "dir " + i;
      const input = document.createElement("input");
      Object.assign(input, {type: "range", min: -cfg.alpha_range, max: cfg.alpha_range,
                            step: cfg.alpha_range / 60, value: 0, id: "alpha-" + i});
      input.dataset.index = String(i);
      label.htmlFor = input.id;
      const out = document.createElement("output"); out.textContent = "0";
      input.addEventListener("input", () => { out.textContent = Number(input.value).toFixed(2); render(); });
      row.append(label, input, out); box.append(row);
    }
    $("layer-row").hidden = !set.layer_range;
  }

  function setLayers(lo, hi) { $("layer-from").value = String(lo); $("layer-to").value = String(hi); }

  async function init() {
    const r = await fetch("/api/config", {cache: "no-store"});
    const cfg = page.config = await r.json();
    $("generator").textContent = cfg.generator + " (" + cfg.adapter.adapter + ")";
    $("units").textContent = "alpha in standard deviations of each direction, from -" +
      cfg.alpha_range + " to " + cfg.alpha_range + "; directions add up";
    $("seed").max = String(cfg.seed_limit - 1);
    cfg.sets.forEach((s, i) => $("set").append(new Option(s.label, String(i))));
    for (const id of ["layer-from", "layer-to"]) {
      for (let l = 0; l < (cfg.num_ws || 0); l++) $(id).append(new Option(String(l), String(l)));
    }
    if (cfg.num_ws) setLayers(0, cfg.num_ws - 1);
    const [h, w] = cfg.image_shape;
    const scale = Math.max(1, Math.floor(384 / Math.max(h, w)));
    Object.assign($("image"), {width: w * scale, height: h * scale});
    buildSliders();
    $("set").addEventListener("change", () => { buildSliders(); render(); });
    $("seed").addEventListener("change", render);
    $("new-seed").addEventListener("click", () => {
      $("seed").value = String(crypto.getRandomValues(new Uint32Array(1))[0]); render();
    });
    $("layer-from").addEventListener("change", () => {
      if (Number($("layer-from").value) > Number($("layer-to").value)) $("layer-to").value = $("layer-from").value;
      render();
    });
    $("layer-to").addEventListener("change", () => {
      if (Number($("layer-to").value) < Number($("layer-from").value)) $("layer-from").value = $("layer-to").value;
      render();
    });
    $("reset").addEventListener("click", () => {
      for (const s of document.querySelectorAll("#sliders input")) s.value = 0;
      for (const o of document.querySelectorAll("#sliders output")) o.textContent = "0";
      if (cfg.num_ws) setLayers(0, cfg.num_ws - 1);
      render();
    });
    $("copy-json").addEventListener("click", () => copy("json"));
    $("copy-command").addEventListener("click", () => copy("command"));
    render();
  }

  init().catch((err) => showError("cannot start the page: " + err));
})();
