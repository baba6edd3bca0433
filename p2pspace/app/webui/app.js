// The p2pspace web UI: one module, no framework, no build step.
//
// Data from the node (names, titles, bodies) reaches the DOM only through textContent and
// attributes, never innerHTML: what a peer wrote cannot become markup. The one exception is a
// post's body_html, which the node rendered from Markdown with raw HTML off (every character a
// member wrote arrives escaped); the page parses it as an inert document and keeps only the
// elements and attributes Markdown makes (allowedMarkup), so even a bug in the renderer could
// not run a script or load anything.
//
// The view is re-fetched, not patched from events: an event only says "something changed" and
// schedules one debounced refresh of what is shown. Rendering reuses DOM elements by post id, so
// an open reply or edit form (and what was typed into it, its focus, the scroll position)
// survives a refresh.

// Credentials: the one-time link (`p2pspace open`) sets an HttpOnly cookie and lands here with
// `#session=S`. The cookie alone opens only this page and its assets (cookies for 127.0.0.1
// reach every port of it); every API call also sends S, kept in this origin's storage, which
// no other origin -- not even a listener on another local port -- can read.
const SESSION_KEY = "p2pspace-session";
const session = (() => {
  const params = new URLSearchParams(location.hash.slice(1));
  const given = params.get("session");
  if (given) {
    localStorage.setItem(SESSION_KEY, given);
    params.delete("session");
    const rest = params.toString();
    history.replaceState(null, "", location.pathname + (rest ? `#${rest}` : ""));
  }
  return localStorage.getItem(SESSION_KEY) ?? "";
})();

const REFRESH_DELAY_MS = 100;
// Events that can change what the page shows (the others -- discovery, refused -- cannot).
const REFRESH_ON = new Set([
  "tool", "deltas", "acks", "status", "sync", "peer", "space", "processor",
  "member_added", "member_removed", "role", "removed",
]);
const ROLES = ["manager", "participant", "guest"];

const $ = (id) => document.getElementById(id);

const state = {
  space: null, // selected space id (hex)
  topic: null, // open thread's topic id, or null for the thread list
  status: null, // last GET /api/status
  forms: new Map(), // post id -> {kind: "reply" | "edit", form}: the open inline forms
  readOnly: false, // this endpoint may not write to the selected space (removed, or a guest)
  confirm: null, // {kind: "remove" | "leave", id}: the members panel's open confirmation
  joining: false, // a join started here is under way (its progress events are shown)
  focus: null, // the post a deep thread is continued from (#post=), or null for the whole thread
  search: null, // the words searched for (#q=), or null
  newPosts: new Set(), // posts that were unread when the open thread was shown: marked "new"
  limits: { title: 200, body: 24000 }, // bytes of UTF-8, as the node counts (from /topics)
  manager: false, // this endpoint is a manager of the selected space
};

// -- talking to the API ------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function api(method, path, body) {
  const headers = { "X-P2PSpace-Session": session };
  const init = { method, headers, cache: "no-store", credentials: "same-origin" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch {
    throw new ApiError(0, "the node does not answer (is it running?)");
  }
  const data = await response.json().catch(() => null);
  if (response.status === 401) {
    // The node restarted (each start makes a new secret): the page needs a fresh link.
    throw new ApiError(401, "this page's session ended: run p2pspace open again");
  }
  if (!response.ok) throw new ApiError(response.status, data?.error ?? response.statusText);
  return data;
}

const seg = encodeURIComponent;
const spacePath = (space) => `/api/spaces/${seg(space)}`;
const talkPath = (space) => `/tools/discussion/api/spaces/${seg(space)}`;

// -- small DOM helpers -------------------------------------------------------------------------

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "text") node.textContent = value;
    else if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

// Make `container`'s element children exactly `nodes`, in order, moving as little as possible:
// a node that is moved or removed loses focus, so nodes already in place are left alone.
function patchChildren(container, nodes) {
  nodes.forEach((node, i) => {
    const current = container.children[i];
    if (current !== node) container.insertBefore(node, current ?? null);
  });
  while (container.children.length > nodes.length) container.lastElementChild.remove();
}

// Re-rendering replaces buttons; remember which one had focus (by data-focus-key) to restore it.
function focusKey() {
  const active = document.activeElement;
  return active && active !== document.body ? active.dataset.focusKey ?? null : null;
}

function restoreFocus(key) {
  if (!key || (document.activeElement && document.activeElement !== document.body)) return;
  document.querySelector(`[data-focus-key="${CSS.escape(key)}"]`)?.focus();
}

const timeFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });

// Times come from other members: any number may be stored (2**53-1, negative, not a number at
// all). A Date only holds +-8.64e15 ms, and formatting an invalid one throws, so every time
// shown goes through here and falls back to "unknown date" (the raw value in the tooltip).
function validDate(ms) {
  if (typeof ms !== "number" || !Number.isFinite(ms)) return null;
  const date = new Date(ms);
  return Number.isNaN(date.getTime()) ? null : date;
}

function formatTime(ms) {
  const date = validDate(ms);
  if (!date) return "unknown date";
  try {
    return timeFormat.format(date);
  } catch {
    return "unknown date";
  }
}

const relativeFormat = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });
const RELATIVE_STEPS = [
  [60, 1, "second"],
  [3600, 60, "minute"],
  [86400, 3600, "hour"],
  [7 * 86400, 86400, "day"],
];

// "just now", "5 minutes ago", "yesterday"; past a week the date itself.
function relativeTime(ms, now = Date.now()) {
  const date = validDate(ms);
  if (!date) return "unknown date";
  const seconds = (ms - now) / 1000;
  if (Math.abs(seconds) < 45) return "just now";
  for (const [below, unit, name] of RELATIVE_STEPS) {
    if (Math.abs(seconds) < below) return relativeFormat.format(Math.round(seconds / unit), name);
  }
  return formatTime(ms);
}

