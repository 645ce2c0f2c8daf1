// ohrun report.html, verification: each check with its result and output, the verdict, the final patch
// (run page); the verdict and score columns, the pass rate and pass@k per run id (batch page).
// This file is appended to page.js, whose last lines start drawing: it holds function declarations only
// (they are hoisted; a top-level const here would not be set yet). Report text enters as text nodes (h()).

// ---- run page ----

// `passed`, `failed`, `error` (it could not run), `failed (optional)`, and its colour.
function checkState(c) {
  if (c.passed) return ["passed", "ok"];
  if (c.error) return ["error", "bad"];
  return c.required === false ? ["failed (optional)", "warn"] : ["failed", "bad"];
}

// The verdict as a badge (`prefix`: "verdict " in the title line, where the outcome's badge stands beside it).
function verdictBadge(v, prefix) {
  if (!v) return null;
  if (v.not_verified) return h("span", { class: "badge idle verdict", title: v.not_verified }, "not verified");
  if (!v.verdict) return null;
  const cls = v.verdict === "passed" ? "ok" : "bad";
  return h("span", { class: "badge verdict " + cls, title: "score " + score(v.score) }, (prefix || "") + v.verdict);
}

// Output as the page shows it: without the terminal's colour and cursor sequences.
function plainOutput(text) {
  return text.replace(/\x1b\[[0-9;?]*[ -\/]*[@-~]/g, "").replace(/\x1b[()][0-9A-Za-z]/g, "");
}

function score(x) { return x == null ? "—" : x.toFixed(2); }

function verdictCard(r) {
  const v = r.verification;
  if (!v) return null;
  const checks = v.checks || [];
  const passed = checks.filter((c) => c.passed).length;
  const what = v.not_verified ? "not verified" : v.verdict || "verifying";
  return card("Verdict", what, `score ${score(v.score)} · ${passed}/${checks.length} checks passed`);
}

// The checks of `verify:`: the run's checks after those of its steps, which their steps show.
function finalChecks(r) {
  const all = r.verification.checks || [];
  const ofSteps = r.steps.flatMap((s) => s.checks || []);
  const prefix = all.slice(0, ofSteps.length);
  const same = prefix.length === ofSteps.length && prefix.every((c, i) => c.name === ofSteps[i].name);
  return same ? all.slice(ofSteps.length) : all;
}

function verificationSection(r, app) {
  const v = r.verification;
  if (!v) return;
  const sandbox = v.sandbox ? `fresh ${v.sandbox.kind} sandbox ${v.sandbox.id || ""} (${v.sandbox.disposition})` : null;
  append(app, [
    h("h2", { id: "verification" }, "Verification", verdictBadge(v)),
    h("div", { class: "sub" },
      h("span", null, (v.mode || "shared") + " mode"),
      h("span", null, "score " + score(v.score)),
      v.duration_ms != null ? h("span", null, dur(v.duration_ms)) : null,
      v.cost ? h("span", null, "judges " + cost(v.cost)) : null,
      sandbox ? h("span", null, sandbox) : null),
    v.not_verified ? h("div", { class: "banner info" }, "Not verified: " + v.not_verified) : null,
    v.notices && v.notices.length ? h("div", { class: "banner warn", id: "notices" }, "Noticed before verification: ",
      h("ul", null, v.notices.map((n) => h("li", null, n)))) : null,
  ]);
  const finals = finalChecks(r);
  if (finals.length) append(app, checkList(finals, "checks"));
  else if (!v.not_verified) append(app, h("div", { class: "sub" }, "No checks after the last step."));
}

function checkList(checks, id) {
  return h("div", { class: "checks", id }, checks.map(checkBox));
}

function checkBox(c) {
  const [state, cls] = checkState(c);
  const facts = [c.kind, c.value != null ? "value " + score(c.value) : null, c.exit_code != null ? "exit " + c.exit_code : null,
    dur(c.duration_ms), c.weight !== 1 ? "weight " + c.weight : null, c.required === false ? "optional" : null, c.cost ? cost(c.cost) : null];
  const body = [];
  if (c.error) body.push(h("div", null, h("div", { class: "label" }, "Could not run"), h("div", { class: "said err" }, c.error)));
  if (c.explanation) {
    const who = c.kind === "judge" ? "The judge's explanation" : "Explanation (reward.json)";
    body.push(h("div", null, h("div", { class: "label" }, who), h("div", { class: "said agent explanation" }, c.explanation)));
  }
  for (const [name, text] of [["stdout", c.stdout_tail], ["stderr", c.stderr_tail]]) {
    if (!text) continue;
    body.push(lazy({ class: "section", open: !c.passed }, [name + " ", h("span", { class: "sub" }, "last lines")], () => h("pre", { class: "tail" }, plainOutput(text))));
  }
  return h("div", { class: "box check", "data-check": c.name, "data-state": state },
    h("header", null, h("span", { class: "cmd" }, c.name), h("span", { class: "badge " + cls }, state),
      h("span", { class: "sub" }, facts.filter((f) => f != null && f !== "").join(" · "))),
    body.length ? h("div", { class: "body" }, body) : null);
}

function stepChecks(s) {
  if (!s.checks || !s.checks.length) return null;
  return h("div", null, h("div", { class: "label" }, "Checks after this step"), checkList(s.checks, "step-" + s.index + "-checks"));
}

// The final patch: what the agent and setup changed against the commit the run started from.
function patchSection(r, L, app) {
  const p = r.final_patch;
  if (!p) return;
  const chips = [["base commit", p.base_commit], ["tree", p.tree], ["paths", p.paths], ["bytes", p.bytes], ["sha256", p.sha256]]
    .filter(([, v]) => v != null && v !== "").map(([k, v]) => h("span", { class: "chip" }, k + ": " + v));
  append(app, [h("h2", { id: "final-patch" }, "Final patch"),
    p.error ? h("div", { class: "banner warn" }, "No final patch: " + p.error) : null,
    p.redacted ? h("div", { class: "banner warn" }, "A secret was masked in it: it may not apply as it is.") : null,
    chips.length ? h("div", { class: "chips" }, chips) : null,
    L.final_patch ? h("div", { class: "links" }, h("a", { href: L.final_patch }, "final.patch")) : null]);
}

// ---- batch page ----

function verdictColumns(on) {
  return on ? [["Verdict", "verdict"], ["Score", "score", true]] : [];
}

function verdictCells(r, on) {
  if (!on) return [];
  const cls = r.verdict === "passed" ? "ok" : r.verdict ? "bad" : "idle";
  return [h("td", null, r.verdict ? h("span", { class: "badge " + cls }, r.verdict) : h("span", { class: "muted" }, "—")),
    h("td", { class: "num" }, score(r.score))];
}

// Under a run's id: the checks that did not pass.
function failedChecks(r) {
  const failed = (r.checks || []).filter((c) => !c.passed);
  if (!failed.length) return null;
  return h("div", { class: "failed-checks" }, failed.map((c) => h("span", { class: "chip " + checkState(c)[1], title: c.why || checkState(c)[0] },
    checkState(c)[0] + ": " + c.name)));
}

function checkWords(r) { return (r.checks || []).filter((c) => !c.passed).map((c) => c.name).join(" "); }

function percent(x) { return x == null ? "—" : Math.round(x * 100) + " %"; }

function verdictCards(s) {
  const v = s.verification;
  if (!v) return [];
  const b = v.batch;
  const rate = b.pass_rate;
  const counts = `${b.passed} passed · ${b.failed} failed` + (b.error ? ` · ${b.error} error (in no rate)` : "");
  return [
    card("Pass rate", rate ? percent(rate.estimate) : "—",
      [rate ? `95 % CI ${Math.round(rate.low * 100)}–${percent(rate.high)}` : "nothing verified", h("br"), counts],
      "passed / (passed + failed), with a 95 % interval clustered by run id"),
    card("Mean score", score(b.mean_score), b.cost_per_pass != null ? cost(b.cost_per_pass) + " per passed run" : null),
  ];
}

// Each job's tally (when there are several) and each run id's trials (pass@k, pass^k, flaky).
function scoresSection(s, app) {
  const v = s.verification;
  if (!v) return;
  const jobs = Object.entries(v.jobs || {});
  if (jobs.length > 1) {
    append(app, [h("h2", null, "Pass rate per job"), h("table", { id: "jobs-tally" },
      h("thead", null, h("tr", null, ["Job", "Pass rate", "95 % CI", "Passed", "Failed", "Error", "Mean score"].map((c) => h("th", null, c)))),
      h("tbody", null, jobs.map(([job, t]) => h("tr", null, h("td", null, job), h("td", { class: "num" }, percent(t.pass_rate && t.pass_rate.estimate)),
        h("td", { class: "num" }, t.pass_rate ? `${percent(t.pass_rate.low)}–${percent(t.pass_rate.high)}` : "—"),
        h("td", { class: "num" }, t.passed), h("td", { class: "num" }, t.failed), h("td", { class: "num" }, t.error),
        h("td", { class: "num" }, score(t.mean_score))))))]);
  }
  const trials = Object.entries(v.trials || {});
  if (!trials.length) return;
  const ks = (m) => Object.entries(m || {}).map(([k, x]) => `${k}: ${score(x)}`).join(" · ");
  append(app, [h("h2", null, "Trials per run id"), h("table", { id: "trials" },
    h("thead", null, h("tr", null, ["Run", "Trials", "Passed", "Errors", "pass@k", "pass^k", "Mean score", ""].map((c) => h("th", null, c)))),
    h("tbody", null, trials.map(([id, t]) => h("tr", { "data-id": id }, h("td", { class: "id" }, h("span", null, id)),
      h("td", { class: "num" }, t.trials), h("td", { class: "num" }, t.passed), h("td", { class: "num" }, t.errors),
      h("td", { class: "pass-at" }, ks(t.pass_at)), h("td", { class: "pass-all" }, ks(t.pass_all)),
      h("td", { class: "num" }, score(t.mean_score)), h("td", null, t.flaky ? h("span", { class: "badge warn" }, "flaky") : null)))))]);
}
