/**
 * app.js — the web app's entry: one ParleyClient, the shell (top bar, sidebar, main pane), the hash
 * router (#/c/<id>[/<seq>], #/search, #/admin) and the theme. Views live in ui/*.js.
 */
import { ParleyClient } from "./parley-client.js";
import { h, mount, announce } from "./dom.js";
import { renderAuth } from "./ui/auth.js";
import { Sidebar } from "./ui/sidebar.js";
import { ConversationView } from "./ui/conversation.js";
import { renderSearch } from "./ui/search.js";
import { renderAdmin } from "./ui/admin.js";
import { Presence } from "./ui/presence.js";

const client = new ParleyClient();
const root = document.getElementById("app");
const STATE_LABELS = { open: "Connected", connecting: "Connecting…", reconnecting: "Reconnecting…", offline: "Offline" };

// -- theme ------------------------------------------------------------------------------------------
function applyTheme(theme) {
  document.documentElement.dataset.theme = theme;
  localStorage.setItem("parley.theme", theme);
}
applyTheme(localStorage.getItem("parley.theme")
  ?? (matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light"));

function themeButton() {
  const button = h("button", { class: "icon", type: "button" });
  const sync = () => {
    const dark = document.documentElement.dataset.theme === "dark";
    button.setAttribute("aria-pressed", String(dark));
    button.setAttribute("aria-label", "Dark theme");
    button.textContent = dark ? "☾" : "☀";
  };
  button.addEventListener("click", () => {
    applyTheme(document.documentElement.dataset.theme === "dark" ? "light" : "dark");
    sync();
  });
  sync();
  return button;
}

// -- shell ------------------------------------------------------------------------------------------
let shell = null;

function connectionPill() {
  const pill = h("span", { class: "conn", role: "status", "aria-label": "Connection" });
  const sync = () => {
    const waiting = client.pending().length;
    pill.dataset.state = client.state;
    pill.textContent = STATE_LABELS[client.state] + (waiting ? ` · ${waiting} waiting to send` : "");
  };
  client.on("state", (s) => { sync(); if (s !== "connecting") announce(STATE_LABELS[s]); });
  client.on("queue", sync);
  sync();
  return pill;
}

function buildShell(me) {
  const presence = new Presence(client);
  const pane = h("main", { class: "pane", id: "pane" });
  const sidebar = new Sidebar(client, me);
  const conversation = new ConversationView(client, me, { sidebar, presence });
  const bar = h("header", { class: "topbar" },
    h("span", { class: "brand" }, h("img", { src: document.querySelector("link[rel=icon]").href, alt: "", width: 22, height: 22 }), "Parley"),
    connectionPill(),
    h("a", { href: "#/search" }, "Search"),
    me.role === "admin" ? h("a", { href: "#/admin" }, "Admin") : null,
    themeButton(),
    h("button", { type: "button", onclick: () => client.logout() }, "Sign out"),
  );
  mount(root, h("div", { class: "shell" }, bar, h("div", { class: "main" }, sidebar.el, pane)));
  return { pane, sidebar, conversation, presence };
}

async function route() {
  if (!client.user) return;
  const hash = location.hash.replace(/^#/, "") || "/";
  const [path, query = ""] = hash.split("?");
  const parts = path.split("/").filter(Boolean);
  const params = new URLSearchParams(query);
  if (parts[0] === "c" && parts[1]) {
    document.body.dataset.view = "conversation";
    shell.sidebar.select(parts[1]);
    await shell.conversation.open(shell.pane, parts[1], parts[2] ? Number(parts[2]) : null);
    return;
  }
  shell.conversation.close();
  shell.sidebar.select(null);
  if (parts[0] === "search") {
    document.body.dataset.view = "search";
    renderSearch(shell.pane, client, params);
  } else if (parts[0] === "admin") {
    document.body.dataset.view = "admin";
    renderAdmin(shell.pane, client);
  } else {
    document.body.dataset.view = "home";
    mount(shell.pane, h("div", { class: "page empty" },
      h("h2", {}, `Welcome, ${client.user.name}`),
      h("p", {}, "Pick a conversation, or start a new one.")));
  }
}

async function start() {
  root.removeAttribute("aria-busy");
  if (!client.user) {
    document.body.dataset.view = "auth";
    renderAuth(root, client, themeButton);
    return;
  }
  let me;
  try {
    me = await client.api("GET", "/api/me");
  } catch {
    return; // signed out (the listener below shows the sign-in form)
  }
  shell = buildShell(me);
  client.connect();
  await shell.sidebar.load();
  await route();
}

window.addEventListener("hashchange", () => route());
client.on("session", () => start());
// Signing out drops every view and listener with the page: nothing of the last user survives.
client.on("signedout", () => { location.hash = ""; location.reload(); });
start();