// Relative times get older while the page is open: every shown one is redrawn each half minute.
function updateTimes() {
  const now = Date.now();
  for (const time of document.querySelectorAll("time[data-ms]")) {
    time.textContent = (time.dataset.prefix ?? "") + relativeTime(Number(time.dataset.ms), now);
  }
}

// `clamped`: the API says the creator dated this more than the allowed skew ahead of our clock.
// The text is relative ("5 minutes ago"); the exact time is its tooltip.
function timeElement(ms, prefix = "", clamped = false) {
  if (ms === undefined || ms === null || ms === 0) return null;
  const date = validDate(ms);
  const time = el("time", {
    datetime: date ? date.toISOString() : null,
    title: date ? formatTime(ms) : String(ms),
    "data-testid": "time",
    "data-ms": date ? String(ms) : null,
    "data-prefix": prefix || null,
    text: prefix + relativeTime(ms),
  });
  if (!clamped) return time;
  return el(
    "span",
    { class: "time" },
    time,
    el("span", { class: "future", "data-testid": "future", title: String(ms), text: " (date in the future)" }),
  );
}

// Shown only where it says something: not yet sent, or not yet at every member.
function statusElement(item) {
  const kind = item.pending ? "pending" : item.delivered >= item.members ? "delivered" : "partial";
  if (kind === "delivered") return null;
  return el("span", {
    class: `status status-${kind}`,
    "data-testid": "status",
    "data-status": item.status,
    title: "How far this change has got among the members",
    text: item.pending ? "not sent yet" : `reached ${item.delivered} of ${item.members} members`,
  });
}

// A peer's sync state in words (the node's states: disconnected, connecting, catching up,
// live, error).
const SYNC_WORDS = {
  live: "in sync",
  "catching up": "catching up",
  connecting: "connecting",
  disconnected: "disconnected",
  error: "cannot sync",
};

function showMessage(text) {
  const box = $("message");
  box.textContent = text ?? "";
  box.hidden = !text;
}

function showFormError(form, text) {
  const box = form.querySelector(".form-error");
  box.textContent = text ?? "";
  box.hidden = !text;
}

// -- routing: #space=<id>&topic=<id> -----------------------------------------------------------

function hashFor(space, topic, extra = {}) {
  const params = new URLSearchParams();
  if (space) params.set("space", space);
  if (topic) params.set("topic", topic);
  for (const [key, value] of Object.entries(extra)) if (value) params.set(key, value);
  return `#${params}`;
}

function readHash() {
  const params = new URLSearchParams(location.hash.slice(1));
  const space = params.get("space") || null;
  const topic = params.get("topic") || null;
  const focus = topic ? params.get("post") || null : null;
  const search = topic ? null : params.get("q") || null;
  if (space !== state.space) {
    state.confirm = null;
    memberElements.clear();
    showMemberError("");
    hideInvitation();
    closeRename();
  }
  if (space !== state.space || topic !== state.topic || focus !== state.focus) {
    // Another thread: its posts' elements and forms belong to the old one.
    state.forms.clear();
    postElements.clear();
    $("thread").replaceChildren();
    if (topic !== state.topic || space !== state.space) state.newPosts = new Set();
    if (space !== state.space) $("topic-list").replaceChildren();
  }
  state.space = space;
  state.topic = topic;
  state.focus = focus;
  state.search = search;
  $("search-input").value = search ?? "";
}

// -- refreshing ---------------------------------------------------------------------------------

let refreshTimer = null;
let refreshing = false;
let refreshAgain = false;

// At most one refresh per REFRESH_DELAY_MS however many events arrive (a burst of deltas would
// otherwise re-fetch once per event), and never two at once.
function scheduleRefresh(delay = REFRESH_DELAY_MS) {
  if (refreshTimer !== null) return;
  refreshTimer = setTimeout(() => {
    refreshTimer = null;
    refresh();
  }, delay);
}

async function refresh() {
  if (refreshing) {
    refreshAgain = true;
    return;
  }
  refreshing = true;
  try {
    await load();
  } catch (error) {
    showMessage(error.message);
  } finally {
    refreshing = false;
    if (refreshAgain) {
      refreshAgain = false;
      scheduleRefresh(0);
    }
  }
}

async function load() {
  const status = await api("GET", "/api/status");
  state.status = status;
  $("node-name").textContent = status.name ? `You are ${status.name}` : "";
  if (!state.space && status.spaces.length > 0) {
    history.replaceState(null, "", hashFor(status.spaces[0].id, null));
    readHash();
  }
  renderSpaces(status);
  const space = state.space;
  const topic = state.topic;
  const info = status.spaces.find((s) => s.id === space);
  $("space-title").textContent = info ? info.name || info.id.slice(0, 8) : space ? "Unknown space" : "No space selected";
  const search = state.search;
  const talk = Boolean(info?.tools?.includes("discussion"));
  $("topics-view").hidden = !talk || topic !== null || search !== null;
  $("search-view").hidden = !talk || search === null;
  $("search-form").hidden = !talk;
  $("thread-view").hidden = !talk || topic === null;
  $("no-talk").hidden = !info || talk;
  renderStanding(info);
  renderManaging(info);
  renderToolLinks(info, status);
  if (!info) {
    renderMembers([], status, null);
    renderUndo(null);
    showMessage(space ? `There is no space ${space} on this node.` : "");
    return;
  }

  if (!talk) {
    // A space of other tools only: its members, and the links to the tools' pages.
    const members = await api("GET", `${spacePath(space)}/members`).catch(() => ({ members: [] }));
    if (space !== state.space) return;
    renderMembers(members.members, status, info);
    renderUndo(null);
    showMessage("");
    return;
  }

  const [members, change, main] = await Promise.allSettled([
    api("GET", `${spacePath(space)}/members`),
    api("GET", `${talkPath(space)}/last-change`),
    topic
      ? api("GET", `${talkPath(space)}/threads/${seg(topic)}`)
      : search !== null
        ? api("GET", `${talkPath(space)}/search?q=${seg(search)}`)
        : api("GET", `${talkPath(space)}/topics`),
  ]);
  // The user may have switched space, thread or search while the answers were on their way.
  if (space !== state.space || topic !== state.topic || search !== state.search) return;

  renderMembers(members.status === "fulfilled" ? members.value.members : [], status, info);
  renderUndo(change.status === "fulfilled" ? change.value.change : null);
  if (main.status === "rejected") {
    showMessage(main.reason.message);
    return;
  }
  showMessage("");
  const key = focusKey();
  if (topic) {
    renderThread(main.value.thread, status.endpoint);
    markRead(space, main.value.thread);
  } else if (search !== null) {
    renderSearch(main.value);
  } else {
    if (main.value.limits) state.limits = main.value.limits;
    renderTopics(main.value.topics);
  }
  restoreFocus(key);
}

