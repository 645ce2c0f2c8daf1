// ohrun compare.html: draws the comparison in <script id="data"> (the document `ohrun compare --json`
// prints). Report text only ever enters the page as text nodes (h() below), never as HTML.
"use strict";

window.addEventListener("error", (e) => {
  const box = document.getElementById("render-error") || document.body.appendChild(h("div", { id: "render-error", class: "banner bad" }));
  box.textContent = "This page could not be drawn completely: " + (e.message || e);
});

function h(tag, props, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v === null || v === undefined || v === false) continue;
    // Links only to files beside the page: ohrun makes them relative and percent-encoded (no scheme).
    if (k === "href" && !/^[A-Za-z0-9._~%\/-]*$/.test(v)) continue;
    el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false || c === "") continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

const NUMBER = new Intl.NumberFormat("en-US");
const num = (n) => (n == null ? "—" : NUMBER.format(Math.round(n)));
const pct = (p) => (p == null ? "—" : (p * 100).toFixed(1) + " %");
const pts = (p) => (p == null ? "—" : (p >= 0 ? "+" : "−") + Math.abs(p * 100).toFixed(1) + " pts");
const sign = (v, f) => (v == null ? "—" : (v >= 0 ? "+" : "−") + f(Math.abs(v)));
const cost = (c) => (c == null ? "—" : "$" + (c >= 1 ? c.toFixed(2) : c.toFixed(4)));
const score = (s) => (s == null ? "—" : s.toFixed(3));
function dur(ms) {
  if (ms == null) return "—";
  if (ms < 1000) return Math.round(ms) + " ms";
  const s = ms / 1000;
  if (s < 60) return s.toFixed(1) + " s";
  const m = Math.floor(s / 60);
  return m < 60 ? m + "m " + Math.round(s - m * 60) + "s" : Math.floor(m / 60) + "h " + (m % 60) + "m";
}

const TONE = { regressed: "bad", fixed: "ok", not_comparable: "warn", both_passed: "ok", both_failed: "idle", only_in_base: "idle", only_in_new: "idle",
  passed: "ok", failed: "bad", error: "warn", succeeded: "ok", errored: "warn" };
const badge = (s) => h("span", { class: "badge " + (TONE[s] || "idle") }, (s || "—").replace(/_/g, " "));
const card = (k, v, d, cls) => h("div", { class: "card" + (cls ? " " + cls : "") }, h("div", { class: "k" }, k), h("div", { class: "v" }, v), d ? h("div", { class: "d" }, d) : null);

function outcome(side) {
  if (!side) return h("span", { class: "muted" }, "—");
  return side.verdict ? badge(side.verdict) : h("span", { title: "no verdict: counted by its status" }, badge(side.status));
}

function checks(list) {
  if (!list.length) return h("span", { class: "muted" }, "—");
  return h("div", { class: "chips" }, list.map((c) => h("span", { class: "chip", title: c.name },
    c.name + ": " + (c.base || "absent") + " → " + (c.new || "absent"))));
}

function runLink(id, trial, link) {
  const text = trial > 1 ? id + " #" + trial : id;
  return link ? h("a", { href: link }, text) : h("span", null, text);
}

function pairTable(id, title, note, entries, links) {
  const rows = entries.map(([e, i]) => h("tr", { class: "pair", "data-id": e.id, "data-change": e.change },
    h("td", { class: "id" }, runLink(e.id, e.trial, (links[i] || [])[1] || (links[i] || [])[0])),
    h("td", { class: "num" }, e.trial),
    h("td", null, outcome(e.base)), h("td", null, outcome(e.new)),
    h("td", { class: "num" }, score(e.base && e.base.score) + " → " + score(e.new && e.new.score)),
    h("td", { class: "num" }, cost(e.base && e.base.cost) + " → " + cost(e.new && e.new.cost)),
    h("td", null, e.reason ? h("span", { class: "muted" }, e.reason) : checks(e.checks))));
  return h("section", { id },
    h("h2", null, title + " (" + entries.length + ")"), note ? h("p", { class: "sub" }, note) : null,
    entries.length ? h("table", null,
      h("thead", null, h("tr", null, ["Run", "Trial", "BASE", "NEW", "Score", "Cost", "Checks that changed / why"].map((t, i) =>
        h("th", { class: i === 1 || i === 4 || i === 5 ? "num" : null }, t)))),
      h("tbody", null, rows)) : h("p", { class: "muted" }, "None."));
}

