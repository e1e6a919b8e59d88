// One call: its summary (every edge), charts of jitter, packet loss, RTT, MOS and latency
// per edge and direction with the SDK's quality warnings marked, and its event timeline.
// While the call has no summary it is in progress, and the page follows it live.

import * as api from "./api.js";
import {lineChart} from "./charts.js";
import {callMos, party} from "./calls.js";
import {fmtClock, fmtDuration, fmtNumber, fmtTime, h, notice, replace, table} from "./dom.js";

const EDGES = ["carrier_edge", "sip_edge", "client_edge", "sdk_edge"];

// Where each measure sits in a metric record's interval: the SDK reports value/avg per
// 10-second window, the media gateways avg/max.
const pick = (object, ...keys) => {
  for (const key of keys) if (object && typeof object[key] === "number") return object[key];
  return null;
};
const MEASURES = [
  {id: "jitter", title: "Jitter", unit: "ms", get: (i) => pick(i.jitter, "value", "avg")},
  {id: "packet-loss", title: "Packet loss", unit: "%", get: (i) => pick(i, "packets_loss_percentage")},
  {id: "rtt", title: "Round-trip time", unit: "ms", get: (i) => pick(i.rtt, "value", "avg")},
  {id: "mos", title: "MOS", unit: "", get: (i) => pick(i.mos, "value", "avg")},
  {id: "latency", title: "Gateway latency", unit: "ms", get: (i) => pick(i.latency, "avg", "value")},
];

// Which chart shows which SDK warning; a network warning about the connection as a whole
// (ICE connectivity, no bytes) is marked on every chart, audio-level warnings on none.
const WARNING_CHART = {
  "high-jitter": ["jitter"],
  "high-packet-loss": ["packet-loss"],
  "high-packets-lost-fraction": ["packet-loss"],
  "high-rtt": ["rtt"],
  "low-mos": ["mos"],
};
const WARNING = /^(network-quality|audio-level)-warning-(raised|cleared)$/;

export function warningsOf(events) {
  const out = [];
  for (const event of events) {
    const match = WARNING.exec(event.group || "");
    if (!match) continue;
    const charts = WARNING_CHART[event.name] ||
      (match[1] === "network-quality" ? MEASURES.map((m) => m.id) : []);
    out.push({t: Date.parse(event.timestamp), kind: match[2], name: event.name, charts});
  }
  return out;
}

function seriesOf(metrics, measure) {
  const byStream = new Map();
  for (const record of metrics) {
    const edge = record[record.edge];
    const interval = edge && edge.interval;
    if (!interval) continue;
    const v = measure.get(interval);
    if (v === null) continue;
    const name = `${record.edge} ${record.direction}`;
    if (!byStream.has(name)) byStream.set(name, []);
    byStream.get(name).push({t: Date.parse(record.timestamp), v});
  }
  return [...byStream.entries()].sort().map(([name, points]) => ({name, points}));
}

/** A JSON value as nested definition lists; every value is text. */
function tree(value) {
  if (value === null || value === undefined) return h("span", {class: "muted"}, "—");
  if (Array.isArray(value)) {
    return value.length && typeof value[0] === "object"
      ? h("ol", null, value.map((item) => h("li", null, tree(item))))
      : h("span", null, value.length ? value.join(", ") : "—");
  }
  if (typeof value === "object") {
    return h("dl", {class: "tree"}, Object.entries(value).map(([key, inner]) =>
      [h("dt", null, key), h("dd", null, tree(inner))]));
  }
  return h("span", null, String(value));
}

function summaryView(summary) {
  const facts = [
    ["Type", summary.call_type], ["State", summary.call_state],
    ["Summary", summary.processing_state],
    ["From", party(summary.from, "caller")], ["To", party(summary.to, "callee")],
    ["Start", fmtTime(summary.start_time)], ["End", fmtTime(summary.end_time)],
    ["Duration", fmtDuration(summary.duration)],
    ["Connected for", fmtDuration(summary.connect_duration)],
    ["MOS (SDK, average)", fmtNumber(callMos(summary), 2)],
  ];
  return [
    h("dl", {class: "facts"}, facts.map(([k, v]) => [h("dt", null, k), h("dd", null, v)])),
    h("div", {class: "tags"}, (summary.tags || []).length
      ? summary.tags.map((tag) => h("span", {class: "tag"}, tag))
      : h("span", {class: "muted"}, "No tags")),
  ];
}

