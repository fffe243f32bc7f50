"use strict";
// Every text from a run (model output, problems, answers, errors, names) enters the page through
// text nodes or textContent, never as markup: a trace may hold anything and the file gets mailed.
const DATA = JSON.parse(document.getElementById("spectra-data").textContent);
// Each problem's traces (gzip in base64) are unpacked when the problem is shown: a big run opens
// at once, and a problem page costs only its own tracks.
const PACKED = [];
const TRACES = [];
async function unpack(packed) {
  const binary = atob(packed);
  const bytes = new Uint8Array(binary.length);
  for (let k = 0; k < binary.length; k++) bytes[k] = binary.charCodeAt(k);
  const text = await new Response(new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"))).text();
  return JSON.parse(text);
}
async function loadTraces(...problems) {
  for (const [r, i] of problems) {
    PACKED[r] = PACKED[r] || JSON.parse(document.getElementById("spectra-traces-" + r).textContent);
    TRACES[r] = TRACES[r] || [];
    TRACES[r][i] = TRACES[r][i] || (await unpack(PACKED[r][i]));
  }
}
// A problem's trace: its tracks, and a search's pruned beams (search_view.js).
const traceOf = (r, i) => TRACES[r][i];
const WRITERS = { small: "small model", big: "big model" };
const OUTCOMES = {
  written: "written", accepted: "draft accepted", rewritten: "draft rejected, rewritten",
  replaced: "draft replaced", taken_over: "taken over",
};
const ENDS = {
  answer: "stated the answer", budget: "thinking budget reached", repeat: "repeated its last step",
  eos: "model ended the text", think_end: "closed thinking", cancelled: "cancelled by early stop",
  skipped: "skipped: early stop came first", failed: "failed", length: "token limit reached",
};
const STATUS = { right: "right", wrong: "wrong", none: "no answer", unscored: "no reference" };

function el(tag, props, ...kids) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = String(value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, String(value));
  }
  return put(node, ...kids);
}
// Appends nodes and texts (as text nodes); skips the empty parts a view leaves out.
function put(node, ...kids) {
  for (const kid of kids.flat()) {
    if (kid === undefined || kid === null || kid === false) continue;
    node.appendChild(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  }
  return node;
}
const writerClass = (w) => "w-" + (w in WRITERS ? w : "other");
const writerName = (w) => WRITERS[w] || String(w) + " model";
const fmt = (x, digits = 2) => (x === null || x === undefined ? "–" : Number(x).toFixed(digits));
const pct = (x) => (x === null || x === undefined ? "–" : (100 * x).toFixed(1) + "%");
const shown = (x) => (x === null || x === undefined ? "(none)" : String(x));
function resultBadge(ok, answer) {
  const st = answer === null || answer === undefined ? "none" : ok === null || ok === undefined ? "unscored" : ok ? "right" : "wrong";
  return el("span", { class: "badge " + st, "data-status": st }, STATUS[st]);
}
function ledgerLine(led) {
  return Object.entries(led || {}).map(([m, l]) => {
    const busy = Object.entries(l.b || {}).map(([server, s]) => `${server.replace(/^\w+:\/\//, "")} busy ${fmt(s)} s`);
    const parts = [`${writerName(m)}: ${fmt(l.s)} request-s in ${l.n} requests`, l.c ? `${l.c} timed by the client` : "",
      ...busy, l.ch !== undefined ? `${pct(l.ch)} of prompt tokens cached` : "", l.q !== undefined ? `queue ${pct(l.q)}` : ""];
    return parts.filter(Boolean).join(", ");
  }).join("; ");
}

function usageLine(use) {
  return Object.entries(use || {}).map(([m, u]) => `${writerName(m)}: ${u[0]} tokens in ${u[2]} requests`).join("; ");
}

// ---------- routing: #run=I, #run=I&p=J, #cmp, #cmp&k=J ----------
async function route() {
  const hash = location.hash;
  const params = new URLSearchParams(hash.slice(1));
  const main = document.getElementById("main");
  const cmp = params.has("cmp");
  const run = Math.min(Number(params.get("run") || 0), DATA.runs.length - 1);
  document.querySelectorAll("header a[data-tab]").forEach((a) =>
    a.classList.toggle("on", a.dataset.tab === (cmp ? "cmp" : "run" + run)));
  const traced = (cmp && params.has("k")) || (!cmp && params.has("p"));
  if (traced) {
    main.replaceChildren(el("p", { class: "note" }, "Unpacking the traces…"));
    await loadTraces(...(cmp ? DATA.compare[Number(params.get("k"))].map((i, side) => [side, i]) : [[run, Number(params.get("p"))]]));
    if (location.hash !== hash) return; // the reader moved on meanwhile
  }
  main.replaceChildren();
  if (cmp) {
    if (params.has("k")) put(main, comparePair(Number(params.get("k"))));
    else put(main, comparePage());
  } else if (params.has("p")) {
    put(main, problemPage(run, Number(params.get("p"))));
  } else {
    put(main, runPage(run));
  }
  window.scrollTo(0, 0);
}

function header() {
  const bar = el("header", {}, el("span", { class: "brand" }, "spectra trace viewer"));
  DATA.runs.forEach((r, i) => put(bar, el("a", { href: "#run=" + i, "data-tab": "run" + i }, "run: " + r.name)));
  if (DATA.compare) put(bar, el("a", { href: "#cmp", "data-tab": "cmp" }, "compare the two runs"));
  return bar;
}

// ---------- run page ----------
const tableState = DATA.runs.map(() => ({ query: "", status: "all", sort: "index", desc: false }));
const COLUMNS = [
  ["index", "#", (p, i) => i], ["id", "problem", (p) => p.id], ["rep", "repeat", (p) => p.rep],
  ["ans", "answer", (p) => shown(p.ans)], ["ref", "reference", (p) => shown(p.ref)],
  ["st", "result", (p) => p.st], ["tracks", "tracks", (p) => p.nt],
  ["es", "early stop", (p) => (p.es ? 1 : 0)], ["fail", "failed tracks", (p) => p.fail],
  ["tok", "tokens", (p) => p.tok], ["lat", "latency (s)", (p) => p.lat],
];
const FILTERS = {
  all: () => true, right: (p) => p.st === "right", wrong: (p) => p.st === "wrong", none: (p) => p.st === "none",
  es: (p) => p.es, failed: (p) => p.fail > 0,
};

function runPage(r) {
  const run = DATA.runs[r];
  const page = el("div", { id: "run-page" });
  put(page, el("h1", {}, "Run " + run.name),
    el("p", { class: "lead" }, "One row per problem (and repeat). Click a row to see how each model reasoned on it."));
  const flags = run.flags.length
    ? el("table", {}, el("tr", {}, el("th", {}, "flag"), el("th", {}, "this run"), el("th", {}, "seed default")),
      run.flags.map(([f, v, d]) => el("tr", {}, el("td", {}, "--" + f), el("td", {}, shown(v)), el("td", {}, shown(d)))))
    : el("p", { class: "note" }, "No flag differs from the seed's defaults.");
  const models = el("table", {}, Object.entries(run.models).map(([role, id]) => el("tr", {}, el("th", {}, role), el("td", {}, id))));
  const config = el("div", { class: "card", id: "config" }, el("h3", {}, "Configuration"),
    el("table", {}, [["runner", run.runner], ["step policy", run.policy], ["strategy", run.strategy], ["data set", run.dataset]]
      .map(([k, v]) => el("tr", {}, el("th", {}, k), el("td", {}, shown(v))))),
    el("h3", {}, "Models"), models, el("h3", {}, "Flags that differ from the seed's defaults"), flags);
  const ci = run.ci ? ` (95% interval ${pct(run.ci[0])} – ${pct(run.ci[1])})` : "";
  const figures = el("div", { class: "card", id: "figures" }, el("h3", {}, "Accuracy"),
    el("div", { class: "big-figure", id: "accuracy" }, pct(run.accuracy)),
    el("div", {}, `${run.scored} of ${run.records} records have a reference answer${ci}`),
    el("h3", {}, "Latency per problem"),
    el("div", {}, `mean ${fmt(run.latency.mean)} s, median ${fmt(run.latency.p50)} s, p95 ${fmt(run.latency.p95)} s`),
    run.checked ? [el("h3", {}, "Draft acceptance"),
      el("div", { id: "acceptance" }, `${pct(run.acceptance)} of ${run.checked} checked drafts kept as drafted`)] : null,
    run.notes.map((n) => el("p", { class: "note" }, n)));
  const plots = el("div", { class: "card plots" });
  const template = document.getElementById("plots-" + r);
  if (template) put(plots, template.content.cloneNode(true));
  put(page, el("div", { class: "cards" }, config, figures, plots));
  put(page, problemTable(r));
  return page;
}

function problemTable(r) {
  const run = DATA.runs[r];
  const state = tableState[r];
  const wrap = el("div", {});
  const count = el("span", { id: "count" });
  const search = el("input", { type: "search", id: "search", placeholder: "Search id, question, answer…", "aria-label": "search problems" });
  search.value = state.query;
  const select = el("select", { id: "filter", "aria-label": "filter problems" },
    [["all", "all problems"], ["right", "right"], ["wrong", "wrong"], ["none", "no answer"], ["es", "early-stopped"], ["failed", "with failed tracks"]]
      .map(([v, t]) => el("option", { value: v }, t)));
  select.value = state.status;
  const tbody = el("tbody", {});
  const heads = COLUMNS.map(([key, title]) => el("th", { "data-key": key, class: ["tok", "lat", "index", "tracks", "fail"].includes(key) ? "num" : "",
    onclick: () => { state.desc = state.sort === key ? !state.desc : false; state.sort = key; fill(); } }, title));
  const haystack = run.problems.map((p) => [p.id, p.q, p.ans, p.ref].map((x) => String(x ?? "").toLowerCase()).join("\n"));
  function fill() {
    const query = state.query.toLowerCase();
    const column = COLUMNS.find((c) => c[0] === state.sort);
    const rows = run.problems.map((p, i) => [p, i]).filter(([p, i]) => FILTERS[state.status](p) && (!query || haystack[i].includes(query)));
    rows.sort(([a, i], [b, j]) => {
      const x = column[2](a, i), y = column[2](b, j);
      const order = typeof x === "number" && typeof y === "number" ? x - y : String(x).localeCompare(String(y), undefined, { numeric: true });
      return (state.desc ? -order : order) || i - j;
    });
    heads.forEach((h) => { h.dataset.sorted = h.dataset.key === state.sort ? (state.desc ? "desc" : "asc") : "";
      h.textContent = COLUMNS.find((c) => c[0] === h.dataset.key)[1] + (h.dataset.key === state.sort ? (state.desc ? " ▼" : " ▲") : ""); });
    tbody.replaceChildren(...rows.map(([p, i]) => el("tr", { "data-index": i, onclick: () => { location.hash = `run=${r}&p=${i}`; } },
      el("td", { class: "num" }, i), el("td", {}, p.id), el("td", { class: "num" }, p.rep), el("td", {}, shown(p.ans)),
      el("td", {}, shown(p.ref)), el("td", {}, resultBadge(p.ok, p.ans)), el("td", { class: "num" }, p.nt),
      el("td", {}, p.es ? "yes" : ""), el("td", { class: "num" }, p.fail || ""), el("td", { class: "num" }, p.tok),
      el("td", { class: "num" }, fmt(p.lat)))));
    count.textContent = `showing ${rows.length} of ${run.problems.length}`;
  }
  search.addEventListener("input", () => { state.query = search.value; fill(); });
  select.addEventListener("change", () => { state.status = select.value; fill(); });
  put(wrap, el("h2", {}, "Problems"), el("div", { class: "controls" }, search, select, count),
    el("table", { class: "problems", id: "problems" }, el("thead", {}, el("tr", {}, heads)), tbody));
  fill();
  return wrap;
}

// ---------- problem page ----------
function legend(drafts) {
  return el("div", { class: "legend" },
    el("span", {}, el("span", { class: "dot", style: "background:var(--small)" }), "small model wrote it"),
    el("span", {}, el("span", { class: "dot", style: "background:var(--big)" }), "big model wrote it"),
    el("span", {}, el("span", { class: "dot", style: "background:var(--other)" }), "another model"),
    drafts ? el("span", {}, "score: the judge's 0-9 rating of a draft (a PRM judge: its reward in [0, 1]), grey bars its probability of each score; struck-through: a draft the judge rejected") : null);
}

function problemPage(r, i) {
  const page = el("div", { id: "problem-page" });
  put(page, el("a", { class: "back", href: "#run=" + r }, "← all problems of run " + DATA.runs[r].name));
  put(page, problemView(r, i));
  return page;
}

function problemView(r, i) {
  const p = { ...DATA.runs[r].problems[i], ...traceOf(r, i) };
  const view = el("div", { class: "problem", "data-view": p.view });
  put(view, el("h1", {}, `Problem ${p.id}`, p.rep ? ` · repeat ${p.rep}` : "", " ", resultBadge(p.ok, p.ans)),
    el("div", { class: "card" }, el("h3", {}, "Question"), el("div", { class: "text question" }, p.q),
      el("table", {}, el("tr", {}, el("th", {}, "final answer"), el("td", { id: "final-answer" }, shown(p.ans))),
        el("tr", {}, el("th", {}, "reference"), el("td", {}, shown(p.ref))),
        el("tr", {}, el("th", {}, "cost"), el("td", {}, `${fmt(p.lat)} s; ${usageLine(p.use) || "no usage recorded"}`)),
        el("tr", {}, el("th", {}, "server time"), el("td", { id: "ledger" }, ledgerLine(p.led) || "no request entered")))));
  if (p.tracks.length && p.fail === p.tracks.length) put(view, el("p", { class: "error" }, "Every track of this problem failed; a resumed run does it again."));
  put(view, legend(p.view === "steps"));
  const render = { steps: stepsView, text: textView, search: searchView, rast: rastView }[p.view] || stepsView;
  put(view, render(p));
  return view;
}

function voteCard(p) {
  const tally = Object.entries(p.votes || {}).sort((a, b) => b[1] - a[1]);
  const card = el("div", { class: "card", id: "vote" }, el("h3", {}, `Vote (${p.agg})`));
  put(card, tally.length
    ? el("table", {}, el("tr", {}, el("th", {}, "answer"), el("th", {}, "votes")),
      tally.map(([a, v]) => el("tr", {}, el("td", {}, a), el("td", { class: "num" }, fmt(v, v % 1 ? 2 : 0)))))
    : el("p", { class: "note" }, "no track gave an answer"));
  if (p.es) put(card, el("p", {}, `Early stop: the vote was decided before every track finished; cancelled tracks ${p.cancel.join(", ") || "none"}; ${p.saved} tokens saved.`));
  if (p.msel) put(card, el("p", {}, "Method selection: ", JSON.stringify(p.msel)));
  return card;
}

function stepsView(p) {
  const box = el("div", {});
  put(box, voteCard(p), el("h2", {}, p.tracks.length === 1 ? "The track, step by step" : `${p.tracks.length} tracks side by side`));
  put(box, el("div", { class: "tracks" }, p.tracks.map(trackColumn)));
  return box;
}

function trackHead(t) {
  return el("div", { class: "head" },
    el("strong", {}, t.label), " ", el("span", { class: "badge", "data-finish": t.fr }, ENDS[t.fr] || t.fr || "unfinished"),
    el("div", {}, "answer ", el("strong", {}, shown(t.ans)), t.am && t.ans !== null ? ` (written by the ${writerName(t.am)})` : "", " ",
      ["cancelled", "skipped", "failed"].includes(t.fr) ? "" : resultBadge(t.ok, t.ans)),
    el("div", { class: "meta" }, `${t.tok} tokens, ${fmt(t.lat)} s, ${t.steps.length} steps`, t.score !== undefined ? `, score ${fmt(t.score, 3)}` : ""),
    t.err ? el("div", { class: "error" }, t.err) : null);
}

function trackColumn(t) {
  const stopped = t.fr === "cancelled" || t.fr === "skipped";
  const col = el("div", { class: "track" + (stopped ? " stopped" : ""), "data-track": t.id }, trackHead(t));
  t.steps.forEach((s, j) => put(col, stepBlock(s, j)));
  if (t.atext) put(col, el("div", { class: "step w-" + (t.am in WRITERS ? t.am : "other") }, el("div", { class: "meta" }, "answer phase"), el("div", { class: "text" }, t.atext)));
  put(col, el("div", { class: "end" }, "■ " + (ENDS[t.fr] || t.fr || "unfinished")));
  return col;
}

function distribution(d) {
  const top = Math.max(...Object.values(d), 1e-9);
  // Every digit the judge could give, so that one glance shows where the mass lies.
  const digits = [..."0123456789", ...Object.keys(d).filter((k) => !/^[0-9]$/.test(k)).sort()];
  return el("div", { title: "the judge's probability of each score" },
    el("div", { class: "dist" }, digits.map((k) => el("span", { style: `height:${(26 * (d[k] || 0) / top).toFixed(1)}px`, title: `${k}: ${(100 * (d[k] || 0)).toFixed(1)}%` }))),
    el("div", { class: "dist-labels" }, digits.map((k) => el("span", {}, k))));
}

function stepMeta(s, j) {
  const parts = [`step ${j + 1}`, writerName(s.w), OUTCOMES[s.o] || s.o, `${s.n} tokens`];
  if (s.s !== undefined) parts.push(s.j === "prm" ? `PRM reward ${fmt(s.s, 2)}` : `score ${fmt(s.s, 1)}`);
  if (s.e && s.e !== "delimiter") parts.push(`ended: ${ENDS[s.e] || s.e}`);
  return el("div", { class: "meta" }, parts.join(" · "));
}

function stepBlock(s, j) {
  const block = el("div", { class: "step " + writerClass(s.w), "data-writer": s.w, "data-outcome": s.o, title: usageLine(s.u) });
  if (s.dr !== undefined) {
    const drafter = s.w === "small" ? "big" : "small";
    put(block, stepMeta(s, j), el("div", { class: "pair" },
      el("div", { class: "draft " + writerClass(drafter) }, el("div", { class: "meta" }, `rejected draft · score ${fmt(s.s, 1)}`),
        s.d ? distribution(s.d) : null, el("div", { class: "text draft-text" }, s.dr)),
      el("div", {}, el("div", { class: "meta" }, `${OUTCOMES[s.o]} by the ${writerName(s.w)}`), el("div", { class: "text" }, s.t))));
  } else {
    put(block, stepMeta(s, j), s.d ? distribution(s.d) : null, el("div", { class: "text" }, s.t));
  }
  return block;
}

function textView(p) {
  const box = el("div", {});
  if (p.tracks.length > 1) put(box, voteCard(p));
  for (const t of p.tracks) {
    const card = el("div", { class: "card track-text", "data-track": t.id }, trackHead(t));
    const body = el("div", { class: "text" });
    const rounds = [];
    t.steps.forEach((s, j) => {
      const span = el("span", { class: "span step " + writerClass(s.w), "data-writer": s.w, "data-outcome": s.o, title: `step ${j + 1}: ${writerName(s.w)}, ${s.n} tokens` }, s.t);
      put(body, span);
      if (s.x && s.x.ended && s.w !== "small") put(body, el("span", { class: "span-end" }, "big span ended: " + s.x.ended));
      if (s.x && s.x.rounds) rounds.push([j, s.x.rounds]);
    });
    put(card, el("h3", {}, "Text, marked by writer"), body);
    if (t.atext) put(card, el("h3", {}, "Answer phase"), el("div", { class: "text" }, t.atext));
    rounds.forEach(([j, rs]) => put(card, el("h3", {}, `Sub-selection before step ${j + 1}: candidates' scores per round`),
      el("table", { class: "rounds" }, el("tr", {}, el("th", {}, "round"), el("th", {}, "candidate scores (big model's mean logprob)"), el("th", {}, "kept")),
        rs.map((rd, k) => el("tr", {}, el("td", {}, k + 1), el("td", {}, (rd.scores || []).map((x) => fmt(x, 3)).join("  ")), el("td", {}, rd.kept))))));
    put(card, el("div", { class: "end" }, "■ " + (ENDS[t.fr] || t.fr)));
    put(box, card);
  }
  return box;
}

function rastView(p) {
  const d = p.details || {};
  const box = el("div", {});
  const chunks = d.chunks || [];
  const card = el("div", { class: "card", id: "rast" }, el("h3", {}, "RAST decoding"),
    el("table", {}, [["acceptance", pct(d.acceptance)], ["tokens", d.tokens], ["requests per token", fmt(d.requests_per_token, 3)],
      ["top-k fills", JSON.stringify(d.top_k_fills ?? null)], ["finish", `${shown(d.finish_reason)} (${shown(d.stop_reason)})`]]
      .map(([k, v]) => el("tr", {}, el("th", {}, k), el("td", {}, shown(v))))));
  if (chunks.length) {
    put(card, el("h3", {}, `Accepted share of each drafted chunk (${chunks.length} chunks; hover for counts)`),
      el("div", { class: "chunks" }, chunks.map(([drafted, accepted], k) =>
        el("span", { style: `height:${(58 * (drafted ? accepted / drafted : 0) + 2).toFixed(1)}px`, title: `chunk ${k + 1}: ${accepted} of ${drafted} accepted` }))));
  }
  put(box, card);
  put(box, el("div", { class: "tracks" }, p.tracks.map(trackColumn)));
  return box;
}

// ---------- comparison of two runs ----------
function comparePage() {
  const [a, b] = DATA.runs;
  const pairs = DATA.compare;
  const page = el("div", { id: "compare-page" }, el("h1", {}, `Where ${a.name} and ${b.name} disagree`),
    el("p", { class: "lead" }, `${pairs.length} problems are right in one run and wrong in the other, of ${DATA.common} both answered with a reference. Click one to see both traces side by side.`));
  put(page, el("table", { class: "problems", id: "disagreements" },
    el("thead", {}, el("tr", {}, el("th", {}, "problem"), el("th", {}, "repeat"), el("th", {}, a.name), el("th", {}, b.name))),
    el("tbody", {}, pairs.map(([i, j], k) => {
      const p = a.problems[i], q = b.problems[j];
      return el("tr", { "data-problem": p.id, onclick: () => { location.hash = "cmp&k=" + k; } }, el("td", {}, p.id), el("td", {}, p.rep),
        el("td", {}, shown(p.ans), " ", resultBadge(p.ok, p.ans)), el("td", {}, shown(q.ans), " ", resultBadge(q.ok, q.ans)));
    }))));
  return page;
}

function comparePair(k) {
  const [i, j] = DATA.compare[k];
  return el("div", { id: "compare-pair" }, el("a", { class: "back", href: "#cmp" }, "← all disagreements"),
    el("div", { class: "side" },
      el("div", {}, el("h2", {}, "run " + DATA.runs[0].name), problemView(0, i)),
      el("div", {}, el("h2", {}, "run " + DATA.runs[1].name), problemView(1, j))));
}

document.body.prepend(header());
// An error while drawing is shown in the page as well as the console, never swallowed.
const showError = (error) => {
  put(document.getElementById("main"), el("p", { class: "error" }, "The viewer failed: " + error));
  throw error;
};
window.addEventListener("hashchange", () => route().catch(showError));
route().catch(showError);
