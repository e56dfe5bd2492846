/**
 * ui/admin.js — the administrators' page: usage statistics, LLM tokens and cost, and the stream-lag
 * report. Reports are drawn generically (lists of rows become tables), so a field the server adds
 * shows up without a change here.
 */
import { h, mount } from "../dom.js";

function cell(value) {
  if (value == null) return "";
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

/** Any JSON value as tables (lists of objects), cards (numbers) and nested sections. */
function draw(value, title, depth = 3) {
  if (Array.isArray(value)) {
    if (!value.length) return h("section", {}, h(`h${depth}`, {}, title), h("p", { class: "empty" }, "None."));
    if (typeof value[0] !== "object") return h("p", {}, `${title}: ${value.join(", ")}`);
    const cols = [...new Set(value.flatMap((row) => Object.keys(row)))];
    const nested = cols.filter((k) => value.some((row) => Array.isArray(row[k])));
    const flat = cols.filter((k) => !nested.includes(k));
    return h("section", {}, h(`h${depth}`, {}, title),
      h("table", {}, h("thead", {}, h("tr", {}, flat.map((k) => h("th", { scope: "col" }, k)))),
        h("tbody", {}, value.map((row) => h("tr", {}, flat.map((k) => h("td", {}, cell(row[k]))))))),
      nested.flatMap((k) => value.map((row, i) => draw(row[k], `${title} ${row.name ?? row.stream ?? i + 1}: ${k}`, Math.min(depth + 1, 6)))));
  }
  if (value && typeof value === "object") {
    const scalars = Object.entries(value).filter(([, v]) => v == null || typeof v !== "object");
    const others = Object.entries(value).filter(([, v]) => v != null && typeof v === "object");
    return h("section", {}, title ? h(`h${depth}`, {}, title) : null,
      scalars.length ? h("div", { class: "cards" }, scalars.map(([k, v]) => h("div", { class: "card" }, h("strong", {}, cell(v)), k))) : null,
      others.map(([k, v]) => draw(v, k, Math.min(depth + 1, 6))));
  }
  return h("p", {}, `${title}: ${cell(value)}`);
}

const TITLES = {
  days: "Messages and active users per day", llm_usage: "LLM tokens and cost by model and user",
  users: "Per user and day", conversations: "Per conversation and day", groups: "Consumer groups (all shards)",
  projector: "Projector", shards: "Per shard",
};

/** The stream report with its per-shard groups flattened into one table (the lag report). */
function streamsView(report) {
  const { streams = [], ...rest } = report;
  const shards = streams.flatMap((s) => (s.groups ?? []).map(({ consumers, ...g }) => ({
    stream: s.stream, length: s.length, ...g, consumers: (consumers ?? []).length,
  })));
  const groups = (rest.groups ?? []).map(({ consumers, ...g }) => ({ ...g, consumers: (consumers ?? []).length }));
  return { ...rest, groups, shards };
}

function titled(value) {
  if (!value || typeof value !== "object" || Array.isArray(value)) return value;
  return Object.fromEntries(Object.entries(value).map(([k, v]) => [TITLES[k] ?? k, v]));
}

async function section(client, title, path, shape = (x) => x) {
  try {
    return draw(titled(shape(await client.api("GET", path))), title, 3);
  } catch (err) {
    const why = err.status === 403 ? "Administrators only." : err.status === 404 ? "Not available on this server." : err.message;
    return h("section", {}, h("h3", {}, title), h("p", { class: "form-error" }, why));
  }
}

export async function renderAdmin(pane, client) {
  const to = new Date();
  const from = new Date(to.getTime() - 7 * 24 * 3600 * 1000);
  const range = new URLSearchParams({ from: from.toISOString().slice(0, 10), to: to.toISOString().slice(0, 10) });
  const page = h("div", { class: "page" }, h("h2", {}, "Administration"), h("p", { class: "empty" }, "Loading…"));
  mount(pane, page);
  const [stats, streams] = await Promise.all([
    section(client, "Usage and tokens (last 7 days)", `/api/admin/stats?${range}`,
      ({ days, llm_usage, users, conversations, ...rest }) => ({ ...rest, days, llm_usage, users, conversations })),
    section(client, "Streams and lag", "/api/admin/streams", streamsView),
  ]);
  mount(page, h("h2", {}, "Administration"),
    h("button", { type: "button", onclick: () => renderAdmin(pane, client) }, "Refresh"), stats, streams);
}
