// ragtune ui front end: plain ES modules, no build step, nothing fetched from the network.
// Every page asks the server, which reads the run directories: the page holds no state that a
// refresh could lose (form inputs of the playground pages are kept in localStorage).
import { barChart, fmt, histogram, lineChart } from "./charts.js";

const $ = (sel, root = document) => root.querySelector(sel);
let INFO = { runs_dir: "" };
let pageTimer = null;              // the current page's polling timer
let pageToken = 0;                 // bumps on navigation: late answers for an old page are dropped

// -- DOM and HTTP helpers ------------------------------------------------------------------------
function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "class") node.className = v;
    else if (k === "value") node.value = v;
    else if (k === "checked") node.checked = !!v;
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined && c !== false)
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

function setConn(ok) { $("#conn").hidden = ok; }

async function api(path, { method = "GET", body } = {}) {
  const opts = { method, headers: {} };
  if (body !== undefined) { opts.headers["Content-Type"] = "application/json"; opts.body = JSON.stringify(body); }
  if (method !== "GET") opts.headers["X-Ragtune-UI"] = "1";
  let resp;
  try { resp = await fetch(path, opts); } catch (e) { setConn(false); throw new Error("the UI server is unreachable"); }
  setConn(true);
  if (resp.status === 401) { location.href = "/login?next=/"; throw new Error("sign in first"); }
  const data = await resp.json().catch(() => ({ error: `HTTP ${resp.status}` }));
  if (!resp.ok) {
    const err = new Error((data.error || `HTTP ${resp.status}`) + (data.hint ? `\nhint: ${data.hint}` : ""));
    err.data = data; err.status = resp.status;
    throw err;
  }
  return data;
}

function errorBox(err) { return h("div", { class: "error-box", role: "alert" }, err.message || String(err)); }
function badge(state) { return h("span", { class: `badge state-${state}`, "data-state": state }, state); }
function ago(ts) {
  if (!ts) return "";
  const s = Math.max(0, Date.now() / 1000 - ts);
  return s < 90 ? `${Math.round(s)} s ago` : s < 5400 ? `${Math.round(s / 60)} min ago` : s < 172800 ?
    `${Math.round(s / 3600)} h ago` : `${Math.round(s / 86400)} d ago`;
}
function fileUrl(id, name) { return `/api/file?id=${encodeURIComponent(id)}&name=${encodeURIComponent(name)}`; }
function stored(page) { try { return JSON.parse(localStorage.getItem("ragtune-ui:" + page) || "{}"); } catch { return {}; } }
function store(page, values) { localStorage.setItem("ragtune-ui:" + page, JSON.stringify(values)); }
function field(label, input, extra = {}) { return h("div", { class: "field", ...extra }, h("label", {}, label), input); }
function debounce(fn, ms) { let t; return (...a) => { clearTimeout(t); t = setTimeout(() => fn(...a), ms); }; }
function parseHash() {
  const [path, query] = location.hash.replace(/^#\/?/, "").split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  return { page: parts[0] || "runs", rest: parts.slice(1).join("/"), params: new URLSearchParams(query || "") };
}
function poll(fn, ms) {
  clearTimeout(pageTimer);
  const token = pageToken;
  const tick = async () => {
    let next = ms;
    try { next = (await fn()) ?? ms; } catch (e) { next = Math.max(ms, 2000); }
    if (token === pageToken) pageTimer = setTimeout(tick, typeof next === "number" ? next : ms);
  };
  tick();
}

// -- router -------------------------------------------------------------------------------------
const PAGES = { runs: runsPage, new: newRunPage, data: dataPage, compare: comparePage, retrieval: retrievalPage, chat: chatPage };
function route() {
  pageToken++;
  clearTimeout(pageTimer);
  const { page, rest, params } = parseHash();
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.page === (page === "new" ? "runs" : page));
  const main = $("#page");
  main.replaceChildren();
  (PAGES[page] || runsPage)(main, rest, params);
}
window.addEventListener("hashchange", route);
window.addEventListener("DOMContentLoaded", async () => {
  try { INFO = await api("/api/info"); $("#runs-dir").textContent = `runs: ${INFO.runs_dir}`; } catch (e) { /* shown by the page */ }
  route();
});

// == Runs ==========================================================================================
function runsPage(main, selected) {
  const list = h("div", { class: "list", id: "run-list" });
  const detailBox = h("div", { id: "run-detail" });
  main.append(h("div", { class: "layout" },
    h("div", {}, h("div", { class: "actions" }, h("a", { href: "#/new" }, h("button", { class: "primary", id: "new-run" }, "New run")),
      h("span", { class: "muted" }, "every run under the runs directory")), list),
    detailBox));
  const token = pageToken;
  const refreshList = async () => {
    const { runs } = await api("/api/runs");
    if (token !== pageToken) return;
    list.replaceChildren(...(runs.length ? runs.map(r => h("a", {
      href: `#/runs/${encodeURIComponent(r.id)}`, class: r.id === selected ? "active" : "", "data-run": r.id },
      h("div", {}, h("b", {}, r.name), " ", badge(r.state)),
      h("div", { class: "sub" }, `${r.kind}${r.stages ? ` · ${r.stages_done}/${r.stages} stages` : ""} · ${ago(r.updated)}`)))
      : [h("div", { class: "sub", style: "padding:10px" }, "No runs yet. Start one with New run, or point --runs at a directory with runs.")]));
    if (!selected && runs.length) location.replace(`#/runs/${encodeURIComponent(runs[0].id)}`);
  };
  let listTick = 0;
  if (!selected) { poll(refreshList, 3000); return; }
  const view = runView(detailBox, selected, () => refreshList().catch(() => {}));
  poll(async () => {
    if (listTick++ % 3 === 0) refreshList().catch(() => {});
    return view.refresh();
  }, 1000);
}

