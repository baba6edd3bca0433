// The task list's page: one module, no framework. Text from members reaches the DOM only
// through textContent and attributes. The page lives at /tools/tasks/#space=ID, next to the
// node's own page, and uses that page's session (kept in this origin's storage).
const session = localStorage.getItem("p2pspace-session") ?? "";
const $ = (id) => document.getElementById(id);
const space = new URLSearchParams(location.hash.slice(1)).get("space") ?? "";
const api = `/tools/tasks/api/spaces/${encodeURIComponent(space)}`;

async function call(method, path, body) {
  const init = { method, headers: { "X-P2PSpace-Session": session }, cache: "no-store" };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  const data = await response.json().catch(() => null);
  if (!response.ok) throw new Error(data?.error ?? response.statusText);
  return data;
}

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "text") node.textContent = value;
    else if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  node.append(...children);
  return node;
}

function showMessage(text) {
  $("message").textContent = text ?? "";
  $("message").hidden = !text;
}

async function change(task, body) {
  try {
    await call("POST", `${api}/tasks/${encodeURIComponent(task.id)}`, body);
    showMessage("");
  } catch (error) {
    showMessage(error.message);
  }
  refresh();
}

// One <li> per task, kept from one render to the next (a control the user is using is not
// replaced under their hand); only what changed is updated.
const rows = new Map();

function row(task) {
  let found = rows.get(task.id);
  if (!found) {
    const done = el("input", { type: "checkbox", "data-action": "done" });
    const title = el("span", { class: "title", "data-testid": "title" });
    const who = el("select", { "data-action": "assign" });
    const item = el("li", { class: "task", "data-task-id": task.id, "data-testid": "task" }, done, title, who);
    found = { item, done, title, who, task };
    done.addEventListener("change", () => change(found.task, { change: done.checked ? "done" : "reopen" }));
    who.addEventListener("change", () => change(found.task, { change: "assign", member: who.value }));
    rows.set(task.id, found);
  }
  return found;
}

function render(tasks, members) {
  $("none").hidden = tasks.length > 0;
  const seen = new Set();
  const items = tasks.map((task) => {
    seen.add(task.id);
    const r = row(task);
    r.task = task;
    r.item.className = task.done ? "task done" : "task";
    if (r.title.textContent !== task.title) r.title.textContent = task.title;
    r.done.checked = task.done;
    r.done.setAttribute("aria-label", `Done: ${task.title}`);
    r.who.setAttribute("aria-label", `Who does ${task.title}`);
    const options = [["", "nobody"], ...members.map((m) => [m.id, m.display_name])];
    const key = JSON.stringify(options);
    if (r.who.dataset.key !== key) {
      r.who.replaceChildren(...options.map(([value, text]) => el("option", { value, text })));
      r.who.dataset.key = key;
    }
    if (document.activeElement !== r.who) r.who.value = task.assignee;
    return r.item;
  });
  for (const id of rows.keys()) if (!seen.has(id)) rows.delete(id);
  const list = $("tasks");
  items.forEach((item, i) => {
    if (list.children[i] !== item) list.insertBefore(item, list.children[i] ?? null);
  });
  while (list.children.length > items.length) list.lastElementChild.remove();
}

let refreshing = null;
async function refresh() {
  if (refreshing) return refreshing;
  refreshing = (async () => {
    try {
      const [list, members, info] = await Promise.all([
        call("GET", `${api}/tasks`),
        call("GET", `/api/spaces/${encodeURIComponent(space)}/members`),
        call("GET", `/api/spaces/${encodeURIComponent(space)}`),
      ]);
      $("space-title").textContent = `Tasks of ${info.name}`;
      render(list.tasks, members.members.filter((m) => m.current));
      showMessage("");
    } catch (error) {
      showMessage(error.message);
    } finally {
      refreshing = null;
    }
  })();
  return refreshing;
}

function connect() {
  const conn = $("conn");
  const source = new EventSource(`/api/events?session=${encodeURIComponent(session)}`);
  source.addEventListener("open", () => {
    conn.dataset.state = "live";
    conn.textContent = "live";
    refresh();
  });
  source.addEventListener("error", () => {
    conn.dataset.state = "connecting";
    conn.textContent = "reconnecting…";
  });
  source.addEventListener("message", (message) => {
    let event;
    try {
      event = JSON.parse(message.data);
    } catch {
      return;
    }
    if (event.space === space && ["deltas", "member_added", "member_removed"].includes(event.type)) refresh();
  });
}

$("home").href = `/#space=${encodeURIComponent(space)}`;
$("add-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.currentTarget;
  const title = form.elements.title.value.trim();
  if (!title) return;
  try {
    await call("POST", `${api}/tasks`, { title });
    form.reset();
    showMessage("");
  } catch (error) {
    showMessage(error.message);
  }
  refresh();
});
if (!space) showMessage("Open this page from a space (its link in the space's header).");
else connect();