// -- spaces -------------------------------------------------------------------------------------

function renderSpaces(status) {
  const items = status.spaces.map((info) => {
    const selected = info.id === state.space;
    const link = el("a", {
      href: hashFor(info.id, null),
      "aria-current": selected ? "page" : null,
      "data-space-id": info.id,
      "data-focus-key": `space:${info.id}`,
      text: info.name || info.id.slice(0, 8),
    });
    const count = info.members.length;
    let note = info.member ? `${count} member${count === 1 ? "" : "s"}` : "joining…";
    if (info.removed_by) note = info.removed_by === status.endpoint ? "left (read-only)" : "removed (read-only)";
    return el("li", {}, link, el("span", { class: "muted", text: ` ${note}` }));
  });
  if (items.length === 0) items.push(el("li", { class: "muted", text: "No spaces yet." }));
  $("space-list").replaceChildren(...items);
}

async function createSpace(event) {
  event.preventDefault();
  const form = event.currentTarget;
  const name = form.elements.name.value.trim();
  if (!name) return;
  try {
    const info = await api("POST", "/api/spaces", { name });
    form.reset();
    $("new-space").open = false;
    location.hash = hashFor(info.id, null);
  } catch (error) {
    showMessage(error.message);
  }
}

// -- members and sync -------------------------------------------------------------------------

// What this endpoint may do in the selected space: shown above the threads, and the compose
// form is hidden where a write would only be refused.
function renderStanding(info) {
  const removed = Boolean(info?.removed_by);
  const guest = Boolean(info?.member && info.role === "guest");
  state.readOnly = removed || guest;
  const box = $("standing");
  if (removed) {
    const how = info.removed_by === state.status?.endpoint ? "You left this space" : `You were removed from this space by ${info.removed_by_name}`;
    box.textContent = `${how}. It stays readable here; changes are refused.`;
  } else if (guest) {
    box.textContent = "You are a guest here: you can read, not write.";
  }
  box.hidden = !state.readOnly;
  $("new-topic").hidden = state.readOnly;
}

const memberElements = new Map(); // member id -> {item, key}: rebuilt only when it changes

function renderMembers(members, status, info) {
  // Each peer's sync state for this space comes from /api/status; the members route says who
  // is online, and who was removed by whom.
  const syncOf = new Map(status.peers.map((p) => [p.id, p.spaces?.[state.space] ?? null]));
  const manager = Boolean(info?.member && info.role === "manager");
  const seen = new Set();
  const items = members.map((m) => {
    seen.add(m.id);
    const sync = m.me || !m.current ? null : syncOf.get(m.id) ?? m.sync;
    const confirming = state.confirm?.kind === "remove" && state.confirm.id === m.id;
    const key = JSON.stringify([m.display_name, m.role, m.current, m.removed_by_name, m.left, m.online, m.me, sync, manager, confirming, m.equivocated, m.last_seen]);
    const known = memberElements.get(m.id);
    if (known && known.key === key) return known.item;
    const item = memberItem(m, sync, manager, confirming);
    memberElements.set(m.id, { item, key });
    return item;
  });
  for (const id of memberElements.keys()) if (!seen.has(id)) memberElements.delete(id);
  patchChildren($("member-list"), items);
  renderLeave(info);
}

function memberItem(m, sync, manager, confirming) {
  const online = m.current && Boolean(m.online);
  const name = m.display_name || m.name || m.short_id;
  const parts = [
    el("span", { class: `dot ${online ? "online" : "offline"}`, "aria-hidden": "true" }),
    el("span", { class: "visually-hidden", text: online ? "online:" : "offline:" }),
    el("span", { class: "member-name", "data-testid": "member-name", text: name }),
    m.me ? el("span", { class: "muted", text: " (you)" }) : null,
  ];
  if (m.current) {
    parts.push(el("span", { class: "role", "data-testid": "role", text: m.role }));
    if (sync) parts.push(el("span", { class: `sync sync-${sync.replace(" ", "_")}`, "data-sync": sync, text: SYNC_WORDS[sync] ?? sync }));
    if (!online && !m.me) {
      parts.push(
        m.last_seen
          ? el("span", { class: "last-seen muted", "data-testid": "last-seen" }, timeElement(m.last_seen, "last seen "))
          : el("span", { class: "last-seen muted", "data-testid": "last-seen", text: "not seen yet" }),
      );
    }
  } else {
    const note = m.left ? "left" : `removed by ${m.removed_by_name}`;
    parts.push(el("span", { class: "removed-note", "data-testid": "removed-note", text: note }));
  }
  if (m.equivocated) {
    parts.push(el("span", {
      class: "equivocated",
      "data-testid": "equivocated",
      title: "This member signed two different versions of its history; its changes since then count for nothing. A manager can remove it.",
      text: "signed two histories",
    }));
  }
  if (manager && m.current && !m.me) parts.push(manageControls(m, name, confirming));
  return el(
    "li",
    {
      class: m.current ? "member" : "member removed",
      "data-member-id": m.id,
      "data-online": online ? "yes" : "no",
      "data-current": m.current ? "yes" : "no",
    },
    ...parts,
  );
}