function runView(box, id, onStateChange) {
  let offset = 0, points = {}, lastState = null, logName = null, totalSteps = null;
  const head = h("div", { id: "run-head" });
  const msg = h("div", { id: "run-message" });
  const actions = h("div", { class: "actions", id: "run-actions" });
  const cli = h("code", { class: "cli", id: "cli" });
  const stages = h("div", { id: "stages" });
  const status = h("div", { id: "train-status", class: "muted" });
  const charts = h("div", { class: "charts", id: "charts" });
  const extra = h("div", { id: "run-extra" });
  const logSelect = h("select", { id: "log-select", onchange: () => { logName = logSelect.value; view.refresh(); } });
  const logPre = h("pre", { id: "log" });
  const config = h("pre", { id: "config" });
  box.append(head, msg, actions, h("h3", {}, "Reproduce"), cli, h("h3", {}, "Stages"), stages,
    h("h3", {}, "Training"), status, charts, extra,
    h("h3", {}, "Log ", logSelect), logPre, h("h3", {}, "Resolved config"), config);

  async function act(what, body = {}) {
    actions.querySelectorAll("button").forEach(b => b.disabled = true);
    try { await api(`/api/runs/${what}`, { method: "POST", body: { id, ...body } }); msg.replaceChildren(); }
    catch (e) { msg.replaceChildren(errorBox(e)); }
    lastState = null;                // rebuild the buttons from the new state
    return view.refresh();
  }

  function renderCharts() {
    const groups = {};
    for (const [name, pts] of Object.entries(points)) {
      const group = name.includes(".") ? name.split(".")[0] : /loss$/.test(name) ? "loss" : name;
      (groups[group] ||= []).push({ name, points: pts });
    }
    const order = ["loss", "dev", "lr", "tokens_per_second"];
    const names = Object.keys(groups).sort((a, b) => ((order.indexOf(a) + 99) % 99) - ((order.indexOf(b) + 99) % 99) || a.localeCompare(b));
    charts.replaceChildren(...names.map(g => h("div", { class: "chart-box", id: `chart-${g}`, "data-group": g })));
    for (const g of names) lineChart($(`#chart-${CSS.escape(g)}`, charts), { title: g === "dev" ? "dev metrics" : g, series: groups[g] });
  }

  const view = {
    async refresh() {
      const q = new URLSearchParams({ id, offset, lines: 200 });
      if (logName) q.set("log", logName);
      let d;
      try { d = await api(`/api/runs/detail?${q}`); }
      catch (e) { if (e.status) { box.replaceChildren(errorBox(e)); return 5000; } throw e; }
      // header and actions
      head.replaceChildren(h("h2", {}, d.name, " ", badge(d.state)), h("div", { class: "muted" }, `${d.kind} · ${d.path}`));
      const alive = d.process && d.process.alive;
      if (d.state !== lastState) {
        if (lastState !== null) onStateChange();     // the list on the left shows the new state at once
        lastState = d.state;
        const btns = [];
        if (d.kind === "run") {
          if (alive && d.state === "running") btns.push(h("button", { class: "danger", id: "stop", onclick: () => act("stop") }, "Stop"));
          if (alive && d.state === "stopping") btns.push(h("button", { class: "danger", id: "kill", onclick: () => act("stop", { force: true }) }, "Kill now"));
          if (!alive) btns.push(h("button", { class: "primary", id: "resume", onclick: () => act("resume") },
            d.state === "finished" ? "Run again (finished stages are skipped)" : "Resume"));
          btns.push(h("a", { href: `#/new?from=${encodeURIComponent(id)}` }, h("button", { id: "edit" }, "Edit as new run")));
        }
        actions.replaceChildren(...btns);
      }
      msg.replaceChildren(...(d.message ? [h("div", { class: d.state === "active" ? "warn-box" : "error-box", id: "run-error" }, d.message)] : []),
        ...(d.config_error ? [h("div", { class: "warn-box" }, "config: " + d.config_error)] : []),
        ...(d.process && d.process.stop_requested && d.state === "stopped" ? [h("div", { class: "warn-box", id: "stopped-note" },
          "Stopped. Resume continues from the last checkpoint" + (d.checkpoints && d.checkpoints.length ? ` (${d.checkpoints[d.checkpoints.length - 1]})` : "") + ".")] : []));
      cli.textContent = d.cli || "(no run.yaml / config.yaml yet)";
      // stages
      stages.replaceChildren(d.stages ? h("table", { id: "stage-table" }, h("tr", {}, ["stage", "state", "seconds", "finished", "note"].map(t => h("th", {}, t))),
        d.stages.map(s => h("tr", { "data-stage": s.name }, h("td", {}, s.name), h("td", {}, badge(s.state)), h("td", { class: "num" }, s.seconds ?? ""),
          h("td", {}, s.finished || ""), h("td", {}, s.error || (s.changed ? "settings changed: the next run re-runs it" : ""))))) : h("span", { class: "muted" }, "–"));
      // progress
      if (d.progress) {
        const p = d.progress;
        if (p.reset) { points = {}; }
        for (const [name, pts] of Object.entries(p.points)) (points[name] ||= []).push(...pts);
        offset = p.offset;
        totalSteps = p.total_steps ?? totalSteps;
        if (Object.keys(p.points).length || p.reset || !charts.childElementCount) renderCharts();
        const last = p.last;
        if (last) {
          const bits = [`step ${last.step}${totalSteps ? ` / ${totalSteps}` : ""}`];
          for (const k of ["loss", "eval_loss", "tokens_per_second"]) if (typeof last[k] === "number") bits.push(`${k} ${fmt(last[k])}`);
          status.textContent = bits.join(" · ");
          status.dataset.step = last.step;
        } else if (!status.textContent) status.textContent = "no training steps logged yet";
      } else { status.textContent = "–"; charts.replaceChildren(); }
      // checkpoints, metrics, evals, reports
      const parts = [];
      if (d.checkpoints && d.checkpoints.length) parts.push(h("div", { class: "muted", id: "checkpoints" }, "checkpoints: " + d.checkpoints.join(", ")));
      if (d.metrics) parts.push(h("details", {}, h("summary", {}, "metrics.json"), kvTable(d.metrics)));
      if (d.summary) parts.push(kvTable(Object.fromEntries(Object.entries(d.summary.metrics || {}).map(([k, v]) => [k, v.mean]))));
      if (d.evals && d.evals.length) parts.push(h("div", {}, h("a", { href: `#/compare?runs=${d.evals.map(encodeURIComponent).join(",")}`, id: "compare-evals" },
        `Compare this run's ${d.evals.length} evals`)));
      if (d.reports && d.reports.length) parts.push(h("div", {}, "report: ", ...d.reports.map(r => h("a", { href: fileUrl(id, r), target: "_blank" }, r + " "))));
      if (d.retrieval && d.retrieval.models) parts.push(retrievalReport(d.retrieval));
      if (d.sweep) parts.push(sweepReport(d.sweep));
      const images = (d.files || []).filter(f => f.endsWith(".png"));
      if (images.length) parts.push(h("div", { class: "images" }, images.map(f => h("a", { href: fileUrl(id, f), target: "_blank" },
        h("img", { src: fileUrl(id, f) + `&t=${Math.round(Date.now() / 10000)}`, alt: f, title: f, style: "max-width:420px;margin:4px;border:1px solid #d0d7de" })))));
      if (d.files && d.files.length) parts.push(h("details", { id: "files" }, h("summary", {}, `files (${d.files.length})`),
        h("div", {}, d.files.map(f => h("div", {}, h("a", { href: fileUrl(id, f), target: "_blank" }, f))))));
      extra.replaceChildren(...parts);
      // log
      const names = d.logs || [];
      if (logSelect.options.length !== names.length || [...logSelect.options].some((o, i) => o.value !== names[i]))
        logSelect.replaceChildren(...names.map(n => h("option", { value: n }, n)));
      if (d.log && d.log.name) logSelect.value = d.log.name;
      const atBottom = logPre.scrollTop + logPre.clientHeight >= logPre.scrollHeight - 20;
      logPre.textContent = d.log ? d.log.text : "";
      if (atBottom) logPre.scrollTop = logPre.scrollHeight;
      config.textContent = d.config || "";
      return alive || d.state === "active" ? 1000 : 4000;
    },
  };
  return view;
}

