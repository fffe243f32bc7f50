"use strict";
// The problem page of a search (best-of-N, beam search, DVTS): the tree of its beams. Each
// completion and each beam the search pruned on the way is a path of steps; steps that several
// beams share (the same text) are drawn once, and a branch splits where their texts part. A step
// that no completion goes through belongs to pruned beams only: it is greyed. Uses viewer.js's
// helpers (el, put, fmt, ...), which place every text as text, never markup.

// Why a search dropped a beam (engine/reasoning/beams.py PRUNE_REASONS).
const PRUNED_WHY = {
  score: "it scored lower than the beams kept",
  duplicate: "its text repeated a beam kept (--filter_duplicates)",
  surplus: "it completed, but was not among the n completions kept",
};

function searchView(p) {
  const box = el("div", {});
  const picks = p.pick || {};
  const pruned = p.pruned || [];
  const counted = p.pruned ? `, ${pruned.length} beam${pruned.length === 1 ? "" : "s"} pruned` : "";
  const card = el("div", { class: "card" }, el("h3", {}, `Search (${p.strat}): ${p.tracks.length} completions${counted}`),
    selectionTable(p, picks), el("p", { class: "note" }, searchNote(p)));
  const tree = el("div", { class: "tree" }, drawBeams(beamTree(p.tracks, pruned, picks.naive), picks));
  if (pruned.length) {
    const toggle = el("input", { type: "checkbox", id: "show-pruned", checked: "" });
    toggle.addEventListener("change", () => tree.classList.toggle("hide-pruned", !toggle.checked));
    put(card, el("label", {}, toggle, ` show the ${pruned.length} pruned beam${pruned.length === 1 ? "" : "s"} (greyed)`));
  }
  put(box, card, tree);
  return box;
}

function selectionTable(p, picks) {
  return el("table", { id: "selections" }, el("tr", {}, el("th", {}, "selection"), el("th", {}, "picks completion"), el("th", {}, "answer"), el("th", {}, "")),
    [["naive", "top score; the record's answer"], ["weighted", "answer with the largest score sum"], ["maj", "most common answer"]].map(([k, what]) => {
      const t = picks[k] === null || picks[k] === undefined ? null : p.tracks[picks[k]];
      return el("tr", {}, el("td", {}, `${k} (${what})`), el("td", {}, t ? "#" + t.id : "–"), el("td", {}, t ? shown(t.ans) : "–"), el("td", {}, t ? resultBadge(t.ok, t.ans) : ""));
    }));
}

function searchNote(p) {
  const how = "Steps shared by several beams are drawn once; a branch splits where their texts part. Each step shows its score from the step scorer (PRM or judge); a completion's score aggregates its steps'. The selected completion (the naive pick) and the steps leading to it are outlined in green.";
  if (p.pruned) return how + " Iteration i writes step i of every beam. Greyed steps belong only to beams the search pruned; each ✂ line says at which iteration a beam was pruned and why.";
  if (p.strat === "best_of_n") return how + " Best-of-N prunes nothing: every solution it sampled is a completion.";
  return how + " This record was written before searches recorded the beams they prune: only completions are drawn.";
}

// The tree of every beam's path: a node per distinct step text under its parent, counting the
// completions and the pruned beams through it; each path ends in its beam (`ends`).
function beamTree(tracks, pruned, selected) {
  const root = { kids: new Map(), ends: [] };
  function grow(steps, kept, chosen) {
    let node = root;
    steps.forEach((s, j) => {
      if (!node.kids.has(s.t)) node.kids.set(s.t, { step: s, index: j, kids: new Map(), ends: [], kept: 0, pruned: 0, chosen: false });
      node = node.kids.get(s.t);
      node[kept ? "kept" : "pruned"] += 1;
      node.chosen = node.chosen || chosen;
    });
    return node;
  }
  tracks.forEach((t, i) => grow(t.steps, true, i === selected).ends.push({ track: t, i }));
  // A pruned beam stores only its own steps; `from` names the beam whose first steps it shares.
  const byId = new Map(tracks.map((t) => [t.id, t.steps]));
  const paths = [];
  pruned.forEach((b, j) => {
    const [kind, which, shared] = b.from || ["", null, 0];
    const base = (kind === "track" ? byId.get(which) : kind === "pruned" ? paths[which] : null) || [];
    paths[j] = [...base.slice(0, shared), ...b.steps];
    grow(paths[j], false, false).ends.push({ pruned: b, j });
  });
  return root;
}

function drawBeams(node, picks) {
  const list = el("ul", {});
  for (const child of node.kids.values()) {
    const s = child.step;
    const greyed = child.kept === 0;
    const paragraphs = s.x && s.x.paragraph_scores ? ` (its paragraphs: ${s.x.paragraph_scores.map((x) => fmt(x, 3)).join(", ")})` : "";
    const through = greyed ? `pruned: on ${child.pruned} pruned beam${child.pruned > 1 ? "s" : ""}`
      : `on ${child.kept} completion${child.kept > 1 ? "s" : ""}` + (child.pruned ? ` and ${child.pruned} pruned beam${child.pruned > 1 ? "s" : ""}` : "");
    const cls = "node step " + (greyed ? "pruned" : writerClass(s.w)) + (child.chosen ? " chosen" : "");
    put(list, el("li", { class: greyed ? "pruned" : null },
      el("div", { class: cls, "data-writer": s.w, "data-step": child.index + 1 },
        el("div", { class: "meta" }, `step ${child.index + 1} · score ${fmt(s.s, 3)}${paragraphs} · ${s.n ?? 0} tokens · ${through}`),
        el("div", { class: "text" }, s.t)),
      drawBeams(child, picks)));
  }
  for (const end of node.ends) put(list, end.track ? completionLeaf(end.track, end.i, picks) : prunedLeaf(end.pruned, end.j));
  return list;
}

function completionLeaf(t, i, picks) {
  const marks = Object.entries(picks).filter(([, v]) => v === i).map(([k]) => el("span", { class: "badge right" }, k + " pick"));
  return el("li", {}, el("div", { class: "node leaf" + (picks.naive === i ? " picked chosen" : Object.values(picks).includes(i) ? " picked" : ""), "data-completion": t.id },
    el("strong", {}, `completion #${t.id}`), ` score ${fmt(t.score, 3)} · answer `, el("strong", {}, shown(t.ans)), " ", resultBadge(t.ok, t.ans), " ", marks,
    picks.naive === i ? el("span", { class: "badge selected" }, "selected") : null,
    el("span", { class: "meta" }, " · " + (ENDS[t.fr] || t.fr)), t.err ? el("div", { class: "error" }, t.err) : null));
}

function prunedLeaf(b, j) {
  const when = b.why === "surplus" ? `dropped after completing at iteration ${b.at + 1}` : `pruned at iteration ${b.at + 1}`;
  return el("li", { class: "pruned" }, el("div", { class: "node leaf pruned", "data-pruned": j, "data-iteration": b.at + 1 },
    "✂ ", el("strong", {}, when), `: ${PRUNED_WHY[b.why] || b.why} · beam score ${fmt(b.score, 3)}`));
}