function manageControls(m, name, confirming) {
  if (confirming) {
    return el(
      "div",
      { class: "member-controls confirm", role: "group", "aria-label": `Confirm removing ${name}` },
      el("span", { text: `Remove ${name} from this space?` }),
      el("button", { type: "button", class: "danger", "data-action": "confirm-remove", "data-focus-key": `confirm-remove:${m.id}`, text: "Remove", onclick: () => removeMember(m) }),
      el("button", { type: "button", "data-action": "cancel", text: "Cancel", onclick: () => setConfirm(null) }),
    );
  }
  const select = el("select", { "aria-label": `Role of ${name}`, "data-testid": "role-select" });
  for (const role of ROLES) {
    const option = el("option", { value: role, text: role });
    option.selected = role === m.role;
    select.append(option);
  }
  return el(
    "div",
    { class: "member-controls" },
    select,
    el("button", { type: "button", "data-action": "set-role", "aria-label": `Change the role of ${name}`, text: "Change role", onclick: () => setRole(m, select.value) }),
    el("button", { type: "button", class: "danger", "data-action": "remove", "data-focus-key": `remove:${m.id}`, "aria-label": `Remove ${name}`, text: "Remove", onclick: () => setConfirm({ kind: "remove", id: m.id }) }),
  );
}

function renderLeave(info) {
  const box = $("member-actions");
  if (!info?.member) {
    box.replaceChildren();
    return;
  }
  const confirming = state.confirm?.kind === "leave";
  const key = confirming ? "confirm" : "leave";
  if (box.dataset.key === key && box.firstElementChild) return;
  box.dataset.key = key;
  if (confirming) {
    box.replaceChildren(
      el("span", { text: "Leave this space? It stays readable here." }),
      el("button", { type: "button", class: "danger", "data-action": "confirm-leave", "data-focus-key": "confirm-leave", text: "Leave", onclick: leaveSpace }),
      el("button", { type: "button", "data-action": "cancel", text: "Cancel", onclick: () => setConfirm(null) }),
    );
  } else {
    box.replaceChildren(
      el("button", { type: "button", class: "danger", "data-action": "leave", "data-focus-key": "leave", text: "Leave space", onclick: () => setConfirm({ kind: "leave" }) }),
    );
  }
}

function setConfirm(confirm) {
  state.confirm = confirm;
  showMemberError("");
  refresh();
}

function showMemberError(text) {
  const box = $("member-error");
  box.textContent = text ?? "";
  box.hidden = !text;
}

async function membersAction(path, body) {
  state.confirm = null;
  try {
    await api("POST", `${spacePath(state.space)}${path}`, body);
    showMemberError("");
  } catch (error) {
    showMemberError(error.message);
  }
  refresh();
}

const removeMember = (m) => membersAction("/members/remove", { member: m.id });
const setRole = (m, role) => (role === m.role ? undefined : membersAction("/members/role", { member: m.id, role }));
const leaveSpace = () => membersAction("/leave");

// -- the space's other tools: a link to each one's page ---------------------------------------

function renderToolLinks(info, status) {
  const names = (info?.tools ?? []).filter((name) => status.tools?.[name]?.page);
  const box = $("tool-links");
  const key = JSON.stringify([info?.id, names.map((name) => status.tools[name].title)]);
  if (box.dataset.key === key) return; // unchanged: keep the links (and their focus)
  box.dataset.key = key;
  const links = names
    .map((name) => el("a", {
      href: `/tools/${encodeURIComponent(name)}/#space=${encodeURIComponent(info.id)}`,
      "data-tool": name,
      text: status.tools[name].title,
    }));
  box.replaceChildren(...links);
}

// -- managing the space: rename, invite ---------------------------------------------------------

function renderManaging(info) {
  state.manager = Boolean(info?.member && info.role === "manager" && !info.removed_by);
  $("rename").hidden = !state.manager || !$("rename-form").hidden;
  if (!state.manager) closeRename();
  $("invite").hidden = !state.manager;
  if (!state.manager) hideInvitation();
}

function openRename() {
  const info = state.status?.spaces.find((s) => s.id === state.space);
  const form = $("rename-form");
  form.elements.name.value = info?.name ?? "";
  showFormError(form, "");
  form.hidden = false;
  $("space-title").hidden = true;
  $("rename").hidden = true;
  form.elements.name.focus();
  form.elements.name.select();
}

function closeRename() {
  const form = $("rename-form");
  if (form.hidden) return;
  form.hidden = true;
  $("space-title").hidden = false;
  $("rename").hidden = !state.manager;
}

async function renameSpace(event) {
  event.preventDefault();
  const form = event.currentTarget;
  const name = form.elements.name.value.trim();
  if (!name) {
    showFormError(form, "A space needs a name.");
    return;
  }
  const done = await submitWith(form, () => api("POST", `${spacePath(state.space)}/rename`, { name }));
  if (done) {
    closeRename();
    $("rename").focus();
  }
}

function hideInvitation() {
  $("invitation").hidden = true;
  $("invite-code").value = "";
  $("invite-qr").replaceChildren();
  $("copied").textContent = "";
}

async function createInvitation(event) {
  event.preventDefault();
  const form = event.currentTarget;
  const space = state.space;
  const body = { role: form.elements.role.value, ttl_s: Number(form.elements.ttl.value) };
  await submitWith(form, async () => {
    const answer = await api("POST", `${spacePath(space)}/invitations`, body);
    if (space === state.space) showInvitation(answer);
  });
}