function metricsTable(m) {
  const rows = [
    ["Score", m.score, ["mean", "median"], score],
    ["Cost", m.cost, ["total", "median"], cost],
    ["Tokens", m.tokens, ["total", "median"], num],
    ["Duration", m.duration_ms, ["total", "median"], dur],
  ].flatMap(([name, x, which, f]) => which.map((w, i) => h("tr", null,
    h("td", null, i === 0 ? name : ""), h("td", { class: "muted" }, w + (i === 0 ? " · " + x.pairs + " pairs" : "")),
    h("td", { class: "num" }, f(x.base[w])), h("td", { class: "num" }, f(x.new[w])), h("td", { class: "num" }, sign(x.change[w], f)))));
  return h("table", { id: "metrics" },
    h("thead", null, h("tr", null, ["", "", "BASE", "NEW", "Change"].map((t, i) => h("th", { class: i > 1 ? "num" : null }, t)))),
    h("tbody", null, rows));
}

function comparePage(data, app) {
  const c = data.comparison;
  const n = c.counts;
  const d = c.difference;
  const verdict = c.significant_drop ? ["significant drop", "bad"] : n.regressed ? ["regressions", "warn"] : ["no regression", "ok"];
  const indexed = c.runs.map((e, i) => [e, i]);
  const of = (change) => indexed.filter(([e]) => e.change === change);
  append(app, [
    h("div", { class: "crumbs" }, "ohrun · compare"),
    h("h1", null, c.base.dir + " → " + c.new.dir, h("span", { class: "badge " + verdict[1] }, verdict[0])),
    h("div", { class: "sub" }, h("span", null, "BASE " + c.base.runs + " runs, " + c.base.updated_at),
      h("span", null, "NEW " + c.new.runs + " runs, " + c.new.updated_at), h("span", null, "ohrun " + c.ohrun_version)),
    h("div", { class: "cards" },
      card("Regressed", num(n.regressed), "passed → failed", n.regressed ? "bad" : null),
      card("Fixed", num(n.fixed), "failed → passed"),
      card("Both passed", num(n.both_passed)), card("Both failed", num(n.both_failed)),
      card("Not comparable", num(n.not_comparable), "an error on a side"),
      card("Only in one", num(n.only_in_base + n.only_in_new), n.only_in_base + " BASE · " + n.only_in_new + " NEW")),
    h("div", { class: "cards" },
      card("Pass rate BASE", pct(c.pass_rate.base && c.pass_rate.base.estimate), c.pass_rate.base ? "95 %: " + pct(c.pass_rate.base.low) + " – " + pct(c.pass_rate.base.high) : null),
      card("Pass rate NEW", pct(c.pass_rate.new && c.pass_rate.new.estimate), c.pass_rate.new ? "95 %: " + pct(c.pass_rate.new.low) + " – " + pct(c.pass_rate.new.high) : null),
      card("Difference", pts(d && d.estimate), d ? "95 %: " + pts(d.low) + " … " + pts(d.high) : "no comparable pairs"),
      card("McNemar p", c.mcnemar_p.toFixed(4), (c.significant_drop ? "significant drop" : "not a significant drop") + " at α " + c.alpha)),
    h("p", { class: "sub" }, "Pass rates are over the comparable pairs only: the same runs on both sides, each passed or failed. " +
      "McNemar's exact test asks whether the regressions and fixes could be a coin's chance split if nothing had changed; " +
      "the pairs that agree say nothing about a change. Errors (a verifier or the infrastructure failed) are never a regression."),
    h("h2", null, "Score, cost, tokens and duration"), metricsTable(c.metrics),
    pairTable("regressed", "Regressed", "Passed in BASE, failed in NEW.", of("regressed"), data.links),
    pairTable("fixed", "Fixed", "Failed in BASE, passed in NEW.", of("fixed"), data.links),
    pairTable("not-comparable", "Not comparable", "An error (a verifier or the infrastructure) or no result on a side: not counted either way.", of("not_comparable"), data.links),
    pairTable("only", "Only in one batch", null, of("only_in_base").concat(of("only_in_new")), data.links),
    pairTable("agree", "Unchanged", "Both passed or both failed.", of("both_failed").concat(of("both_passed")), data.links),
  ]);
}

function append(el, children) {
  for (const c of [children].flat(Infinity)) if (c) el.append(c);
}

(function main() {
  const data = JSON.parse(document.getElementById("data").textContent);
  comparePage(data, document.getElementById("app"));
  document.body.dataset.rendered = "1";
})();