function retrievalReport(r) {
  // ragtune eval retrieval: one row per embedder, every numeric metric it reported
  const keys = [...new Set(r.models.flatMap(m => Object.keys(m.metrics).filter(k => typeof m.metrics[k] === "number" && !k.startsWith("n_"))))];
  const chart = h("div", { class: "chart-box", id: "retrieval-chart" });
  requestAnimationFrame(() => barChart(chart, { title: "retrieval metrics (%)", categories: keys, max: 110,
    series: r.models.map(m => ({ name: m.embed.split("/").pop(), values: keys.map(k => m.metrics[k] * 100) })) }));
  return h("div", {}, h("table", { id: "retrieval-table" }, h("tr", {}, h("th", {}, "embedder"), keys.map(k => h("th", {}, k))),
    r.models.map(m => h("tr", {}, h("td", {}, m.embed), keys.map(k => h("td", { class: "num" }, fmt(m.metrics[k] * 100)))))), chart);
}

function sweepReport(sw) {
  // ragtune sweep: runs ranked by rank_by; every numeric value of a row is a column
  const keys = [...new Set(sw.runs.flatMap(r => Object.keys(r.values)))];
  const rank = "rank_value";
  keys.sort((a, b) => (a === rank ? -1 : b === rank ? 1 : a.localeCompare(b)));
  return h("div", {}, h("h3", {}, `Sweep ranked by ${sw.rank_by}`),
    h("table", { id: "sweep-table" }, h("tr", {}, h("th", {}, "#"), h("th", {}, "run"), keys.map(k => h("th", {}, k === rank ? sw.rank_by : k))),
      sw.runs.map((r, i) => h("tr", { "data-run": r.name }, h("td", { class: "num" }, i + 1),
        h("td", {}, r.id ? h("a", { href: `#/runs/${encodeURIComponent(r.id)}` }, r.name) : r.name),
        keys.map(k => h("td", { class: "num" }, r.values[k] === undefined ? "—" : fmt(r.values[k])))))));
}

function kvTable(obj) {
  return h("table", { class: "kv" }, Object.entries(obj).filter(([, v]) => v === null || typeof v !== "object").map(([k, v]) =>
    h("tr", {}, h("td", {}, k), h("td", { class: typeof v === "number" ? "num" : "" }, typeof v === "number" ? fmt(v) : String(v)))));
}

