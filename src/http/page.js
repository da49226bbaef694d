// laminate-proxy status page: live updates from /ws and operator actions
// through the JSON API. The page works without this script; with it, rows are
// rebuilt from the same JSON the API serves, always through textContent
// (never innerHTML), with the same structure as src/http/page.rs. Charts come
// as scenes (shapes with their coordinates, src/http/charts) and are drawn
// with the same SVG elements the server renders.
(function () {
  "use strict";

  var body = document.body;
  var tokenRequired = body.getAttribute("data-token-required") === "true";
  var disabledReason = body.getAttribute("data-actions-disabled") || "";
  var MAX_EVENTS = 100;
  var MAX_DISPATCHES = 50;
  var TOKEN_KEY = "laminate-status-token";

  // ---- small DOM helpers -------------------------------------------------
  function el(tag, attrs) {
    var e = document.createElement(tag);
    if (attrs) {
      Object.keys(attrs).forEach(function (k) {
        if (attrs[k] !== null && attrs[k] !== undefined && attrs[k] !== false) {
          e.setAttribute(k, attrs[k] === true ? "" : String(attrs[k]));
        }
      });
    }
    for (var i = 2; i < arguments.length; i++) {
      var c = arguments[i];
      if (c === null || c === undefined) continue;
      e.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
    }
    return e;
  }
  function text(v) {
    if (v === null || v === undefined || v === "") return "–";
    if (v === true) return "yes";
    if (v === false) return "no";
    return String(v);
  }
  function humanBytes(n) {
    if (typeof n !== "number") return text(n);
    var units = ["B", "KiB", "MiB", "GiB", "TiB"], u = 0, x = n;
    while (x >= 1024 && u + 1 < units.length) { x /= 1024; u++; }
    return u === 0 ? n + " B" : x.toFixed(1) + " " + units[u];
  }
  function findRow(tbody, attr, value) {
    var rows = tbody.querySelectorAll("tr[" + attr + "]");
    for (var i = 0; i < rows.length; i++) {
      if (rows[i].getAttribute(attr) === value) return rows[i];
    }
    return null;
  }
  function dropEmpty(tbody) {
    var e = tbody.querySelector("tr.empty");
    if (e) e.remove();
  }

  // ---- charts (scenes from src/http/charts) -------------------------------
  var SVG_NS = "http://www.w3.org/2000/svg";
  var sparks = {}; // node id -> latest scene
  function svgEl(tag, attrs, title) {
    var e = document.createElementNS(SVG_NS, tag);
    Object.keys(attrs).forEach(function (k) { e.setAttribute(k, String(attrs[k])); });
    if (title) {
      var t = document.createElementNS(SVG_NS, "title");
      t.textContent = title;
      e.appendChild(t);
    }
    return e;
  }
  function drawScene(scene) {
    var svg = svgEl("svg", { "class": "chart", width: scene.w, height: scene.h,
      viewBox: "0 0 " + scene.w + " " + scene.h, role: "img", "aria-label": scene.label }, scene.label);
    (scene.shapes || []).forEach(function (s) {
      var e;
      if (s.k === "rect") e = svgEl("rect", { "class": s.c, x: s.x, y: s.y, width: s.w, height: s.h }, s.tip);
      else if (s.k === "path") e = svgEl("path", { "class": s.c, d: s.d });
      else if (s.k === "line") e = svgEl("line", { "class": s.c, x1: s.x1, y1: s.y1, x2: s.x2, y2: s.y2 }, s.tip);
      else if (s.k === "text") { e = svgEl("text", { "class": s.c, x: s.x, y: s.y, "text-anchor": s.a }); e.textContent = s.t; }
      if (e) svg.appendChild(e);
    });
    return svg;
  }
  function putScene(holder, scene) {
    if (!holder || !scene) return;
    while (holder.firstChild) holder.removeChild(holder.firstChild);
    holder.appendChild(drawScene(scene));
  }
  function setCharts(m) {
    putScene(document.querySelector("[data-chart=disk]"), m.disk);
    putScene(document.querySelector("[data-chart=days]"), m.days);
    var tbody = document.getElementById("node-rows");
    Object.keys(m.nodes || {}).forEach(function (id) {
      sparks[id] = m.nodes[id];
      var row = findRow(tbody, "data-node", id);
      if (row) putScene(row.querySelector("td[data-chart=node]"), sparks[id]);
    });
  }

  // ---- operator actions --------------------------------------------------
  function actionForm(path, label, off, extra) {
    var why = disabledReason || off || null;
    var f = el("form", { method: "post", action: "/ui" + path, "data-api": "/api" + path, "class": "action" });
    if (extra) f.appendChild(extra);
    f.appendChild(el("button", { type: "submit", disabled: !!why, title: why }, label));
    return f;
  }

  function note(msg, ok) {
    var n = document.getElementById("note");
    n.textContent = msg;
    n.setAttribute("data-kind", ok ? "ok" : "error");
    n.hidden = false;
  }

  function token() {
    var t = document.getElementById("token");
    return t ? t.value : "";
  }

  document.addEventListener("submit", function (ev) {
    var form = ev.target;
    var api = form.getAttribute && form.getAttribute("data-api");
    if (!api) return;
    ev.preventDefault();
    var since = form.querySelector("input[name=since]");
    if (since && since.value.trim() !== "") {
      api += (api.indexOf("?") < 0 ? "?" : "&") + "since=" + encodeURIComponent(since.value.trim());
    }
    var headers = {};
    if (tokenRequired) headers["Authorization"] = "Bearer " + token();
    var button = form.querySelector("button");
    if (button) button.disabled = true;
    fetch(api, { method: "POST", headers: headers, credentials: "same-origin" })
      .then(function (r) {
        return r.json().catch(function () { return {}; }).then(function (j) { return [r, j]; });
      })
      .then(function (rj) {
        var r = rj[0], j = rj[1];
        if (r.ok) {
          if (j.replayed) note(j.replayed.length + " failed dispatches replayed.", true);
          else if (j.node_id && j.ok !== undefined) {
            note(j.ok ? "C-ECHO to " + j.node_id + ": answered in " + (j.rtt_ms || 0).toFixed(1) + " ms"
                      : "C-ECHO to " + j.node_id + " failed: " + text(j.error), !!j.ok);
          } else if (j.id) {
            // The same sentences as the no-JavaScript notes (forms.rs).
            if (/\/replay$/.test(api)) note("Dispatch " + j.id + " replayed (replay " + j.replays + ").", true);
            else if (/\/cancel$/.test(api)) note("Dispatch " + j.id + " cancelled.", true);
            else note("Done: dispatch " + j.id + " is " + j.state + ".", true);
            upsertDispatch(j);
          }
          else note("Done.", true);
        } else if (r.status === 401) {
          note("Refused: enter the status token at the top of the page.", false);
        } else {
          note("Refused (" + r.status + "): " + text(j.error), false);
        }
      })
      .catch(function (e) { note("The appliance did not answer: " + e, false); })
      .then(function () { if (button && !disabledReason) button.disabled = false; });
  });

  // ---- renderers (same structure as page.rs) -----------------------------
  function setLink(link) {
    var cells = document.querySelectorAll("td[data-link]");
    for (var i = 0; i < cells.length; i++) {
      var key = cells[i].getAttribute("data-link");
      var v = text(link[key]);
      cells[i].textContent = v;
      if (key === "state") cells[i].className = "state state-" + v;
    }
  }

  function actorRow(a) {
    var state = text(a.state);
    var name = el("td", null, text(a.name));
    (a.stages || []).forEach(function (s) {
      name.appendChild(el("div", { "class": "stage" }, text(s.dispatch_id) + ": " + text(s.stage) +
        (s.node_id ? " → " + s.node_id : "") + ", " + text(s.since_progress_s) + " s since progress"));
    });
    return el("tr", { "data-actor": text(a.name) },
      name,
      el("td", { "class": "state state-" + state }, state),
      el("td", null, text(a.restarts)),
      el("td", { "class": "error" }, a.last_error || ""),
      el("td", null, text(a.mailbox)));
  }
  function setActor(a) {
    var tbody = document.getElementById("actor-rows");
    var row = actorRow(a), old = findRow(tbody, "data-actor", text(a.name));
    if (old) old.replaceWith(row); else tbody.appendChild(row);
  }

  function senderLine(s) {
    if (!s) return null;
    var line = el("small", { "class": "sender" }, "associations " + text(s.associations_open) + "/" +
      text(s.associations_max) + " · queued " + text(s.queued) + " · as is " + text(s.sent_as_is) +
      " · transcoded " + text(s.transcoded) + " · failed " + text(s.failed));
    var box = el("span", null, el("br"), line);
    if (s.last_error) box.appendChild(el("span", { "class": "error" }, el("br"), s.last_error));
    return box;
  }
  function siteLine(s, rejected) {
    var why = rejected ? el("small", { "class": "error" }, "node-settings.json rejected, previous settings kept: " + rejected) : null;
    if (!s) return why ? el("span", null, el("br"), why) : null;
    var parts = [s.tls ? (s.tls.mutual ? "TLS, mutual" : "TLS") : "plain TCP"];
    if (typeof s.max_associations === "number") parts.push("max " + s.max_associations + " associations");
    if (s.prefer_transfer_syntax && s.prefer_transfer_syntax !== "as-is") parts.push("always " + s.prefer_transfer_syntax);
    if (s.storage_commitment) parts.push("storage commitment");
    return el("span", null, el("br"), el("small", { "class": "site" }, "site: " + parts.join(" · ")),
      why ? el("br") : null, why);
  }
  function nodeRow(n) {
    var id = text(n.node_id);
    var rtt = typeof n.echo_rtt_ms === "number" ? n.echo_rtt_ms.toFixed(1) + " ms" : "–";
    return el("tr", { "data-node": id },
      el("td", null, id, el("br"), el("small", null, text(n.name))),
      el("td", null, text(n.ae_title) + " @ " + text(n.host) + ":" + text(n.port), siteLine(n.site_settings, n.node_settings_error)),
      el("td", null, text(n.is_active)),
      el("td", { "class": "online-" + !!n.online }, n.online ? "online" : "offline"),
      el("td", null, text(n.last_echo_at)),
      el("td", null, rtt),
      el("td", { "class": "error" }, n.last_echo_error || ""),
      el("td", null, text(n.in_flight), senderLine(n.sender)),
      el("td", { "class": "spark", "data-chart": "node" }),
      el("td", null, actionForm("/nodes/" + encodeURIComponent(id) + "/echo", "C-ECHO now")));
  }
  function setNode(n) {
    var tbody = document.getElementById("node-rows");
    dropEmpty(tbody);
    var id = text(n.node_id);
    var row = nodeRow(n), old = findRow(tbody, "data-node", id);
    var spark = row.querySelector("td[data-chart=node]");
    if (sparks[id]) putScene(spark, sparks[id]);
    else if (old) {
      // The server drew it and no newer scene came yet: keep that drawing.
      var was = old.querySelector("td[data-chart=node]");
      while (was && was.firstChild) spark.appendChild(was.firstChild);
    }
    if (old) old.replaceWith(row); else tbody.appendChild(row);
  }

  function dispatchRow(d) {
    var id = text(d.id), state = text(d.state);
    var nodes = el("td");
    (d.nodes || []).forEach(function (n) {
      var status = text(n.status);
      var p = typeof n.progress === "number" ? n.progress : 0;
      var div = el("div", { "class": "node-progress", "data-node": text(n.node_id) },
        el("span", { "class": "node-id" }, text(n.node_id)), " ",
        el("progress", { max: "100", value: String(p) }, p + "%"), " ",
        el("span", { "class": "count" }, text(n.files_sent) + "/" + text(n.files_total)), " ",
        el("span", { "class": "status status-" + status }, status));
      if (n.error) div.appendChild(el("div", { "class": "error" }, n.error));
      if (n.parked_until) div.appendChild(el("div", { "class": "parked" },
        "parked until " + n.parked_until + ": replayed by itself when the node answers C-ECHO again"));
      nodes.appendChild(div);
    });
    var active = state === "active";
    var parked = (d.nodes || []).some(function (n) { return !!n.parked_until; });
    var path = "/dispatches/" + encodeURIComponent(id);
    var entity = text(d.entity_type) + " " + text(d.entity_id) + (d.label ? " (" + d.label + ")" : "");
    return el("tr", { "data-dispatch": id, "data-correlation": text(d.correlation_id) },
      el("td", null, el("span", { "class": "id" }, id), el("br"),
        el("small", null, text(d.correlation_id)), el("br"), el("small", null, entity)),
      el("td", null, text(d.priority)),
      el("td", { "class": "state state-" + state }, state),
      el("td", { "class": "replays" }, text(d.replays)),
      el("td", null, text(d.updated_at)),
      nodes,
      el("td", null,
        actionForm(path + "/replay", "Replay", active ? "still active: cancel it or wait for it to finish" : null),
        actionForm(path + "/cancel", parked ? "Stop auto-replay" : "Cancel",
          active || parked ? null : "already finished")));
  }
  // What did not arrive as it was (outcomes_view.rs renders the same markup).
  function outcomesDetails(d) {
    var skipped = d.skipped || [], total = d.skipped_total || skipped.length, parts = [];
    if (total > 0) parts.push(total + " skipped");
    (d.nodes || []).forEach(function (n) {
      var o = n.outcomes || [], failed = o.filter(function (x) { return x.outcome === "failed"; }).length;
      if (o.length) parts.push(text(n.node_id) + ": " + failed + " failed, " + (o.length - failed) + " transcoded");
    });
    if (!parts.length) return null;
    var det = el("details", { "class": "outcomes" }, el("summary", null, parts.join(" · ")));
    function list(items, line) {
      var ul = el("ul");
      items.slice(0, 20).forEach(function (x) { ul.appendChild(line(x)); });
      det.appendChild(ul);
    }
    if (total > 0) {
      det.appendChild(el("p", null, "Skipped archive entries:"));
      list(skipped, function (s) { return el("li", null, el("code", null, text(s.file)), ": " + text(s.reason)); });
    }
    (d.nodes || []).forEach(function (n) {
      if (!(n.outcomes || []).length) return;
      det.appendChild(el("p", null, text(n.node_id) + ":"));
      list(n.outcomes, function (o) {
        return el("li", { "class": "outcome-" + text(o.outcome) }, text(o.outcome) + " ",
          el("code", null, o.file ? text(o.file) : text(o.sop_instance_uid)), ": " + text(o.reason));
      });
    });
    det.appendChild(el("p", null, el("a", { href: "/api/dispatches/" + encodeURIComponent(text(d.id)) }, "every outcome (JSON)")));
    return det;
  }
  function showOutcomes(id) {
    fetch("/api/dispatches/" + encodeURIComponent(id), { headers: { Accept: "application/json" } })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (d) {
        var row = d && findRow(document.getElementById("dispatch-rows"), "data-dispatch", id);
        var det = d && outcomesDetails(d);
        if (row && det && !row.querySelector(".outcomes")) row.cells[5].appendChild(det);
      })
      .catch(function () { /* the next page load shows them */ });
  }
  function upsertDispatch(d) {
    var tbody = document.getElementById("dispatch-rows");
    dropEmpty(tbody);
    var row = dispatchRow(d), old = findRow(tbody, "data-dispatch", text(d.id));
    var kept = old && old.querySelector(".outcomes");
    if (kept) row.cells[5].appendChild(kept);
    else if (text(d.state) !== "active") showOutcomes(text(d.id));
    if (old) { old.replaceWith(row); return; }
    tbody.insertBefore(row, tbody.firstChild);
    while (tbody.rows.length > MAX_DISPATCHES) tbody.deleteRow(tbody.rows.length - 1);
  }

  function eventRow(e) {
    var dir = text(e.direction);
    return el("tr", { "class": "dir-" + dir },
      el("td", null, text(e.at)),
      el("td", { title: dir }, dir === "in" ? "← in" : "→ out"),
      el("td", null, text(e.event_type)),
      el("td", null, text(e.correlation_id)),
      el("td", null, e.summary || ""));
  }
  function addEvent(e) {
    var tbody = document.getElementById("event-rows");
    tbody.insertBefore(eventRow(e), tbody.firstChild);
    while (tbody.rows.length > MAX_EVENTS) tbody.deleteRow(tbody.rows.length - 1);
  }

  function dispatchSummary(d) {
    return text(d.active) + " active (" + text(d.queued) + " queued), " + text(d.completed) +
      " completed, " + text(d.failed) + " failed, " + text(d.cancelled) + " cancelled";
  }
  function setStore(m) {
    var cells = document.querySelectorAll("td[data-store]");
    for (var i = 0; i < cells.length; i++) {
      var key = cells[i].getAttribute("data-store");
      if (key === "outbox") { if (m.outbox) cells[i].textContent = text(m.outbox.depth); continue; }
      if (key === "dispatches") { if (m.dispatches) cells[i].textContent = dispatchSummary(m.dispatches); continue; }
      var v = m.store ? m.store[key] : undefined;
      if (v === undefined) continue;
      cells[i].textContent = cells[i].hasAttribute("data-bytes") ? humanBytes(v) : text(v);
    }
    setConfig(m.config);
  }

  function setConfig(c) {
    if (!c) return;
    var cells = document.querySelectorAll("td[data-config]");
    for (var i = 0; i < cells.length; i++) {
      var v = c[cells[i].getAttribute("data-config")];
      if (v === undefined) continue;
      cells[i].textContent = text(Array.isArray(v) ? v.join(", ") : v);
    }
  }

  // ---- resync from the API (on every (re)connect: nothing missed) --------
  function getJson(path) {
    return fetch(path, { credentials: "same-origin" }).then(function (r) { return r.json(); });
  }
  function resync() {
    getJson("/api/status").then(function (s) { setLink(s.link); setStore(s); }).catch(function () {});
    getJson("/api/actors").then(function (l) { l.forEach(setActor); }).catch(function () {});
    getJson("/api/nodes").then(function (l) { l.forEach(setNode); }).catch(function () {});
    getJson("/api/dispatches?limit=" + MAX_DISPATCHES).then(function (l) {
      l.slice().reverse().forEach(upsertDispatch);
    }).catch(function () {});
    getJson("/ui/charts").then(setCharts).catch(function () {});
  }

  // ---- the live feed ------------------------------------------------------
  var live = document.getElementById("live");
  var retry = 1000;
  function setLive(on, msg) {
    live.className = "live " + (on ? "on" : "off");
    live.textContent = msg;
  }
  function connect() {
    var proto = location.protocol === "https:" ? "wss://" : "ws://";
    var ws = new WebSocket(proto + location.host + "/ws");
    ws.onopen = function () {
      retry = 1000;
      setLive(true, "Live: updates as they happen.");
      resync();
    };
    ws.onmessage = function (m) {
      var msg;
      try { msg = JSON.parse(m.data); } catch (e) { return; }
      switch (msg.type) {
        case "link.status": setLink(msg.link); break;
        case "actor.status": setActor(msg.actor); break;
        case "node.status": setNode(msg.node); break;
        case "dispatch.update": upsertDispatch(msg.dispatch); break;
        case "event": addEvent(msg.event); break;
        case "store.status": setStore(msg); break;
        case "charts.update": setCharts(msg); break;
        default: break; // "ping" and anything newer
      }
    };
    ws.onclose = function () {
      setLive(false, "Live updates interrupted; reconnecting…");
      setTimeout(connect, retry);
      retry = Math.min(retry * 2, 15000);
    };
  }

  // ---- start ---------------------------------------------------------------
  var hidden = document.querySelectorAll(".js-only");
  for (var i = 0; i < hidden.length; i++) hidden[i].hidden = false;
  var nojs = document.querySelectorAll(".nojs-only");
  for (var j = 0; j < nojs.length; j++) nojs[j].remove();
  var tokenField = document.getElementById("token");
  if (tokenField) {
    try { tokenField.value = sessionStorage.getItem(TOKEN_KEY) || ""; } catch (e) { /* storage off */ }
    tokenField.addEventListener("change", function () {
      try { sessionStorage.setItem(TOKEN_KEY, tokenField.value); } catch (e) { /* storage off */ }
    });
  }
  connect();
})();
