// The dashboard's one script: fetch a page's blocks, draw them, poll for new ones.
// Every text goes in as text (textContent); only the server's SVG charts go in as markup.
"use strict";

const PAGES = ["overview", "playbook", "findings", "seatbelt", "health", "data"];
const POLL_MS = 3000;
const KEY = "flywheel-key"; // sessionStorage: this tab only, gone when it closes
const keysRequired = document.querySelector('meta[name="flywheel-keys"]').content === "required";
const actionsOn = document.querySelector('meta[name="flywheel-actions"]').content === "on";

let current = null; // the page shown
let shown = null; // the digest of what is drawn: a page is redrawn only when it changes
let timer = null;
let latest = 0; // the newest load: an older answer, come late, is never drawn
let search = "";

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "text") node.textContent = value;
    else node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children) if (child) node.append(child);
  return node;
}

function headers(json) {
  const h = {};
  const key = sessionStorage.getItem(KEY);
  if (key) h.Authorization = "Bearer " + key;
  if (json) h["Content-Type"] = "application/json";
  return h;
}

async function call(method, path, body) {
  const response = await fetch(path, {
    method,
    headers: headers(body !== undefined),
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: "no-store",
  });
  let answer = null;
  try {
    answer = await response.json();
  } catch (_) {
    answer = { error: response.statusText };
  }
  return { status: response.status, answer };
}

function pageName() {
  const name = location.hash.replace("#", "");
  return PAGES.includes(name) ? name : "overview";
}

function askForKey(message) {
  const form = document.getElementById("key-form");
  form.hidden = false;
  document.getElementById("key-error").textContent = message || "";
  const root = document.getElementById("page");
  root.replaceChildren();
  root.dataset.ready = "false";
  current = shown = null;
  document.getElementById("key-input").focus();
}

function poll(ms) {
  clearTimeout(timer);
  timer = setTimeout(() => load(false), ms);
}

async function load(fresh) {
  const mine = ++latest;
  const name = pageName();
  clearTimeout(timer);
  if (keysRequired && !sessionStorage.getItem(KEY)) {
    askForKey("");
    return;
  }
  const params = new URLSearchParams();
  if (fresh) params.set("fresh", "true");
  if (name === "data" && search) params.set("q", search);
  const query = params.toString() ? "?" + params.toString() : "";
  let result;
  try {
    result = await call("GET", "v1/dashboard/" + name + query);
  } catch (err) {
    if (mine !== latest) return;
    document.getElementById("freshness").textContent = "server unreachable; retrying";
    poll(POLL_MS);
    return;
  }
  if (mine !== latest) return; // a newer load (another page, an action, a search) is on its way
  if (result.status === 401 || (result.status === 403 && name !== "data")) {
    const why = result.status === 401 ? "That key was not accepted." : "That key may not read the dashboard (a decide or admin key is needed).";
    sessionStorage.removeItem(KEY);
    askForKey(why);
    return;
  }
  document.getElementById("key-form").hidden = true;
  document.getElementById("forget-key").hidden = !sessionStorage.getItem(KEY);
  const page = result.answer;
  if (result.status === 403) {
    draw(name, [{ kind: "text", title: "An admin key is needed", lines: ["The data page shows rows, not summaries: it needs an admin key. Forget this key to give another."] }], true);
    return;
  }
  if (result.status !== 200) {
    draw(name, [{ kind: "text", title: "Error", lines: [page.error || "status " + result.status], level: "halt" }], false);
  } else if (!page.ready) {
    document.getElementById("freshness").textContent = "computing…";
    if (current !== name) draw(name, [{ kind: "text", title: "Computing", lines: ["This page is being computed; it appears here when ready."] }], false);
  } else {
    if (current !== name || shown !== page.digest || name === "data") {
      const blocks = page.error ? [{ kind: "text", title: "Error", lines: [page.error], level: "halt" }, ...page.blocks] : page.blocks;
      draw(name, blocks, true);
      shown = page.digest;
    }
    document.getElementById("freshness").textContent = page.computed_at
      ? "computed " + page.computed_at + " in " + page.took + " s; refreshes by itself"
      : "as of " + new Date().toLocaleTimeString() + "; search again to refresh";
  }
  // the data page is searched, not polled: each look at it reads the store
  if (name !== "data" || page.ready === false) poll(page && page.ready === false ? 1000 : POLL_MS);
}

