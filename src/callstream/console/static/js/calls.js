// Calls: the Voice Insights Summaries list (GET /v1/Voice/Summaries) with its filters.
// The filters live in the URL's hash (#/calls?CallType=client&HasTag=true), so a filtered
// list can be bookmarked and the back button works.

import * as api from "./api.js";
import {fmtDuration, fmtNumber, fmtTime, h, notice, replace, table} from "./dom.js";

const PAGE_SIZE = 25;

const CHOICES = {
  CallType: ["carrier", "sip", "trunking", "client", "whatsapp"],
  CallState: ["ringing", "completed", "busy", "fail", "noanswer", "canceled", "answered", "undialed"],
  HasTag: ["true", "false"],
  ProcessingState: ["completed", "partial"],
  SortBy: ["start_time", "end_time"],
};

const TEXT_FILTERS = [
  ["From", "From", "+15125550100 or client:alice"],
  ["To", "To", ""],
  ["Tags", "All of these tags", "high_jitter,low_mos"],
  ["StartTime", "Started from", "4h, 3d or 2025-01-01T00:00:00Z"],
  ["EndTime", "Started before", ""],
];

/** The MOS to show for a call: the SDK's average on the inbound stream, when it reported. */
export function callMos(summary) {
  const sdk = summary.sdk_edge && summary.sdk_edge.metrics && summary.sdk_edge.metrics.inbound;
  return sdk && sdk.mos ? sdk.mos.avg : null;
}

export function party(p, key) {
  return (p && p[key]) || "—";
}

export function renderCalls(main, match) {
  const params = Object.fromEntries(new URLSearchParams(match[1] || ""));
  const result = h("div", {id: "calls-result"}, notice("info", "Loading…"));

  const fields = [];
  for (const [name, label, placeholder] of TEXT_FILTERS) {
    fields.push(h("label", null, label,
      h("input", {name, value: params[name] || "", placeholder, "data-filter": name})));
  }
  for (const [name, values] of Object.entries(CHOICES)) {
    const select = h("select", {name, "data-filter": name},
      h("option", {value: ""}, name === "SortBy" ? "start_time" : "any"),
      values.filter((v) => !(name === "SortBy" && v === "start_time"))
        .map((v) => h("option", {value: v, selected: params[name] === v}, v)));
    fields.push(h("label", null, name, select));
  }
  const form = h("form", {id: "calls-filter", class: "filters"}, fields,
    h("button", {type: "submit"}, "Search"),
    h("button", {type: "reset", id: "calls-clear"}, "Clear"));

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const chosen = new URLSearchParams();
    for (const input of form.querySelectorAll("[data-filter]")) {
      if (input.value.trim()) chosen.set(input.name, input.value.trim());
    }
    const text = chosen.toString();
    location.hash = text ? `#/calls?${text}` : "#/calls";
  });
  form.addEventListener("reset", (event) => {
    event.preventDefault();
    location.hash = "#/calls";
  });

  replace(main, h("h1", null, "Calls"), form, result);

  const controller = new AbortController();
  (async () => {
    let data;
    try {
      data = await api.get("/v1/Voice/Summaries", {PageSize: PAGE_SIZE, ...params},
        {signal: controller.signal});
    } catch (error) {
      if (controller.signal.aborted) return;
      replace(result, notice("error", error.message));
      return;
    }
    const rows = data.call_summaries.map((s) => h("tr", {"data-call": s.call_sid},
      h("td", null, h("a", {href: `#/calls/${s.call_sid}`}, fmtTime(s.start_time || s.created_time))),
      h("td", null, party(s.from, "caller")),
      h("td", null, party(s.to, "callee")),
      h("td", null, s.call_type),
      h("td", null, s.call_state),
      h("td", {class: "num"}, fmtDuration(s.duration)),
      h("td", {class: "num"}, fmtNumber(callMos(s), 2)),
      h("td", null, (s.tags || []).map((tag) => h("span", {class: "tag"}, tag))),
      h("td", null, s.processing_state)));
    const pager = h("div", {class: "pager"});
    for (const [label, url] of [["Newer", data.meta.previous_page_url], ["Older", data.meta.next_page_url]]) {
      if (!url) continue;
      const token = new URL(url, location.origin).searchParams.get("PageToken");
      const next = new URLSearchParams({...params, PageToken: token});
      pager.append(h("a", {class: "button", href: `#/calls?${next}`, "data-page": label}, label));
    }
    replace(result, rows.length
      ? [table(["Start", "From", "To", "Type", "State", "Duration", "MOS", "Tags", "Summary"],
        rows, {id: "calls-table"}), pager]
      : notice("info", "No call matches these filters."));
  })();
  return () => controller.abort();
}