function showInvitation(answer) {
  $("invitation").hidden = false;
  $("invite-code").value = answer.code;
  $("invitation-what").textContent =
    `One person can join with this code, as ${answer.role}, until ${formatTime(answer.expires)}.`;
  $("copied").textContent = "";
  // The QR code is an <svg> the node drew (no script, no style): parsed as SVG, never as HTML.
  const parsed = new DOMParser().parseFromString(answer.qr_svg, "image/svg+xml").documentElement;
  if (parsed?.namespaceURI === "http://www.w3.org/2000/svg" && parsed.localName === "svg") {
    const svg = document.importNode(parsed, true);
    svg.setAttribute("role", "img");
    svg.setAttribute("aria-label", "The invitation code as a QR code");
    $("invite-qr").replaceChildren(svg);
  } else {
    $("invite-qr").replaceChildren();
  }
}

async function copyCode() {
  const code = $("invite-code");
  try {
    await navigator.clipboard.writeText(code.value);
    $("copied").textContent = "Copied.";
  } catch {
    code.focus();
    code.select();
    $("copied").textContent = "Selected: press Ctrl+C to copy.";
  }
}

// -- joining with a code ----------------------------------------------------------------------------

async function joinSpace(event) {
  event.preventDefault();
  const form = event.currentTarget;
  const code = form.elements.code.value.trim();
  if (!code) {
    showFormError(form, "Paste the invitation code you were given.");
    return;
  }
  showJoinProgress("Reaching the person who invited you…");
  state.joining = true;
  try {
    await submitWith(form, async () => {
      const answer = await api("POST", "/api/join", { code, timeout_s: 600 });
      form.reset();
      $("join-space").open = false;
      location.hash = hashFor(answer.space, null);
    });
  } finally {
    state.joining = false;
    showJoinProgress("");
  }
}

function showJoinProgress(text) {
  const box = $("join-progress");
  box.textContent = text;
  box.hidden = !text;
}

function joinProgressEvent(event) {
  if (!state.joining || typeof event.have !== "number" || typeof event.total !== "number") return;
  const number = new Intl.NumberFormat();
  showJoinProgress(`Receiving the space: ${number.format(event.have)} of ${number.format(event.total)} changes`);
}

// -- undo ---------------------------------------------------------------------------------------

function renderUndo(change) {
  const button = $("undo");
  button.disabled = !change;
  const what = { edit: "your last edit", delete: "your last delete" }[change?.kind];
  $("undo-what").textContent = change ? `(${what ?? "your last change"})` : "";
}

async function undo() {
  try {
    await api("POST", `${talkPath(state.space)}/undo`);
    showMessage("");
  } catch (error) {
    showMessage(error.status === 409 ? "There is nothing to undo." : error.message);
  }
  refresh();
}

// -- the thread list ----------------------------------------------------------------------------

function renderTopics(topics) {
  const items = topics.map((t) => {
    const title = t.deleted ? "[deleted topic]" : t.title;
    const replies = `${t.reply_count} ${t.reply_count === 1 ? "reply" : "replies"}`;
    const unread = t.unread_count > 0;
    return el(
      "li",
      {
        class: unread ? "topic unread" : "topic",
        "data-topic-id": t.id,
        "data-testid": "topic",
        "data-status": t.status,
        "data-unread": String(t.unread_count),
      },
      el(
        "div",
        { class: "topic-line" },
        el("a", {
          class: "topic-title",
          href: hashFor(state.space, t.id),
          "data-focus-key": `topic:${t.id}`,
          text: title,
        }),
        unread ? el("span", { class: "badge", "data-testid": "unread", text: `${t.unread_count} new` }) : null,
      ),
      t.preview ? el("p", { class: "preview", "data-testid": "preview", text: t.preview }) : null,
      el(
        "p",
        { class: "meta" },
        el("span", { class: "author", text: t.author_name }),
        el("span", { class: "reply-count", "data-testid": "reply-count", text: replies }),
        timeElement(t.last_activity, "last activity ", Boolean(t.time_clamped)),
        statusElement(t),
      ),
    );
  });
  $("no-topics").hidden = items.length > 0;
  $("topic-list").replaceChildren(...items);
}

async function postTopic(event) {
  event.preventDefault();
  const form = event.currentTarget;
  const title = form.elements.title.value.trim();
  if (!title) {
    showFormError(form, "A topic needs a title.");
    form.elements.title.focus();
    return;
  }
  await submitWith(form, async () => {
    await api("POST", `${talkPath(state.space)}/topics`, { title, body: form.elements.body.value });
    form.reset();
  });
}

// Run a form's request with its submit button disabled; show a failure inside the form.
async function submitWith(form, action) {
  const long = overLimit(form);
  if (long) {
    showFormError(form, "Shorten the marked text first: it is longer than the node accepts.");
    long.focus();
    return false;
  }
  const submit = form.querySelector('button[type="submit"]');
  submit.disabled = true;
  showFormError(form, "");
  try {
    await action();
  } catch (error) {
    showFormError(form, error.message);
    return false;
  } finally {
    submit.disabled = false;
  }
  refresh();
  return true;
}

// -- the thread ---------------------------------------------------------------------------------

const postElements = new Map(); // post id -> its <li>, reused from one render to the next

// Deeper than this, a thread goes on in a view of its own ("continue this thread"), so that no
// text is ever narrower than the indents leave at this depth.
const MAX_DEPTH = 6;

function findPost(post, id) {
  if (post.id === id) return post;
  for (const reply of post.replies) {
    const found = findPost(reply, id);
    if (found) return found;
  }
  return null;
}

function renderThread(thread, me) {
  const seen = new Set();
  const root = state.focus ? findPost(thread, state.focus) ?? thread : thread;
  $("continued").hidden = root === thread;
  $("whole-thread").href = hashFor(state.space, state.topic);
  const rootElement = renderPost(root, me, seen, 0);
  patchChildren($("thread"), [rootElement]);
  for (const id of postElements.keys()) {
    if (!seen.has(id)) {
      postElements.delete(id);
      state.forms.delete(id);
    }
  }
}