function edgesView(summary) {
  const edges = EDGES.filter((edge) => summary[edge]).map((edge) =>
    h("details", {class: "edge", "data-edge": edge},
      h("summary", null, edge), tree(summary[edge])));
  return [
    edges.length ? edges : notice("info", "No edge reported."),
    h("details", {class: "edge"}, h("summary", null, "Properties, attributes, trust"),
      tree({properties: summary.properties, attributes: summary.attributes, trust: summary.trust})),
  ];
}

function timelineView(events, edge) {
  const shown = edge ? events.filter((e) => e.edge === edge) : events;
  return table(["Time (UTC)", "Edge", "Group", "Name", "Level"], shown.map((e) =>
    h("tr", {class: `level-${(e.level || "").toLowerCase()}`, "data-group": e.group},
      h("td", null, fmtClock(e.timestamp)), h("td", null, e.edge), h("td", null, e.group),
      h("td", null, e.name), h("td", null, e.level))), {id: "timeline-table"});
}

export function renderCall(main, match) {
  const sid = match[1];
  const base = `/v1/Voice/${sid}`;
  const state = h("span", {id: "call-live", class: "badge"});
  const summaryBox = h("section", {id: "call-summary"}, notice("info", "Loading…"));
  const charts = h("section", {id: "call-charts"});
  const edgesBox = h("section", {id: "call-edges"});
  const edgeSelect = h("select", {id: "timeline-edge"}, h("option", {value: ""}, "all edges"),
    EDGES.map((e) => h("option", {value: e}, e)));
  const timeline = h("div", {id: "timeline"});
  replace(main,
    h("p", null, h("a", {href: "#/calls"}, "← Calls")),
    h("div", {class: "title-row"}, h("h1", null, sid), state),
    h("h2", null, "Summary"), summaryBox,
    h("h2", null, "Quality over time"), charts,
    h("h2", null, "Edges"), edgesBox,
    h("div", {class: "title-row"}, h("h2", null, "Timeline"), edgeSelect), timeline);

  const controller = new AbortController();
  let events = [];
  let stream = null;
  let loading = false;
  let again = false;

  async function load() {
    if (loading) {
      again = true;
      return;
    }
    loading = true;
    try {
      const options = {signal: controller.signal};
      const [summary, metrics, evs] = await Promise.all([
        api.get(`${base}/Summary`, null, options).catch((error) => {
          if (error.status === 404 && error.code === 20404 && /no summary/.test(error.message)) return null;
          throw error;
        }),
        api.getAll(`${base}/Metrics`, null, "metrics", options),
        api.getAll(`${base}/Events`, null, "events", options),
      ]);
      events = evs;
      replace(summaryBox, summary ? summaryView(summary)
        : notice("info", "No summary yet: the call is in progress (this page follows it live)."));
      replace(edgesBox, summary ? edgesView(summary) : notice("info", "Known once the call is summarised."));
      drawCharts(metrics, warningsOf(events));
      replace(timeline, timelineView(events, edgeSelect.value));
      follow(!summary || summary.processing_state !== "complete");
    } catch (error) {
      if (controller.signal.aborted) return;
      replace(summaryBox, notice("error", error.status === 404
        ? `No call ${sid} in this account.` : error.message));
    } finally {
      loading = false;
      if (again) {
        again = false;
        load();
      }
    }
  }

  function drawCharts(metrics, warnings) {
    const times = [...metrics.map((m) => Date.parse(m.timestamp)), ...warnings.map((w) => w.t)];
    const domain = times.length ? [Math.min(...times), Math.max(...times)] : [0, 1];
    replace(charts, MEASURES.map((measure) => lineChart({
      id: measure.id, title: measure.title, unit: measure.unit, domain,
      series: seriesOf(metrics, measure),
      markers: warnings.filter((w) => w.charts.includes(measure.id)),
    })));
  }

  // Until the call's summary is complete, new events for it may arrive: reload on them.
  function follow(on) {
    replace(state, on ? "live" : "");
    if (on && !stream) {
      let timer = null;
      stream = api.openStream({CallSid: sid}, (message) => {
        if (!message.events.length || timer) return;
        timer = setTimeout(() => {
          timer = null;
          load();
        }, 1000);
      });
    } else if (!on && stream) {
      stream.close();
      stream = null;
    }
  }

  edgeSelect.addEventListener("change", () => replace(timeline, timelineView(events, edgeSelect.value)));
  load();
  return () => {
    controller.abort();
    if (stream) stream.close();
  };
}
