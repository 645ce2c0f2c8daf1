// ohrun report.html: draws the JSON in <script id="data"> as a batch page or a run page.
// Report text only ever enters the page as text nodes (h() below), never as HTML, so nothing in a report
// can become markup or script. Event bodies, full event JSON and long diffs are drawn only when opened,
// so a page with thousands of rows or events opens at once.
"use strict";

window.addEventListener("error", (e) => {
  const box = document.getElementById("render-error") || document.body.appendChild(h("div", { id: "render-error", class: "banner bad" }));
  box.textContent = "This page could not be drawn completely: " + (e.message || e);
});

// ---- helpers ----

function h(tag, props, ...children) {
  const el = document.createElement(tag);
  setProps(el, props);
  append(el, children);
  return el;
}

const SVG = "http://www.w3.org/2000/svg";
function svg(tag, attrs, ...children) {
  const el = document.createElementNS(SVG, tag);
  setProps(el, attrs);
  append(el, children);
  return el;
}

function setProps(el, props) {
  for (const [k, v] of Object.entries(props || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "href") { if (safeHref(v)) el.setAttribute("href", v); }
    else el.setAttribute(k, v === true ? "" : String(v));
  }
}

function append(el, children) {
  for (const c of [children].flat(Infinity)) {
    if (c === null || c === undefined || c === false || c === "") continue;
    el.append(c instanceof Node ? c : String(c));
  }
}

