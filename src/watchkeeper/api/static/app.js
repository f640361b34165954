// watchkeeper dashboard: plain JS, no framework, no build step.
// Everything shown comes from the host or an LLM and is untrusted: it reaches the page only
// through textContent / createElement, never as HTML.
"use strict";

(function () {
  const TOKEN_KEY = "watchkeeper.token";
  const USER_KEY = "watchkeeper.user";
  const FEED_MAX = 100;          // activity entries kept in the page
  const LIVE_MAX_POINTS = 600;   // points per chart trace, history and live together
  const HISTORY_POINTS = 300;    // points per trace loaded from the history API
  const MAX_TRACES = 6;          // mounts / interfaces per chart
  const STREAM_IDLE_MS = 45000;  // no byte (not even a keep-alive) for this long: reconnect
  const BACKOFF_MAX_S = 15;

  const $ = (id) => document.getElementById(id);

  // ------------------------------------------------------------------ small DOM helpers

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    if (attrs) {
      for (const [key, value] of Object.entries(attrs)) {
        if (value === null || value === undefined || value === false) continue;
        if (key === "class") node.className = value;
        else if (key === "text") node.textContent = String(value);
        else if (key.startsWith("data-")) node.setAttribute(key, String(value));
        else if (key === "onclick") node.addEventListener("click", value);
        else node.setAttribute(key, String(value));
      }
    }
    for (const child of children) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
  }

  function setText(id, text) {
    const node = $(id);
    if (node) node.textContent = text === null || text === undefined ? "" : String(text);
  }

  // plotly reads a little HTML in trace names; host-given labels must stay text.
  function plotlyText(text) {
    return String(text).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
  }

  function duration(seconds) {
    if (seconds === null || seconds === undefined || !isFinite(seconds)) return "–";
    let s = Math.max(0, Math.floor(seconds));
    const d = Math.floor(s / 86400); s -= d * 86400;
    const h = Math.floor(s / 3600); s -= h * 3600;
    const m = Math.floor(s / 60); s -= m * 60;
    if (d) return `${d}d ${h}h ${m}m`;
    if (h) return `${h}h ${m}m`;
    if (m) return `${m}m ${s}s`;
    return `${s}s`;
  }

  function clock(at) {
    const d = at ? new Date(at) : new Date();
    return isNaN(d.getTime()) ? "" : d.toLocaleTimeString();
  }

  function when(at) {
    const d = new Date(at);
    if (isNaN(d.getTime())) return "";
    const ago = (Date.now() - d.getTime()) / 1000;
    return `${d.toLocaleString()} (${duration(ago)} ago)`;
  }

  function expiresIn(at) {
    const left = (new Date(at).getTime() - Date.now()) / 1000;
    return isNaN(left) ? "?" : duration(Math.max(0, left));
  }

  // plotly shows date strings as they are: give it local wall-clock time.
  function plotTime(at) {
    const d = at instanceof Date ? at : new Date(at);
    const p = (n, w) => String(n).padStart(w || 2, "0");
    return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ` +
      `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}.${p(d.getMilliseconds(), 3)}`;
  }

  function bytesRate(v) {
    if (v === null || v === undefined) return "–";
    const units = ["B/s", "KiB/s", "MiB/s", "GiB/s"];
    let i = 0;
    while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
    return `${v.toFixed(i ? 1 : 0)} ${units[i]}`;
  }

  // A number for people: 99.80000000000018 reads 99.8; a percentage metric gets its unit.
  function num(v, metric) {
    const n = Number(v);
    if (!Number.isFinite(n)) return String(v);
    const text = Math.abs(n) >= 1000 ? String(Math.round(n)) : String(Number(n.toPrecision(3)));
    return metric && /percent$/.test(metric) ? `${text} %` : text;
  }

  function pct(v) {
    return v === null || v === undefined ? "–" : `${Number(v).toFixed(1)} %`;
  }

  // ------------------------------------------------------------------ token and API

  let token = localStorage.getItem(TOKEN_KEY) || "";
  // Who acts, as the audit log records it (X-Watchkeeper-User); self-declared, optional.
  let user = localStorage.getItem(USER_KEY) || "";

  function takeTokenFromFragment() {
    const hash = window.location.hash || "";
    const m = /^#token=(.+)$/.exec(hash);
    if (!m) return;
    try {
      token = decodeURIComponent(m[1]).trim();
    } catch (e) {
      token = "";
    }
    if (token) localStorage.setItem(TOKEN_KEY, token);
    // The token must not stay in the address bar, the history or a bookmark.
    window.history.replaceState(null, "", window.location.pathname + window.location.search);
  }

  function authHeaders() {
    const headers = token ? { Authorization: `Bearer ${token}` } : {};
    if (user) headers["X-Watchkeeper-User"] = user;
    return headers;
  }

  function showTokenState() {
    setText("token-state", (token ? "token saved in this browser" : "no token saved") +
      (user ? `; acting as ${user}` : ""));
  }

  function banner(text) {
    const node = $("banner");
    node.textContent = text || "";
    node.hidden = !text;
  }

  class ApiError extends Error {
    constructor(status, body) {
      const detail = body && body.detail !== undefined ? body.detail : body;
      super(typeof detail === "string" ? detail : `HTTP ${status}`);
      this.status = status;
      this.detail = detail;
    }
  }

  async function api(method, path, body) {
    const init = { method, headers: { Accept: "application/json", ...authHeaders() },
                   cache: "no-store", credentials: "omit" };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(path, init);
    let data = null;
    const text = await response.text();
    if (text) {
      try { data = JSON.parse(text); } catch (e) { data = text; }
    }
    if (response.status === 401) {
      banner(token
        ? "The API refused the saved token (401). Enter the operator token again."
        : "This needs the operator token (401): paste it into the token field above. " +
          "It is in the file api_token in watchkeeper's data directory.");
      throw new ApiError(401, data);
    }
    if (!response.ok && !(response.status === 503 && path === "/api/health")) {
      throw new ApiError(response.status, data);
    }
    return data;
  }

  function problemText(err) {
    if (err instanceof ApiError) {
      if (Array.isArray(err.detail)) {
        return err.detail.map((p) => (typeof p === "string" ? p
          : `${(p.loc || []).join(".")}: ${p.msg || JSON.stringify(p)}`));
      }
      return [`${err.status}: ${typeof err.detail === "string" ? err.detail : err.message}`];
    }
    return [String(err && err.message ? err.message : err)];
  }

  function showResult(id, ok, lines) {
    const node = $(id);
    clear(node);
    node.classList.toggle("error", !ok);
    if (lines.length === 1) {
      node.textContent = lines[0];
    } else {
      node.append(el("ul", null, ...lines.map((l) => el("li", { text: l }))));
    }
  }

  // ------------------------------------------------------------------ header

  const header = { uptimeS: null, uptimeAt: 0, hostUptimeS: null, hostUptimeAt: 0 };

  function tickClocks() {
    const now = performance.now();
    if (header.uptimeS !== null) {
      setText("api-uptime", duration(header.uptimeS + (now - header.uptimeAt) / 1000));
    }
    if (header.hostUptimeS !== null) {
      setText("host-uptime", duration(header.hostUptimeS + (now - header.hostUptimeAt) / 1000));
    }
  }

  async function loadSystem() {
    const s = await api("GET", "/api/system");
    // On a central the header names the host picked in the Hosts card, not the central.
    if (!fleet.on) setText("host", s.host);
    document.title = `watchkeeper · ${s.host}`;
    const status = $("status");
    status.textContent = s.status;
    status.dataset.status = s.status;
    status.title = (s.reasons || []).join("; ") || "no open alert, every agent running";
    setText("version", s.version);
    header.uptimeS = s.uptime_s;
    header.uptimeAt = performance.now();
    if (s.host_uptime_s !== null && s.host_uptime_s !== undefined) {
      header.hostUptimeS = s.host_uptime_s;
      header.hostUptimeAt = performance.now();
    }
    tickClocks();
  }

  // The badge is derived by the server from open alerts and agents: read it again when
  // either changes (once for a burst of events).
  let statusTimer = null;
  function refreshStatus() {
    clearTimeout(statusTimer);
    statusTimer = setTimeout(() => loadSystem().catch(() => {}), 250);
  }

  // ------------------------------------------------------------------ agents

  const agents = new Map();  // name -> AgentHealth

  function renderAgents() {
    const list = $("agents");
    clear(list);
    if (!agents.size) {
      list.append(el("li", { class: "empty", text: "no agents reported yet" }));
      return;
    }
    for (const [name, h] of [...agents.entries()].sort()) {
      const paused = h.state === "paused";
      const row = el("li", { "data-agent": name, "data-state": h.state },
        el("div", { class: "line" },
          el("span", { class: "dot", "data-state": h.state, title: h.state }),
          el("strong", { class: "grow", text: name }),
          el("span", { class: "state", text: h.state }),
          el("span", { class: "muted", text: `restarts ${h.restarts || 0}` }),
          el("button", { type: "button", class: "secondary",
                         "data-command": paused ? "resume" : "pause",
                         onclick: () => command(paused ? "resume" : "pause", name) },
             paused ? "Resume" : "Pause")),
        h.last_error ? el("p", { class: "detail",
          text: `last error${h.last_error_at ? " at " + clock(h.last_error_at) : ""}: ` +
                h.last_error }) : null);
      list.append(row);
    }
  }

  async function loadAgents() {
    const body = await api("GET", "/api/agents");
    agents.clear();
    for (const h of body.agents) agents.set(h.name, h);
    renderAgents();
  }

  async function command(name, target) {
    try {
      const body = await api("POST", "/api/command", { command: name, target });
      banner("");
      const lines = (body.replies || []).map(
        (r) => `${r.agent}: ${r.ok ? "ok" : "failed"}${r.message ? " – " + r.message : ""}`);
      showResult("command-result", true, lines.length ? lines : [`${name}: no replies`]);
      for (const r of body.replies || []) if (r.health) agents.set(r.agent, r.health);
      renderAgents();
      loadSystem().catch(() => {});
    } catch (err) {
      showResult("command-result", false, problemText(err));
    }
  }

  // ------------------------------------------------------------------ alerts

  const alerts = new Map();  // fingerprint -> Alert

  function analysisBlock(a) {
    if (!a) return null;
    const llm = a.source === "llm";
    const label = llm
      ? `LLM reasoning${a.model ? " (" + a.model + ")" : ""}: a model's opinion, not verified`
      : "Analysis (rules)";
    const block = el("div", { class: "analysis", "data-source": a.source },
      el("span", { class: "label", text: label }),
      el("div", { text: a.summary }));
    if (a.likely_cause) block.append(el("div", { text: `likely cause: ${a.likely_cause}` }));
    block.append(el("div", { class: "muted",
      text: `confidence ${Math.round((a.confidence || 0) * 100)} %` +
            (a.expected ? " · expected behaviour" : "") }));
    if (llm && a.evidence && a.evidence.length) {
      block.append(el("div", { text: "evidence:" }),
        el("ul", null, ...a.evidence.map((e) => el("li", { text: e }))));
    }
    if (a.suggested_actions && a.suggested_actions.length) {
      block.append(el("div", { text: "suggested:" }), el("ul", null,
        ...a.suggested_actions.map((s) => el("li", {
          text: `${s.action}${Object.keys(s.params || {}).length ? " " +
            JSON.stringify(s.params) : ""}${s.reason ? " – " + s.reason : ""}` }))));
    }
    if (a.note) block.append(el("div", { class: "muted", text: a.note }));
    return block;
  }

  function renderAlerts() {
    const list = $("alerts");
    clear(list);
    const open = [...alerts.values()]
      .filter((a) => !fleet.selected || a.host === fleet.selected)
      .sort((x, y) => (x.at < y.at ? 1 : -1));
    setText("alerts-count", open.length ? `(${open.length})` : "");
    if (!open.length) {
      list.append(el("li", { class: "empty", text: "nothing open" }));
      return;
    }
    for (const a of open) {
      list.append(el("li", { "data-fingerprint": a.fingerprint, "data-state": a.state },
        el("div", { class: "line" },
          el("span", { class: "sev", "data-severity": a.severity, text: a.severity }),
          fleet.on ? el("span", { class: "muted", "data-host": a.host, text: a.host }) : null,
          el("strong", { class: "grow", text: a.summary }),
          a.state === "acknowledged" ? el("span", { class: "muted", text: "acknowledged" +
            ((a.labels || {}).acked_by ? ` by ${a.labels.acked_by}` : "") })
            : null,
          a.silenced ? el("span", { class: "muted", text: "silenced" }) : null),
        el("p", { class: "detail", text: `since ${when(a.since)} · ${a.metric}` +
          (a.dimension ? ` ${a.dimension}` : "") +
          (a.value !== null && a.value !== undefined ? ` = ${num(a.value, a.metric)}` : "") +
          (a.peak !== null && a.peak !== undefined && a.peak !== a.value
            ? ` (peak ${num(a.peak, a.metric)})` : "") +
          (a.threshold !== null && a.threshold !== undefined
            ? ` · threshold ${num(a.threshold, a.metric)}` : "") }),
        a.context ? el("p", { class: "detail", text: a.context }) : null,
        analysisBlock(a.assessment),
        el("div", { class: "buttons" },
          a.state === "firing" ? el("button", { type: "button", "data-do": "ack",
            onclick: () => ackAlert(a.fingerprint, a.host) }, "Acknowledge") : null,
          a.rule === "service" && (a.labels || {}).condition === "failing"
            ? el("button", { type: "button", class: "danger", "data-do": "reset",
                onclick: (ev) => resetService(a.dimension, a.host, ev.currentTarget) }, "Reset")
            : null,
          el("button", { type: "button", class: "secondary", "data-do": "silence",
            onclick: () => silenceAlert(a.fingerprint, a.host) }, "Silence 1 h"))));
    }
  }

  function upsertAlert(a) {
    if (a.state === "resolved") alerts.delete(a.fingerprint);
    else alerts.set(a.fingerprint, a);
    renderAlerts();
  }

  // ------------------------------------------------------------------ a fleet's hosts

  // On a central (serve --fleet): the hosts, and the one the charts and alerts show
  // ("" = every host's alerts, the first host's charts).
  const fleet = { known: false, on: false, hosts: [], selected: "" };

  function chartHost() {
    return fleet.on ? (fleet.selected || (fleet.hosts[0] && fleet.hosts[0].host) || "") : "";
  }

  function renderHosts() {
    const list = $("hosts");
    clear(list);
    $("hosts-section").hidden = !fleet.on;
    if (!fleet.on) return;
    const down = fleet.hosts.filter((h) => h.health === "down").length;
    setText("hosts-count", `(${fleet.hosts.length}${down ? `, ${down} down` : ""})`);
    if (!fleet.hosts.length) {
      list.append(el("li", { class: "empty", text: "no host has reported yet" }));
      return;
    }
    for (const h of fleet.hosts) {
      list.append(el("li", { "data-host": h.host, "data-health": h.health,
                             "aria-current": h.host === fleet.selected ? "true" : "false",
                             onclick: () => selectHost(h.host) },
        el("div", { class: "line" },
          el("span", { class: "sev", "data-severity": h.health, text: h.health }),
          el("strong", { class: "grow", text: h.host }),
          el("span", { class: "muted", text: h.open_alerts ? `${h.open_alerts} open` : "" }),
          el("span", { class: "muted", text: h.last_seen ? `seen ${when(h.last_seen)}` : "" }))));
    }
  }

  async function loadHosts() {
    const body = await api("GET", "/api/hosts");
    const chartsBefore = chartHost();
    const wasOn = fleet.on;
    fleet.known = true;
    fleet.on = Boolean(body.fleet);
    fleet.hosts = body.hosts || [];
    if (fleet.selected && !fleet.hosts.some((h) => h.host === fleet.selected)) {
      fleet.selected = "";
    }
    renderHosts();
    if (fleet.on && !wasOn) {  // a central: alerts say whose, the header which host
      setText("host", fleet.selected || "all hosts");
      renderAlerts();
      renderServices();
      renderApprovals();
      renderNotify();  // says the routes are the central's
    }
    if (chartHost() !== chartsBefore) reloadHistory();
  }

  function selectHost(host) {
    if (fleet.selected === host) return;
    const chartsBefore = chartHost();
    fleet.selected = host;
    renderHosts();
    renderAlerts();
    renderServices();
    renderApprovals();
    if (fleet.on) setText("host", host || "all hosts");
    if (chartHost() !== chartsBefore) reloadHistory();
  }

  async function loadAlerts() {
    const body = await api("GET", "/api/alerts");
    alerts.clear();
    for (const a of body.alerts) alerts.set(a.fingerprint, a);
    renderAlerts();
  }

  // On a central, an action names the host it is for (the server checks it is that host's).
  function onHost(path, host) {
    return fleet.on && host ? `${path}${path.includes("?") ? "&" : "?"}host=` +
      encodeURIComponent(host) : path;
  }

  async function ackAlert(fingerprint, host) {
    try {
      const a = await api("POST", onHost(`/api/alerts/${encodeURIComponent(fingerprint)}/ack`,
                                         host));
      banner("");
      upsertAlert(a);
    } catch (err) {
      addFeed("error", `acknowledge failed: ${problemText(err).join("; ")}`);
    }
  }

  async function silenceAlert(fingerprint, host) {
    const until = new Date(Date.now() + 3600 * 1000).toISOString();
    try {
      await api("POST", onHost("/api/alerts/silences", host), {
        matchers: { fingerprint }, until, comment: "silenced for 1 h from the dashboard" });
      banner("");
      addFeed("silence", `silenced alert ${fingerprint} for 1 h`);
      await loadAlerts();
    } catch (err) {
      addFeed("error", `silence failed: ${problemText(err).join("; ")}`);
    }
  }

  // ------------------------------------------------------------------ services

  // host/name -> ServiceBody (GET /api/services; on a central, every host's)
  const services = new Map();
  let servicesUnreachable = [];  // a central's hosts that did not answer: shown, not hidden

  function serviceLine(s) {
    const parts = [s.state];
    if (s.pid) parts.push(`pid ${s.pid}`);
    if (s.uptime_s !== null && s.uptime_s !== undefined) parts.push(`up ${duration(s.uptime_s)}`);
    parts.push(`restarts ${s.restarts || 0}`);
    return parts.join(" · ");
  }

  function renderServices() {
    const list = $("services");
    clear(list);
    const shown = [...services.values()]
      .filter((s) => !fleet.on || !fleet.selected || s.host === fleet.selected);
    const silent = servicesUnreachable
      .filter((p) => !fleet.selected || p.host === fleet.selected);
    setText("services-count", shown.length ? `(${shown.length})` : "");
    for (const p of silent) {
      list.append(el("li", { "data-unreachable": p.host },
        el("div", { class: "line" },
          el("span", { class: "sev", "data-severity": "down", text: "no answer" }),
          el("strong", { class: "grow", text: p.host }),
          el("span", { class: "muted", text: `its services are not listed (${p.status})` })),
        el("p", { class: "detail", text: p.detail })));
    }
    if (!shown.length) {
      if (!silent.length) list.append(el("li", { class: "empty", text: "no services declared" }));
      return;
    }
    for (const s of shown) {
      const check = s.last_check_at
        ? `last check ${clock(s.last_check_at)}: ${s.last_check || "–"}` : "not checked yet";
      const action = s.last_action
        ? `last action ${s.last_action}${s.last_action_at ? " at " + clock(s.last_action_at) : ""}` +
          `: ${s.last_outcome || "?"}${s.last_message ? " – " + s.last_message : ""}` : null;
      list.append(el("li", { "data-service": s.name, "data-condition": s.condition,
                             "data-host": s.host || "" },
        el("div", { class: "line" },
          el("span", { class: "dot", "data-state": s.condition === "ok" ? "running"
            : s.condition === "unhealthy" || s.condition === "starting" ? "degraded" : "crashed",
            title: s.condition }),
          fleet.on ? el("span", { class: "muted", "data-host": s.host, text: s.host }) : null,
          el("strong", { class: "grow", text: s.name }),
          el("span", { class: "state", text: s.condition.replace("_", " ") }),
          el("span", { class: "muted", text: serviceLine(s) }),
          s.condition === "failing" ? el("button", { type: "button", class: "danger",
            "data-do": "reset",
            onclick: (ev) => resetService(s.name, s.host, ev.currentTarget) },
            "Reset") : null),
        s.detail ? el("p", { class: "detail", text: s.detail }) : null,
        s.remediation ? el("p", { class: "detail remediation", text: s.remediation }) : null,
        el("p", { class: "detail muted", text: check }),
        action ? el("p", { class: "detail muted", text: action }) : null));
    }
  }

  async function loadServices() {
    if (!fleet.known) await loadHosts();
    // A central heals nothing itself: it lists each host's services from that host's agent
    // (and demos run on a host, not here).
    $("simulate-service").hidden = $("simulate-crashloop").hidden = fleet.on;
    const body = await api("GET", "/api/services");
    services.clear();
    for (const s of body.services) services.set(`${s.host || ""}/${s.name}`, s);
    servicesUnreachable = body.unreachable || [];
    renderServices();
  }

  // On a central an event from any host would read every host's list again: at most one
  // read at a time, and one more if events came in meanwhile.
  function coalesced(load) {
    const state = { running: null, again: false };
    const run = () => {
      if (!fleet.on) return load();
      if (state.running) { state.again = true; return state.running; }
      state.running = load().finally(() => {
        state.running = null;
        if (state.again) { state.again = false; run().catch(() => {}); }
      });
      return state.running;
    };
    return run;
  }
  const reloadServices = coalesced(() => loadServices());

  // A failing target gets no automatic tries until a person resets it (audited as them).
  async function resetService(name, host, button) {
    if (button) button.disabled = true;
    try {
      const body = await api("POST", onHost("/api/actions/reset", host), { service: name });
      banner("");
      showResult("services-result", true, [body.detail]);
    } catch (err) {
      showResult("services-result", false, problemText(err));
    }
    await loadServices().catch(() => {});
  }

  // `watchkeeper simulate service|crashloop`: the server's own demo service, crashed.
  async function simulate(scenario, button) {
    if (button) button.disabled = true;
    try {
      const body = await api("POST", "/api/command", { command: "simulate", scenario,
                                                       duration_s: 60 });
      const s = body.simulation;
      banner("");
      showResult("services-result", true, [`${s.scenario}: demo service ${s.service} ` +
        `(pid ${s.pid}) killed at ${clock(s.crashed_at)}; removed at ${clock(s.until)}`]);
    } catch (err) {
      showResult("services-result", false, problemText(err));
    } finally {
      if (button) button.disabled = false;
    }
    await loadServices().catch(() => {});
  }

  // ------------------------------------------------------------------ approvals

  function targetText(t) {
    if (!t) return "";
    return t.kind === "pid" ? `pid ${t.name}` : `${t.kind} ${t.name}`;
  }

  // The last pending list (GET /api/actions; on a central, every host's, each with its host).
  const approvals = { pending: [], unreachable: [] };

  function renderApprovals(pending) {
    if (pending) approvals.pending = pending;
    const list = $("approvals");
    clear(list);
    const shown = approvals.pending
      .filter((p) => !fleet.on || !fleet.selected || p.host === fleet.selected);
    const silent = approvals.unreachable
      .filter((p) => !fleet.selected || p.host === fleet.selected);
    setText("approvals-count", shown.length ? `(${shown.length})` : "");
    for (const p of silent) {
      list.append(el("li", { "data-unreachable": p.host }, el("div", { class: "line" },
        el("span", { class: "sev", "data-severity": "down", text: "no answer" }),
        el("strong", { class: "grow", text: p.host }),
        el("span", { class: "muted", text: `its approvals are not listed: ${p.detail}` }))));
    }
    if (!shown.length) {
      if (!silent.length) list.append(el("li", { class: "empty", text: "nothing waiting" }));
      return;
    }
    for (const p of shown) {
      const d = p.decision || {};
      const req = d.request || {};
      const llm = req.source === "llm";
      // The target is the checked, normalised one; the parameters are also shown exactly
      // as the proposer gave them (and as checked, when that differs), so an approval
      // cannot say one thing and do another.
      const given = JSON.stringify(req.params || {});
      const checked = JSON.stringify(d.params || {});
      list.append(el("li", { "data-approval": p.id, "data-source": req.source || "",
                             "data-host": p.host || "" },
        el("div", { class: "line" },
          fleet.on ? el("span", { class: "muted", "data-host": p.host, text: p.host }) : null,
          el("strong", { class: "grow", text: `#${p.id} ${req.action || "?"}` +
            (d.target ? ` on ${targetText(d.target)}` : "") }),
          el("span", { class: llm ? "badge llm" : "muted", "data-proposer": req.source || "",
            text: llm ? "proposed by the LLM" : `proposed by ${req.source || "?"}` })),
        el("p", { class: "detail", text: `why: ${d.why || ""}` }),
        req.reasoning ? el("p", { class: "detail", "data-reasoning": "",
          text: `${llm ? "the LLM's reasoning (untrusted)" : "reasoning"}: ${req.reasoning}` })
          : null,
        el("p", { class: "detail", "data-params": "given",
          text: `parameters as given: ${given}` }),
        checked !== given
          ? el("p", { class: "detail", "data-params": "checked",
            text: `parameters as checked: ${checked}` })
          : null,
        el("p", { class: "detail", text: `asked ${when(p.requested_at)}` +
          (p.expires_at ? `; expires unanswered in ${expiresIn(p.expires_at)}` : "") }),
        el("div", { class: "buttons" },
          el("button", { type: "button", "data-do": "approve",
            onclick: (ev) => decide(p.id, "approve", ev.currentTarget, p.host) }, "Approve"),
          el("button", { type: "button", class: "danger", "data-do": "reject",
            onclick: (ev) => decide(p.id, "reject", ev.currentTarget, p.host) }, "Reject"))));
    }
  }

  const reloadActions = coalesced(() => loadActions());

  async function loadActions() {
    const body = await api("GET", "/api/actions?limit=1");
    approvals.unreachable = body.unreachable || [];
    renderApprovals(body.pending || []);
    showAuditChain(body.audit_chain);
  }

  // Its own banner: the error banner is cleared by every successful action.
  function showAuditChain(chain) {
    const node = $("audit-banner");
    const broken = chain && !chain.ok && chain.broken_at;
    node.hidden = !broken;
    node.textContent = broken
      ? `The audit log fails its integrity check (${broken.problem}` +
        (broken.id ? ` at #${broken.id}` : "") + `): ${broken.message}. ` +
        "What it shows may have been altered; run `watchkeeper audit verify`."
      : "";
  }

  // The feed starts with what happened before the page opened (the stored events), so
  // "what happened overnight?" has an answer; the live stream adds to it.
  async function seedFeed() {
    const body = await api("GET", `/api/activity?limit=${FEED_MAX}`);
    for (const item of body.events || []) {
      const text = feedFor(item.kind, item.event || {});
      if (text) addFeed(item.kind, text, item.at, item.event);
    }
  }

  async function decide(id, verb, button, host) {
    if (button) button.disabled = true;
    const whose = fleet.on && host ? ` on ${host}` : "";
    try {
      const body = verb === "approve"
        ? await api("POST", onHost(`/api/actions/${id}/approve`, host))
        : await api("POST", onHost(`/api/actions/${id}/reject`, host),
                    { reason: "rejected from the dashboard" });
      banner("");
      addFeed("approval", verb === "approve"
        ? `approved #${id}${whose}: ${body.verdict}${body.why ? " – " + body.why : ""}`
        : `rejected #${id}${whose}`);
    } catch (err) {
      addFeed("error", `${verb} #${id}${whose} failed: ${problemText(err).join("; ")}`);
    }
    await loadActions().catch(() => {});
  }

  // ------------------------------------------------------------------ notifications

  // GET /api/notify: each route's delivery. No event says a try worked or failed, so the
  // card is read again every NOTIFY_EVERY_MS, and NOTIFY_AFTER_EVENT_MS after an alert or a
  // remediation step (which may have queued a message). On a fleet's central these are the
  // central's routes (a fleet's notifications go out from it): the host picker leaves them.
  const NOTIFY_EVERY_MS = 10000;
  const NOTIFY_AFTER_EVENT_MS = 2000;
  let notifyTimer = null;
  let notifyAsked = 0;  // reads overlap (poll, events): only the latest one is drawn
  const notifyLast = { body: null, problem: "" };  // the last answer, drawn again on a change

  // The README's route shape, for a server with none.
  const NOTIFY_HINT = 'notify: {routes: [{name: ops, url: "json://127.0.0.1:9000/hook", ' +
    "min_severity: warning}]}";

  function ago(at) {
    const d = new Date(at);
    return isNaN(d.getTime()) ? "?" : `${duration((Date.now() - d.getTime()) / 1000)} ago`;
  }

  function nextTry(at) {
    const left = (new Date(at).getTime() - Date.now()) / 1000;
    if (isNaN(left)) return "?";
    return left >= 1 ? `in ${duration(left)}` : "due now";
  }

  function routeCounts(r) {
    const parts = [];
    if (r.waiting !== null && r.waiting !== undefined) {
      parts.push(`waiting ${r.waiting}` + (r.waiting && r.oldest_waiting_s !== null &&
        r.oldest_waiting_s !== undefined ? ` (oldest ${duration(r.oldest_waiting_s)})` : ""));
    }
    if (r.alerts !== null && r.alerts !== undefined) {
      parts.push(`alerts ${r.alerts} (${r.firing || 0} firing)`);
    }
    parts.push(`sent ${r.sent_total || 0}`, `failed ${r.failed_total || 0}`);
    if (r.dropped_total) parts.push(`dropped ${r.dropped_total}`);
    if (r.last_post_ok === false) parts.push("last post refused");
    parts.push(r.last_success_at ? `last success ${ago(r.last_success_at)}` : "no success yet");
    return parts.join(" · ");
  }

  function renderNotify(body, problem) {
    if (body !== undefined) Object.assign(notifyLast, { body, problem });
    ({ body, problem } = notifyLast);
    if (!body && !problem) return;  // not read yet
    const list = $("notify");
    clear(list);
    const routes = body ? body.routes || [] : [];
    const bad = routes.filter((r) => r.state === "failing").length;
    setText("notify-count", routes.length
      ? `(${routes.length}${bad ? `, ${bad} failing` : ""})` +
        (fleet.on ? " · sent by this central" : "")
      : "");
    if (problem) {
      list.append(el("li", { class: "empty", "data-problem": "",
        text: `could not read the routes: ${problem}` }));
      return;
    }
    for (const r of routes) {
      const trouble = r.state === "failing" || r.state === "retrying";
      const url = /[^*]/.test(r.url || "") ? r.url : null;  // an apprise URL is all masked
      list.append(el("li", { "data-route": r.name, "data-state": r.state, "data-kind": r.kind },
        el("div", { class: "line" },
          el("span", { class: "dot", "data-state": r.state, title: r.state }),
          el("strong", { class: "grow", text: r.name }),
          el("span", { class: "state", "data-state": r.state, text: r.state }),
          el("span", { class: "muted", "data-kind": "", text: r.kind }),
          url ? el("span", { class: "muted", text: url }) : null),
        el("p", { class: "detail", "data-counts": "", text: routeCounts(r) }),
        trouble && r.last_error ? el("p", { class: "detail", "data-error": "",
          text: `last error${r.last_error_at ? " at " + clock(r.last_error_at) : ""}: ` +
                r.last_error }) : null,
        trouble ? el("p", { class: "detail", "data-retry": "",
          text: (r.failing_since ? `failing since ${when(r.failing_since)}` : "failing") +
                (r.next_retry_at ? ` · next retry ${nextTry(r.next_retry_at)}` : "") }) : null,
        r.state === "unknown" ? el("p", { class: "detail",
          text: "its agent did not answer: state unknown" }) : null));
    }
    for (const line of (body && body.unavailable) || []) {
      list.append(el("li", { class: "empty", "data-unavailable": "", text: line }));
    }
    if (!routes.length) {
      list.append(el("li", { class: "empty", "data-hint": "" },
        "No notification route: alerts reach only this page and the log. Add one to the " +
        "config file and reload (SIGHUP), e.g. ", el("code", { text: NOTIFY_HINT }),
        " (any apprise URL)."));
    }
  }

  async function loadNotify() {
    const asked = ++notifyAsked;
    let body;
    try {
      body = await api("GET", "/api/notify");
    } catch (err) {
      if (asked === notifyAsked) renderNotify(null, problemText(err).join("; "));
      throw err;
    }
    if (asked !== notifyAsked) return;
    renderNotify(body, null);
    $("notify-section").dataset.loaded = String(Date.now());
  }

  // After an alert or remediation event: once, NOTIFY_AFTER_EVENT_MS later, for a burst.
  function refreshNotify() {
    if (notifyTimer) return;
    notifyTimer = setTimeout(() => {
      notifyTimer = null;
      loadNotify().catch(() => {});
    }, NOTIFY_AFTER_EVENT_MS);
  }

  // ------------------------------------------------------------------ feed

  // An alert's line is coloured by what happened to it (resolved is good news, not red),
  // then by its severity.
  function addFeed(kind, text, at, e) {
    const feed = $("feed");
    const attrs = { "data-kind": kind };
    if (kind === "alert" && e) {
      attrs["data-state"] = String(e.state || "");
      attrs["data-severity"] = String(e.severity || "");
    }
    feed.prepend(el("li", attrs,
      el("time", { text: clock(at) }), el("span", { class: "what", text })));
    while (feed.children.length > FEED_MAX) feed.removeChild(feed.lastChild);
  }

  function feedFor(kind, e) {
    switch (kind) {
      case "alert": {
        const change = (e.labels || {}).change;
        if (change === "value") return null;  // the open alert's number moved: shown in place
        if (change === "assessed" && e.assessment) {
          return `LLM assessment (${e.severity}): ${e.assessment.summary} – on: ${e.summary}`;
        }
        const by = (e.labels || {}).acked_by;
        const verb = e.state === "resolved" ? "resolved" : e.state === "acknowledged"
          ? `acknowledged${by ? " by " + by : ""}` : "alert";
        return `${verb} (${e.severity}): ${e.summary}`;
      }
      case "remediation": {
        const by = !e.by ? "" : e.phase === "rejected" || e.phase === "reset" ? ` by ${e.by}`
        : ` (approved by ${e.by})`;
        const parts = [`${fleet.on && e.host ? e.host + ": " : ""}` +
          `${e.action}${e.target ? " on " + e.target : ""}: ${e.phase}${by}`];
        if (e.verdict) parts.push(e.verdict);
        if (e.outcome) parts.push(`outcome ${e.outcome}`);
        if (e.message) parts.push(e.message);
        else if (e.why) parts.push(e.why);
        return parts.join(" – ");
      }
      case "agent_error":
        return `agent ${e.agent} error${e.timed_out ? " (timed out)" : ""}: ${e.error}`;
      case "agent_restarted":
        return `agent ${e.agent} restarted (restart ${e.restarts}): ${e.reason}`;
      case "agent_gave_up":
        return `agent ${e.agent} stopped being restarted after ${e.restarts}: ${e.reason}`;
      case "config_changed":
        return `configuration changed (version ${e.version}): ${(e.changed || []).join(", ")}`;
      case "analyzer_notice":
        return `analyzer: ${e.message}`;
      case "command_refused":
        return `${e.host} refused ${e.command} to its ${e.agent} from ${e.actor} ` +
          `(${e.code}): ${e.message}`;
      case "spool_gap":
        return `gap: ${e.host} could not reach the broker and its spool was full: ` +
          `${e.dropped} event(s) from ${when(e.first_at)} to ${when(e.last_at)} are lost`;
      default:
        return null;
    }
  }

  // ------------------------------------------------------------------ charts

  const charts = {
    cpu: { id: "chart-cpu", metrics: ["cpu.percent"], unit: "%", traces: new Map() },
    mem: { id: "chart-mem", metrics: ["memory.percent"], unit: "%", traces: new Map() },
    disk: { id: "chart-disk", metrics: ["disk.percent"], unit: "%", traces: new Map() },
    net: { id: "chart-net", metrics: ["net.bytes_recv_per_s", "net.bytes_sent_per_s"],
           unit: "B/s", traces: new Map() },
  };
  let rangeS = 3600;
  let stepS = 12;
  let chartsReady = false;
  let historyLoading = null;
  const lastAppend = new Map();  // chart key -> ms of the last appended point

  function havePlotly() {
    return typeof window.Plotly === "object" && window.Plotly !== null;
  }

  // plotly.js loads async so the rest of the page works meanwhile: true once it is there,
  // false if it is not installed, failed, or took more than 30 s.
  function plotlyArrival() {
    if (havePlotly()) return Promise.resolve(true);
    const tag = $("plotly-script");
    if (!tag) return Promise.resolve(false);
    return new Promise((resolve) => {
      tag.addEventListener("load", () => resolve(havePlotly()), { once: true });
      tag.addEventListener("error", () => resolve(false), { once: true });
      setTimeout(() => resolve(havePlotly()), 30000);
    });
  }

  function traceName(metric, dimension) {
    const suffix = metric.endsWith("recv_per_s") ? " recv" : metric.endsWith("sent_per_s")
      ? " sent" : "";
    return plotlyText((dimension || metric) + suffix);
  }

  function layoutFor(chart) {
    return {
      margin: { l: 44, r: 8, t: 8, b: 28 },
      showlegend: chart.metrics.length > 1 || chart.id === "chart-disk",
      legend: { orientation: "h", y: -0.25, font: { size: 10 } },
      xaxis: { type: "date", fixedrange: true },
      yaxis: { fixedrange: true, rangemode: "tozero",
               range: chart.unit === "%" ? [0, 100] : undefined },
      paper_bgcolor: "rgba(0,0,0,0)",
      plot_bgcolor: "rgba(0,0,0,0)",
      font: { size: 11, color: getComputedStyle(document.body).color },
    };
  }

  const plotConfig = { displayModeBar: false, responsive: true, staticPlot: false,
                       displaylogo: false, scrollZoom: false };

  // Which series a chart shows: for disks and interfaces, those in the latest snapshot.
  function seriesOf(key, snapshot) {
    if (key === "cpu") return [["cpu.percent", ""]];
    if (key === "mem") return [["memory.percent", ""]];
    if (!snapshot) return [];
    if (key === "disk") {
      return (snapshot.disks || []).slice(0, MAX_TRACES).map((d) => ["disk.percent", d.mountpoint]);
    }
    const out = [];
    for (const n of (snapshot.net || []).slice(0, MAX_TRACES / 2)) {
      out.push(["net.bytes_recv_per_s", n.interface], ["net.bytes_sent_per_s", n.interface]);
    }
    return out;
  }

  async function fetchHistory(metric, dimension, start, end) {
    const q = new URLSearchParams({ metric, start: start.toISOString(), end: end.toISOString(),
                                    step: String(stepS), dimension });
    if (chartHost()) q.set("host", chartHost());
    const body = await api("GET", `/api/metrics/history?${q}`);
    return body.points || [];
  }

  async function loadHistory() {
    if (!havePlotly()) return;
    stepS = Math.max(1, Math.ceil(rangeS / HISTORY_POINTS));
    let snapshot = null;
    if (!fleet.known) await loadHosts();
    try {
      const host = chartHost();
      snapshot = await api("GET", host ? `/api/metrics?host=${encodeURIComponent(host)}`
                                       : "/api/metrics");
    } catch (err) {
      if (!(err instanceof ApiError && err.status === 503)) throw err;
    }
    const end = new Date();
    const start = new Date(end.getTime() - rangeS * 1000);
    for (const [key, chart] of Object.entries(charts)) {
      const series = seriesOf(key, snapshot);
      const data = [];
      chart.traces = new Map();
      for (const [metric, dimension] of series) {
        const points = await fetchHistory(metric, dimension, start, end);
        chart.traces.set(`${metric}|${dimension}`, data.length);
        data.push({ type: "scatter", mode: "lines", name: traceName(metric, dimension),
                    x: points.map((p) => plotTime(p.at)), y: points.map((p) => p.avg),
                    line: { width: 1.5 }, hoverinfo: "x+y+name" });
      }
      await window.Plotly.react($(chart.id), data, layoutFor(chart), plotConfig);
      lastAppend.set(key, 0);
    }
    chartsReady = true;
    $("charts-section").dataset.range = String(rangeS);  // which history is shown
  }

  function reloadHistory() {
    // One load at a time; a reconnect or a new range during a load waits for it.
    historyLoading = (historyLoading || Promise.resolve())
      .then(loadHistory)
      .catch((err) => addFeed("error", `chart history: ${problemText(err).join("; ")}`));
    return historyLoading;
  }

  function appendLive(values, at) {
    if (!chartsReady || !havePlotly()) return;
    const x = plotTime(at);
    const atMs = new Date(at).getTime();
    for (const [key, chart] of Object.entries(charts)) {
      // Keep the chosen range's resolution: at most one point per step, however fast ticks come.
      if (atMs - (lastAppend.get(key) || 0) < stepS * 1000 * 0.9) continue;
      const idx = [];
      const xs = [];
      const ys = [];
      const added = [];
      for (const v of values) {
        if (!chart.metrics.includes(v.metric)) continue;
        const traceKey = `${v.metric}|${v.dimension || ""}`;
        let i = chart.traces.get(traceKey);
        if (i === undefined) {
          if (chart.traces.size >= MAX_TRACES) continue;
          i = chart.traces.size;
          chart.traces.set(traceKey, i);
          added.push({ type: "scatter", mode: "lines", name: traceName(v.metric, v.dimension),
                       x: [], y: [], line: { width: 1.5 }, hoverinfo: "x+y+name" });
        }
        idx.push(i);
        xs.push([x]);
        ys.push([v.value]);
      }
      const div = $(chart.id);
      if (added.length) window.Plotly.addTraces(div, added);
      if (idx.length) {
        window.Plotly.extendTraces(div, { x: xs, y: ys }, idx, LIVE_MAX_POINTS);
        lastAppend.set(key, atMs);
      }
    }
  }

  function showNow(values) {
    const by = (metric, dim) => values.find(
      (v) => v.metric === metric && (dim === undefined || v.dimension === dim));
    const cpu = by("cpu.percent");
    if (cpu) setText("now-cpu", pct(cpu.value));
    const mem = by("memory.percent");
    if (mem) setText("now-mem", pct(mem.value));
    const disks = values.filter((v) => v.metric === "disk.percent");
    if (disks.length) {
      setText("now-disk", disks.slice(0, MAX_TRACES)
        .map((d) => `${d.dimension} ${pct(d.value)}`).join(" · "));
    }
    let recv = 0;
    let sent = 0;
    let seen = false;
    for (const v of values) {
      if (v.metric === "net.bytes_recv_per_s") { recv += v.value; seen = true; }
      if (v.metric === "net.bytes_sent_per_s") { sent += v.value; seen = true; }
    }
    if (seen) setText("now-net", `↓ ${bytesRate(recv)} ↑ ${bytesRate(sent)}`);
    const up = by("uptime_s");
    if (up) {
      header.hostUptimeS = up.value;
      header.hostUptimeAt = performance.now();
    }
  }

  function onMetrics(m) {
    if (fleet.on && m.host !== chartHost()) return;  // another host of the fleet
    const seq = $("seq");
    seq.textContent = String(m.seq);
    seq.dataset.seq = String(m.seq);
    if (m.host && !fleet.on) setText("host", m.host);
    const values = m.values || [];
    showNow(values);
    appendLive(values, m.at);
  }

  // A full snapshot (polling fallback) in the stream's summary shape.
  function summaryOf(s) {
    const values = [];
    const push = (metric, dimension, value) => {
      if (value !== null && value !== undefined) values.push({ metric, dimension, value });
    };
    push("cpu.percent", "", s.cpu && s.cpu.percent);
    push("memory.percent", "", s.memory && s.memory.percent);
    for (const d of s.disks || []) push("disk.percent", d.mountpoint, d.percent);
    for (const n of s.net || []) {
      push("net.bytes_recv_per_s", n.interface, n.bytes_recv_per_s);
      push("net.bytes_sent_per_s", n.interface, n.bytes_sent_per_s);
    }
    push("uptime_s", "", s.uptime_s);
    return { host: s.host, at: s.at, seq: s.seq, values };
  }

  // ------------------------------------------------------------------ health history

  const SEVERITY_COLOR = { critical: "#c53030", warning: "#b7791f", info: "#2b6cb0" };
  // The history is read from the store, which the server writes every flush_interval (1 s
  // by default): read it again 2 s after the last alert or remediation event of a burst,
  // but at most 10 s after the first; and every minute anyway (slower flush settings).
  const HISTORY_QUIET_MS = 2000;
  const HISTORY_MAX_WAIT_MS = 10000;
  const HISTORY_EVERY_MS = 60000;
  let historyHours = 24;
  let historyTimer = null;
  let historyFirst = 0;

  // Time to detect / recover: tenths of a second below a minute (detection is fast).
  function secs(v) {
    if (v === null || v === undefined || !isFinite(v)) return "–";
    return v < 60 ? `${Number(v).toFixed(1)}s` : duration(v);
  }

  function statsText(name, s) {
    if (!s || !s.count) return `${name} –`;
    return `${name} ${secs(s.mean_s)} (p50 ${secs(s.p50_s)}, p90 ${secs(s.p90_s)})`;
  }

  function rateText(r) {
    const share = r.success_rate === null || r.success_rate === undefined ? "–"
      : `${Math.round(r.success_rate * 100)} %`;
    return `${share}: ${r.successes} of ${r.successes + r.failures} worked`;
  }

  function renderIncidents(body) {
    const list = $("incidents");
    clear(list);
    const incidents = (body.incidents || []).slice().reverse();  // newest first
    setText("incidents-count", incidents.length ? `(${incidents.length})` : "");
    if (!incidents.length) {
      list.append(el("li", { class: "empty", text: "no incident in this range" }));
    }
    for (const i of incidents) {
      const acts = (i.actions || []).map((a) => `${a.action}${a.target ? " on " + a.target : ""}` +
        `: ${a.success === null ? (a.outcome || "no result") : a.success ? "worked" : "did not work"}`);
      list.append(el("li", { "data-incident": i.id, "data-state": i.state },
        el("div", { class: "line" },
          el("span", { class: "sev", "data-severity": i.severity, text: i.severity }),
          el("strong", { class: "grow", text: i.title }),
          el("span", { class: "state", "data-state": i.state, text: i.state })),
        el("p", { class: "detail", text: `${i.host} · ${when(i.start)}` +
          (i.end ? ` → ${new Date(i.end).toLocaleString()}` : "") +
          ` · detected in ${secs(i.ttd_s)} · recovered in ${secs(i.ttr_s)}` +
          ` · ${(i.alerts || []).length} alert(s)` }),
        acts.length ? el("p", { class: "detail", "data-actions": "", text: acts.join("; ") })
          : null));
    }
  }

  function uptimeDetail(h, gapS) {
    const parts = [];
    if (h.reboots) parts.push(`down ${duration(h.down_s)} across ${h.reboots} reboot(s)`);
    if (h.unwatched_s) parts.push(`${duration(h.unwatched_s)} not watched (no reboot: counted up)`);
    if (h.unknown_s) parts.push(`${duration(h.unknown_s)} unknown (left out)`);
    if (!parts.length) return `watched throughout (gaps over ${duration(gapS)} would show here)`;
    return `${parts.join(" · ")}; ${h.gaps} gap(s) over ${duration(gapS)}`;
  }

  function renderUptime(body) {
    const list = $("uptime");
    clear(list);
    for (const h of body.hosts || []) {
      list.append(el("li", { "data-host": h.host }, el("div", { class: "line" },
        el("strong", { class: "grow", text: `host ${h.host}` }),
        el("span", { text: h.uptime_percent === null ? "–" : `${h.uptime_percent.toFixed(2)} %` })),
        el("p", { class: "detail", text: uptimeDetail(h, body.gap_s) })));
    }
    for (const v of body.services || []) {
      list.append(el("li", { "data-service": v.service }, el("div", { class: "line" },
        el("span", { class: "grow", text: `service ${v.service} on ${v.host}` }),
        el("span", { text: v.uptime_percent === null ? "–" : `${v.uptime_percent.toFixed(2)} %` })),
        el("p", { class: "detail", text: `${secs(v.down_s)} down` })));
    }
    if (!list.firstChild) list.append(el("li", { class: "empty", text: "no snapshot in this range" }));
    const rates = $("success-rates");
    clear(rates);
    for (const [kind, rows] of [["action", body.by_action], ["target", body.by_target]]) {
      for (const r of rows || []) {
        rates.append(el("li", { "data-rate": `${kind}:${r.key}` }, el("div", { class: "line" },
          el("span", { class: "grow", text: `${kind} ${r.key}` }),
          el("span", { text: rateText(r) }))));
      }
    }
    if (!rates.firstChild) {
      rates.append(el("li", { class: "empty", text: "no remediation finished in this range" }));
    }
  }

  async function plotIncidents(body) {
    const node = $("chart-incidents");
    if (!havePlotly()) return;  // the lists say it all; start() hides the chart if it never comes
    const incidents = body.incidents || [];
    const end = new Date(body.end).getTime();
    const trace = {
      type: "bar", orientation: "h",
      base: incidents.map((i) => plotTime(i.start)),
      // A bar is as long as the incident (an open one up to now); at least a second, to show.
      x: incidents.map((i) => Math.max(1000,
        (i.end ? new Date(i.end).getTime() : end) - new Date(i.start).getTime())),
      y: incidents.map((i) => plotlyText(i.host)),
      text: incidents.map((i) => plotlyText(`${i.title} (${i.state})`)),
      textposition: "none", hoverinfo: "text",
      marker: { color: incidents.map((i) => SEVERITY_COLOR[i.severity] || "#718096") },
    };
    const layout = {
      margin: { l: 80, r: 8, t: 8, b: 28 }, showlegend: false, barmode: "overlay",
      xaxis: { type: "date", fixedrange: true,
               range: [plotTime(body.start), plotTime(body.end)] },
      yaxis: { fixedrange: true, type: "category" },
      paper_bgcolor: "rgba(0,0,0,0)", plot_bgcolor: "rgba(0,0,0,0)",
      font: { size: 11, color: getComputedStyle(document.body).color },
    };
    await window.Plotly.react(node, [trace], layout, plotConfig);
  }

  async function loadHealthHistory() {
    const q = new URLSearchParams({ from: `-${historyHours}h`, to: "now" });
    const body = await api("GET", `/api/history?${q}`);
    setText("history-summary", `${(body.incidents || []).length} incident(s), ` +
      `${(body.incidents || []).filter((i) => i.state === "open").length} open · ` +
      `${statsText("time to detect", body.ttd)} · ${statsText("time to recover", body.ttr)}` +
      (body.truncated ? " · more events than one answer reads: choose a shorter range" : ""));
    renderIncidents(body);
    renderUptime(body);
    $("history-section").dataset.loaded = String(Date.now());
    await plotIncidents(body);
  }

  // Alerts and remediation change the history: read it again, once for a burst.
  function refreshHealthHistory() {
    const now = Date.now();
    if (!historyTimer) historyFirst = now;
    clearTimeout(historyTimer);
    const wait = Math.min(HISTORY_QUIET_MS, Math.max(0, historyFirst + HISTORY_MAX_WAIT_MS - now));
    historyTimer = setTimeout(() => {
      historyTimer = null;
      loadHealthHistory().catch(() => {});
    }, wait);
  }

  // ------------------------------------------------------------------ config

  async function loadConfig() {
    const body = await api("GET", "/api/config");
    setText("config-version", `(version ${body.version})`);
    $("config").textContent = JSON.stringify(body.config, null, 2);
  }

  async function applyConfig(ev) {
    ev.preventDefault();
    let patch;
    try {
      patch = JSON.parse($("config-patch").value);
    } catch (err) {
      showResult("config-result", false, [`not valid JSON: ${err.message}`]);
      return;
    }
    if (patch === null || typeof patch !== "object" || Array.isArray(patch)) {
      showResult("config-result", false, ["the change must be a JSON object"]);
      return;
    }
    try {
      const body = await api("PATCH", "/api/config", patch);
      banner("");
      showResult("config-result", true, [body.changed.length
        ? `changed: ${body.changed.join(", ")} (now version ${body.version})`
        : "nothing changed: the values were already in force"]);
      setText("config-version", `(version ${body.version})`);
      $("config").textContent = JSON.stringify(body.config, null, 2);
    } catch (err) {
      showResult("config-result", false, problemText(err));
    }
  }

  // ------------------------------------------------------------------ dry run

  async function dryRun(ev) {
    ev.preventDefault();
    let params;
    try {
      params = JSON.parse($("dryrun-params").value || "{}");
    } catch (err) {
      showResult("dryrun-result", false, [`parameters are not valid JSON: ${err.message}`]);
      return;
    }
    try {
      const body = await api("POST", "/api/command", {
        command: "remediate", action: $("dryrun-action").value, params, dry_run: true,
        reason: $("dryrun-reason").value });
      banner("");
      const d = body.decision || {};
      showResult("dryrun-result", true, [
        `verdict: ${d.verdict || "?"}${d.target ? " (target " + d.target + ")" : ""}` +
        `\nwhy: ${d.why || ""}${d.check ? "\ndecided by the check: " + d.check : ""}` +
        `${d.preview ? "\nwould do: " + d.preview : ""}` +
        `${d.approval_id ? "\nwaiting for approval #" + d.approval_id : ""}`]);
    } catch (err) {
      showResult("dryrun-result", false, problemText(err));
    }
  }

  // ------------------------------------------------------------------ live stream

  // Server-Sent Events over fetch(): EventSource cannot send an Authorization header.
  class SSEParser {
    constructor(onEvent) {
      this.onEvent = onEvent;
      this.buffer = "";
      this.type = "";
      this.data = [];
      this.lastId = "";
    }

    push(text) {
      this.buffer += text;
      let start = 0;
      for (;;) {
        const cr = this.buffer.indexOf("\r", start);
        const lf = this.buffer.indexOf("\n", start);
        let end;
        if (cr === -1 && lf === -1) break;
        if (cr === -1 || (lf !== -1 && lf < cr)) end = lf;
        else end = cr;
        let next = end + 1;
        if (end === cr) {
          // A CR at the very end may be the first half of a CRLF split between chunks.
          if (cr === this.buffer.length - 1) break;
          if (this.buffer[cr + 1] === "\n") next = cr + 2;
        }
        this.line(this.buffer.slice(start, end));
        start = next;
      }
      this.buffer = this.buffer.slice(start);
      if (this.buffer.length > 1 << 20) this.buffer = "";  // no line is ever this long
    }

    line(line) {
      if (line === "") {
        if (this.data.length) this.onEvent(this.type || "message", this.data.join("\n"));
        this.type = "";
        this.data = [];
        return;
      }
      if (line[0] === ":") return;  // a comment: the keep-alive
      const colon = line.indexOf(":");
      const field = colon === -1 ? line : line.slice(0, colon);
      let value = colon === -1 ? "" : line.slice(colon + 1);
      if (value[0] === " ") value = value.slice(1);
      if (field === "event") this.type = value;
      else if (field === "data") this.data.push(value);
      else if (field === "id" && value.indexOf("\0") === -1) this.lastId = value;
    }
  }

  // lastId: the last event id seen, sent back on reconnect (as EventSource does) so the
  // news missed meanwhile arrives first.
  const stream = { controller: null, attempt: 0, timer: null, pollTimer: null, gen: 0,
                   lastId: "" };

  function setConn(state, text) {
    const node = $("stream");
    node.dataset.state = state;
    node.textContent = text || state;
  }

  function onEvent(kind, data) {
    let e;
    try { e = JSON.parse(data); } catch (err) { return; }
    if (kind === "metrics") { onMetrics(e); return; }
    if (kind === "reset") {  // missed news the server no longer has: read the state again
      addFeed("stream", `live stream: ${e.reason || "reset"}`);
      refreshAll();
      return;
    }
    if (kind === "heartbeat") {
      if (e.health) {
        const before = agents.get(e.agent);
        agents.set(e.agent, e.health);
        if (!before || before.state !== e.health.state || before.restarts !== e.health.restarts
            || before.last_error !== e.health.last_error) {
          renderAgents();
        }
        if (before && before.state !== e.health.state) refreshStatus();
      }
      return;
    }
    const text = feedFor(kind, e);
    if (text) addFeed(kind, text, e.at, e);
    if (kind === "service_report") { reloadServices().catch(() => {}); return; }
    if (kind === "alert" || kind === "remediation") {
      refreshHealthHistory();
      if ((e.labels || {}).change !== "value") refreshNotify();  // may have queued a message
    }
    if (kind === "alert") {
      upsertAlert(e);
      refreshStatus();
      if (fleet.on) loadHosts().catch(() => {});
    }
    else if (kind === "remediation") reloadActions().catch(() => {});
    else if (kind === "config_changed") {  // routes and failing_after_s may have changed
      loadConfig().catch(() => {});
      loadNotify().catch(() => {});
    }
    else if (kind.startsWith("agent_")) {
      loadAgents().catch(() => {});
      loadSystem().catch(() => {});
    }
  }

  async function refreshAll() {
    const jobs = [loadSystem(), loadAgents(), loadServices(), loadAlerts(), loadActions(),
                  loadConfig(), loadHealthHistory(), loadHosts(), loadNotify()];
    const results = await Promise.allSettled(jobs);
    for (const r of results) {
      if (r.status === "rejected" && !(r.reason instanceof ApiError && r.reason.status === 401)) {
        addFeed("error", `loading: ${problemText(r.reason).join("; ")}`);
      }
    }
    reloadHistory();
  }

  function scheduleReconnect() {
    const delay = Math.min(BACKOFF_MAX_S, 2 ** stream.attempt);
    stream.attempt += 1;
    setConn("offline", `reconnecting in ${delay}s`);
    clearTimeout(stream.timer);
    stream.timer = setTimeout(connect, delay * 1000);
  }

  // Until a server has /api/events, follow it by polling (and say so).
  function startPolling() {
    setConn("polling", "polling");
    const poll = async () => {
      try {
        onMetrics(summaryOf(await api("GET", "/api/metrics")));
      } catch (err) { /* 503 before the first tick; retried */ }
    };
    clearInterval(stream.pollTimer);
    stream.pollTimer = setInterval(() => {
      poll();
      loadAgents().catch(() => {});
      loadServices().catch(() => {});
      loadAlerts().catch(() => {});
      loadActions().catch(() => {});
      loadSystem().catch(() => {});
      refreshHealthHistory();
    }, 5000);
    poll();
  }

  async function connect() {
    const gen = ++stream.gen;
    if (stream.controller) stream.controller.abort();
    clearInterval(stream.pollTimer);
    const controller = new AbortController();
    stream.controller = controller;
    setConn("connecting", "connecting");
    let idle = null;
    const bump = () => {
      clearTimeout(idle);
      idle = setTimeout(() => controller.abort(), STREAM_IDLE_MS);
    };
    try {
      const resume = stream.lastId ? { "Last-Event-ID": stream.lastId } : {};
      const response = await fetch("/api/events?snapshots=summary", {
        headers: { Accept: "text/event-stream", ...authHeaders(), ...resume },
        cache: "no-store", credentials: "omit", signal: controller.signal });
      if (response.status === 404) { startPolling(); return; }
      if (response.status === 401) {
        banner("The live stream needs a token here (401): enter it in the token field.");
        throw new Error("401");
      }
      if (!response.ok || !response.body) throw new Error(`HTTP ${response.status}`);
      setConn("live", "live");
      const wasDown = stream.attempt > 0;
      stream.attempt = 0;
      // Whatever happened while we were away: read the state again.
      if (wasDown) refreshAll();
      bump();
      const parser = new SSEParser((kind, data) => {
        if (parser.lastId) stream.lastId = parser.lastId;
        try { onEvent(kind, data); } catch (err) { console.warn("event", kind, err); }
      });
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        bump();
        parser.push(value);
      }
    } catch (err) {
      // aborted by a newer connect(), by the idle watchdog, or a network failure
    } finally {
      clearTimeout(idle);
    }
    if (gen === stream.gen) scheduleReconnect();
  }

  // ------------------------------------------------------------------ start

  function wire() {
    $("token-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const value = $("token").value.trim();
      const name = $("operator-name").value.trim();
      if (!value && name === user) return;
      if (name !== user) {
        if (name && !$("operator-name").checkValidity()) {
          banner("A name may have letters, digits, spaces and _ . @ + - (at most 64).");
          return;
        }
        user = name;
        if (user) localStorage.setItem(USER_KEY, user); else localStorage.removeItem(USER_KEY);
      }
      if (value) {
        token = value;
        localStorage.setItem(TOKEN_KEY, token);
        $("token").value = "";
      }
      banner("");
      showTokenState();
      stream.attempt = 1;  // makes the new connection read the state again
      connect();
    });
    $("token-clear").addEventListener("click", () => {
      token = "";
      user = "";
      localStorage.removeItem(TOKEN_KEY);
      localStorage.removeItem(USER_KEY);
      $("operator-name").value = "";
      showTokenState();
    });
    $("health-check").addEventListener("click", () => command("health_check", "all"));
    $("hosts-all").addEventListener("click", () => selectHost(""));
    // A host's "seen" time and its health move without events: read them again now and then.
    setInterval(() => { if (fleet.on) loadHosts().catch(() => {}); }, 10_000);
    setInterval(() => loadNotify().catch(() => {}), NOTIFY_EVERY_MS);
    for (const scenario of ["service", "crashloop"]) {
      $(`simulate-${scenario}`).addEventListener("click",
        (ev) => simulate(scenario, ev.currentTarget));
    }
    $("dryrun-form").addEventListener("submit", dryRun);
    $("config-form").addEventListener("submit", applyConfig);
    $("history-range").addEventListener("change", (ev) => {
      historyHours = Number(ev.target.value) || 24;
      loadHealthHistory().catch((err) => setText("history-summary",
        `history: ${problemText(err).join("; ")}`));
    });
    $("range").addEventListener("change", (ev) => {
      rangeS = Number(ev.target.value) || 3600;
      reloadHistory();
    });
    setInterval(tickClocks, 1000);
    setInterval(refreshHealthHistory, HISTORY_EVERY_MS);
  }

  function start() {
    takeTokenFromFragment();
    $("operator-name").value = user;
    showTokenState();
    wire();
    plotlyArrival().then((ok) => {
      if (ok) { reloadHistory(); refreshHealthHistory(); return; }
      const note = $("charts-note");
      note.textContent = $("plotly-script")
        ? "Charts are off: the chart library did not load. The current values are shown " +
          "above each chart."
        : "Charts are off: plotly is not installed with watchkeeper (pip install plotly). " +
          "The current values are shown above each chart.";
      note.hidden = false;
      for (const chart of Object.values(charts)) $(chart.id).hidden = true;
      $("chart-incidents").hidden = true;
    });
    renderAgents();
    renderServices();
    renderAlerts();
    renderApprovals([]);
    seedFeed().catch(() => {}).finally(() => {
      refreshAll();
      connect();
    });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