function renderPost(post, me, seen, depth) {
  seen.add(post.id);
  if (post.unread) state.newPosts.add(post.id);
  let item = postElements.get(post.id);
  if (!item) {
    // card: re-rendered each time; slot: the open form, left alone; replies: patched.
    item = el(
      "li",
      { class: "post", "data-post-id": post.id, "data-testid": "post" },
      el("article", { class: "card" }),
      el("div", { class: "form-slot" }),
      el("ol", { class: "replies" }),
    );
    postElements.set(post.id, item);
  }
  const [card, slot, replies] = item.children;
  const mine = post.author === me;
  item.classList.toggle("mine", mine);
  item.classList.toggle("deleted", post.deleted);
  item.dataset.deleted = post.deleted ? "yes" : "no";
  item.dataset.status = post.status;

  const header = el(
    "header",
    { class: "meta" },
    el("span", { class: "author", "data-testid": "author", text: post.author_name }),
    mine ? el("span", { class: "muted", text: "(you)" }) : null,
    timeElement(post.created, "", Boolean(post.time_clamped)),
    post.edited && !post.deleted ? el("span", { class: "edited", "data-testid": "edited", title: formatTime(post.edited), text: "edited" }) : null,
    state.newPosts.has(post.id) ? el("span", { class: "badge", "data-testid": "new", text: "new" }) : null,
    statusElement(post),
  );
  const parts = [header];
  if (!post.parent) {
    parts.push(el("h3", { class: "post-title", "data-testid": "title", text: post.deleted ? "[deleted topic]" : post.title }));
  }
  parts.push(
    post.deleted
      ? el("div", { class: "body removed", "data-testid": "body", text: "[deleted]" })
      : markdownBody(post, me),
  );
  parts.push(actionsFor(post, mine));
  card.replaceChildren(...parts);

  const open = state.forms.get(post.id);
  if (open && post.deleted) {
    // The post was deleted (here or by an undo elsewhere) while the form was open.
    state.forms.delete(post.id);
    slot.replaceChildren();
  } else if (open && slot.firstElementChild !== open.form) {
    slot.replaceChildren(open.form);
  } else if (!open && slot.firstElementChild) {
    slot.replaceChildren();
  }

  if (depth >= MAX_DEPTH && post.replies.length > 0) {
    const count = countReplies(post);
    const more = el(
      "li",
      { class: "continue", "data-testid": "continue" },
      el("a", {
        href: hashFor(state.space, state.topic, { post: post.id }),
        "data-focus-key": `continue:${post.id}`,
        text: `Continue this thread (${count} more ${count === 1 ? "reply" : "replies"}) →`,
      }),
    );
    patchChildren(replies, [more]);
  } else {
    patchChildren(replies, post.replies.map((reply) => renderPost(reply, me, seen, depth + 1)));
  }
  return item;
}

function countReplies(post) {
  return post.replies.reduce((n, reply) => n + (reply.deleted ? 0 : 1) + countReplies(reply), 0);
}

// What Markdown makes, and the attributes each element may keep: anything else the node's HTML
// might hold is dropped (its text kept), so nothing in a post can run, load or restyle the page.
const allowedMarkup = {
  P: [], BR: [], STRONG: [], EM: [], S: [], DEL: [], CODE: [], PRE: [], BLOCKQUOTE: [], UL: [],
  OL: ["start"], LI: [], HR: [], H1: [], H2: [], H3: [], H4: [], H5: [], H6: [],
  A: ["href", "rel", "target"], SPAN: ["class", "data-member"],
};

function cleanMarkup(node) {
  for (const child of [...node.children]) {
    const allowed = allowedMarkup[child.tagName];
    if (!allowed) {
      child.replaceWith(document.createTextNode(child.textContent));
      continue;
    }
    for (const attr of [...child.attributes]) {
      if (!allowed.includes(attr.name)) child.removeAttribute(attr.name);
    }
    if (child.tagName === "A") {
      if (!/^(https?:|mailto:)/i.test(child.getAttribute("href") ?? "")) child.removeAttribute("href");
      child.setAttribute("rel", "noopener noreferrer nofollow");
      child.setAttribute("target", "_blank");
    }
    if (child.tagName === "SPAN" && child.getAttribute("class") !== "mention") child.removeAttribute("class");
    cleanMarkup(child);
  }
}

const markdownCache = new Map(); // body_html -> parsed, cleaned fragment (cloned for use)

function markdownBody(post, me) {
  let fragment = markdownCache.get(post.body_html);
  if (!fragment) {
    // DOMParser makes an inert document: nothing in it runs or loads while it is cleaned.
    const parsed = new DOMParser().parseFromString(post.body_html ?? "", "text/html");
    cleanMarkup(parsed.body);
    fragment = document.createDocumentFragment();
    fragment.append(...parsed.body.childNodes);
    if (markdownCache.size > 2000) markdownCache.clear();
    markdownCache.set(post.body_html, fragment);
  }
  const body = el("div", { class: "body markdown", "data-testid": "body" });
  body.append(document.importNode(fragment, true));
  for (const mention of body.querySelectorAll("span.mention")) {
    if (mention.dataset.member === me) mention.classList.add("me");
  }
  return body;
}

// What the open thread shows is read: tell the node (local marks), unless the page is in the
// background, where nobody reads it.
const marking = new Set();
async function markRead(space, thread) {
  if (document.visibilityState !== "visible" || marking.has(thread.id)) return;
  const unread = [];
  const walk = (post) => {
    if (post.unread) unread.push(post.id);
    post.replies.forEach(walk);
  };
  walk(thread);
  if (unread.length === 0) return;
  marking.add(thread.id);
  try {
    // Only what was shown: a post that arrives meanwhile stays unread until it is.
    await api("POST", `${talkPath(space)}/threads/${seg(thread.id)}/read`, { posts: unread });
  } catch {
    // Not marked: the next refresh tries again.
  } finally {
    marking.delete(thread.id);
  }
}