function draw(name, blocks, ready) {
  const root = document.getElementById("page");
  root.dataset.page = name; // what is drawn, for whoever waits on it (a test, a screen reader's user)
  root.dataset.ready = String(ready);
  // keep what a person is typing, the tables they opened, and where they are, across a redraw
  const typed = {};
  for (const input of root.querySelectorAll("input, select")) {
    typed[input.id] = input.type === "checkbox" ? input.checked : input.value;
  }
  const opened = new Set([...root.querySelectorAll("details[open]")].map((d) => d.id));
  const focused = document.activeElement && root.contains(document.activeElement) ? document.activeElement.id : null;
  const title = el("h2", { text: document.querySelector('nav a[href="#' + name + '"]').textContent, id: "page-title" });
  const sections = blocks.map(block);
  root.replaceChildren(title, ...sections);
  for (const [id, value] of Object.entries(typed)) {
    const input = document.getElementById(id);
    if (!input) continue;
    if (input.type === "checkbox") input.checked = value;
    else if (input.tagName !== "SELECT" || [...input.options].some((o) => o.value === value)) input.value = value;
  }
  for (const id of opened) {
    const details = document.getElementById(id);
    if (details) details.open = true;
  }
  if (focused && document.getElementById(focused)) document.getElementById(focused).focus();
  current = name;
  for (const link of document.querySelectorAll("nav a")) {
    if (link.getAttribute("href") === "#" + name) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  document.title = "Flywheel: " + title.textContent;
}

function block(b, index) {
  const id = "b" + index;
  const section = el("section", { "aria-labelledby": id, class: "block-" + b.kind });
  section.append(el("h3", { id, text: b.title }));
  const draw = { stats, alerts, chart, table, text, action, search: searchForm }[b.kind];
  if (draw) section.append(draw(b, id));
  return section;
}

function stats(b) {
  const list = el("dl", { class: "stats" });
  for (const item of b.items) {
    const dd = el("dd", { text: item.value });
    if (item.note) dd.append(el("small", { text: item.note }));
    list.append(el("div", {}, el("dt", { text: item.label }), dd));
  }
  return list;
}

function alerts(b) {
  if (!b.items.length) return el("p", { class: "done", text: "No active alerts." });
  const list = el("ul", { class: "alerts" });
  for (const item of b.items) list.append(el("li", { class: item.level, text: item.text }));
  return list;
}

function chart(b, id) {
  const figure = el("figure", { "aria-labelledby": id });
  const holder = el("div", { class: "chart" });
  holder.innerHTML = b.svg; // drawn by the server, every text in it escaped there
  figure.append(holder);
  const details = el("details", { id: "d-" + id }, el("summary", { id: "s-" + id, text: "The numbers, as a table" }));
  details.append(tableOf(b.title, b.table.columns, b.table.rows, "no data yet"));
  figure.append(details);
  return figure;
}

function table(b) {
  return tableOf(b.title, b.columns, b.rows, b.empty);
}

function tableOf(title, columns, rows, empty) {
  if (!rows.length) return el("p", { class: "muted", text: empty || "nothing" });
  const t = el("table", {}, el("caption", { class: "visually-hidden", text: title }));
  t.append(el("thead", {}, el("tr", {}, ...columns.map((c) => el("th", { scope: "col", text: c })))));
  const body = el("tbody");
  for (const row of rows) body.append(el("tr", {}, ...row.map((v) => el("td", { text: v === null ? "" : String(v) }))));
  t.append(body);
  return el("div", { class: "table-wrap" }, t);
}

function text(b) {
  const box = el("div", { class: "text" + (b.level ? " " + b.level : "") });
  for (const line of b.lines) box.append(line.includes("\n") ? el("pre", { text: line }) : el("p", { text: line }));
  return box;
}

function action(b, id) {
  if (!actionsOn) return el("p", { class: "muted", text: "Read-only: actions are off here." });
  const form = el("form", { class: "action", "data-action": b.action });
  form.append(el("p", { text: b.text }));
  const values = {};
  for (const f of b.fields) {
    const inputId = "f-" + b.action + "-" + f.name;
    if (f.type === "select") {
      const select = el("select", { id: inputId, name: f.name });
      for (const option of f.options) select.append(el("option", { value: option, text: option }));
      form.append(el("label", { for: inputId, text: f.label }), select);
    } else if (f.type === "checkbox") {
      form.append(el("label", { class: "check", for: inputId }, el("input", { id: inputId, name: f.name, type: "checkbox" }), document.createTextNode(f.label)));
    } else {
      form.append(el("label", { for: inputId, text: f.label }), el("input", { id: inputId, name: f.name, type: "text", autocomplete: "off" }));
    }
    values[f.name] = inputId;
  }
  const button = el("button", { id: "do-" + b.action, type: "submit", text: b.submit, disabled: Boolean(b.disabled) });
  const outcome = el("p", { id: "outcome-" + b.action, role: "status" });
  if (b.disabled) outcome.textContent = b.disabled;
  form.append(button, outcome);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = {};
    for (const [name, inputId] of Object.entries(values)) {
      const input = document.getElementById(inputId);
      if (input.type === "checkbox") body[name] = input.checked;
      else if (name === "version") body[name] = Number(input.value);
      else if (name === "ids") {
        const ids = input.value.split(/[\s,]+/).filter(Boolean);
        if (ids.length) body[name] = ids;
      } else body[name] = input.value;
    }
    button.disabled = true;
    let result;
    try {
      result = await call("POST", "v1/" + b.action, body);
    } catch (err) {
      result = { status: 0, answer: { error: "the server could not be reached" } };
    }
    if (result.status === 200) {
      await load(true); // the page as the action left it
      const after = document.getElementById("outcome-" + b.action) || outcome;
      after.className = "done";
      after.textContent = b.submit + ": done";
    } else {
      outcome.className = "refused";
      outcome.textContent = "Refused (" + result.status + "): " + (result.answer.error || "");
      button.disabled = false;
    }
  });
  return form;
}

function searchForm(b) {
  const form = el("form", { class: "search", role: "search" });
  const input = el("input", { id: "search-input", type: "search", value: b.value, autocomplete: "off", spellcheck: "false" });
  form.append(el("label", { for: "search-input", text: "A unit pseudonym or a decision id (blank: the latest rows)" }), input, el("button", { id: "search-button", type: "submit", text: "Search" }));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    search = input.value.trim();
    load(false);
  });
  return form;
}

document.getElementById("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const input = document.getElementById("key-input");
  sessionStorage.setItem(KEY, input.value.trim());
  input.value = "";
  load(false);
});
document.getElementById("forget-key").addEventListener("click", () => {
  sessionStorage.removeItem(KEY);
  load(false);
});
document.querySelector(".skip").addEventListener("click", (event) => {
  event.preventDefault(); // to the page's content, without leaving the page
  document.getElementById("main").focus();
});
window.addEventListener("hashchange", () => {
  if (!PAGES.includes(location.hash.replace("#", ""))) return;
  current = null;
  load(false);
  document.getElementById("main").focus();
});
load(false);