// == New run form ==================================================================================
const FORM_FIELDS = [
  ["run_dir", "Name (directory under the runs dir)", "name"],
  ["llm.base", "Base model (name, directory or hub id)", "text"],
  ["llm.method", "Method", ["lora", "freeze", "full", "llamafactory"]],
  ["data.train", "Training data (SQuAD/CMRC, alpaca or messages)", "text"],
  ["data.eval", "Eval data (optional)", "text"],
  ["llm.finetune.learning_rate", "Learning rate", "number"],
  ["llm.finetune.num_train_epochs", "Epochs", "number"],
  ["llm.finetune.max_steps", "Max steps (optional)", "number"],
  ["llm.finetune.max_samples", "Max samples (optional)", "number"],
  ["llm.finetune.per_device_train_batch_size", "Batch size per device", "number"],
  ["llm.finetune.cutoff_len", "cutoff_len (tokens)", "number"],
  ["llm.finetune.save_steps", "Checkpoint every N steps", "number"],
  ["llm.deploy", "Inference engine", "engines"],
  ["eval.metrics", "Metrics (comma-separated)", "list"],
  ["eval.embed", "Embedder for the metrics", "text"],
  ["launcher.type", "Launcher", ["local", "torchrun", "slurm"]],
  ["launcher.nproc_per_node", "Processes per node (torchrun/slurm)", "number"],
  ["launcher.nnodes", "Nodes (torchrun/slurm)", "number"],
  ["launcher.partition", "Slurm partition", "text"],
  ["launcher.time", "Slurm time limit", "text"],
  ["launcher.dry_run", "Slurm: only write the script", "checkbox"],
];

function getPath(obj, path) { return path.split(".").reduce((o, k) => (o && typeof o === "object" ? o[k] : undefined), obj); }
function setPath(obj, path, value) {
  const keys = path.split(".");
  let o = obj;
  for (const k of keys.slice(0, -1)) { if (typeof o[k] !== "object" || o[k] === null) o[k] = {}; o = o[k]; }
  if (value === undefined) delete o[keys[keys.length - 1]]; else o[keys[keys.length - 1]] = value;
}

function newRunPage(main, _rest, params) {
  let config = {};
  const inputs = {};
  const yamlBox = h("textarea", { id: "yaml", rows: 28, spellcheck: "false" });
  const result = h("div", { id: "check-result" });
  const cli = h("code", { class: "cli", id: "new-cli" });
  const startBtn = h("button", { class: "primary", id: "start", disabled: true }, "Start run");
  const fields = FORM_FIELDS.map(([key, label, type]) => {
    let input;
    if (type === "engines") type = INFO.engines || ["builtin"];
    if (Array.isArray(type)) input = h("select", { "data-key": key }, type.map(v => h("option", { value: v }, v)));
    else if (type === "checkbox") input = h("input", { type: "checkbox", "data-key": key });
    else input = h("input", { type: type === "number" ? "text" : "text", "data-key": key, inputmode: type === "number" ? "decimal" : null,
      placeholder: type === "list" ? "exact, cosine, origin" : "" });
    inputs[key] = { input, type };
    input.addEventListener(type === "checkbox" || Array.isArray(type) ? "change" : "input", () => { fromFields(); });
    return field(label, input, { "data-field": key });
  });
  main.append(h("h2", {}, "New run"),
    h("p", { class: "muted" }, "The form and the YAML are the same config: edit either. It is checked by the same RunConfig as ",
      h("code", {}, "ragtune run"), " and the run starts as its own process."),
    h("div", { class: "grid2" }, h("div", {}, h("div", { class: "grid2", id: "run-form" }, fields)),
      h("div", {}, h("label", {}, "YAML (saved as RUN_DIR/run.yaml)"), yamlBox)),
    result, h("h3", {}, "Reproduce from a shell"), cli, h("div", { class: "actions" }, startBtn));

  function nameOf(runDir) { return typeof runDir === "string" ? runDir.replace(/\/+$/, "").split("/").pop() : ""; }
  function fillFields() {
    for (const [key, { input, type }] of Object.entries(inputs)) {
      if (document.activeElement === input) continue;
      const v = getPath(config, key);
      if (type === "name") input.value = nameOf(v);
      else if (type === "checkbox") input.checked = !!v;
      else if (type === "list") input.value = Array.isArray(v) ? v.map(x => typeof x === "string" ? x : JSON.stringify(x)).join(", ") : (v ?? "");
      else input.value = v ?? (Array.isArray(type) ? type[0] : "");
    }
  }
  function fromFields() {
    for (const [key, { input, type }] of Object.entries(inputs)) {
      const raw = type === "checkbox" ? input.checked : input.value.trim();
      let value;
      if (type === "name") value = raw ? `${INFO.runs_dir}/${raw}` : undefined;
      else if (type === "number") value = raw === "" ? undefined : (isNaN(Number(raw)) ? raw : Number(raw));
      else if (type === "list") value = raw === "" ? undefined : raw.split(",").map(s => s.trim()).filter(Boolean);
      else if (type === "checkbox") value = raw ? true : (getPath(config, key) === undefined ? undefined : false);
      else value = raw === "" ? undefined : raw;
      setPath(config, key, value);
    }
    runCheck({ config });
  }
  let checks = 0;                 // answers to older checks arrive late sometimes: only the newest counts
  const debounced = debounce(async (body, mine) => {
    try {
      const r = await api("/api/runs/check", { method: "POST", body });
      if (mine !== checks) return;
      if (r.config) config = r.config;
      if (body.config) yamlBox.value = r.yaml || yamlBox.value;
      else fillFields();
      showResult(r);
    } catch (e) { if (mine === checks) { result.replaceChildren(errorBox(e)); startBtn.disabled = true; } }
  }, 250);
  // Start waits for the check of exactly what is shown: a stale "valid" must never start other settings
  const runCheck = body => {
    startBtn.disabled = true;
    result.replaceChildren(h("div", { class: "status", id: "checking" }, "checking…"));
    debounced(body, ++checks);
  };
  function showResult(r) {
    for (const f of document.querySelectorAll(".field")) { f.classList.remove("invalid"); f.querySelector(".field-error")?.remove(); }
    yamlBox.classList.remove("invalid");
    cli.textContent = r.cli || "";
    startBtn.disabled = !r.ok;
    if (r.ok) {
      result.replaceChildren(h("div", { class: "ok-box", id: "check-ok" }, `valid: ${r.stages.length} stages (${r.stages.join(" → ")})`),
        ...r.warnings.map(w => h("div", { class: "warn-box" }, w)));
      return;
    }
    result.replaceChildren(h("div", { class: "error-box", id: "check-error", role: "alert" }, r.error));
    let marked = false;
    for (const key of r.error_keys || []) {
      for (const [fk] of Object.entries(inputs)) {
        if (key === fk || key.startsWith(fk + ".") || fk.startsWith(key + ".")) {
          const box = document.querySelector(`.field[data-field="${fk}"]`);
          box.classList.add("invalid");
          if (!box.querySelector(".field-error")) box.append(h("div", { class: "field-error" }, r.error.split("\n")[0]));
          marked = true;
        }
      }
    }
    if (!marked) yamlBox.classList.add("invalid");
  }
  yamlBox.addEventListener("input", () => runCheck({ yaml: yamlBox.value }));
  startBtn.addEventListener("click", async () => {
    startBtn.disabled = true;
    try {
      const r = await api("/api/runs/start", { method: "POST", body: { yaml: yamlBox.value } });
      location.hash = `#/runs/${encodeURIComponent(r.id)}`;
    } catch (e) {
      if (e.data && e.data.error_keys) showResult({ ...e.data, ok: false }); else result.replaceChildren(errorBox(e));
      startBtn.disabled = false;
    }
  });
  const from = params.get("from");
  api(`/api/runs/template?${from ? `source=${encodeURIComponent(from)}&name=${encodeURIComponent(nameOfNew(from))}` : ""}`)
    .then(t => { yamlBox.value = t.yaml; config = t.config; fillFields(); runCheck({ yaml: t.yaml }); })
    .catch(e => result.replaceChildren(errorBox(e)));
}
function nameOfNew(from) { return from.split("/").pop() + "-2"; }