// -- search -------------------------------------------------------------------------------------

function searchSubmit(event) {
  event.preventDefault();
  const words = event.currentTarget.elements.q.value.trim();
  location.hash = hashFor(state.space, null, { q: words });
}

// A snippet marks matched words between U+0002 and U+0003: they become <mark>s, as text.
function snippetElement(snippet) {
  const out = el("p", { class: "snippet", "data-testid": "snippet" });
  const parts = snippet.split(/([\u0002\u0003])/);
  let marking = false;
  for (const part of parts) {
    if (part === "\u0002") marking = true;
    else if (part === "\u0003") marking = false;
    else if (part) out.append(marking ? el("mark", { text: part }) : document.createTextNode(part));
  }
  return out;
}

function renderSearch(answer) {
  const results = answer.results ?? [];
  $("search-heading").textContent = `${results.length} ${results.length === 1 ? "post" : "posts"} with “${(answer.words ?? []).join(" ")}”`;
  $("no-results").hidden = results.length > 0;
  $("search-back").href = hashFor(state.space, null);
  const items = results.map((r) =>
    el(
      "li",
      { class: "result", "data-testid": "result", "data-post-id": r.post },
      el("a", {
        class: "topic-title",
        href: hashFor(state.space, r.topic, r.post === r.topic ? {} : { post: r.post }),
        text: r.topic_title || "[deleted topic]",
      }),
      snippetElement(r.snippet),
      el("p", { class: "meta" }, el("span", { class: "author", text: r.author_name }), timeElement(r.created)),
    ),
  );
  $("search-results").replaceChildren(...items);
}

function actionsFor(post, mine) {
  const who = post.author_name;
  const buttons = [];
  if (!post.deleted && !state.readOnly) {
    buttons.push(
      el("button", {
        type: "button",
        "data-action": "reply",
        "data-focus-key": `reply:${post.id}`,
        "aria-label": `Reply to ${who}`,
        text: "Reply",
        onclick: () => openForm(post, "reply"),
      }),
    );
    if (mine) {
      buttons.push(
        el("button", {
          type: "button",
          "data-action": "edit",
          "data-focus-key": `edit:${post.id}`,
          "aria-label": post.parent ? "Edit your reply" : "Edit your topic",
          text: "Edit",
          onclick: () => openForm(post, "edit"),
        }),
        el("button", {
          type: "button",
          class: "danger",
          "data-action": "delete",
          "data-focus-key": `delete:${post.id}`,
          "aria-label": post.parent ? "Delete your reply" : "Delete your topic",
          text: "Delete",
          onclick: () => deletePost(post),
        }),
      );
    }
  }
  return el("div", { class: "actions" }, ...buttons);
}

function openForm(post, kind) {
  const form = kind === "reply" ? replyForm(post) : editForm(post);
  state.forms.set(post.id, { kind, form });
  postElements.get(post.id)?.querySelector(".form-slot").replaceChildren(form);
  form.querySelector("input, textarea").focus();
}

function closeForm(postId, kind) {
  state.forms.delete(postId);
  postElements.get(postId)?.querySelector(".form-slot").replaceChildren();
  document.querySelector(`[data-focus-key="${CSS.escape(`${kind}:${postId}`)}"]`)?.focus();
}

let formCounter = 0; // unique ids, so each label points at its own field

function field(labelText, input) {
  input.id = `f${++formCounter}`;
  return [el("label", { for: input.id, text: labelText }), input, limitNote(input)];
}

// -- limits, counted as the node counts them: bytes of UTF-8 of the trimmed text ---------------

const encoder = new TextEncoder();
const byteLength = (text) => encoder.encode(text.trim()).length;

// The note under a field with data-limit: silent until the text nears its limit, then how much
// room is left, or by how much it is too long (a character of Japanese takes 3 bytes).
function limitNote(input) {
  if (!input.dataset.limit) return null;
  const note = el("p", { class: "limit", "data-testid": "limit", "aria-live": "polite", hidden: true });
  const update = () => {
    const limit = state.limits[input.dataset.limit];
    const used = byteLength(input.value);
    note.hidden = used < limit * 0.8;
    note.classList.toggle("over", used > limit);
    note.textContent = used > limit
      ? `Too long by ${new Intl.NumberFormat().format(used - limit)} bytes (the limit is ${limit} bytes; a letter with an accent takes 2, a Japanese or Chinese character 3).`
      : `${new Intl.NumberFormat().format(limit - used)} bytes left`;
    input.setAttribute("aria-invalid", used > limit ? "true" : "false");
  };
  input.addEventListener("input", update);
  input.limitUpdate = update;
  return note;
}

// The first field of `form` over its limit, or null.
function overLimit(form) {
  for (const input of form.querySelectorAll("[data-limit]")) {
    input.limitUpdate?.();
    if (byteLength(input.value) > state.limits[input.dataset.limit]) return input;
  }
  return null;
}

function formButtons(submitText, onCancel) {
  return el(
    "div",
    { class: "buttons" },
    el("button", { type: "submit", text: submitText }),
    el("button", { type: "button", text: "Cancel", onclick: onCancel }),
  );
}

function replyForm(post) {
  const body = el("textarea", { name: "body", rows: 3, required: true, "data-limit": "body" });
  const form = el(
    "form",
    { class: "inline-form stack", "data-testid": "reply-form", "aria-label": `Reply to ${post.author_name}` },
    ...field("Your reply", body),
    el("p", { class: "form-error", role: "alert", hidden: true }),
    formButtons("Send reply", () => closeForm(post.id, "reply")),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const text = body.value.trim();
    if (!text) {
      showFormError(form, "Write something first.");
      return;
    }
    await submitWith(form, async () => {
      await api("POST", `${talkPath(state.space)}/posts/${seg(post.id)}/replies`, { body: text });
      closeForm(post.id, "reply");
    });
  });
  form.addEventListener("keydown", (event) => {
    if (event.key === "Escape") closeForm(post.id, "reply");
  });
  return form;
}