// Links point at files beside the page (or at anchors in it), never at another scheme or host: only
// relative URLs of a few plain characters (ohrun percent-encodes the rest), so no ":" (no scheme, however
// disguised: browsers drop control characters and spaces around and tabs inside a URL), no backslash,
// no leading "/" (another host as "//", or a path outside what is served).
function safeHref(v) {
  if (typeof v !== "string") return false;
  const bare = v.replace(/[\x00-\x1f\x7f]/g, "");
  if (/^[\s\x00-\x1f]*[a-z][a-z0-9+.-]*:/i.test(bare)) return false;
  return /^[A-Za-z0-9._~%#?=&\/-]*$/.test(v) && !v.startsWith("/");
}

// The one kind of link that leaves the page: a delivered pull request, https only, plain characters, opened
// without a referrer. (Following a link is navigation, not a request the page makes.)
function prLink(url, text) {
  if (typeof url !== "string" || !/^https:\/\/[A-Za-z0-9._~%\/:?#=&+-]+$/.test(url)) return h("span", null, text);
  const a = h("a", { class: "pr", rel: "noreferrer noopener", target: "_blank" }, text);
  a.setAttribute("href", url);
  return a;
}

function deliveryNote(d) {
  if (!d) return null;
  if (d.pr_url) return h("div", { class: "msg" }, "pull request: ", prLink(d.pr_url, d.pr_url), d.pr_state ? " (" + d.pr_state + ")" : "");
  if (d.status === "delivered") return h("div", { class: "msg" }, "branch " + (d.branch || "") + " pushed");
  return d.reason ? h("div", { class: "msg" }, "not delivered: " + d.reason) : null;
}

// A <details> whose content is made when it is first opened.
function lazy(props, summary, make) {
  const d = h("details", props, h("summary", null, summary));
  let made = false;
  const fill = () => { if (d.open && !made) { made = true; append(d, [make()]); } };
  d.addEventListener("toggle", fill);
  if (props && props.open) fill();
  return d;
}

// One formatter for every number: toLocaleString makes a new one per call, which a 1,000-row table feels.
const NUMBER = new Intl.NumberFormat("en-US");
const num = (n) => (n == null ? "—" : NUMBER.format(n));
const cost = (c) => (c == null ? "—" : "$" + (c >= 1 ? c.toFixed(2) : c.toFixed(4)));
function dur(ms) {
  if (ms == null) return "—";
  if (ms < 1000) return ms + " ms";
  const s = ms / 1000;
  if (s < 60) return s.toFixed(1) + " s";
  const m = Math.floor(s / 60);
  if (m < 60) return m + "m " + Math.round(s - m * 60) + "s";
  return Math.floor(m / 60) + "h " + (m % 60) + "m";
}
const plural = (n, what) => `${num(n)} ${what}${n === 1 ? "" : "s"}`;
const tokens = (t) => (t ? t.prompt + t.completion : 0);
const tokenTitle = (t) => t ? `prompt ${num(t.prompt)} · completion ${num(t.completion)} · cache read ${num(t.cache_read)} · cache write ${num(t.cache_write)} · reasoning ${num(t.reasoning)}` : null;
const stamp = (s) => (s ? s.replace("T", " ").replace(/\.\d+Z?$|Z$/, "") + (s.endsWith("Z") ? " UTC" : "") : "—");

// How serious a status or end reason is: colours, and the order of "failures first".
const TONE = {
  succeeded: "ok", finished: "ok", ended: "ok",
  failed: "bad", errored: "bad", usage_error: "bad", left_behind: "bad", error: "bad", stuck: "bad", lost: "bad",
  infrastructure: "bad", setup: "bad", provisioning: "bad", secret_leak: "bad", release: "bad",
  budget: "warn", interrupted: "warn", timeout: "bad", question: "warn", paused: "warn",
  pending: "idle", not_started: "idle", not_run: "idle", running: "idle",
};
const tone = (s) => TONE[s] || "idle";
const badge = (s, title) => h("span", { class: "badge " + tone(s), title }, s || "—");
const RANK = { left_behind: 0, errored: 1, failed: 2, usage_error: 3, budget: 4, interrupted: 5, pending: 6, not_started: 7, succeeded: 8 };

function card(k, v, d, title) {
  return h("div", { class: "card", title }, h("div", { class: "k" }, k), h("div", { class: "v" }, v), d ? h("div", { class: "d" }, d) : null);
}

// A matrix value in a word: an object by its name (or id) when it has one, the whole of it on hover.
function matrixChips(m) {
  if (!m) return null;
  return h("div", { class: "chips" }, Object.entries(m).map(([k, v]) => {
    const full = typeof v === "string" ? v : JSON.stringify(v);
    const short = v && typeof v === "object" && !Array.isArray(v) && (v.name ?? v.id) != null ? String(v.name ?? v.id) : full;
    return h("span", { class: "chip", title: k + " = " + full }, k + "=" + short);
  }));
}

// State kept across a served page's reloads (filter, sort, scroll, which details are open).
const stateKey = "ohrun:" + location.pathname;
function loadState() { try { return JSON.parse(sessionStorage.getItem(stateKey)) || {}; } catch (e) { return {}; } }
function saveState(extra) { try { sessionStorage.setItem(stateKey, JSON.stringify(Object.assign({ scroll: window.scrollY }, extra))); } catch (e) { /* private mode */ } }

// ---- batch page ----

// The batch page: header cards, the cost chart, the runs' table (filter, sort) and the scores. Its parts
// below: batchHeader, runRow, runSorter, totalsRow, drawCostChart.
function batchPage(data, app) {
  const s = data.summary;
  const state = loadState();
  const verified = !!s.verification;
  const runs = s.runs.map((r, i) => Object.assign({}, r, {
    link: data.links[i],
    tok: tokens(r.tokens),
    search: [r.id, r.status, r.end_reason, r.message, r.job, r.matrix ? JSON.stringify(r.matrix) : "", r.verdict, checkWords(r)].join(" ").toLowerCase(),
  }));
  const maxCost = Math.max(0, ...runs.map((r) => r.cost || 0));
  batchHeader(data, runs, maxCost, app);

  const filter = h("input", { type: "search", placeholder: "Filter: id, matrix value, status, reason, message…", "aria-label": "Filter runs" });
  filter.value = state.filter || "";
  const count = h("span", { class: "muted" });
  const chartBox = h("div", { class: "chart" });
  append(app, [h("h2", null, "Cost per run"), chartBox, h("div", { class: "toolbar" }, filter, count)]);

  // Every row is made once; sorting and filtering only reorder and hide them.
  const rows = runs.map((r) => runRow(r, maxCost, verified));
  const sorter = runSorter(verified, state.sort, () => draw());
  const tbody = h("tbody");
  const foot = h("tfoot");
  append(app, h("table", null, h("thead", null, sorter.head), tbody, foot));
  scoresSection(s, app);

  function draw() {
    const q = filter.value.trim().toLowerCase();
    const words = q ? q.split(/\s+/) : [];
    const shown = runs.map((r, i) => [r, rows[i]]).filter(([r]) => words.every((w) => r.search.includes(w)));
    shown.sort(([a], [b]) => sorter.compare(a, b));
    tbody.replaceChildren(...shown.map(([, row]) => row));
    sorter.mark();
    count.textContent = shown.length === runs.length ? plural(runs.length, "run") + (sorter.sort.key ? "" : ", failures first") : `${shown.length} of ${plural(runs.length, "run")}`;
    foot.replaceChildren(totalsRow(shown.map(([r]) => r), runs.length, verified));
    drawCostChart(chartBox, shown.map(([r]) => r), (id) => { filter.value = id; draw(); });
    saveState({ filter: filter.value, sort: sorter.sort });
  }

  filter.addEventListener("input", draw);
  draw();
}

function batchHeader(data, runs, maxCost, app) {
  const s = data.summary;
  const t = s.totals;
  append(app, [
    h("div", { class: "crumbs" }, "ohrun · batch"),
    h("h1", null, data.title, badge(worst(t.by_status))),
    h("div", { class: "sub" }, h("span", null, "updated " + stamp(s.updated_at)), h("span", null, "ohrun " + s.ohrun_version),
      data.live ? h("span", null, "live: reloads when summary.json changes") : null),
    h("div", { class: "cards" },
      card("Runs", num(t.runs), Object.entries(t.by_status).map(([k, v]) => v + " " + k).join(" · ")),
      card("Cost", cost(t.cost), runs.length ? "max " + cost(maxCost) + " per run" : null),
      card("Tokens", num(tokens(t.tokens)), "prompt + completion", tokenTitle(t.tokens)),
      card("LLM calls", num(t.llm_calls)),
      card("Wall time", dur(t.duration_ms)),
      verdictCards(s),
    ),
  ]);
  if (s.shared_sandboxes && s.shared_sandboxes.length) {
    append(app, h("div", { class: "banner info" }, "Shared agent-servers: ",
      s.shared_sandboxes.map((x) => `${x.name} (${x.runs} runs, ${x.disposition}${x.release_error ? ": " + x.release_error : ""})`).join("; ")));
  }
}

function runRow(r, maxCost, verified) {
  const bar = h("div", { class: "costbar" }, h("span", null));
  bar.firstChild.style.width = (maxCost > 0 ? (100 * (r.cost || 0)) / maxCost : 0) + "%";
  const failed = (RANK[r.status] ?? 9) < RANK.pending;
  return h("tr", { class: "run" + (failed ? " failed-row" : ""), "data-id": r.id },
    h("td", { class: "num muted" }, r.index),
    h("td", { class: "id" }, r.link ? h("a", { href: r.link }, r.id) : h("span", null, r.id), r.message ? h("div", { class: "msg", title: r.message }, r.message) : null, failedChecks(r), deliveryNote(r.delivery)),
    h("td", { class: "matrix" }, matrixChips(r.matrix)),
    h("td", null, badge(r.status)),
    h("td", null, r.end_reason ? badge(r.end_reason) : h("span", { class: "muted" }, "—")),
    verdictCells(r, verified),
    h("td", { class: "num" }, r.attempts),
    h("td", { class: "num" }, cost(r.cost), bar),
    h("td", { class: "num", title: tokenTitle(r.tokens) }, num(r.tok)),
    h("td", { class: "num" }, dur(r.duration_ms)),
  );
}

// The table's head and its order: a click sorts by a column, again reverses, a third time goes back to
// failures first (then plan order). `onChange` redraws.
function runSorter(verified, saved, onChange) {
  const columns = [
    ["#", "index", true], ["Run", "id"], ["Matrix", "matrix"], ["Status", "status"], ["End reason", "end_reason"],
    ...verdictColumns(verified), ["Attempts", "attempts", true], ["Cost", "cost", true], ["Tokens", "tok", true], ["Duration", "duration_ms", true],
  ];
  const self = { sort: saved || { key: null, dir: 1 } };
  const failuresFirst = (a, b) => (RANK[a.status] ?? 9) - (RANK[b.status] ?? 9) || a.index - b.index;
  const value = (r, key) => (key === "matrix" ? (r.matrix ? JSON.stringify(r.matrix) : "") : r[key]);
  self.compare = (a, b) => {
    const sort = self.sort;
    if (!sort.key) return failuresFirst(a, b);
    const x = value(a, sort.key), y = value(b, sort.key);
    const c = x == null ? (y == null ? 0 : 1) : y == null ? -1 : typeof x === "number" ? x - y : String(x).localeCompare(String(y));
    return sort.dir * c || a.index - b.index;
  };
  const arrows = [];
  self.head = h("tr", null, columns.map(([label, key, numeric]) => {
    const arrow = h("span", { class: "arrow" });
    arrows.push([key, arrow]);
    return h("th", {
      class: "sortable" + (numeric ? " num" : ""), title: "Sort by " + label.toLowerCase() + " (again: reverse; a third time: failures first)",
      onclick: () => {
        const sort = self.sort;
        if (sort.key !== key) self.sort = { key, dir: numeric ? -1 : 1 };
        else if (sort.dir === (numeric ? -1 : 1)) self.sort = { key, dir: -sort.dir };
        else self.sort = { key: null, dir: 1 };
        onChange();
      },
    }, label, arrow);
  }));
  self.mark = () => {
    for (const [key, arrow] of arrows) arrow.textContent = self.sort.key === key ? (self.sort.dir > 0 ? "▲" : "▼") : "";
  };
  return self;
}

function totalsRow(shown, all, verified) {
  const sum = (f) => shown.reduce((a, r) => a + (f(r) || 0), 0);
  return h("tr", null,
    h("td", { colspan: 5 + verdictColumns(verified).length }, shown.length === all ? "Total" : `Total of ${shown.length} shown`),
    h("td", { class: "num" }, num(sum((r) => r.attempts))),
    h("td", { class: "num" }, cost(sum((r) => r.cost))),
    h("td", { class: "num" }, num(sum((r) => r.tok))),
    h("td", { class: "num" }, dur(sum((r) => r.duration_ms))),
  );
}

// One column per shown run, dearest first: where the money went. A click on a bar calls `pick(id)`.
function drawCostChart(box, shown, pick) {
  const byCost = shown.slice().sort((a, b) => (b.cost || 0) - (a.cost || 0) || a.index - b.index);
  const top = byCost.length ? byCost[0].cost || 0 : 0;
  // At least 40 columns wide, so a small batch gets slim bars rather than a wall of colour.
  const n = Math.max(byCost.length, 40);
  const plot = svg("svg", { viewBox: `0 0 ${n} 100`, preserveAspectRatio: "none", role: "img", "aria-label": "Cost per run" });
  byCost.forEach((r, i) => {
    const height = top > 0 ? Math.max((100 * (r.cost || 0)) / top, r.cost ? 1 : 0) : 0;
    plot.append(svg("rect", {
      x: i + 0.1, width: 0.8, y: 100 - height, height, fill: tone(r.status) === "ok" ? "#54aeff" : tone(r.status) === "bad" ? "#cf222e" : "#bf8700",
      onclick: () => pick(r.id),
    }, svg("title", null, `${r.id}: ${cost(r.cost)} (${r.status})`)));
  });
  box.replaceChildren(plot, h("div", { class: "axis" },
    h("span", null, byCost.length ? `dearest: ${byCost[0].id} ${cost(top)}` : "no runs"),
    h("span", null, "blue: succeeded · red: failed · amber: other — click a bar to filter")));
}

function worst(byStatus) {
  const present = Object.keys(byStatus || {}).filter((k) => byStatus[k] > 0);
  present.sort((a, b) => (RANK[a] ?? 9) - (RANK[b] ?? 9));
  return present[0] || "pending";
}

// ---- run page ----

function runPage(data, app) {
  const r = data.report;
  const L = data.links;
  const status = r.status === "running" ? "running" : r.outcome.class;
  const stepsDone = r.steps.filter((s) => s.end_reason === "finished").length;

  append(app, [
    h("div", { class: "crumbs" }, L.batch ? [h("a", { href: L.batch }, "← batch"), " · "] : null, "ohrun · run"),
    h("h1", { id: "run-id" }, r.run.id, badge(status, r.outcome.message), verdictBadge(r.verification, "verdict ")),
    h("div", { class: "sub" },
      h("span", null, "job " + r.job.name),
      h("span", null, "attempt " + r.run.attempt),
      h("span", null, r.sandbox.kind + " sandbox" + (r.sandbox.agent_server_version ? " · agent-server " + r.sandbox.agent_server_version : "")),
      h("span", null, "started " + stamp(r.started_at)),
      r.rehearsal ? h("span", null, "rehearsal (scripted LLM)") : null),
    r.run.matrix ? h("div", { style: "margin-top:8px" }, matrixChips(r.run.matrix)) : null,
    h("div", { class: "links" },
      h("a", { href: L.run_json }, "run.json"),
      L.attempt_json ? h("a", { href: L.attempt_json }, "attempt " + r.run.attempt + " run.json") : null,
      L.events ? h("a", { href: L.events }, "events.jsonl") : null,
      L.log ? h("a", { href: L.log }, "agent-server.log") : null,
      L.workspace ? h("a", { href: L.workspace }, "workspace/") : null),
  ]);
  if (r.outcome.message) append(app, h("div", { class: "banner " + (tone(status) === "ok" ? "info" : tone(status)) }, r.outcome.message));
  if (r.delivery) {
    const d = r.delivery;
    const tn = d.status === "failed" ? "bad" : "info";
    append(app, h("div", { class: "banner " + tn }, "Delivery " + d.status + (d.branch ? " · branch " + d.branch : "") + (d.commit ? " · commit " + d.commit.slice(0, 12) : ""),
      d.pr_url ? [" · pull request ", prLink(d.pr_url, "#" + d.pr_number), d.pr_state ? " (" + d.pr_state + ")" : ""] : null,
      d.reason ? " — " + d.reason : null,
      d.warnings && d.warnings.length ? h("ul", null, d.warnings.map((w) => h("li", null, w))) : null));
  }
  if (r.outcome.leaks && r.outcome.leaks.length) append(app, h("div", { class: "banner bad" }, `The leak scan found ${r.outcome.leaks.length} secret(s) in what ohrun wrote; the run failed.`));
  if (r.warnings.length) append(app, h("div", { class: "banner warn" }, h("ul", null, r.warnings.map((w) => h("li", null, w)))));
  if (data.earlier_attempts.length) {
    append(app, h("div", { class: "banner info" }, "Earlier attempts: ", data.earlier_attempts.map((a, i) => [i ? "; " : "",
      h("a", { href: a.link }, "attempt " + a.attempt), " " + a.class + (a.message ? ": " + a.message : "")])));
  }
  if (data.cut.length) append(app, h("div", { class: "banner info" }, "Shortened on this page: ", data.cut.join("; ")));
  if (data.refused && data.refused.length) append(app, h("div", { class: "banner warn" }, "The report names files ohrun does not write; ", data.refused.join("; ")));

  append(app, h("div", { class: "cards" },
    card("Duration", dur(r.duration_ms), r.sandbox.provision_ms != null ? "sandbox ready in " + dur(r.sandbox.provision_ms) : null),
    card("Cost", cost(r.totals.cost), r.totals.largest_call ? "dearest call " + cost(r.totals.largest_call) : null),
    card("Tokens", num(tokens(r.totals.tokens)), "prompt + completion", tokenTitle(r.totals.tokens)),
    card("LLM calls", num(r.totals.llm_calls)),
    card("Steps", stepsDone + " / " + r.steps.length, "finished"),
    card("Events", num(r.totals.events)),
    verdictCard(r),
  ));

  timeline(r, app);
  setupSection(r, data, app);

  const ranges = data.ranges || [];
  const before = ranges[0] || [0, 0];
  const stateToggle = h("label", { class: "toggle" }, h("input", { type: "checkbox", onchange: (e) => document.body.classList.toggle("show-state", e.target.checked) }), "show state updates");
  append(app, h("h2", null, "Steps", stateToggle));
  if (before[1] > before[0]) {
    append(app, lazy({ class: "section" }, ["Before the first step ", h("span", { class: "sub" }, plural(before[1] - before[0], "event") + ": system prompt, conversation start")],
      () => eventList(data.events, before)));
  }
  r.steps.forEach((s, i) => append(app, stepBox(s, data, ranges[i + 1] || [0, 0], data.diffs.steps[i])));
  verificationSection(r, app);
  patchSection(r, L, app);

  if (r.notes.length) append(app, [h("h2", null, "Notes"), h("ul", { class: "muted" }, r.notes.map((n) => h("li", null, n)))]);
  append(app, [h("h2", null, "Sandbox"), h("div", { class: "chips" },
    [["kind", r.sandbox.kind], ["id", r.sandbox.id], ["disposition", r.sandbox.disposition], ["working dir", r.sandbox.working_dir],
      ["server", r.sandbox.agent_server_url], ["conversation", r.conversation_id]]
      .filter(([, v]) => v).map(([k, v]) => h("span", { class: "chip" }, k + ": " + v))),
    r.sandbox.release_error ? h("div", { class: "banner bad" }, "release failed: " + r.sandbox.release_error) : null]);
}

function timeline(r, app) {
  const parts = [];
  if (r.sandbox.provision_ms) parts.push({ label: "sandbox", ms: r.sandbox.provision_ms, cls: "seg-prov", href: null });
  const setupMs = r.setup.reduce((a, c) => a + c.duration_ms, 0);
  if (r.setup.length) parts.push({ label: "setup", ms: setupMs, cls: r.setup.some((c) => c.exit_code !== 0 && !c.allowed_to_fail) ? "seg-bad" : "seg-setup", href: "#setup" });
  for (const s of r.steps) {
    if (s.end_reason === "not_run") continue;
    parts.push({ label: "step " + s.index, ms: s.duration_ms || 0, cls: "seg-" + tone(s.end_reason), href: "#step-" + s.index, info: s.end_reason + " · " + cost(s.cost) });
  }
  const total = parts.reduce((a, p) => a + p.ms, 0);
  if (!parts.length || total <= 0) return;
  append(app, [h("h2", null, "Timeline"),
    h("div", { class: "timeline" }, parts.map((p) => {
      const seg = h("a", { class: p.cls, href: p.href, title: `${p.label}: ${dur(p.ms)}${p.info ? " · " + p.info : ""}` }, p.label);
      seg.style.flex = String(Math.max(p.ms / total, 0.002));
      return seg;
    })),
    h("div", { class: "legend" }, parts.map((p) => h("span", null, `${p.label} ${dur(p.ms)}${p.info ? " (" + p.info + ")" : ""}`)))]);
}

function setupSection(r, data, app) {
  if (!r.setup.length && !data.diffs.setup) return;
  append(app, h("h2", { id: "setup" }, "Setup"));
  for (const c of r.setup) {
    const failed = c.exit_code !== 0;
    const st = c.timed_out ? "timed out" : c.interrupted ? "interrupted" : "exit " + c.exit_code;
    const out = [];
    for (const [name, text] of [["stdout", c.stdout], ["stderr", c.stderr]]) {
      if (!text) continue;
      const lines = text.split("\n").length;
      out.push(lazy({ class: "section", open: lines <= 30 }, [name + " ", h("span", { class: "sub" }, lines + " lines")], () => h("pre", null, text)));
    }
    append(app, h("div", { class: "box" },
      h("header", null, h("span", { class: "cmd" }, "$ " + c.command),
        h("span", { class: "badge " + (failed ? (c.allowed_to_fail ? "warn" : "bad") : "ok") }, st + (failed && c.allowed_to_fail ? " (allowed)" : "")),
        h("span", { class: "sub" }, dur(c.duration_ms) + " · in " + c.cwd)),
      out.length ? h("div", { class: "body" }, out) : null));
  }
  if (r.setup_diff || data.diffs.setup) append(app, diffBlock(r.setup_diff, data.diffs.setup));
}

function stepBox(s, data, range, diffText) {
  const n = range[1] - range[0];
  const body = h("div", { class: "body" },
    h("div", null, h("div", { class: "label" }, "Message"), h("div", { class: "said user" }, s.message)));
  if (s.error) append(body, h("div", null, h("div", { class: "label" }, "Error"), h("div", { class: "said err" }, s.error.code + ": " + s.error.detail)));
  if (s.final_message) append(body, h("div", null, h("div", { class: "label" }, "Agent's final message"), h("div", { class: "said agent" }, s.final_message)));
  if (s.diff || diffText) append(body, diffBlock(s.diff, diffText));
  append(body, stepChecks(s));
  if (n > 0) append(body, lazy({ class: "section" }, ["Actions and observations ", h("span", { class: "sub" }, plural(n, "event"))], () => eventList(data.events, range)));
  return h("section", { class: "box step", id: "step-" + s.index },
    h("header", null,
      h("h3", null, "Step " + s.index),
      badge(s.end_reason, s.execution_status ? "server status: " + s.execution_status : null),
      h("span", { class: "sub" },
        [dur(s.duration_ms), cost(s.cost), num(tokens(s.tokens)) + " tokens", s.llm_calls + " LLM calls", s.event_count + " events",
          s.replies ? s.replies + " replies" : null].filter(Boolean).join(" · "))),
    body);
}

// ---- diffs ----

function diffBlock(info, embedded) {
  info = info || {};
  if (!embedded && !info.error && !(info.changes && info.changes.length)) return h("div", { class: "sub" }, "Changes: none");
  const stat = h("span", { class: "diffstat" },
    plural(info.changes ? info.changes.length : 0, "file") + " ", h("span", { class: "add" }, "+" + (info.insertions || 0)), " ", h("span", { class: "del" }, "−" + (info.deletions || 0)),
    info.truncated ? " · cut at the size cap" : null);
  const text = embedded ? embedded.text : null;
  const lines = text ? text.replace(/\n$/, "").split("\n") : [];
  const make = () => h("div", null,
    info.error ? h("div", { class: "banner warn" }, "No diff: " + info.error) : null,
    embedded && embedded.refused ? h("div", { class: "banner warn" }, "The diff file: " + embedded.refused) : null,
    info.changes && info.changes.length ? h("div", { class: "chips", style: "margin-bottom:8px" }, info.changes.map((c) => h("span", { class: "chip" }, c))) : null,
    text ? diffPre(lines) : null,
    embedded && embedded.link ? h("div", { class: "sub", style: "margin-top:4px" }, h("a", { href: embedded.link }, "the diff file")) : null);
  // Small diffs are shown open; a long one is drawn when opened.
  return lazy({ class: "section", open: lines.length <= 400 }, ["Changes", stat], make);
}

function diffPre(lines) {
  const pre = h("pre", { class: "diff" });
  const frag = document.createDocumentFragment();
  for (const line of lines) {
    let cls = null;
    if (line.startsWith("+++") || line.startsWith("---") || line.startsWith("diff ") || line.startsWith("index ") || line.startsWith("new file") || line.startsWith("deleted file")) cls = "file";
    else if (line.startsWith("@@")) cls = "hunk";
    else if (line.startsWith("+")) cls = "add";
    else if (line.startsWith("-")) cls = "del";
    frag.append(h("span", { class: cls }, line));
  }
  pre.append(frag);
  return pre;
}

// ---- events ----

function eventList(events, range) {
  const list = h("div", { class: "events" });
  const frag = document.createDocumentFragment();
  for (let i = range[0]; i < range[1]; i++) frag.append(eventRow(events[i]));
  list.append(frag);
  return list;
}

function textOf(content) {
  if (typeof content === "string") return content;
  if (Array.isArray(content)) return content.map((c) => (typeof c === "string" ? c : c && c.text != null ? c.text : "")).join("\n");
  return "";
}

function describe(e) {
  const a = e.action || {};
  switch (e.kind) {
    case "ActionEvent":
      return { kind: "action", cls: "k-action", tool: e.tool_name, text: a.path ? `${a.command || ""} ${a.path}` : a.command || a.message || e.summary || "" };
    case "ObservationEvent": {
      const o = e.observation || {};
      const text = textOf(o.content) || o.output || "";
      const exit = o.exit_code != null && o.exit_code !== 0 ? ` (exit ${o.exit_code})` : "";
      return { kind: "observation", cls: "k-obs", tool: e.tool_name, text: text.split("\n")[0] + exit, err: o.is_error || !!exit };
    }
    case "MessageEvent":
      return { kind: "message", cls: "k-msg", tool: "from " + e.source, text: textOf(e.llm_message && e.llm_message.content) };
    case "ConversationStateUpdateEvent":
      return { kind: "state", cls: "k-state", text: e.key + " = " + JSON.stringify(e.value), state: true };
    case "SystemPromptEvent":
      return { kind: "system prompt", cls: "k-other", text: textOf([e.system_prompt]).split("\n")[0] };
    case "AgentErrorEvent": case "ConversationErrorEvent": case "UserRejectObservation":
      return { kind: "error", cls: "k-err", tool: e.tool_name, text: e.error || e.detail || e.code || e.rejection_reason || "", err: true };
    case "ohrun.RawFrame": case "ohrun.UnreadableLine":
      return { kind: "unreadable", cls: "k-err", text: e.error || "", err: true };
    default:
      return { kind: String(e.kind || "event"), cls: "k-other", text: e.summary || "" };
  }
}

function eventRow(e) {
  const d = describe(e);
  const time = typeof e.timestamp === "string" ? (e.timestamp.split("T")[1] || "").slice(0, 12) : "";
  const row = lazy({ class: "ev" + (d.state ? " ev-state" : "") + (d.err ? " is-err" : "") },
    [h("span", { class: "t" }, time), h("span", { class: "kind " + d.cls }, d.kind), d.tool ? h("span", { class: "tool" }, d.tool) : null,
      h("span", { class: "text" }, (d.text || "").slice(0, 300))],
    () => eventBody(e));
  return row;
}

function eventBody(e) {
  const body = h("div", { class: "evbody" });
  const part = (label, text) => text ? append(body, h("div", null, h("div", { class: "label" }, label), h("pre", null, text))) : null;
  if (e.ohrun_cut) part("Not embedded", "This event is past the page's size budget; events.jsonl has it whole.");
  if (e.kind === "ActionEvent") {
    part("Thought", textOf(e.thought));
    let args = e.tool_call && e.tool_call.arguments;
    try { args = JSON.stringify(JSON.parse(args), null, 2); } catch (err) { args = args || JSON.stringify(e.action, null, 2); }
    part("Tool call: " + (e.tool_name || ""), args);
  } else if (e.kind === "ObservationEvent") {
    const o = e.observation || {};
    part("Output" + (o.exit_code != null ? " (exit " + o.exit_code + ")" : ""), textOf(o.content) || o.output || "");
  } else if (e.kind === "MessageEvent") {
    part("Message from " + e.source, textOf(e.llm_message && e.llm_message.content));
  } else if (e.kind === "SystemPromptEvent") {
    part("System prompt", textOf([e.system_prompt]));
  }
  append(body, lazy({ class: "section" }, "Full event JSON", () => h("pre", null, JSON.stringify(e, null, 2))));
  return body;
}

// ---- start ----

(function main() {
  const data = JSON.parse(document.getElementById("data").textContent);
  const app = document.getElementById("app");
  if (data.page === "batch") batchPage(data, app); else runPage(data, app);
  void document.body.offsetHeight; // lay the page out before taking the time
  document.body.dataset.rendered = "1";
  document.body.dataset.readyMs = performance.now().toFixed(0);

  // Served by `ohrun view --serve`: reload when the report behind the page changes, where the reader was.
  if (data.live) {
    const scroll = loadState().scroll;
    if (scroll) window.scrollTo(0, scroll);
    const poll = async () => {
      try {
        const res = await fetch(data.live.poll, { cache: "no-store" });
        if (res.ok && (await res.text()) !== data.live.version) { saveState(Object.assign(loadState(), { scroll: window.scrollY })); location.reload(); return; }
      } catch (err) { /* the server stopped: keep the page as it is */ }
      setTimeout(poll, 2000);
    };
    setTimeout(poll, 2000);
  }
})();