// == Data ==========================================================================================
function dataPage(main) {
  const saved = stored("data");
  const path = h("input", { type: "text", id: "data-path", value: saved.path || "", placeholder: "train.json" });
  const tok = h("input", { type: "text", id: "data-tokenizer", value: saved.tokenizer || "", placeholder: "gemma-3-270m" });
  const cutoff = h("input", { type: "text", id: "data-cutoff", value: saved.cutoff ?? "", placeholder: "1024" });
  const only = h("input", { type: "checkbox", id: "data-only-issues", checked: saved.only });
  const out = h("div", { id: "data-out" });
  let offset = 0;
  const go = async () => {
    store("data", { path: path.value, tokenizer: tok.value, cutoff: cutoff.value, only: only.checked });
    out.replaceChildren(h("div", { class: "status" }, "checking…"));
    const body = { path: path.value, tokenizer: tok.value || null, offset, limit: 50, only_issues: only.checked,
      cutoff_len: cutoff.value.trim() ? Number(cutoff.value) : null };
    try { renderData(out, await api("/api/data/preview", { method: "POST", body }), p => { offset = p; go(); }); }
    catch (e) { out.replaceChildren(errorBox(e)); }
  };
  main.append(h("h2", {}, "Data"),
    h("p", { class: "muted" }, "The validator training uses: a record shown red here is one training refuses."),
    h("div", { class: "row" }, field("Data file (JSON, JSONL, CSV, Parquet)", path), field("Tokenizer (for lengths)", tok),
      field("cutoff_len", cutoff), h("label", {}, only, " only records with problems"),
      h("button", { class: "primary", id: "data-check", onclick: () => { offset = 0; go(); } }, "Check")), out);
  if (saved.path) go();
}

function renderData(out, d, page) {
  const r = d.report;
  const counts = Object.entries(r.counts).map(([k, v]) => `${k}: ${v}`).join(", ");
  const parts = [h("div", { class: r.ok ? "ok-box" : "error-box", id: "data-summary" },
    `${r.file}: ${r.total} records (${r.format || "unknown format"}), ${r.valid} valid, ${r.invalid} with problems` + (counts ? ` — ${counts}` : ""))];
  if (d.lengths.length) {
    const hist = h("div", { class: "chart-box", id: "length-hist" });
    parts.push(h("div", { class: "muted", id: "length-summary" }, `${r.over_long} of ${d.lengths.length} samples over cutoff_len=${d.cutoff_len} ` +
      `(max ${r.max_tokens} tokens, mean ${Math.round(r.mean_tokens)}); training truncates them`), hist);
    requestAnimationFrame(() => histogram(hist, { title: "tokens per sample (prompt + answer, as trained)", values: d.lengths, cutoff: d.cutoff_len }));
  }
  parts.push(h("div", { class: "actions" }, h("button", { disabled: d.offset === 0, onclick: () => page(Math.max(0, d.offset - d.limit)) }, "◀ previous"),
    h("span", { class: "muted" }, `records ${d.matching ? d.offset + 1 : 0}–${Math.min(d.offset + d.limit, d.matching)} of ${d.matching}`),
    h("button", { disabled: d.offset + d.limit >= d.matching, onclick: () => page(d.offset + d.limit) }, "next ▶")));
  parts.push(h("table", { id: "records" }, h("tr", {}, h("th", {}, "#"), h("th", {}, "line"), h("th", {}, "record"), h("th", {}, "problems")),
    d.records.map(rec => h("tr", { class: rec.issues.length ? "bad" : "", "data-record": rec.index },
      h("td", { class: "num" }, rec.index), h("td", { class: "num" }, rec.line ?? ""),
      h("td", { class: "record" }, rec.raw_error ? `(not JSON: ${rec.raw_error})` : JSON.stringify(rec.data, null, 1)),
      h("td", { class: "issues" }, rec.issues.map(i => h("div", {}, `${i.field ? i.field + ": " : ""}${i.message} [${i.kind}]`)))))));
  out.replaceChildren(...parts);
}