function editForm(post) {
  const inputs = [];
  const title = post.parent ? null : el("input", { name: "title", required: true, autocomplete: "off", "data-limit": "title" });
  if (title) {
    title.value = post.title;
    inputs.push(...field("Title", title));
  }
  const body = el("textarea", { name: "body", rows: 4, required: Boolean(post.parent), "data-limit": "body" });
  body.value = post.body;
  inputs.push(...field(post.parent ? "Your reply" : "Message", body));
  const form = el(
    "form",
    { class: "inline-form stack", "data-testid": "edit-form", "aria-label": "Edit your post" },
    ...inputs,
    el("p", { class: "form-error", role: "alert", hidden: true }),
    formButtons("Save", () => closeForm(post.id, "edit")),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const change = { body: body.value };
    if (title) change.title = title.value.trim();
    await submitWith(form, async () => {
      await api("PUT", `${talkPath(state.space)}/posts/${seg(post.id)}`, change);
      closeForm(post.id, "edit");
    });
  });
  form.addEventListener("keydown", (event) => {
    if (event.key === "Escape") closeForm(post.id, "edit");
  });
  return form;
}

async function deletePost(post) {
  // No confirmation dialog: "Undo my last change" brings the post back.
  try {
    await api("DELETE", `${talkPath(state.space)}/posts/${seg(post.id)}`);
    showMessage("");
  } catch (error) {
    showMessage(error.message);
  }
  refresh();
}

// -- mentions: a browser notification while the page is in the background -------------------------

function renderNotifyButton() {
  const button = $("notify");
  button.hidden = !("Notification" in window) || Notification.permission !== "default";
}

async function askToNotify() {
  try {
    await Notification.requestPermission();
  } finally {
    renderNotifyButton();
  }
}

// A post someone else added: if it mentions this endpoint and nobody is looking at the page,
// the browser says so (once per post; clicking it opens the thread).
const notified = new Set();
async function maybeNotify(event) {
  const me = state.status?.endpoint;
  if (event.kind !== "added" || !me || event.by === me || notified.has(event.post)) return;
  if (document.visibilityState === "visible") return;
  if (!("Notification" in window) || Notification.permission !== "granted") return;
  let post;
  try {
    post = (await api("GET", `${talkPath(event.space)}/posts/${seg(event.post)}`)).post;
  } catch {
    return;
  }
  if (!post.mentions?.includes(me) || notified.has(post.id)) return;
  if (notified.size > 1000) notified.clear();
  notified.add(post.id);
  const space = state.status?.spaces.find((s) => s.id === event.space);
  const text = post.body.length > 200 ? `${post.body.slice(0, 199)}…` : post.body;
  const note = new Notification(`${post.author_name} mentioned you in ${space?.name ?? "a space"}`, {
    body: text,
    tag: post.id,
  });
  note.addEventListener("click", () => {
    window.focus();
    location.hash = hashFor(event.space, post.topic, post.id === post.topic ? {} : { post: post.id });
  });
}

// -- live updates -------------------------------------------------------------------------------

function connectEvents() {
  const conn = $("conn");
  const setConn = (name, text) => {
    conn.dataset.state = name;
    conn.textContent = text;
  };
  const source = new EventSource(`/api/events?session=${encodeURIComponent(session)}`);
  // On every (re)connection: what changed while the stream was down has no event, so re-fetch.
  source.addEventListener("open", () => {
    setConn("live", "live");
    scheduleRefresh(0);
  });
  source.addEventListener("error", () => {
    // EventSource reconnects by itself unless it gave up (CLOSED: e.g. a 401).
    if (source.readyState === EventSource.CLOSED) {
      setConn("offline", "offline: run p2pspace open again");
    }
    else setConn("connecting", "reconnecting…");
  });
  source.addEventListener("message", (message) => {
    let event;
    try {
      event = JSON.parse(message.data);
    } catch {
      return;
    }
    if (event.type === "progress") joinProgressEvent(event);
    if (event.type === "tool" && event.tool === "discussion") maybeNotify(event);
    if (REFRESH_ON.has(event.type)) scheduleRefresh();
  });
}

// -- start --------------------------------------------------------------------------------------

function start() {
  $("new-topic").addEventListener("submit", postTopic);
  $("new-space-form").addEventListener("submit", createSpace);
  $("join-form").addEventListener("submit", joinSpace);
  $("invite-form").addEventListener("submit", createInvitation);
  $("copy-code").addEventListener("click", copyCode);
  $("rename").addEventListener("click", openRename);
  $("rename-cancel").addEventListener("click", closeRename);
  $("rename-form").addEventListener("submit", renameSpace);
  $("rename-form").addEventListener("keydown", (event) => {
    if (event.key === "Escape") closeRename();
  });
  setInterval(updateTimes, 30_000);
  $("search-form").addEventListener("submit", searchSubmit);
  $("notify").addEventListener("click", askToNotify);
  renderNotifyButton();
  for (const input of document.querySelectorAll("#new-topic [data-limit]")) input.after(limitNote(input));
  // Back in view: what arrived meanwhile is shown, and the open thread counts as read.
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible") scheduleRefresh(0);
  });
  $("undo").addEventListener("click", undo);
  $("back").addEventListener("click", (event) => {
    event.preventDefault();
    location.hash = hashFor(state.space, null);
  });
  window.addEventListener("hashchange", () => {
    readHash();
    refresh();
    if (state.topic) $("main").focus({ preventScroll: true });
  });
  readHash();
  connectEvents();
  refresh();
}

start();
