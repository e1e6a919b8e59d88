// Overview: live events per second by type (from the SSE stream), active calls, and the
// delivery health of each sink (from the delivery status API, when the server has it).

import * as api from "./api.js";
import {fmtNumber, fmtTime, h, notice, replace, table} from "./dom.js";

const WINDOW_MS = 10000;

export function renderOverview(main) {
  const started = performance.now();
  const recent = []; // [time received, {type: count}]
  const totals = new Map();
  let received = 0;

  const streamState = h("span", {id: "stream-state", class: "badge"}, "connecting");
  const rateTotal = h("strong", {id: "rate-total"}, "0");
  const eventsTotal = h("strong", {id: "events-total"}, "0");
  const activeCount = h("strong", {id: "active-count"}, "—");
  const rates = h("div", {id: "rates"});
  const active = h("div", {id: "active-calls"});
  const sinks = h("div", {id: "sink-health"});

  replace(main,
    h("div", {class: "title-row"}, h("h1", null, "Overview"), streamState),
    h("div", {class: "tiles"},
      h("div", {class: "tile"}, h("span", null, "Events per second"), rateTotal),
      h("div", {class: "tile"}, h("span", null, "Events since opened"), eventsTotal),
      h("div", {class: "tile"}, h("span", null, "Active calls"), activeCount)),
    h("section", null, h("h2", null, "Events by type"), rates),
    h("section", null, h("h2", null, "Active calls"), active),
    h("section", null, h("h2", null, "Delivery health"), sinks));

  function drawRates() {
    const now = performance.now();
    while (recent.length && now - recent[0][0] > WINDOW_MS) recent.shift();
    const span = Math.max(1, Math.min(WINDOW_MS, now - started)) / 1000;
    const inWindow = new Map();
    for (const [, counts] of recent) {
      for (const [type, n] of Object.entries(counts)) inWindow.set(type, (inWindow.get(type) || 0) + n);
    }
    let sum = 0;
    for (const n of inWindow.values()) sum += n;
    replace(rateTotal, fmtNumber(sum / span));
    replace(eventsTotal, String(received));
    const types = [...totals.keys()].sort();
    if (!types.length) {
      replace(rates, notice("info", "No events since this page was opened."));
      return;
    }
    replace(rates, table(["Event type", "Per second (10 s)", "Since opened"],
      types.map((type) => h("tr", {"data-type": type},
        h("td", null, type),
        h("td", {class: "num"}, fmtNumber((inWindow.get(type) || 0) / span)),
        h("td", {class: "num"}, String(totals.get(type))))),
      {id: "rates-table"}));
  }

  let activeBusy = false;
  let lastActive = 0;
  async function drawActive() {
    if (activeBusy) return;
    activeBusy = true;
    lastActive = performance.now();
    try {
      const data = await api.get("/callstream/v1/ActiveCalls", {PageSize: 20});
      replace(activeCount, String(data.total));
      replace(active, data.calls.length
        ? table(["Call", "First event", "Latest event"], data.calls.map((call) =>
          h("tr", null,
            h("td", null, h("a", {href: `#/calls/${call.call_sid}`}, call.call_sid)),
            h("td", null, fmtTime(call.first_event_time)),
            h("td", null, fmtTime(call.last_event_time)))), {id: "active-table"})
        : notice("info", "No call in progress."));
    } catch (error) {
      replace(active, notice("error", `Active calls: ${error.message}`));
    } finally {
      activeBusy = false;
    }
  }

  const delivered = new Map(); // sink sid -> [time, delivered]
  let sinkTimer = null;
  async function drawSinks() {
    let data;
    try {
      data = await api.get("/callstream/v1/Sinks/Status");
    } catch (error) {
      const text = error.status === 404
        ? "Delivery status unavailable: this server does not report it."
        : `Delivery status unavailable: ${error.message}`;
      replace(sinks, notice("info", text));
      // A server without the route will not grow one: stop asking.
      if (error.status === 404) clearInterval(sinkTimer);
      return;
    }
    if (!data.sinks.length) {
      replace(sinks, notice("info", "No sinks yet: create one under Event Streams."));
      return;
    }
    const now = performance.now();
    replace(sinks, table(
      ["Sink", "Type", "Status", "Delivered/s", "Delivered", "Pending", "Lag", "Failed",
        "Dead letters", "Last error"],
      data.sinks.map((sink) => {
        const before = delivered.get(sink.sink_sid);
        delivered.set(sink.sink_sid, [now, sink.delivered]);
        const rate = before && now > before[0]
          ? fmtNumber((sink.delivered - before[1]) / ((now - before[0]) / 1000)) : "—";
        return h("tr", {"data-sink": sink.sink_sid, class: `status-${sink.status}`},
          h("td", null, h("a", {href: `#/streams/sinks/${sink.sink_sid}`}, sink.sink_sid)),
          h("td", null, sink.sink_type),
          h("td", null, h("span", {class: `badge ${sink.status}`}, sink.status)),
          h("td", {class: "num"}, rate),
          h("td", {class: "num"}, String(sink.delivered)),
          h("td", {class: "num"}, String(sink.pending)),
          h("td", {class: "num"}, sink.lag_seconds == null ? "—" : `${fmtNumber(sink.lag_seconds)} s`),
          h("td", {class: "num"}, String(sink.failed)),
          h("td", {class: "num"}, String(sink.dead_lettered)),
          h("td", {class: "error-text"}, sink.last_error || ""));
      }), {id: "sinks-health-table"}));
  }

  const stream = api.openStream({Events: "false"}, (message) => {
    recent.push([performance.now(), message.counts]);
    for (const [type, n] of Object.entries(message.counts)) {
      totals.set(type, (totals.get(type) || 0) + n);
      received += n;
    }
    drawRates();
    // New events may start or end calls: refresh soon, at most every second.
    if (performance.now() - lastActive > 1000) drawActive();
  }, (state) => {
    replace(streamState, state);
    streamState.className = `badge ${state}`;
  });

  drawRates();
  drawActive();
  drawSinks();
  sinkTimer = setInterval(drawSinks, 3000);
  const timers = [setInterval(drawRates, 1000), setInterval(drawActive, 3000), sinkTimer];
  return () => {
    stream.close();
    timers.forEach(clearInterval);
  };
}