// == Compare =======================================================================================
function comparePage(main, _rest, params) {
  const chosen = new Set((params.get("runs") || "").split(",").filter(Boolean));
  const list = h("div", { id: "eval-list" });
  const out = h("div", { id: "compare-out" });
  const btn = h("button", { class: "primary", id: "compare-btn", onclick: () => {
    location.hash = `#/compare?runs=${[...chosen].map(encodeURIComponent).join(",")}`;
  } }, "Compare");
  main.append(h("h2", {}, "Compare eval runs"), h("p", { class: "muted" }, "Choose runs scored on the same eval set (from ",
    h("code", {}, "ragtune run"), " or ", h("code", {}, "ragtune eval llm"), ")."), list, h("div", { class: "actions" }, btn), out);
  api("/api/evals").then(({ evals }) => {
    list.replaceChildren(evals.length ? h("table", {}, h("tr", {}, h("th", {}, ""), h("th", {}, "name"), h("th", {}, "directory"), h("th", {}, "items"), h("th", {}, "metrics")),
      evals.map(e => h("tr", {}, h("td", {}, h("input", { type: "checkbox", "data-eval": e.id, checked: chosen.has(e.id),
        onchange: ev => ev.target.checked ? chosen.add(e.id) : chosen.delete(e.id) })),
        h("td", {}, e.name || ""), h("td", {}, e.id), h("td", { class: "num" }, e.n_items ?? ""), h("td", {}, (e.metrics || []).join(", ")))))
      : h("div", { class: "muted" }, "No eval runs under the runs directory yet."));
  }).catch(e => list.replaceChildren(errorBox(e)));
  if (chosen.size) {
    out.replaceChildren(h("div", { class: "status" }, "comparing…"));
    api("/api/compare", { method: "POST", body: { runs: [...chosen] } }).then(d => renderCompare(out, d)).catch(e => out.replaceChildren(errorBox(e)));
  }
}

function renderCompare(out, d) {
  const best = {};
  for (const m of d.metrics) {
    const vals = d.table.map(r => r.cells[m.name]?.mean).filter(v => v !== null && v !== undefined);
    best[m.name] = vals.length ? (m.higher_is_better === false ? Math.min(...vals) : Math.max(...vals)) : null;
  }
  const table = h("table", { id: "compare-table" }, h("tr", {}, h("th", {}, "model"), d.metrics.map(m => h("th", { title: m.description || "" }, m.title)), h("th", {}, "items")),
    d.table.map(r => h("tr", { "data-label": r.label }, h("td", {}, r.label), d.metrics.map(m => {
      const c = r.cells[m.name];
      return h("td", { class: "num" + (c && c.mean === best[m.name] && d.table.length > 1 ? " best" : ""), "data-metric": m.name }, c ? c.text : "—");
    }), h("td", { class: "num" }, r.n_items))));
  const chart = h("div", { class: "chart-box", id: "compare-chart" });
  const items = h("table", { id: "disagree" }, h("tr", {}, h("th", {}, "#"), h("th", {}, "question"), h("th", {}, "reference"), d.labels.map(l => h("th", {}, l))),
    d.items.map(it => h("tr", { "data-item": it.index }, h("td", { class: "num" }, it.index), h("td", {}, it.question), h("td", {}, it.reference),
      it.runs.map(r => h("td", { class: it.metrics.length ? "diff" : "" }, h("div", {}, r.prediction),
        h("div", { class: "muted" }, Object.entries(r.scores).map(([m, v]) => `${m} ${v === null ? "–" : fmt(v)}`).join(" · ")))))));
  out.replaceChildren(table, chart,
    h("h3", {}, d.n_disagree === null ? `Items (${d.items.length} of ${d.n_items})` : `Items where the runs disagree (${d.n_disagree} of ${d.n_items})`),
    h("p", { class: "muted" }, `A 0/1 metric differs, or a continuous score spreads by more than ${d.spread}.`), items);
  requestAnimationFrame(() => barChart(chart, { title: "mean score per metric (%)", categories: d.metrics.map(m => m.title),
    series: d.table.map(r => ({ name: r.label, values: d.metrics.map(m => r.cells[m.name]?.mean == null ? null : r.cells[m.name].mean * 100) })), max: 110 }));
}

