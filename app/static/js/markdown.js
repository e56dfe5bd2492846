/**
 * markdown.js — message and model text to safe HTML. The only place the app produces HTML.
 *
 * Three layers, each enough on its own for the cases it covers:
 * 1. marked renders Markdown with raw HTML turned into visible text (a `<script>` or
 *    `<img onerror>` in a message shows as typed), links only for http(s) and mailto (anything else,
 *    `javascript:` included, shows as text), and images shown as links (nothing loads by itself);
 * 2. DOMPurify keeps an allow-list of tags and attributes on the result;
 * 3. the page's Content-Security-Policy runs no inline script and requires Trusted Types, which
 *    only DOMPurify's policy can produce, so even a bug in 1 or 2 cannot assign script-bearing HTML.
 */
import { Marked } from "../vendor/marked.esm.js";
import DOMPurify from "../vendor/purify.es.mjs";

const SAFE_URL = /^(https?:|mailto:)/i;

const escapeHtml = (s) => s.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);

const marked = new Marked({
  gfm: true,
  breaks: true,
  async: false,
  renderer: {
    html({ text }) { return escapeHtml(text); },
    link({ href, title, tokens }) {
      const label = this.parser.parseInline(tokens);
      if (!SAFE_URL.test((href ?? "").trim())) return `${label} (${escapeHtml(href ?? "")})`;
      const t = title ? ` title="${escapeHtml(title)}"` : "";
      return `<a href="${escapeHtml(href)}"${t}>${label}</a>`;
    },
    image({ href, text }) {
      if (!SAFE_URL.test((href ?? "").trim())) return escapeHtml(text || href || "");
      return `<a href="${escapeHtml(href)}">${escapeHtml(text || "image")}</a>`;
    },
  },
});

const PURIFY = {
  ALLOWED_TAGS: ["p", "br", "strong", "em", "del", "code", "pre", "blockquote", "ul", "ol", "li", "a", "h1", "h2",
    "h3", "h4", "h5", "h6", "hr", "table", "thead", "tbody", "tr", "th", "td", "input"],
  ALLOWED_ATTR: ["href", "title", "class", "start", "type", "checked", "disabled"],
  ALLOWED_URI_REGEXP: /^(?:https?:|mailto:)/i,
  RETURN_TRUSTED_TYPE: true,
};

DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName === "A") {
    node.setAttribute("target", "_blank");
    node.setAttribute("rel", "noopener noreferrer nofollow ugc");
  }
  if (node.tagName === "INPUT" && node.getAttribute("type") !== "checkbox") node.remove();
});

/** Fill `el` with the rendered Markdown of `text` (safe for any input). */
export function renderMarkdown(el, text) {
  el.innerHTML = DOMPurify.sanitize(marked.parse(text), PURIFY);
}
