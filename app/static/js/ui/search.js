/**
 * ui/search.js — search the caller's messages (text, semantic or hybrid) and jump to a hit: a hit
 * links to #/c/<conversation>/<seq>, which opens the conversation's history around that message.
 */
import { h, mount, formatTime } from "../dom.js";

const MODES = [["hybrid", "Hybrid"], ["text", "Words"], ["semantic", "Meaning"]];

const ENTITIES = { "&amp;": "&", "&lt;": "<", "&gt;": ">", "&quot;": '"', "&#39;": "'", "&#x27;": "'" };
const unescape = (s) => s.replace(/&(?:amp|lt|gt|quot|#39|#x27);/g, (e) => ENTITIES[e]);

/**
 * A snippet is the message text HTML-escaped with query words in <mark>…</mark>. It is never parsed
 * as HTML: the marks become <mark> elements and everything else text, so only the marks survive.
 */
function snippet(html) {
  return html.split(/(<mark>.*?<\/mark>)/gs).map((part) => {
    const m = /^<mark>(.*)<\/mark>$/s.exec(part);
    return m ? h("mark", {}, unescape(m[1])) : unescape(part);
  });
}

export function renderSearch(pane, client, params) {
  const q = h("input", { type: "search", name: "q", "aria-label": "Search messages", value: params.get("q") ?? "", required: true });
  const mode = h("select", { name: "mode", "aria-label": "Search mode" },
    MODES.map(([value, label]) => h("option", { value, selected: value === (params.get("mode") ?? "hybrid") }, label)));
  const results = h("div", { "aria-live": "polite" });
  const form = h("form", { class: "search-form", role: "search", onsubmit: (ev) => {
    ev.preventDefault();
    location.hash = `#/search?${new URLSearchParams({ q: q.value, mode: mode.value })}`;
  } }, q, mode, h("button", { type: "submit", class: "primary" }, "Search"));
  mount(pane, h("div", { class: "page" }, h("h2", {}, "Search"), form, results));
  q.focus();
  if (params.get("q")) run(client, results, params.get("q"), params.get("mode") ?? "hybrid");
}

async function run(client, results, q, mode) {
  mount(results, h("p", { class: "empty" }, "Searching…"));
  try {
    const page = await client.api("GET", `/api/search?${new URLSearchParams({ q, mode, limit: "30" })}`);
    const hits = page.items ?? [];
    if (!hits.length) return mount(results, h("p", { class: "empty" }, "Nothing found."));
    mount(results, h("ul", { class: "hits", "aria-label": "Results" }, hits.map((hit) => {
      const m = hit.message;
      const title = hit.conversation_title;
      return h("li", {}, h("a", { href: `#/c/${m.conversation_id}/${m.seq}` },
        h("div", { class: "where" }, `${title} · #${m.seq} · ${formatTime(m.created_at)}`),
        h("div", {}, hit.snippet ? snippet(hit.snippet) : m.text)));
    })));
  } catch (err) {
    mount(results, h("p", { class: "form-error", role: "alert" }, err.status === 404 ? "Search is not available on this server." : err.message));
  }
}