// == Retrieval =====================================================================================
function retrievalPage(main) {
  const s = stored("retrieval");
  const kb = h("input", { type: "text", id: "ret-kb", value: s.kb || "", placeholder: "OUT/kb" });
  const base = h("input", { type: "text", id: "ret-base", value: s.base || "all-MiniLM-L6-v2", list: "embedders" });
  const tuned = h("input", { type: "text", id: "ret-tuned", value: s.tuned || "", list: "embedders", placeholder: "a fine-tuned embedder dir" });
  const topk = h("input", { type: "text", id: "ret-topk", value: s.topk || "5" });
  const splitter = h("select", { id: "ret-splitter" }, ["line", "sentence", "none"].map(v => h("option", { value: v }, v)));
  splitter.value = s.splitter || "line";
  const evalset = h("input", { type: "text", id: "ret-evalset", value: s.evalset || "", placeholder: "OUT/eval.jsonl (optional)" });
  const pick = h("select", { id: "ret-pick" }, h("option", { value: "" }, "— pick a question of the eval set —"));
  const question = h("input", { type: "text", id: "ret-question", value: s.question || "" });
  const reference = h("textarea", { id: "ret-reference", rows: 2, placeholder: "reference passage to highlight (optional)" }, s.reference || "");
  const datalist = h("datalist", { id: "embedders" });
  const out = h("div", { id: "ret-out" });
  let questions = [];
  const loadQuestions = async () => {
    if (!evalset.value.trim()) return;
    try {
      questions = (await api(`/api/retrieval/questions?evalset=${encodeURIComponent(evalset.value.trim())}`)).questions;
      pick.replaceChildren(h("option", { value: "" }, `— ${questions.length} questions —`), ...questions.map((q, i) => h("option", { value: i }, q.query.slice(0, 120))));
    } catch (e) { out.replaceChildren(errorBox(e)); }
  };
  pick.addEventListener("change", () => {
    const q = questions[Number(pick.value)];
    if (q) { question.value = q.query; reference.value = q.corpus.join("\n\n"); }
  });
  const go = async () => {
    store("retrieval", { kb: kb.value, base: base.value, tuned: tuned.value, topk: topk.value, splitter: splitter.value,
      evalset: evalset.value, question: question.value, reference: reference.value });
    out.replaceChildren(h("div", { class: "status" }, "retrieving (the first query of a knowledge base embeds it)…"));
    const refs = reference.value.trim() ? reference.value.split(/\n\s*\n/).map(x => x.trim()).filter(Boolean) : [];
    try {
      const d = await api("/api/retrieval", { method: "POST", body: { kb: kb.value.trim(), question: question.value, embed_base: base.value.trim(),
        embed_tuned: tuned.value.trim() || null, topk: Number(topk.value), splitter: splitter.value, reference: refs } });
      out.replaceChildren(h("div", { class: "columns" }, d.columns.map(c => h("div", { class: "column", "data-column": c.label },
        h("h3", {}, `${c.label}: ${c.embed}`),
        h("div", { class: "status", "data-rank": c.reference_rank ?? "" }, refs.length ? (c.reference_rank ? `reference at rank ${c.reference_rank}` :
          `reference not in the top ${c.hits.length}`) : "", ` · ${c.seconds} s`),
        c.hits.map((hit, i) => h("div", { class: "hit" + (hit.match ? ` ref-${hit.match}` : ""), "data-match": hit.match || "" },
          h("div", { class: "score" }, `#${i + 1} · score ${fmt(hit.score)}${hit.source ? ` · ${hit.source}` : ""}${hit.match ? ` · ${hit.match === "exact" ? "the reference" : "overlaps the reference"}` : ""}`),
          hit.text))))));
    } catch (e) { out.replaceChildren(errorBox(e)); }
  };
  main.append(h("h2", {}, "Retrieval: base vs tuned embedder"), datalist,
    h("div", { class: "row" }, field("Knowledge base (file or directory)", kb), field("Base embedder", base), field("Tuned embedder", tuned),
      field("top k", topk), field("Split into", splitter)),
    h("div", { class: "row" }, field("Eval set {query, corpus} (optional)", evalset), h("button", { onclick: loadQuestions }, "Load questions"), field("", pick)),
    field("Question", question), field("Reference passage(s), blank-line separated", reference),
    h("div", { class: "actions" }, h("button", { class: "primary", id: "ret-go", onclick: go }, "Retrieve")), out);
  api("/api/models").then(m => datalist.replaceChildren(...m.embedder.map(e => h("option", { value: e.path }, e.id)))).catch(() => {});
  if (s.evalset) loadQuestions();
}

// == Chat ==========================================================================================
function chatPage(main) {
  const s = stored("chat");
  const cols = [
    { key: "base", title: "Base", kind: "local", model: s.base_model || "gemma-3-270m", enabled: s.base_on ?? true },
    { key: "tuned", title: "Tuned", kind: "local", model: s.tuned_model || "", enabled: s.tuned_on ?? true },
    { key: "remote", title: "Remote (OpenAI-compatible)", kind: "remote", model: s.remote_model || "", url: s.remote_url || "", enabled: s.remote_on ?? false },
  ];
  const history = s.history || { base: [], tuned: [], remote: [] };
  const datalist = h("datalist", { id: "llms" });
  const mode = h("select", { id: "chat-mode" }, h("option", { value: "plain" }, "plain"), h("option", { value: "rag" }, "through the RAG pipeline"));
  mode.value = s.mode || "plain";
  const kb = h("input", { type: "text", id: "chat-kb", value: s.kb || "", placeholder: "knowledge base (RAG)" });
  const embed = h("input", { type: "text", id: "chat-embed", value: s.embed || "all-MiniLM-L6-v2" });
  const topk = h("input", { type: "text", id: "chat-topk", value: s.topk || "3" });
  const maxTokens = h("input", { type: "text", id: "chat-max-tokens", value: s.max_tokens || "64" });
  const temperature = h("input", { type: "text", id: "chat-temperature", value: s.temperature || "0" });
  const question = h("textarea", { id: "chat-question", rows: 3, placeholder: "Ask all enabled models at once (Ctrl+Enter)" });
  const apiKey = h("input", { type: "password", id: "remote-key", placeholder: "API key (not stored)" });
  const columns = h("div", { class: "columns", id: "chat-columns" });
  const ragRow = h("div", { class: "row", id: "rag-row" }, field("Knowledge base", kb), field("Embedder", embed), field("top k", topk));
  const save = () => store("chat", { base_model: cols[0].model, tuned_model: cols[1].model, remote_model: cols[2].model, remote_url: cols[2].url,
    base_on: cols[0].enabled, tuned_on: cols[1].enabled, remote_on: cols[2].enabled, mode: mode.value, kb: kb.value, embed: embed.value,
    topk: topk.value, max_tokens: maxTokens.value, temperature: temperature.value, history });
  const showRag = () => { ragRow.hidden = mode.value !== "rag"; };
  mode.addEventListener("change", () => { showRag(); save(); });
  showRag();

  const views = {};
  for (const c of cols) {
    const enabled = h("input", { type: "checkbox", checked: c.enabled, "data-enable": c.key, onchange: e => { c.enabled = e.target.checked; save(); } });
    const model = h("input", { type: "text", value: c.model, list: c.kind === "local" ? "llms" : null, "data-model": c.key,
      placeholder: c.kind === "remote" ? "model name (default: the server's first)" : "model name, directory or fine-tune output",
      oninput: e => { c.model = e.target.value.trim(); save(); } });
    const url = c.kind === "remote" ? h("input", { type: "text", value: c.url, "data-url": c.key, placeholder: "http://127.0.0.1:8000/v1",
      oninput: e => { c.url = e.target.value.trim(); save(); } }) : null;
    const transcript = h("div", { class: "transcript", "data-transcript": c.key });
    views[c.key] = { transcript };
    columns.append(h("div", { class: "column", "data-column": c.key }, h("h3", {}, h("label", { style: "display:inline" }, enabled, " ", c.title)),
      url ? field("URL", url) : null, field("Model", model), c.kind === "remote" ? field("API key", apiKey) : null, transcript));
    for (const m of history[c.key] || []) transcript.append(h("div", { class: `turn ${m.role}` }, m.content));
  }

  async function ask(c, text) {
    const view = views[c.key];
    const msgs = [...(history[c.key] || []), { role: "user", content: text }];
    view.transcript.append(h("div", { class: "turn user" }, text));
    const status = h("div", { class: "status", "data-status": c.key }, "sending…");
    const context = h("details", { hidden: true }, h("summary", {}, "retrieved context"));
    const answer = h("div", { class: "turn assistant", "data-answer": c.key, "data-deltas": 0, "data-chunks": 0, "data-done": "" });
    view.transcript.append(context, answer, status);
    const target = c.kind === "local" ? { kind: "local", model: c.model } : { kind: "remote", url: c.url, model: c.model || null, api_key: apiKey.value || null };
    const body = { target, messages: mode.value === "rag" ? [{ role: "user", content: text }] : msgs,
      max_tokens: Number(maxTokens.value), temperature: Number(temperature.value) };
    if (mode.value === "rag") body.rag = { kb: kb.value.trim(), embed: embed.value.trim(), topk: Number(topk.value) };
    let resp;
    try {
      resp = await fetch("/api/chat/stream", { method: "POST", headers: { "Content-Type": "application/json", "X-Ragtune-UI": "1" }, body: JSON.stringify(body) });
      setConn(true);
    } catch (e) { setConn(false); status.replaceChildren(errorBox(new Error("the UI server is unreachable"))); return; }
    if (!resp.ok) {
      const d = await resp.json().catch(() => ({ error: `HTTP ${resp.status}` }));
      status.replaceChildren(h("div", { class: "error-box", "data-error": c.key }, d.error + (d.hint ? `\nhint: ${d.hint}` : "")));
      answer.remove();
      return;
    }
    const reader = resp.body.getReader(), dec = new TextDecoder();
    let buf = "", text_ = "", chunks = 0, finished = {};
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += dec.decode(value, { stream: true });
      let i, sawDelta = false;
      while ((i = buf.indexOf("\n\n")) >= 0) {
        const block = buf.slice(0, i); buf = buf.slice(i + 2);
        for (const line of block.split("\n")) {
          if (!line.startsWith("data: ")) continue;
          const ev = JSON.parse(line.slice(6));
          if (ev.delta !== undefined) { text_ += ev.delta; answer.textContent = text_; answer.dataset.deltas = Number(answer.dataset.deltas) + 1; sawDelta = true; }
          if (ev.status) status.textContent = ev.status;
          if (ev.context) {
            context.hidden = false;
            context.append(...ev.context.map((hit, k) => h("div", { class: "hit" }, h("div", { class: "score" }, `#${k + 1} · ${fmt(hit.score)}`), hit.text)));
          }
          if (ev.finish_reason !== undefined) Object.assign(finished, ev);
          if (ev.error) status.replaceChildren(h("div", { class: "error-box", "data-error": c.key }, ev.error));
          if (ev.done) {
            answer.dataset.done = "1";
            status.textContent = [`done in ${ev.seconds} s`, finished.completion_tokens !== undefined ? `${finished.completion_tokens} tokens` : null,
              finished.finish_reason ? `finish: ${finished.finish_reason}` : null].filter(Boolean).join(" · ");
            history[c.key] = [...msgs, { role: "assistant", content: text_ }];
            save();
          }
        }
      }
      if (sawDelta) answer.dataset.chunks = ++chunks;
    }
  }

  const send = () => {
    const text = question.value.trim();
    if (!text) return;
    save();
    for (const c of cols) if (c.enabled) ask(c, text);
  };
  question.addEventListener("keydown", e => { if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) send(); });
  main.append(h("h2", {}, "Chat: base vs tuned, side by side"), datalist,
    h("div", { class: "row" }, field("Mode", mode), field("max tokens", maxTokens), field("temperature", temperature)), ragRow,
    field("Question", question),
    h("div", { class: "actions" }, h("button", { class: "primary", id: "chat-send", onclick: send }, "Send"),
      h("button", { id: "chat-clear", onclick: () => { for (const c of cols) { history[c.key] = []; views[c.key].transcript.replaceChildren(); } save(); } }, "Clear")),
    columns);
  api("/api/models").then(m => {
    datalist.replaceChildren(...m.llm.map(x => h("option", { value: x.path }, `${x.id} (${x.method} on ${x.base})`)));
    const tunedInput = columns.querySelector('[data-model="tuned"]');
    if (!cols[1].model && m.llm.length) { cols[1].model = m.llm[0].path; tunedInput.value = cols[1].model; save(); }
  }).catch(() => {});
}
